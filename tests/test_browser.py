"""The built book in a real browser: headless Chromium renders the sliders and the math from file://, offline.

Skipped when ``chromium`` is not on PATH (``.ci/run`` installs it); the pages are the session's tiny book
(``book_html`` in tests/conftest.py). Screenshots go to ``artifacts/`` (git-ignored) for a human to look at.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which("chromium")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--virtual-time-budget=8000"]
# chapter page -> a text of the precomputed view its sliders select: a table's text, or for a figure slider
# (erc_core.book.widgets.figure_slider) its description, which starts the figure's alt text ("eps_high = 0.28")
PAGES = {"01_entropy_ratio": "response tokens gated", "02_ppo_clip_blind_spot": "updates k = ",
         "03_erc_gate": "stopped by ERC", "04_grpo_to_dapo": "eps_high = "}
FIGURE_SLIDER_PAGES = ("02_ppo_clip_blind_spot", "04_grpo_to_dapo")
_IMG_SRC = re.compile(r'<img src="(data:image/png;base64,[A-Za-z0-9+/=]+)"')

pytestmark = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")


def widget_state(page: Path) -> dict:
    """The widget state a built page embeds for the widget manager: model id -> {"model_name", "state", ...}."""
    m = re.search(r'<script type="application/vnd.jupyter.widget-state\+json">(.*?)</script>',
                  page.read_text(encoding="utf-8"), re.S)
    assert m, f"{page.name}: no saved widget state"
    return json.loads(m.group(1))["state"]


def slider_views(state: dict) -> list[tuple[dict, list[str]]]:
    """Each slider of a widget state: (its state, the HTML of each view the stack linked to it holds)."""
    out = []
    for key, model in state.items():
        if model["model_name"] != "SelectionSliderModel":
            continue
        for link in (m["state"] for m in state.values() if m["model_name"] == "LinkModel"):
            if link["source"][0] == f"IPY_MODEL_{key}":
                stack = state[link["target"][0].removeprefix("IPY_MODEL_")]["state"]
                views = [state[c.removeprefix("IPY_MODEL_")]["state"].get("value", "") for c in stack["children"]]
                out.append((model["state"], views))
    return out


def figure_srcs(views: list[str]) -> list[str]:
    """The data URI of the one figure each view shows (a figure slider's views are one ``<img>`` each)."""
    srcs = [_IMG_SRC.findall(v) for v in views]
    assert all(len(s) == 1 for s in srcs), [len(s) for s in srcs]
    return [s[0] for s in srcs]


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
    assert PAGES[name] in dom, f"{name}: the precomputed view the sliders select is not shown"
    if name in FIGURE_SLIDER_PAGES:  # the figure of the slider's saved position, byte for byte, and no other
        (slider, views), = slider_views(widget_state(page))
        srcs = figure_srcs(views)
        shown = [s for s in _IMG_SRC.findall(dom) if s in srcs]
        assert shown == [srcs[slider["index"]]], (
            f"{name}: shows figure(s) {[srcs.index(s) for s in shown]}, the slider selects {slider['index']}")


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


_PAGE_WIDTH = "[window.innerWidth, document.documentElement.scrollWidth]"
_WIDE_TABLES = """[...document.querySelectorAll('.bd-article table, .cell_output table')].filter(t => {
  let right = t.getBoundingClientRect().right;  // a slider's token table scrolls inside its widget's panel
  for (let a = t.closest('.jupyter-widgets') && t.parentElement; a; a = a.parentElement) {
    if (['auto', 'scroll'].includes(getComputedStyle(a).overflowX)) {
      right = Math.min(right, a.getBoundingClientRect().right); } }
  return right > window.innerWidth + 1; }).length"""


def test_every_page_loads_without_console_errors_or_failed_requests(served, book_html):
    """At 390 px every page loads with no console error or failed request, no table is wider than the screen
    (a wide one is shown as one card per row: book/_static/erc_book.js), and nothing else is either: a phone
    would zoom the whole page out to fit it (long names and printed output wrap: book/_static/erc_book.css)."""
    pages = sorted(p.relative_to(book_html).as_posix() for p in book_html.rglob("*.html")
                   if not p.relative_to(book_html).parts[0].startswith("_"))
    assert "notebooks/03_erc_gate.html" in pages
    browser = _open(390)
    bad, wide, zoomed = {}, {}, {}
    try:
        for page in pages:
            if found := browser.goto(f"{served}/{page}", settle=2.5):
                bad[page] = found
            if n := browser.js(_WIDE_TABLES):
                wide[page] = n
            if (size := browser.js(_PAGE_WIDTH)) != [390, 390]:
                zoomed[page] = size
    finally:
        browser.close()
    assert not bad, bad
    assert not wide, f"output tables wider than a 390 px screen: {wide}"
    assert not zoomed, f"pages wider than a 390 px screen ([viewport, page] width): {zoomed}"


_SLIDER_FIGURES = """[...document.querySelectorAll('.widget-html img')]
  .filter(i => i.getBoundingClientRect().height > 0)
  .map(i => ({src: i.src, decoded: i.complete && i.naturalWidth > 0}))"""
_SLIDER_BOX = """[...document.querySelectorAll('.widget-slider')].map(s => {
  const r = s.getBoundingClientRect(); return {right: r.right, width: window.innerWidth,
  readout: (s.querySelector('.widget-readout') || {}).textContent}; })"""


@pytest.mark.parametrize("name", FIGURE_SLIDER_PAGES)
def test_figure_slider_switches_between_its_precomputed_figures(served, book_html, name):
    """On a phone the figure slider fits the screen, shows the figure its saved position selects, and moving it
    (keyboard: Home, End) shows the first and the last precomputed figure: the link works in the static page."""
    (slider, views), = slider_views(widget_state(book_html / "notebooks" / f"{name}.html"))
    srcs, labels = figure_srcs(views), slider["_options_labels"]
    browser = _open(390)

    def shown(expect: int, key: str | None = None) -> None:
        if key:
            browser.js("document.querySelector('.widget-slider .noUi-handle').focus()")
            for kind in ("keyDown", "keyUp"):
                browser.call("Input.dispatchKeyEvent", type=kind, key=key, code=key,
                             windowsVirtualKeyCode={"Home": 36, "End": 35}[key])
        deadline = time.time() + 10
        while True:
            figs = [f for f in browser.js(_SLIDER_FIGURES) if f["src"] in srcs]
            (box,) = browser.js(_SLIDER_BOX)
            if ([f["src"] for f in figs] == [srcs[expect]] and all(f["decoded"] for f in figs)
                    and box["readout"] == labels[expect]) or time.time() > deadline:
                break
            browser.wait(0.3)
        assert [srcs.index(f["src"]) for f in figs] == [expect], f"{name} after {key}: figures shown"
        assert all(f["decoded"] for f in figs), f"{name}: the figure did not decode"
        assert box["readout"] == labels[expect], box
        assert box["right"] <= box["width"], f"{name}: the slider is wider than a 390 px screen: {box}"

    try:
        assert not browser.goto(f"{served}/notebooks/{name}.html")
        shown(slider["index"])
        shown(0, "Home")
        shown(len(srcs) - 1, "End")
    finally:
        browser.close()


_ZOOMED = """(() => { const i = document.querySelector('.erc-zoom img');
  return i && {width: i.getBoundingClientRect().width, natural: i.naturalWidth}; })()"""


def test_phone_figures_enlarge_to_their_desktop_width_when_tapped(served):
    """A figure is drawn for a 672 px column; at 390 px its labels are too small, so a tap shows it 672 px wide
    in a layer that scrolls (book/_static/erc_book.js) and Escape closes it. At 1280 px nothing needs it."""
    sel = "document.querySelectorAll('.bd-article img.erc-zoomable')"
    browser = _open(390)
    try:
        assert not browser.goto(f"{served}/notebooks/01_entropy_ratio.html")
        assert browser.js(f"{sel}.length") >= 3, "the chapter's figures are not marked as enlargeable"
        browser.js(f"{sel}[0].click()")
        browser.wait(0.5)
        big = browser.js(_ZOOMED)
        assert big and big["width"] >= 600 and big["natural"] >= big["width"], big
        browser.call("Input.dispatchKeyEvent", type="keyDown", key="Escape", code="Escape", windowsVirtualKeyCode=27)
        browser.wait(0.3)
        assert browser.js("document.querySelector('.erc-zoom')") is None, "Escape did not close the figure"
    finally:
        browser.close()
    browser = _open(1280)
    try:
        assert not browser.goto(f"{served}/notebooks/01_entropy_ratio.html")
        assert browser.js(f"{sel}.length") == 0
    finally:
        browser.close()
