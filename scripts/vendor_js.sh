#!/usr/bin/env bash
# Vendor the book's JavaScript into book/vendor (once; npm is needed the first time): the widget manager
# (embed-amd.js + require.js) and MathJax 3, served from the book itself so that no page loads from a CDN.
# Called by scripts/book.sh (the main job) and by the test suite's tiny book (tests/conftest.py).
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
# book/vendor/static is served as _static/ (html_static_path) and book/vendor/root is copied into the site's root
# (html_extra_path): the widget manager fetches its icon fonts from <page folder>/@jupyter-widgets/html-manager/dist/.
# The folder is NOT called _static (jupyter-book 1 would add every .js in it to every page twice).
VENDOR="$ROOT/book/vendor"
STATIC="$VENDOR/static"
FONTS="$VENDOR/root/notebooks/@jupyter-widgets/html-manager/dist"
HTML_MANAGER="@jupyter-widgets/html-manager@1.0.15"
REQUIREJS="requirejs@2.3.8"
MATHJAX="mathjax@3.2.2"
stamp="$HTML_MANAGER $REQUIREJS $MATHJAX (static + root fonts)"
if [ "$(cat "$VENDOR/.stamp" 2>/dev/null)" != "$stamp" ]; then
    echo "[book] vendoring $stamp into book/vendor"
    command -v npm >/dev/null || { echo "[book] npm is needed once to vendor the JS (apt-get install npm)" >&2; exit 1; }
    tmp="$(mktemp -d)"
    trap 'rm -rf "$tmp"' EXIT
    npm install --silent --no-save --no-audit --no-fund --ignore-scripts --no-package-lock --prefix "$tmp" \
        "$HTML_MANAGER" "$REQUIREJS" "$MATHJAX" >/dev/null
    nm="$tmp/node_modules"
    rm -rf "$VENDOR"
    mkdir -p "$STATIC/mathjax/output/chtml" "$FONTS"
    cp "$nm/@jupyter-widgets/html-manager/dist/embed-amd.js" "$STATIC/"
    cp "$nm/requirejs/require.js" "$STATIC/"
    cp "$nm/mathjax/es5/tex-mml-chtml.js" "$STATIC/mathjax/"
    cp -r "$nm/mathjax/es5/output/chtml/fonts" "$STATIC/mathjax/output/chtml/"
    cp "$nm/@jupyter-widgets/html-manager/dist/"*.{woff2,woff,ttf,eot,svg} "$FONTS/"
    printf '*\n' > "$VENDOR/.gitignore"   # never committed, even without a root .gitignore entry
    echo "$stamp" > "$VENDOR/.stamp"
    rm -rf "$tmp"; trap - EXIT
fi
