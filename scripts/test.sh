#!/usr/bin/env bash
# The project's TEST command (README): set up .venv if needed, lint (ruff, [tool.ruff] in pyproject.toml), then run
# the whole pytest suite on the CPU.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m "not slow"` or `bash scripts/test.sh tests/test_losses.py`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/env.sh
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python -m ruff check --quiet . || { echo "[test] ruff found problems (above): fix them or run 'ruff check --fix .'" >&2; exit 1; }
exec python -m pytest "$@"
