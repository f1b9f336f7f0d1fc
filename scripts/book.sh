#!/usr/bin/env bash
# The ERC Book's main job: environment -> vendored JS -> execute every chapter (papermill, CPU parameters)
# -> HTML (jupyter-book 1, execution off, warnings are errors) in _build/html. Works offline once the
# registries (PyPI, npm) have been reached once; reruns reuse .venv and book/vendor.
#
#   bash scripts/book.sh            # everything; a notebook is re-executed only when it or erc_core changed
#   bash scripts/book.sh --force    # re-execute every notebook
#
# Extra arguments go to scripts/run_notebooks.py, e.g. `bash scripts/book.sh --force -p seq_len 32`.
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# A failed build (any step) exits non-zero and removes _build/html: an older book must not look current.
on_exit() {
    local rc=$1
    if [ "$rc" -ne 0 ] && [ -d "$ROOT/_build/html" ]; then
        rm -rf "$ROOT/_build/html"
        echo "[book] FAILED (exit $rc): removed _build/html, which would no longer match the sources" >&2
    fi
}
trap 'on_exit $?' EXIT
source "$ROOT/scripts/env.sh"
cd "$ROOT"
t_start=$SECONDS

# ---------------------------------------------------------------------------------------------- vendored JS
# Widgets (embed-amd.js + require.js) and MathJax 3 served from the book itself: no CDN at read time.
# The folder is NOT called _static (jupyter-book 1 would add every .js in it to every page twice).
VENDOR="$ROOT/book/vendor"
HTML_MANAGER="@jupyter-widgets/html-manager@1.0.15"
REQUIREJS="requirejs@2.3.8"
MATHJAX="mathjax@3.2.2"
stamp="$HTML_MANAGER $REQUIREJS $MATHJAX"
if [ "$(cat "$VENDOR/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "[book] vendoring $stamp into book/vendor"
    command -v npm >/dev/null || { echo "[book] npm is needed once to vendor the JS (apt-get install npm)" >&2; exit 1; }
    tmp="$(mktemp -d)"
    trap 'rc=$?; rm -rf "$tmp"; on_exit $rc' EXIT
    npm install --silent --no-save --no-audit --no-fund --ignore-scripts --no-package-lock --prefix "$tmp" \
        "$HTML_MANAGER" "$REQUIREJS" "$MATHJAX" >/dev/null
    nm="$tmp/node_modules"
    rm -rf "$VENDOR"
    mkdir -p "$VENDOR/mathjax/output/chtml"
    cp "$nm/@jupyter-widgets/html-manager/dist/embed-amd.js" "$VENDOR/"
    cp "$nm/requirejs/require.js" "$VENDOR/"
    cp "$nm/mathjax/es5/tex-mml-chtml.js" "$VENDOR/mathjax/"
    cp -r "$nm/mathjax/es5/output/chtml/fonts" "$VENDOR/mathjax/output/chtml/"
    printf '*\n' > "$VENDOR/.gitignore"   # never committed, even without a root .gitignore entry
    echo "$stamp" > "$VENDOR/.stamp"
    rm -rf "$tmp"; trap 'on_exit $?' EXIT
fi

# ---------------------------------------------------------------------------------------------- execute
# Executed copies go to _build/src (a copy of the book sources); notebooks/ in git stays output-free.
python "$ROOT/scripts/run_notebooks.py" --stage "$ROOT/_build/src" "$@"

# ---------------------------------------------------------------------------------------------- HTML
t_build=$SECONDS
echo "[book] building HTML (execution off, fresh environment, -W -n --keep-going)"
if ! jupyter-book build "$ROOT/_build/src" --path-output "$ROOT" --builder html --all -W -n --keep-going --quiet; then
    echo "[book] HTML build FAILED: Sphinx warnings are errors here (see the lines above)" >&2
    exit 1
fi
touch "$ROOT/_build/html/index.html"   # the build's timestamp (Sphinx keeps an unchanged index.html's mtime)
echo "[book] HTML built in $((SECONDS - t_build)) s; main job took $((SECONDS - t_start)) s in total"
echo "[book] open file://$ROOT/_build/html/index.html"
