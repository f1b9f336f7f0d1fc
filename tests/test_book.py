"""The book's pipeline: the chapter list, the notebooks in git, every chapter's results, the built HTML.

Chapters and HTML come from the session's tiny book (``tiny_book`` / ``book_html`` in tests/conftest.py): every
chapter executed once with the parameters of tests/tiny_book.yaml and built with the main job's flags.
"""

from __future__ import annotations

import json
import math
import re
import shutil
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest
from conftest import assert_figures_captioned, assert_sliders_precomputed, book_results, kernel_name, outputs, runner

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------------------------------- sources
def test_toc_lists_every_chapter_and_page():
    pages = runner.toc_pages()
    assert pages[0] == Path("book/intro.md")
    assert Path("notebooks/01_entropy_ratio.ipynb") in pages
    assert {Path("book/api.md"), Path("book/bibliography.md")} <= set(pages)
    on_disk = {p.relative_to(ROOT) for p in (ROOT / "notebooks").glob("*.ipynb")}
    assert on_disk <= set(runner.toc_notebooks()), "a notebook in notebooks/ is missing from _toc.yml"


def test_intro_hero_figure_shows_what_its_caption_says(tmp_path):
    """The intro (markdown, no code) states the hero figure's numbers; the runner draws the figure from the same
    drifts, so the sentences are checked here."""
    import numpy as np

    drifts = runner.hero_drifts()
    text = (ROOT / "book" / "intro.md").read_text()
    for target in ("collapse", "explode"):
        r, rho = (np.asarray(x, dtype=float) for x in drifts[target])
        assert len(r) == runner.HERO["n_steps"] + 1 == 9  # "over eight updates"
        assert r[0] == pytest.approx(1.0) and r[-1] == pytest.approx(1.1, abs=1e-4)  # "rises from 1 to 1.1"
        assert ((0.8 <= r) & (r <= 1.28)).all()  # "inside PPO-clip's band (0.8, 1.28)": every step passes
        outside = ~((0.95 < rho) & (rho < 1.05))
        assert outside.argmax() == 2 and outside[2:].all()  # leaves the band at step 2, stays out
    assert round(float(drifts["collapse"][1][-1]), 2) == 0.28 and round(float(drifts["explode"][1][-1]), 2) == 1.13
    for phrase in ("eight updates", "from 1 to 1.1", "(0.8, 1.28)", "(0.95, 1.05) at the second step",
                   "falls to 0.28", "rises to 1.13", "at step 2", "## Key findings", ":alt: "):
        assert phrase in text, phrase
    (tmp_path / "book").mkdir()
    (tmp_path / "book" / "intro.md").write_text(text)
    (png,) = runner.render_page_figures(tmp_path)
    assert png.name == "hero.png" and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "```{figure} hero.png" in text


def test_toc_files_walks_parts_chapters_sections():
    toc = {"root": "a", "parts": [{"caption": "x", "chapters": [{"file": "b", "sections": [{"file": "c"}]}]},
                                  {"chapters": [{"file": "d"}, {"url": "https://example.org"}]}]}
    assert runner.toc_files(toc) == ["a", "b", "c", "d"]


@pytest.mark.parametrize("path", sorted((ROOT / "notebooks").glob("*.ipynb")), ids=lambda p: p.name)
def test_notebooks_in_git_have_no_outputs_and_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), f"{path.name} is stored with outputs"
    assert "widgets" not in nb.metadata, f"{path.name} is stored with widget state"
    assert nb.cells[0].cell_type == "markdown" and nb.cells[0].source.startswith("# "), "title first"
    tagged = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(tagged) == 1 and "seed" in tagged[0].source


