"""The built book in a real browser: headless Chromium renders chapter 1's slider and math from file://, offline.

Skipped when ``chromium`` is not on PATH or the book is not built (``bash scripts/book.sh``). Writes a screenshot
to ``artifacts/chapter1.png`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGE = ROOT / "_build" / "html" / "notebooks" / "01_entropy_ratio.html"
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=8000"]

pytestmark = [
    pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)"),
    pytest.mark.skipif(not PAGE.exists(), reason="book not built: run `bash scripts/book.sh` first"),
]


def _chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, PAGE.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)


@pytest.fixture(scope="module")
def dom(tmp_path_factory) -> str:
    proc = _chromium(tmp_path_factory.mktemp("dom"), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def test_slider_widget_is_rendered(dom):
    assert "jupyter-widgets" in dom and "widget-slider" in dom, "the widget manager did not render the slider"
    sliders = re.findall(r'<div[^>]*class="[^"]*\bwidget-slider\b[^"]*"', dom)
    assert len(sliders) == 1, f"expected exactly one slider, found {len(sliders)}"
    assert "response tokens gated" in dom  # the precomputed table the slider selects


def test_math_is_rendered(dom):
    assert "<mjx-container" in dom, "MathJax did not typeset the page"


def test_screenshot(tmp_path):
    out = ROOT / "artifacts" / "chapter1.png"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    proc = _chromium(tmp_path, f"--screenshot={out}", "--window-size=1000,1500", "--hide-scrollbars")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000, f"screenshot is {len(data)} bytes"
