"""Shared fixtures: the built book (built once per test session by the README's main-job command if stale)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HTML = ROOT / "_build" / "html"
SOURCES = ["notebooks/*.ipynb", "book/*.md", "book/*.bib", "erc_core/**/*.py", "_config.yml", "_toc.yml",
           "scripts/book.sh", "scripts/run_notebooks.py", "configs/*.yaml", "grids/*.yaml", "data/**/*"]


def book_is_stale() -> bool:
    """True when ``_build/html`` is missing or older than any source the book is built from."""
    index = HTML / "index.html"
    if not index.exists():
        return True
    built = index.stat().st_mtime
    return any(p.stat().st_mtime > built for pattern in SOURCES for p in ROOT.glob(pattern))


@pytest.fixture(scope="session")
def book_html() -> Path:
    """``_build/html``, (re)built with ``bash scripts/book.sh`` when stale; a failed build fails the test."""
    if book_is_stale():
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "book.sh")], cwd=ROOT, env=env,
                              capture_output=True, text=True, timeout=1800)
        assert proc.returncode == 0, f"bash scripts/book.sh failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    assert (HTML / "index.html").exists()
    return HTML
