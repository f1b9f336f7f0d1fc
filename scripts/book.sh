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
source "$ROOT/scripts/env.sh"
cd "$ROOT"
t_start=$SECONDS

# ---------------------------------------------------------------------------------------------- vendored JS
bash "$ROOT/scripts/vendor_js.sh"

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
