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
bash "$ROOT/scripts/vendor_js.sh"

# ---------------------------------------------------------------------------------------------- execute, HTML
# Executed copies go to _build/src (a copy of the book sources); notebooks/ in git stays output-free. Then the HTML
# (jupyter-book 1, execution off, Sphinx warnings are errors) in _build/html.
python "$ROOT/scripts/run_notebooks.py" --stage "$ROOT/_build/src" --html "$ROOT" "$@"
echo "[book] main job took $((SECONDS - t_start)) s in total"
echo "[book] open file://$ROOT/_build/html/index.html"