def _colab_cells() -> list[str]:
    cells = []
    for path in runner.toc_notebooks(ROOT):
        nb = nbformat.read(ROOT / path, as_version=4)
        cell = nb.cells[1]
        assert cell.cell_type == "code" and 'find_spec("erc_core") is None' in cell.source, path
        assert cell.metadata.get("tags") == ["remove-cell"] and cell.id == runner.COLAB_CELL_ID, path
        cells.append(cell.source)
    written_once = runner.COLAB_CELL_SOURCE.read_text().rstrip("\n")
    stale = [str(p) for p, c in zip(runner.toc_notebooks(ROOT), cells) if c != written_once]
    assert not stale, f"run `python scripts/run_notebooks.py --place-colab-cell`: {stale} differ from the one copy"
    return cells


def test_place_colab_cell_writes_the_one_copy_at_index_1(tmp_path):
    nb = tmp_path / "ch.ipynb"
    book = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# T"), nbformat.v4.new_code_cell("x = 1")])
    nbformat.write(book, nb)
    assert runner.place_colab_cell(nb) and not runner.place_colab_cell(nb)  # the second call changes nothing
    cells = nbformat.read(nb, as_version=4).cells
    assert [c.get("id") for c in cells][1] == runner.COLAB_CELL_ID and cells[2].source == "x = 1"
    assert cells[1].source == runner.COLAB_CELL_SOURCE.read_text().rstrip("\n")
    assert cells[1].metadata["tags"] == ["remove-cell"]


def test_injected_parameters_are_folded_away_like_the_chapters_own(tmp_path):
    nb = tmp_path / "ch.ipynb"
    cells = [nbformat.v4.new_code_cell("seed = 0", metadata={"tags": ["parameters", "hide-input"]}),
             nbformat.v4.new_code_cell("# Parameters\nseed = 1", metadata={"tags": ["injected-parameters"]}),
             nbformat.v4.new_code_cell("print(seed)")]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), nb)
    assert runner.hide_injected_parameters(nb) == 1 and runner.hide_injected_parameters(nb) == 0
    tags = [c.metadata.get("tags", []) for c in nbformat.read(nb, as_version=4).cells]
    assert tags == [["parameters", "hide-input"], ["injected-parameters", "hide-input"], []]
    cells[0].metadata["tags"] = ["parameters", "hide-cell"]  # folded as the chapter's own cell is
    cells[1].metadata["tags"] = ["injected-parameters"]
    nbformat.write(nbformat.v4.new_notebook(cells=cells), nb)
    assert runner.hide_injected_parameters(nb) == 1
    assert nbformat.read(nb, as_version=4).cells[1].metadata["tags"] == ["injected-parameters", "hide-cell"]


def test_every_chapter_can_set_itself_up_on_colab():
    """The Colab launch button opens a bare notebook: its second cell fetches the repository named in _config.yml
    (the button's repository) at the book's commit REV and installs erc_core from it; hidden in the book, the same
    in every chapter, and unpinned (REV = None) in git."""
    import yaml

    url = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]["url"]
    cell = _colab_cells()[0]
    assert f'REPO = "{url}"' in cell and "\nREV = None" in cell
    assert '"fetch", "-q", "--depth", "1", REPO, REV' in cell and '"checkout", "-q", "FETCH_HEAD"' in cell


def test_unpinned_colab_cell_downloads_nothing(tmp_path):
    """Without erc_core (python -I -S) and with REV = None the cell prints why and runs no git or pip."""
    import subprocess

    proc = subprocess.run([sys.executable, "-I", "-S", "-c", _colab_cells()[0]], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, env={"PATH": "/nonexistent"})
    assert proc.returncode == 0, proc.stderr
    assert "nothing was downloaded or installed" in proc.stdout and "placeholder" in proc.stdout
    assert list(tmp_path.iterdir()) == []


