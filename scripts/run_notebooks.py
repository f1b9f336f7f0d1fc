"""Execute the book's chapter notebooks with papermill and stage the sources for ``jupyter-book build``.

The notebook list comes from ``_toc.yml`` (every ``file:`` entry that resolves to an ``.ipynb``). The staging
folder (default ``_build/src``) receives ``_config.yml``, ``_toc.yml``, ``book/`` and the EXECUTED notebooks at
the paths ``_toc.yml`` names, so the HTML build runs with execution off and the notebooks in git keep no outputs.

The markdown pages run no code: their figures are drawn here into the stage (:func:`render_page_figures`; the
intro's ``book/hero.png``).

An executed copy is reused when the notebook, the parameters, the ``erc_core`` files it imports (closed over
erc_core's own imports, so a chapter re-executes only when what it uses changed), the ``configs/``,
``grids/`` and ``data/`` files and the Python environment (Python version and every installed package's version)
are unchanged (``--force`` re-executes). A ``-p NAME`` that no selected notebook's ``parameters`` cell defines is
an error listing their parameters. The staged copies get the build's commit as ``REV`` in their hidden Colab
set-up cell (unless ``repository.placeholder`` in ``_config.yml`` is true or the work tree has uncommitted
changes). Notebooks execute side by side, one kernel each, ``--jobs`` at a time (default: the CPU cores; more
processes than cores where a chapter trains runs side by side, which measured faster here than leaving cores idle).
Prints a per-notebook time report; exits 1 naming the notebooks that failed.

    python scripts/run_notebooks.py [--root DIR] [--stage DIR] [--kernel NAME] [--force] [-p NAME VALUE ...]
                                    [--only NB ...] [--jobs N]
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import importlib.metadata
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ("_config.yml", "_toc.yml", "book")  # copied into the stage as they are


def toc_files(toc: dict) -> list[str]:
    """Every ``file:`` entry of a jupyter-book ``_toc.yml`` (root first, then depth-first), without suffix."""
    out: list[str] = [toc["root"]] if "root" in toc else []

    def walk(node: object) -> None:
        if isinstance(node, dict):
            if "file" in node:
                out.append(str(node["file"]))
            for key in ("parts", "chapters", "sections"):
                for child in node.get(key, []) or []:
                    walk(child)
        elif isinstance(node, list):
            for child in node:
                walk(child)

    walk({k: v for k, v in toc.items() if k != "root"})
    return out


def toc_pages(root: Path = ROOT) -> list[Path]:
    """Every page of ``_toc.yml`` as a path relative to ``root`` with its suffix (.ipynb or .md), in order."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = []
    for entry in toc_files(toc):
        p = Path(entry)
        candidates = [p] if p.suffix else [p.with_suffix(".ipynb"), p.with_suffix(".md")]
        hit = next((c for c in candidates if (root / c).exists()), None)
        if hit is None:
            raise FileNotFoundError(f"_toc.yml names {entry!r}, which does not exist under {root}")
        pages.append(hit)
    return pages


def toc_notebooks(root: Path = ROOT) -> list[Path]:
    """Notebook paths (relative to ``root``) in ``_toc.yml`` order."""
    return [p for p in toc_pages(root) if p.suffix == ".ipynb"]


def environment_fingerprint() -> str:
    """The Python environment the chapters execute in: Python version and implementation, and every installed
    distribution with its version (``pip freeze`` without calling pip), one per line, sorted."""
    dists = sorted({f"{d.metadata['Name']}=={d.version}".lower() for d in importlib.metadata.distributions()
                    if d.metadata["Name"]})
    return "\n".join([f"python {platform.python_implementation()} {sys.version.split()[0]}", *dists])


