"""The built book in a real browser: headless Chromium renders the sliders and the math from file://, offline.

Skipped when ``chromium`` is not on PATH (``.ci/run`` installs it); the pages are the session's tiny book
(``book_html`` in tests/conftest.py). Screenshots go to ``artifacts/`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=8000"]
# chapter page -> a text of the precomputed table its sliders select
PAGES = {"01_entropy_ratio": "response tokens gated", "03_erc_gate": "stopped by ERC"}

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")


def chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    profile = tmp_path / "profile"
    profile.mkdir(exist_ok=True)
    cmd = [CHROMIUM, *FLAGS, f"--user-data-dir={profile}", *args, page.as_uri()]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120)


@pytest.fixture(scope="module", params=sorted(PAGES))
def chapter(request, book_html, tmp_path_factory) -> tuple[str, Path, str]:
    """(name, page path, rendered DOM) of each chapter with widgets."""
    page = book_html / "notebooks" / f"{request.param}.html"
    proc = chromium(page, tmp_path_factory.mktemp("dom"), "--dump-dom")
    assert proc.returncode == 0, proc.stderr[-2000:]
    return request.param, page, proc.stdout


def test_sliders_are_rendered(chapter):
    """The widget manager draws every slider of the page's saved widget state (once) and the view it selects."""
    name, page, dom = chapter
    n_sliders = page.read_text(encoding="utf-8").count('"model_name": "SelectionSliderModel"')
    assert n_sliders >= 1, f"{name}: no slider in the page's widget state"
    sliders = re.findall(r'<div[^>]*class="[^"]*\bwidget-slider\b[^"]*"', dom)
    assert len(sliders) == n_sliders, f"{name}: {n_sliders} slider(s) in the state, {len(sliders)} drawn"
    assert PAGES[name] in dom, f"{name}: the precomputed table the sliders select is not shown"


def test_math_is_rendered(chapter):
    name, _, dom = chapter
    assert "<mjx-container" in dom, f"{name}: MathJax did not typeset the page"


def test_screenshot(chapter, tmp_path):
    name, page, _ = chapter
    out = ROOT / "artifacts" / f"{name}.png"
    out.parent.mkdir(exist_ok=True)
    out.unlink(missing_ok=True)
    proc = chromium(page, tmp_path, f"--screenshot={out}", "--window-size=1000,1500", "--hide-scrollbars")
    assert proc.returncode == 0, proc.stderr[-2000:]
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 50_000, f"screenshot is {len(data)} bytes"


# ---------------------------------------------------------------------------------------------- served over HTTP
@pytest.fixture(scope="module")
def served(book_html):
    """The built book served on 127.0.0.1 (as a published book is; file:// blocks the icon fonts)."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(book_html))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def _open(width: int):
    from cdp import Browser

    return Browser(width=width, height=844 if width < 600 else 900)


_BOX = """(() => {{ const s = document.querySelector('{sel}'); const r = s.getBoundingClientRect();
  return {{left: r.left, right: r.right, visible: getComputedStyle(s).visibility === 'visible'}}; }})()"""
_CLICK = """(() => {{ const b = [...document.querySelectorAll('{sel}')].find(b => b.offsetWidth || b.offsetHeight);
  if (!b) return false; b.click(); return true; }})()"""


@pytest.mark.parametrize("toggle,sidebar", [(".primary-toggle", ".bd-sidebar-primary"),
                                            (".secondary-toggle", ".bd-sidebar-secondary")],
                         ids=["contents", "page-contents"])
def test_phone_navigation_buttons_open_their_sidebars(served, toggle, sidebar):
    """At 390 px both sidebars start off screen; the visible button of each slides it into view."""
    browser = _open(390)
    try:
        browser.goto(f"{served}/notebooks/03_erc_gate.html")  # console errors: the next test
        width = browser.js("window.innerWidth")
        before = browser.js(_BOX.format(sel=sidebar))
        assert not before["visible"] or before["right"] <= 0 or before["left"] >= width, before
        assert browser.js(_CLICK.format(sel=toggle)), f"no visible {toggle} button at {width} px"
        browser.wait(1.0)
        after = browser.js(_BOX.format(sel=sidebar))
        assert after["visible"] and 0 <= after["left"] < after["right"] <= width, after
    finally:
        browser.close()


_WIDE_TABLES = """[...document.querySelectorAll('.bd-article table, .cell_output table')]
  .filter(t => t.getBoundingClientRect().right > window.innerWidth + 1).length"""


def test_every_page_loads_without_console_errors_or_failed_requests(served, book_html):
    """At 390 px every page loads with no console error or failed request, and no table is wider than the screen
    (a wide one is shown as one card per row: book/_static/erc_book.js)."""
    pages = sorted(p.relative_to(book_html).as_posix() for p in book_html.rglob("*.html")
                   if not p.relative_to(book_html).parts[0].startswith("_"))
    assert "notebooks/03_erc_gate.html" in pages
    browser = _open(390)
    bad, wide = {}, {}
    try:
        for page in pages:
            if found := browser.goto(f"{served}/{page}", settle=2.5):
                bad[page] = found
            if n := browser.js(_WIDE_TABLES):
                wide[page] = n
    finally:
        browser.close()
    assert not bad, bad
    assert not wide, f"output tables wider than a 390 px screen: {wide}"