def test_build_pins_the_colab_cell_to_its_commit(tmp_path):
    """The staged copy gets REV = the build's commit; a placeholder repository URL (or a dirty tree) pins nothing."""
    import shutil
    import subprocess

    nb = tmp_path / "ch.ipynb"
    shutil.copy(ROOT / "notebooks/01_entropy_ratio.ipynb", nb)
    rev = "0123456789abcdef0123456789abcdef01234567"
    runner.pin_colab_cell(nb, rev)
    pinned = nbformat.read(nb, as_version=4)
    assert f'\nREV = "{rev}"' in pinned.cells[1].source and pinned.cells[1].id == runner.COLAB_CELL_ID
    assert pinned.cells[2:] == nbformat.read(ROOT / "notebooks/01_entropy_ratio.ipynb", as_version=4).cells[2:]
    book = tmp_path / "book"
    book.mkdir()
    git = lambda *a: subprocess.run(["git", "-C", str(book), *a], check=True, capture_output=True)  # noqa: E731
    git("init", "-q")
    (book / "_config.yml").write_text("repository:\n  url: https://example.org/x\n  placeholder: true\n")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    assert runner.colab_revision(book) is None  # placeholder URL: never point readers at it
    (book / "_config.yml").write_text("repository:\n  url: https://example.org/x\n  placeholder: false\n")
    assert runner.colab_revision(book) is None  # uncommitted change: the build is not that commit
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qam", "y")
    head = subprocess.run(["git", "-C", str(book), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert runner.colab_revision(book) == head
    assert yaml_placeholder(ROOT) is True  # this repository's URL is still a placeholder


def yaml_placeholder(root: Path):
    import yaml

    return yaml.safe_load((root / "_config.yml").read_text())["repository"].get("placeholder")


def test_misspelt_parameter_fails_naming_it(tmp_path, capsys):
    rc = runner.main(["--only", "notebooks/01_entropy_ratio", "-p", "stepz", "3", "--stage", str(tmp_path / "s"),
                      "--cache", str(tmp_path / "c")])
    err = capsys.readouterr().err
    assert rc == 2 and "'stepz'" in err and "notebooks/01_entropy_ratio.ipynb: seed, device" in err
    assert not (tmp_path / "c").exists()  # nothing executed
    assert "seed" in runner.notebook_parameters(ROOT / "notebooks/05_erc_dapo_tiny_lm.ipynb")
    runner.check_parameters({"steps": 3}, runner.toc_notebooks(ROOT))  # a parameter of some chapters: fine


def test_notebooks_execute_side_by_side(tmp_path, monkeypatch, capsys):
    """--jobs 2: two kernels at once (a barrier that only two concurrent executions pass), staged in toc order;
    --jobs 0 is refused before anything runs."""
    import threading

    barrier = threading.Barrier(2, timeout=20)

    def fake_execute(nb, out, params, kernel, timeout):
        barrier.wait()  # BrokenBarrierError (the notebook FAILS) unless the other one runs at the same time
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(nb, out)

    monkeypatch.setattr(runner, "execute", fake_execute)
    only = ["--only", "notebooks/01_entropy_ratio", "notebooks/02_ppo_clip_blind_spot"]
    dirs = ["--stage", str(tmp_path / "s"), "--cache", str(tmp_path / "c")]
    assert runner.main([*only, *dirs, "--jobs", "0"]) == 2 and "--jobs must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "c").exists()
    assert runner.main([*only, *dirs, "--jobs", "2"]) == 0
    report = [ln for ln in capsys.readouterr().out.splitlines() if "papermill" in ln]
    assert [ln.split("|")[1].strip() for ln in report] == [o + ".ipynb" for o in only[1:]]
    assert all((tmp_path / "s" / (o + ".ipynb")).exists() for o in only[1:])


def test_cache_key_includes_the_python_environment():
    import torch

    nb = ROOT / "notebooks/01_entropy_ratio.ipynb"
    env = runner.environment_fingerprint()
    assert f"torch=={torch.__version__}" in env and sys.version.split()[0] in env
    assert runner.source_hash(nb, {}, "k", env) == runner.source_hash(nb, {}, "k", env)
    upgraded = env.replace(f"torch=={torch.__version__}", "torch==99.0")
    assert runner.source_hash(nb, {}, "k", upgraded) != runner.source_hash(nb, {}, "k", env)


def test_cache_key_covers_exactly_the_erc_core_modules_a_chapter_imports(tmp_path):
    """A chapter's cache key covers the erc_core files it imports, closed over erc_core's own (also deferred,
    relative) imports: chapter 8 depends on the trainer through the study runner; a chapter that imports only the
    toy policies and their figures does not."""
    rel = lambda nb: {p.relative_to(ROOT).as_posix() for p in runner.erc_core_sources(ROOT / nb)}  # noqa: E731
    ch8 = rel("notebooks/08_claims.ipynb")
    toy_nb = tmp_path / "toy.ipynb"
    toy_nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": [
        "from erc_core import Band\n", "from erc_core.book import plots, toy\n"]}]}))
    toy_only = rel(toy_nb)
    assert {"erc_core/__init__.py", "erc_core/book/toy.py", "erc_core/book/plots.py", "erc_core/losses.py"} <= toy_only
    assert not {"erc_core/rl/study.py", "erc_core/book/plots_study.py", "erc_core/rl/train.py"} & toy_only
    # widgets import the run readers inside a function: a chapter using them depends on the trainer too
    assert "erc_core/rl/train.py" in rel("notebooks/02_ppo_clip_blind_spot.ipynb")
    assert {"erc_core/rl/study.py", "erc_core/book/plots_study.py", "erc_core/rl/train.py",
            "erc_core/rl/models.py"} <= ch8
    nb = tmp_path / "nb.ipynb"
    nb.write_text(json.dumps({"cells": [{"cell_type": "code", "source": ["%matplotlib inline\n",
                  "from erc_core import losses\n", "import erc_core.integrations.trl as t\n"]}]}))
    got = rel(nb)
    assert {"erc_core/losses.py", "erc_core/integrations/__init__.py", "erc_core/integrations/trl.py"} <= got
    assert "erc_core/rl/study.py" not in got