def notebook_parameters(nb: Path) -> list[str]:
    """Names assigned at the top level of a notebook's ``parameters``-tagged cell (what papermill can set)."""
    cells = json.loads(nb.read_text())["cells"]
    names: list[str] = []
    for cell in cells:
        if "parameters" in cell.get("metadata", {}).get("tags", []):
            src = "".join(cell["source"])
            src = "\n".join(ln for ln in src.splitlines() if not ln.lstrip().startswith(("%", "!")))
            for node in ast.parse(src).body:
                targets = node.targets if isinstance(node, ast.Assign) else \
                    [node.target] if isinstance(node, (ast.AnnAssign, ast.AugAssign)) else []
                for t in targets:
                    names += [n.id for n in ast.walk(t) if isinstance(n, ast.Name)]
    return names


def check_parameters(params: dict, notebooks: list[Path], root: Path = ROOT) -> None:
    """Raise ValueError naming every ``-p`` parameter that no notebook in ``notebooks`` defines, with the
    parameters each of them has (a misspelt name would otherwise be injected and ignored)."""
    known = {str(nb): notebook_parameters(root / nb) for nb in notebooks}
    unknown = sorted(set(params) - {n for names in known.values() for n in names})
    if unknown:
        listing = "\n".join(f"  {nb}: {', '.join(names) or '(no parameters cell)'}" for nb, names in known.items())
        raise ValueError(f"unknown papermill parameter(s) {unknown}: no selected notebook defines them. "
                         f"The notebooks' parameters:\n{listing}")


def colab_revision(root: Path = ROOT) -> str | None:
    """The commit the build is made from, for the chapters' Colab set-up cell; None without a ``repository`` in
    ``_config.yml`` or while its ``placeholder`` is true (nobody should install from that URL), outside git, or
    with uncommitted changes (the build would not match the commit)."""
    config = root / "_config.yml"
    repo = ((yaml.safe_load(config.read_text()) or {}).get("repository") or {}) if config.exists() else {}
    if not repo or repo.get("placeholder", False):
        return None
    try:
        git = lambda *a: subprocess.run(["git", "-C", str(root), *a], capture_output=True, text=True,  # noqa: E731
                                        check=True).stdout.strip()
        rev, dirty = git("rev-parse", "HEAD"), git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.CalledProcessError):
        return None
    return None if dirty or not re.fullmatch(r"[0-9a-f]{40}", rev) else rev


COLAB_CELL_ID = "colab-setup"


COLAB_CELL_SOURCE = ROOT / "scripts" / "colab_setup_cell.py"  # the one copy of the hidden Colab set-up cell


def place_colab_cell(nb: Path, source: Path = COLAB_CELL_SOURCE) -> bool:
    """Write ``source`` (the set-up cell's code) into notebook ``nb`` as its hidden cell ``colab-setup`` at index 1,
    replacing the one there; True when the notebook changed. ``python scripts/run_notebooks.py --place-colab-cell``
    runs it on every chapter."""
    import nbformat

    book = nbformat.read(nb, as_version=4)
    code = source.read_text().rstrip("\n")
    cells = [c for c in book.cells if c.get("id") == COLAB_CELL_ID]
    if cells and cells[0].source == code and book.cells.index(cells[0]) == 1:
        return False
    for c in cells:
        book.cells.remove(c)
    cell = nbformat.v4.new_code_cell(code, metadata={"tags": ["remove-cell"]})
    cell.id = COLAB_CELL_ID
    book.cells.insert(1, cell)
    nbformat.write(book, nb)
    return True


def alt_text_from_captions(nb: Path) -> int:
    """Give every captioned figure of the (staged) notebook ``nb`` its caption as alt text (myst-nb's
    ``mystnb.image.alt``), as plain text: MyST roles, math dollars and backticks removed. Returns how many."""
    data = json.loads(nb.read_text())
    n = 0
    for cell in data["cells"]:
        mystnb = cell.get("metadata", {}).get("mystnb", {})
        caption = mystnb.get("figure", {}).get("caption")
        if caption and not mystnb.get("image", {}).get("alt"):
            plain = re.sub(r"\{[a-z:]+\}`([^`]*)`", r"\1", caption)       # {py:func}`x` -> x
            plain = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", plain)      # [text](link) -> text
            plain = " ".join(plain.replace("$", "").replace("`", "").split())
            mystnb.setdefault("image", {})["alt"] = plain
            n += 1
    if n:
        nb.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return n


