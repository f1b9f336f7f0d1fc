"""Local Sphinx extension for the ERC Book's HTML pages.

1. Every page loads each script once: sphinx-thebe 0.3.1 and sphinx-togglebutton register their inline
   configuration scripts twice under Sphinx 7.4 (once with ``filename=None``, once with ``""``), which made the
   browser throw ``Identifier 'THEBE_JS_URL' has already been declared`` on every page.
2. The widget manager (``@jupyter-widgets/html-manager`` 1.x) typesets widget labels with MathJax 2's
   ``MathJax.Hub.Queue``, while the book runs MathJax 3: every labelled widget threw
   ``Cannot read properties of undefined (reading 'Queue')``. A small shim right after the MathJax configuration
   gives MathJax 3 a ``Hub.Queue`` that typesets the element with ``typesetPromise``.
3. While ``repository.placeholder`` is true in ``_config.yml`` (the repository named there does not exist yet), the
   pages show no repository, issue, edit or launch (Binder, Colab) buttons: they would lead readers to 404s or to
   whoever registers that name. Set it to false once the repository exists (README, "Publishing").
4. Output tables wider than the page (on a phone) are shown as one card per row (``book/_static/erc_book.js`` and
   ``.css``), instead of a strip that scrolls sideways.
"""

from pathlib import Path

import yaml

_HUB_SHIM = """(function () {
  function hub(mj) {
    return {Queue: function (job) {
      var el = job && job[2];
      if (el && window.MathJax && window.MathJax.typesetPromise) {
        window.MathJax.typesetPromise([el]).catch(function () {});
      }
    }};
  }
  var mj = window.MathJax = window.MathJax || {};
  mj.Hub = mj.Hub || hub(mj);
  mj.startup = mj.startup || {};
  var ready = mj.startup.ready;
  mj.startup.ready = function () {
    if (ready) { ready(); } else { window.MathJax.startup.defaultReady(); }
    window.MathJax.Hub = window.MathJax.Hub || hub(window.MathJax);
  };
})();"""


def _script_key(js) -> tuple:
    return getattr(js, "filename", None) or "", tuple(sorted(getattr(js, "attributes", {}).items()))


def _fix_scripts(app, pagename, templatename, context, doctree):
    """Drop repeated entries of the page's ``script_files``; add the Hub shim after the MathJax configuration."""
    seen, unique = set(), []
    for js in context.get("script_files", []):
        if _script_key(js) not in seen:
            seen.add(_script_key(js))
            unique.append(js)
    for i, js in enumerate(unique):
        if getattr(js, "attributes", {}).get("body", "").startswith("window.MathJax ="):
            unique.insert(i + 1, type(js)("", priority=js.priority, body=_HUB_SHIM))
            break
    context["script_files"] = unique


def repository_is_placeholder(srcdir) -> bool:
    """``repository.placeholder`` of the book's ``_config.yml`` (true when the key or the file is missing)."""
    config = Path(srcdir) / "_config.yml"
    data = yaml.safe_load(config.read_text()) if config.exists() else {}
    return bool(((data or {}).get("repository") or {}).get("placeholder", True))


def _hide_repository_buttons(app, config):
    """No repository / issue / edit / launch buttons while the repository is a placeholder."""
    if repository_is_placeholder(app.srcdir):
        options = dict(config.html_theme_options or {})
        options.update(use_repository_button=False, use_issues_button=False, use_edit_page_button=False,
                       launch_buttons={})
        config.html_theme_options = options


def setup(app):
    app.connect("config-inited", _hide_repository_buttons)
    app.add_css_file("erc_book.css")
    app.add_js_file("erc_book.js")
    app.connect("html-page-context", _fix_scripts, priority=900)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