def test_failed_build_removes_the_old_html(tmp_path):
    """book.sh exits non-zero when a step fails and leaves no older _build/html behind."""
    import os
    import shutil
    import subprocess

    (tmp_path / "scripts").mkdir()
    shutil.copy(ROOT / "scripts/book.sh", tmp_path / "scripts/book.sh")
    (tmp_path / "scripts/env.sh").write_text("")  # no venv set-up in the test
    (tmp_path / "scripts/run_notebooks.py").write_text("import sys\nsys.exit(2)  # a chapter failed\n")
    (tmp_path / "scripts/vendor_js.sh").write_text("exit 0  # JavaScript already vendored\n")
    (tmp_path / "_build/html").mkdir(parents=True)
    (tmp_path / "_build/html/index.html").write_text("<p>an older book</p>")
    env = dict(os.environ, PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    proc = subprocess.run(["bash", str(tmp_path / "scripts/book.sh")], capture_output=True, text=True, env=env,
                          timeout=120)
    assert proc.returncode != 0 and "FAILED" in proc.stderr
    assert not (tmp_path / "_build/html").exists()


def test_report_table_has_one_row_per_notebook():
    text = runner.report([("notebooks/a.ipynb", "papermill", 1.234, "ok"), ("b.ipynb", "cache", 0.0, "FAILED")])
    lines = text.splitlines()
    assert lines[0].startswith("| Notebook") and len(lines) == 4
    assert "1.2" in lines[2] and "FAILED" in lines[3]


# ---------------------------------------------------------------------------------------------- chapters
# Each chapter ran once in the session's tiny book (tests/conftest.py, parameters in tests/tiny_book.yaml). The
# chapters assert their own claims in their check cells (a failing check fails their execution); these tests
# check what the chapters do not check themselves: the sizes they ran with, the figures and the widget state.
def test_chapter_01_gates_some_tokens_of_the_toy_drift(tiny_book):
    nb = tiny_book.notebook("01_entropy_ratio")
    res = book_results(nb)
    assert 0 < res["n_gated"] < res["n_response_tokens"] <= 3 * 10
    assert res["loss_erc"] == pytest.approx(res["loss_ppo"])
    assert res["rho_collapse_last"] < 0.95 < 1.05 < res["rho_explode_last"]
    assert_figures_captioned(nb)
    assert_sliders_precomputed(nb)
    assert len([o for o in outputs(nb, "execute_result") if "application/vnd.jupyter.widget-view+json" in o.data])


def test_chapter_02_ppo_clip_misses_the_unsampled_drift(tiny_book):
    nb = tiny_book.notebook("02_ppo_clip_blind_spot")
    res = book_results(nb)
    assert res["n_updates"] == 12 and 0 < res["n_positions"] <= 3 * 8
    assert len(res["erc_clipfrac"]) == 12 and res["erc_clipfrac"][0] == 0
    assert res["max_rho_dev_erc"] < res["max_rho_dev_ppo"] and res["mean_rho_dev_erc"] < res["mean_rho_dev_ppo"]
    s_lo, s_hi = res["sampled_ratio_ppo"]
    assert 0.8 / math.exp(0.128) <= s_lo < 1 < s_hi <= 1.28 * math.exp(0.128)  # the band, up to one step
    assert res["late_drift_unsampled"] > res["late_drift_sampled"] + 0.05
    assert_figures_captioned(nb)


def test_chapter_04_builds_dapo_piece_by_piece(tiny_book):
    nb = tiny_book.notebook("04_grpo_to_dapo")
    res = book_results(nb)
    assert res["group_size"] == 4 and len(res["adv_correct_grpo"]) == 3
    assert res["adv_correct_drgrpo"] == pytest.approx([0.75, 0.5, 0.25])
    stop = res["grad_stop_ratio"]
    assert stop["DAPO (0.2, 0.28)"] > stop["PPO (0.2, 0.2)"] > 1.19
    assert res["share_token_mean"] == pytest.approx([4 / 36, 32 / 36], rel=1e-5)
    assert res["share_seq_mean_token_mean"] == pytest.approx([0.5, 0.5])
    assert res["kept_fraction"][0] == 0 == res["kept_fraction"][-1] and res["penalty_at_max_len"] == -1
    assert_figures_captioned(nb)


def test_chapter_03_replays_one_step_token_by_token(tiny_book):
    nb = tiny_book.notebook("03_erc_gate")
    res = book_results(nb)
    assert res["updates_per_step"] == 4
    assert 0 < res["n_gated"] == res["n_gated_low"] + res["n_gated_high"] < res["n_tokens"]
    assert res["outside_band_per_update"][0] == 0 < res["outside_band_per_update"][-1]
    assert res["loss_erc"] == pytest.approx(res["loss_ppo"])
    flow = res["flow"]
    assert flow["grad"] + flow["erc_gated"] + flow["ppo_clipped"] + flow["both"] == flow["active"]
    assert res["penalty_per_update"][0] == 0 and math.isfinite(res["mean_old_entropy_gated"])
    assert res["seed"] == 0 and res["hardware"]["threads"] >= 1
    assert_figures_captioned(nb)
    assert_sliders_precomputed(nb)


@pytest.mark.parametrize("stem,mode", [("05_erc_dapo_tiny_lm", "dapo"), ("06_gppo_erc", "gppo")])
def test_chapters_05_06_train_base_and_erc_from_one_start(tiny_book, stem, mode):
    nb = tiny_book.notebook(stem)
    res = book_results(nb)
    assert res["loss_mode"] == mode and res["clip"] == ([0.2, 0.28] if mode == "dapo" else [0.2, 0.2])
    assert res["updates_per_step"] == 4 and len(res["erc_clipfrac_erc"]) == 4
    assert all(v == 0 for v in res["erc_clipfrac_base"]) and max(res["ratio_outside_base"]) > 0
    assert sum(v > 0 for v in res["erc_clipfrac_erc"]) > 2
    assert res["eval_acc_start"][0] == res["eval_acc_start"][1] and res["reward_base"][0] == res["reward_erc"][0]
    assert res["n_gated_erc"] > 0 and res["mean_old_entropy_gated"] >= 0
    if mode == "dapo":
        assert res["onpolicy_erc_clipfrac"] == [0.0, 0.0]
    assert_figures_captioned(nb)


def test_chapter_08_analyses_the_shipped_grids_and_runs_a_live_one(tiny_book):
    nb = tiny_book.notebook("08_claims")
    res = book_results(nb)
    # the shipped v2 tables were read (not rerun): 5 methods x 10 seeds, 6 stress variants x 5 seeds
    assert not res["rerun"] and res["runs"] == {"core": 50, "offpolicy": 60, "others": 55}
    assert res["family_size"] >= 16 and res["verdicts"]["5. ERC is inactive on-policy"] == "holds exactly"
    # the live grid ran here with the tiny book's parameters
    assert res["live_runs"] == 4 and res["live_steps"] == 4 and res["live_onpolicy_max_abs_diff"] == 0
    assert_figures_captioned(nb)


@pytest.mark.notebook
def test_runner_names_the_failing_notebook(tmp_path, capsys):
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# Broken"),
                                         nbformat.v4.new_code_cell("raise RuntimeError('boom')")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, tmp_path / "broken.ipynb")
    (tmp_path / "intro.md").write_text("# Intro\n")
    (tmp_path / "_toc.yml").write_text("format: jb-book\nroot: intro\nchapters:\n  - file: broken\n")
    rc = runner.main(["--root", str(tmp_path), "--kernel", kernel_name()])
    captured = capsys.readouterr()
    assert rc == 1
    assert "FAILED: broken.ipynb" in captured.err and "RuntimeError" in captured.err
    assert "| broken.ipynb" in captured.out and "FAILED" in captured.out
    assert (tmp_path / "_build" / "src" / "intro.md").exists()
    assert not (tmp_path / "_build" / "src" / "broken.ipynb").exists()