FOLDS = ("hide-input", "hide-cell", "remove-input", "remove-cell")  # myst-nb's tags that fold a cell's code away


def hide_injected_parameters(nb: Path) -> int:
    """Fold away the cell papermill injects with the build's parameters (tag ``injected-parameters``) in the
    (staged) notebook ``nb`` as the chapter's own ``parameters`` cell is folded (``hide-input`` if it is not):
    the reader sees the values on request, not as the chapter's first visible code. Returns how many cells
    were tagged."""
    data = json.loads(nb.read_text())
    tags_of = [cell.get("metadata", {}).get("tags", []) for cell in data["cells"]]
    own = next((t for tags in tags_of if "parameters" in tags for t in tags if t in FOLDS), "hide-input")
    n = 0
    for cell, tags in zip(data["cells"], tags_of):
        if "injected-parameters" in tags and not set(tags) & set(FOLDS):
            cell["metadata"]["tags"] = [*tags, own]
            n += 1
    if n:
        nb.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")
    return n


def pin_colab_cell(nb: Path, rev: str | None) -> None:
    """Write ``REV = "<rev>"`` into the Colab set-up cell (id ``colab-setup``) of the (staged) notebook ``nb``;
    None, or a notebook without that cell, is left as it is."""
    if rev is None:
        return
    data = json.loads(nb.read_text())
    cells = [c for c in data["cells"] if c.get("id") == COLAB_CELL_ID]
    if not cells:  # a page without the set-up cell
        return
    src = "".join(cells[0]["source"])
    pinned, n = re.subn(r"^REV = None\b", f"REV = {json.dumps(rev)}", src, count=1, flags=re.M)
    if n != 1:
        raise ValueError(f"{nb}: the Colab set-up cell has no 'REV = None' line to pin")
    cells[0]["source"] = pinned.splitlines(keepends=True)
    nb.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n")


def _module_file(name: str, root: Path) -> Path | None:
    """``erc_core.x.y`` -> its source file under ``root`` (module or package ``__init__``), None if not one."""
    base = root.joinpath(*name.split("."))
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.exists():
            return cand
    return None


def _imported(tree: ast.AST, package: str | None = None) -> set[str]:
    """Absolute names of the erc_core modules (and of names that may be modules) an AST imports anywhere."""
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            mod = node.module or ""
            if node.level and package:  # relative import inside erc_core
                parts = package.split(".")
                mod = ".".join(parts[:len(parts) - node.level + 1] + ([mod] if mod else []))
            names.add(mod)
            names |= {f"{mod}.{a.name}" for a in node.names}
    return {n for n in names if n == "erc_core" or n.startswith("erc_core.")}


def erc_core_sources(nb: Path, root: Path = ROOT) -> list[Path]:
    """The erc_core source files a notebook depends on: what its code cells import, closed over erc_core's own
    imports (package ``__init__`` files included), so editing a figure helper re-executes only its chapters."""
    cells = json.loads(nb.read_text())["cells"]
    code = "\n".join("\n".join(ln for ln in "".join(c["source"]).splitlines()
                               if not ln.lstrip().startswith(("%", "!")))
                     for c in cells if c["cell_type"] == "code")
    todo, files = list(_imported(ast.parse(code))), set()
    while todo:
        name = todo.pop()
        parts = name.split(".")
        for i in range(1, len(parts) + 1):  # the packages on the way are imported too
            path = _module_file(".".join(parts[:i]), root)
            if path is None or path in files:
                continue
            files.add(path)
            package = ".".join(parts[:i]) if path.name == "__init__.py" else ".".join(parts[:i - 1])
            todo += _imported(ast.parse(path.read_text()), package)
    return sorted(files)


