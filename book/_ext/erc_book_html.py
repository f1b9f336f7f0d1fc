"""Local Sphinx extension for the ERC Book's HTML: every page loads each script once.

sphinx-thebe 0.3.1 and sphinx-togglebutton register their inline configuration scripts twice under Sphinx 7.4
(once with ``filename=None``, once with ``""``), which makes the browser throw
``Identifier 'THEBE_JS_URL' has already been declared`` on every page.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated entries of the page's ``script_files`` (same file or same inline body, same attributes)."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        key = (getattr(js, "filename", None) or "", tuple(sorted(getattr(js, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(js)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