# ---------------------------------------------------------------------------------------------- built HTML
class _Loads(HTMLParser):
    """Collects what a page makes the browser fetch: script/img/iframe src and link href (not <a> links, nor
    rel=canonical|next|prev|index|search metadata)."""

    def __init__(self):
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag in ("script", "img", "iframe", "source", "audio", "video") and a.get("src"):
            self.urls.append(a["src"])
        elif tag == "link" and a.get("href") and a.get("rel") not in ("next", "prev", "index", "search", "canonical"):
            self.urls.append(a["href"])


def test_built_pages_load_nothing_from_other_hosts(book_html):
    offenders = {}
    for page in book_html.rglob("*.html"):
        parser = _Loads()
        parser.feed(page.read_text(encoding="utf-8"))
        external = [u for u in parser.urls if urlparse(u).scheme in ("http", "https") or u.startswith("//")]
        # @import / url(...) in inline styles
        external += re.findall(r"""url\(\s*['"]?(https?://[^'")]+)""", page.read_text(encoding="utf-8"))
        if external:
            offenders[str(page.relative_to(book_html))] = external
    assert not offenders, offenders


def test_built_chapter_serves_widgets_and_mathjax_locally(book_html):
    page = (book_html / "notebooks" / "01_entropy_ratio.html").read_text(encoding="utf-8")
    for path in ("_static/require.js", "_static/embed-amd.js", "_static/mathjax/tex-mml-chtml.js"):
        assert f'src="../{path}' in page, path
        assert (book_html / path).stat().st_size > 10_000, path
    assert list((book_html / "_static" / "mathjax" / "output" / "chtml" / "fonts").rglob("*.woff"))
    assert page.count('src="../_static/embed-amd.js') == 1, "embed-amd.js loaded twice (sliders drawn twice)"
    assert "application/vnd.jupyter.widget-state+json" in page
    assert page.count("application/vnd.jupyter.widget-view+json") == 1