def source_hash(nb: Path, params: dict, kernel: str, env: str | None = None) -> str:
    """Hash of what an execution depends on: the notebook, parameters, kernel name, the Python environment
    (``env``, default :func:`environment_fingerprint`), the erc_core sources it imports
    (:func:`erc_core_sources`) and the presets, grids and shipped data the chapters read."""
    h = hashlib.sha256()
    h.update(nb.read_bytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    h.update(kernel.encode())
    h.update((environment_fingerprint() if env is None else env).encode())
    inputs = [*erc_core_sources(nb), *(ROOT / "configs").glob("*.yaml"), *(ROOT / "grids").glob("*.yaml"),
              *(p for p in (ROOT / "data").rglob("*") if p.is_file())]
    for src in sorted(inputs):
        h.update(str(src.relative_to(ROOT)).encode())
        h.update(src.read_bytes())
    return h.hexdigest()


def notebook_params(path: Path) -> dict[str, dict]:
    """``{notebook stem: {parameter: value}}`` from a YAML file (the test suite's tiny book uses one)."""
    data = yaml.safe_load(Path(path).read_text()) or {}
    if not isinstance(data, dict) or not all(isinstance(v, dict) for v in data.values()):
        raise SystemExit(f"--params {path}: expected a mapping from notebook name to a mapping of parameters")
    return data


def stage_sources(stage: Path, root: Path = ROOT) -> None:
    """Fresh copy of the non-notebook book sources into ``stage`` (notebooks are added after execution)."""
    if stage.exists():
        shutil.rmtree(stage)
    stage.mkdir(parents=True)
    for name in SOURCES:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, stage / name, ignore=shutil.ignore_patterns(".ipynb_checkpoints", "__pycache__"))
        elif src.exists():
            shutil.copy2(src, stage / name)


#: The intro's figure (``book/intro.md``): both drifts of ``erc_core.book.toy.drift_ratios`` from old logits
#: ``linspace(1.5, -1.5, vocab)``, the sampled token's ratio reaching ``sampled_ratio`` after ``n_steps``.
HERO = dict(vocab=12, token=1, n_steps=8, sampled_ratio=1.1)


def hero_drifts() -> dict:
    """``erc_core.book.toy.drift_ratios`` at :data:`HERO`: ``{"collapse": (r, rho), "explode": (r, rho)}``."""
    import torch

    from erc_core.book import toy

    return toy.drift_ratios(torch.linspace(1.5, -1.5, HERO["vocab"]), HERO["token"], HERO["n_steps"],
                            sampled_ratio=HERO["sampled_ratio"])


def render_page_figures(stage: Path) -> list[Path]:
    """Draw the figures of the markdown pages into the stage (``book/hero.png``, the intro's PPO-clip vs ERC figure,
    when the stage has a ``book/intro.md``); returns the files written."""
    out = stage / "book" / "hero.png"
    if not (stage / "book" / "intro.md").exists():
        return []
    from erc_core.book import plots

    plots.fig_hero(hero_drifts()).savefig(out)
    return [out]


def execute(nb: Path, out: Path, params: dict, kernel: str, timeout: int) -> None:
    """Run notebook ``nb`` (absolute path) with papermill, cwd = its folder, into ``out``."""
    import papermill as pm

    out.parent.mkdir(parents=True, exist_ok=True)
    pm.execute_notebook(
        str(nb), str(out), parameters=params, kernel_name=kernel, cwd=str(nb.parent),
        progress_bar=False, log_output=False, request_save_on_cell_execute=False, execution_timeout=timeout,
        extra_arguments=["--IPKernelApp.log_level=CRITICAL"],  # no kernel log lines (transport, shutdown) in the log
    )


def build_html(stage: Path, path_output: Path) -> subprocess.CompletedProcess:
    """``jupyter-book build`` of a staged book into ``path_output/_build/html``: execution off, every page
    rebuilt, Sphinx warnings are errors (-W -n), all of them reported (--keep-going)."""
    cli = "import sys; from jupyter_book.cli.main import main; sys.argv[0] = 'jupyter-book'; main()"
    cmd = [sys.executable, "-c", cli, "build", str(stage), "--path-output", str(path_output),
           "--builder", "html", "--all", "-W", "-n", "--keep-going", "--quiet"]
    return subprocess.run(cmd, capture_output=True, text=True)


