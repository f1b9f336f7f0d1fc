#!/usr/bin/env bash
# The project's TEST command (README): set up .venv if needed, lint (ruff, [tool.ruff] in pyproject.toml), then run
# the whole pytest suite on the CPU on 2 pytest-xdist workers (ERC_TEST_WORKERS=N to change, 0 for one process;
# tests/conftest.py keeps the tests that read the tiny book on one worker, so it is built once). Extra arguments go
# to pytest, e.g. `bash scripts/test.sh -m "not slow"` or `bash scripts/test.sh tests/test_losses.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python -m ruff check --quiet . || { echo "[test] ruff found problems (above): fix them or run 'ruff check --fix .'" >&2; exit 1; }
workers="${ERC_TEST_WORKERS:-2}"
xdist=()
if [ "$workers" != 0 ]; then
    xdist=(-n "$workers")
    export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"  # one torch thread per worker: N workers fill N cores
fi
exec python -m pytest "${xdist[@]}" "$@"