def test_every_figure_has_its_caption_as_alt_text(book_html):
    """Screen readers and broken images get the caption's words, not a hash file name."""
    bad = {}
    for page in [*sorted((book_html / "notebooks").glob("*.html")), book_html / "book" / "intro.html"]:
        imgs = re.findall(r"<img\b[^>]*>", page.read_text(encoding="utf-8"))
        alts = [re.search(r'alt="([^"]*)"', tag) for tag in imgs if "_images/" in tag]
        missing = [a.group(1)[:40] if a else None for a in alts if not a or len(a.group(1)) < 20
                   or a.group(1).endswith((".png", ".svg"))]
        if missing:
            bad[page.name] = missing
    assert not bad, bad


def test_no_repository_or_launch_buttons_while_the_repository_is_a_placeholder(book_html):
    """_config.yml's repository.placeholder is the one switch: while it is true no page links to the repository,
    its issues or edit pages, nor to Binder or Colab (they would open a repository that does not exist)."""
    import yaml

    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    if not repo.get("placeholder", True):
        pytest.skip("repository.placeholder is false: the buttons are meant to be there")
    hosts = (repo["url"].rstrip("/"), "colab.research.google.com", "mybinder.org")
    offenders = {str(p.relative_to(book_html)): [h for h in hosts if h in p.read_text(encoding="utf-8")]
                 for p in book_html.rglob("*.html")}
    assert not {k: v for k, v in offenders.items() if v}