ROOT_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta http-equiv="Refresh" content="0; url={target}">
<link rel="icon" href="_static/favicon.svg" type="image/svg+xml">
<title>ERC Book</title></head>
<body><p><a href="{target}">ERC Book</a></p></body></html>
"""


def write_root_page(html: Path) -> None:
    """The site's root ``index.html``: jupyter-book's bare redirect to the first page, plus the book's icon (a
    browser otherwise asks for ``/favicon.ico``, a failed request) and a link for readers without redirects."""
    page = html / "index.html"
    m = re.search(r'url=([^"\s]+)"', page.read_text(encoding="utf-8"))
    if m is None:  # not a redirect (a root page of its own): leave it, only stamp the build's time
        page.touch()
        return
    page.write_text(ROOT_PAGE.format(target=m.group(1)), encoding="utf-8")


def report(rows: list[tuple[str, str, float, str]]) -> str:
    """A QuantEcon-style execution report: | Notebook | Method | Run Time (s) | Status |."""
    head = ("Notebook", "Method", "Run Time (s)", "Status")
    cells = [head] + [(n, m, f"{t:.1f}", s) for n, m, t, s in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(4)]
    line = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(head), sep] + [line(r) for r in cells[1:]])


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--root", type=Path, default=ROOT, help="book root holding _toc.yml (default: the repo)")
    ap.add_argument("--stage", type=Path, default=None, help="staging folder for the build (ROOT/_build/src)")
    ap.add_argument("--cache", type=Path, default=None, help="executed-notebook cache (ROOT/_build/executed)")
    ap.add_argument("--kernel", default="erc-book", help="Jupyter kernel (env.sh registers erc-book in .venv)")
    ap.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"),
                    help="papermill parameter for every notebook (VALUE parsed as YAML)")
    ap.add_argument("--params", type=Path, default=None, metavar="YAML",
                    help="per-notebook papermill parameters: a mapping from notebook name (e.g. 03_erc_gate) to "
                         "a mapping of parameters, applied over -p")
    ap.add_argument("--place-colab-cell", action="store_true",
                    help=f"write {COLAB_CELL_SOURCE.relative_to(ROOT)} into every chapter as its hidden set-up cell "
                         "and exit")
    ap.add_argument("--html", type=Path, default=None, metavar="DIR",
                    help="then build the staged book to DIR/_build/html (jupyter-book, -W -n)")
    ap.add_argument("--only", nargs="+", default=None, help="run only these notebooks (paths as in _toc.yml)")
    ap.add_argument("--force", action="store_true", help="re-execute even if a cached copy is up to date")
    ap.add_argument("--timeout", type=int, default=600, help="per-cell timeout in seconds")
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1  # (not on macOS)
    ap.add_argument("--jobs", type=int, default=cores, metavar="N",
                    help="notebooks executed side by side (default: the CPU cores this process may use)")
    return ap.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.jobs < 1:
        print(f"[run_notebooks] --jobs must be >= 1, got {args.jobs}", file=sys.stderr)
        return 2
    root = args.root.resolve()
    stage = args.stage or root / "_build" / "src"
    cache = args.cache or root / "_build" / "executed"
    params = {name: yaml.safe_load(value) for name, value in args.parameter}
    per_notebook = notebook_params(args.params) if args.params else {}
    notebooks = toc_notebooks(root)
    if args.place_colab_cell:
        for nb in notebooks:
            print(f"[run_notebooks] {nb}: {'updated' if place_colab_cell(root / nb) else 'unchanged'}")
        return 0
    if args.only:
        wanted = {str(Path(o).with_suffix("")) for o in args.only}
        notebooks = [nb for nb in notebooks if str(nb.with_suffix("")) in wanted]
    try:
        unknown = set(per_notebook) - {nb.stem for nb in toc_notebooks(root)}
        if unknown:
            raise ValueError(f"--params {args.params}: no notebook named {sorted(unknown)} in _toc.yml")
        check_parameters(params, notebooks, root)
        for nb in notebooks:
            check_parameters(per_notebook.get(nb.stem, {}), [nb], root)
    except ValueError as e:
        print(f"[run_notebooks] {e}", file=sys.stderr)
        return 2
    env = environment_fingerprint()
    rev = colab_revision(root)
    print(f"[run_notebooks] Colab set-up cell pinned to {rev}" if rev else
          "[run_notebooks] Colab set-up cell left unpinned (REV = None): repository.placeholder is true, or the "
          "tree is not a clean git checkout", flush=True)
    stage_sources(stage, root)
    render_page_figures(stage)
    for page in toc_pages(root):  # markdown pages outside book/ (notebooks come after execution)
        if page.suffix != ".ipynb" and not (stage / page).exists():
            (stage / page).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(root / page, stage / page)
    rows, failed = [], []
    t0 = time.perf_counter()
    stamp = lambda nb: cache / (str(nb) + ".sha256")  # noqa: E731 - the executed copy's cache key
    todo = {}  # notebooks to execute: {nb: (params, cache key)}
    for nb in notebooks:
        nb_params = {**params, **per_notebook.get(nb.stem, {})}
        key = source_hash(root / nb, nb_params, args.kernel, env)
        if args.force or not (cache / nb).exists() or not stamp(nb).exists() or stamp(nb).read_text() != key:
            stamp(nb).unlink(missing_ok=True)
            todo[nb] = (nb_params, key)

    def run(nb: Path) -> tuple[str, float]:
        """Execute one notebook (its own kernel process); returns its status and seconds."""
        print(f"[run_notebooks] executing {nb} ...", flush=True)
        start = time.perf_counter()
        try:
            execute(root / nb, cache / nb, todo[nb][0], args.kernel, args.timeout)
            stamp(nb).write_text(todo[nb][1])
            return "ok", time.perf_counter() - start
        except Exception as exc:  # papermill's PapermillExecutionError names the cell and the exception
            print(f"[run_notebooks] {nb} FAILED: {exc}", file=sys.stderr, flush=True)
            return "FAILED", time.perf_counter() - start

    # the kernels run side by side (each a process); the pool's threads only wait for them
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        done = dict(zip(todo, pool.map(run, todo)))
    for nb in notebooks:
        status, t = done.get(nb, ("ok", 0.0))
        rows.append((str(nb), "papermill" if nb in done else "cache", t, status))
        if status != "ok":
            failed.append(str(nb))
            continue
        (stage / nb).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(cache / nb, stage / nb)
        pin_colab_cell(stage / nb, rev)
        alt_text_from_captions(stage / nb)
        hide_injected_parameters(stage / nb)
    print(report(rows))
    print(f"[run_notebooks] {len(notebooks)} notebook(s) in {time.perf_counter() - t0:.1f} s; staged in {stage}")
    if failed:
        print(f"[run_notebooks] FAILED: {', '.join(failed)} (partial output in {cache})", file=sys.stderr)
        return 1
    if args.html:
        t_html = time.perf_counter()
        print("[run_notebooks] building HTML (execution off, fresh environment, -W -n --keep-going)", flush=True)
        proc = build_html(stage, args.html)
        if proc.returncode != 0:
            print(proc.stdout[-6000:] + proc.stderr[-6000:], file=sys.stderr)
            print("[run_notebooks] HTML build FAILED: Sphinx warnings are errors here (see above)", file=sys.stderr)
            return 1
        write_root_page(args.html / "_build" / "html")  # also the build's time (Sphinx keeps unchanged files)
        print(f"[run_notebooks] HTML built in {time.perf_counter() - t_html:.1f} s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