if __name__ == "__main__":
    sys.exit(pytest.main([__file__, "-v"]))


def test_built_chapters_fold_away_their_parameters(book_html):
    """Both parameters cells of a chapter, its own and the one papermill injects with the build's values, are
    folded away ("Show code cell source"): the first code a reader sees is the chapter's own."""
    for page in sorted((book_html / "notebooks").glob("*.html")):
        cells = re.findall(r'<div class="cell ([^"]*)"', page.read_text(encoding="utf-8"))
        params = [c.split() for c in cells if {"tag_parameters", "tag_injected-parameters"} & set(c.split())]
        assert any("tag_injected-parameters" in c for c in params), f"{page.name}: no injected parameters cell"
        shown = [c for c in params if not {f"tag_{t}" for t in runner.FOLDS} & set(c)]
        assert not shown, f"{page.name}: parameters cells shown in full: {shown}"


def _chapter_markdown(path: Path) -> str:
    if path.suffix == ".ipynb":
        return "\n\n".join(c.source for c in nbformat.read(path, as_version=4).cells if c.cell_type == "markdown")
    return path.read_text(encoding="utf-8")


def test_every_chapter_has_goals_takeaways_and_exercises_with_hidden_solutions():
    """Each numbered chapter (_toc.yml's "Chapters" part, the TRL/verl page included) opens with what the reader
    will learn and what it assumes, and ends with key takeaways and exercises, each with a folded solution."""
    import yaml

    toc = yaml.safe_load((ROOT / "_toc.yml").read_text())
    (part,) = [p for p in toc["parts"] if p["caption"] == "Chapters"]
    files = [next(ROOT.glob(c["file"] + ".*")) for c in part["chapters"]]
    assert len(files) >= 9 and files[-1].name == "integrations.md"
    for path in files:
        text = _chapter_markdown(path)
        for part_text in ("**What you will learn**", "**What it assumes**", "```{admonition} Key takeaways",
                          "## Exercises"):
            assert part_text in text, f"{path.name}: no {part_text!r}"
        exercises = re.split(r"\n\*\*Exercise \d+", text.split("## Exercises", 1)[1])[1:]
        assert len(exercises) >= 3, f"{path.name}: {len(exercises)} exercises"
        for i, ex in enumerate(exercises, 1):
            assert re.search(r"```\{admonition\} Solution\n:class: dropdown\n", ex), f"{path.name}: exercise {i}"


def test_root_page_redirects_with_the_books_icon(tmp_path):
    """The site's root page keeps jupyter-book's redirect and names the icon (no request for /favicon.ico)."""
    (tmp_path / "index.html").write_text('<meta http-equiv="Refresh" content="0; url=book/intro.html" />')
    for _ in range(2):  # a rebuild that kept the page rewrites it the same
        runner.write_root_page(tmp_path)
        page = (tmp_path / "index.html").read_text()
        assert 'content="0; url=book/intro.html"' in page and 'href="_static/favicon.svg"' in page
        assert '<a href="book/intro.html">' in page
