"""The three layers of erc_core and their extras (pyproject.toml).

- core (``erc_core/*.py``): the project's ``dependencies`` (torch);
- RL (``erc_core/rl/``): core + the ``rl`` extra;
- book (``erc_core/book/``): core + the ``book`` extra (which includes ``rl``).

Each layer is imported in a fresh interpreter where a ``sys.meta_path`` filter hides every top-level package that
its dependency lists (closed over the installed distributions' own requirements) do not bring, as in an
environment with only that extra installed, and hides the layers above it. Static checks read every import of
every module (deferred imports inside functions too): none of a higher layer, none of an undeclared package.
"""

from __future__ import annotations

import ast
import json
import re
import subprocess
import sys
import tomllib
from importlib import metadata
from pathlib import Path

import pytest
from packaging.markers import default_environment
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "erc_core"
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
PROJECT = PYPROJECT["project"]["name"]

#: layer -> (extras it installs, the erc_core subpackages it must not import)
LAYERS = {"core": ((), ("erc_core.rl", "erc_core.book")), "rl": (("rl",), ("erc_core.book",)), "book": (("book",), ())}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _requirements(extras) -> list[Requirement]:
    """The project's dependencies plus those of ``extras``, self-references (``erc-core[rl]``) expanded."""
    reqs, todo, seen = [Requirement(r) for r in PYPROJECT["project"]["dependencies"]], list(extras), set()
    while todo:
        extra = todo.pop()
        if extra in seen:
            continue
        seen.add(extra)
        for r in map(Requirement, PYPROJECT["project"]["optional-dependencies"][extra]):
            if _norm(r.name) == _norm(PROJECT):
                todo += sorted(r.extras)
            else:
                reqs.append(r)
    return reqs


def _distributions(extras) -> set[str]:
    """Normalised names of the installed distributions the layer's requirements bring, closed over their own
    (marker-free or marker-true, non-extra) requirements."""
    env, dists, todo = default_environment(), set(), _requirements(extras)
    while todo:
        r = todo.pop()
        name = _norm(r.name)
        if name in dists or (r.marker and not r.marker.evaluate({**env, "extra": ""})):
            continue
        try:
            requires = metadata.requires(r.name) or []
        except metadata.PackageNotFoundError:
            continue  # not installed: nothing to allow
        dists.add(name)
        for extra in r.extras:  # e.g. "pkg[socks]": the requirements of that extra too
            todo += [q for q in map(Requirement, requires) if q.marker and q.marker.evaluate({**env, "extra": extra})]
        todo += [q for q in map(Requirement, requires) if not q.marker or q.marker.evaluate({**env, "extra": ""})]
    return dists


def allowed(extras) -> tuple[list[str], list[str]]:
    """Top-level import names (stdlib and erc_core are always allowed) and distribution names of a layer."""
    dists = _distributions(extras)
    tops = sorted(top for top, owners in metadata.packages_distributions().items()
                  if any(_norm(d) in dists for d in owners))
    return tops, sorted(dists)


def layer_modules(layer: str) -> list[str]:
    """Every module of a layer, found on disk (the core's ``integrations`` need their own extras: not here)."""
    if layer == "core":
        return ["erc_core"] + [f"erc_core.{p.stem}" for p in sorted(PKG.glob("*.py")) if p.stem != "__init__"]
    return [f"erc_core.{layer}"] + [f"erc_core.{layer}.{p.stem}" for p in sorted((PKG / layer).glob("*.py"))
                                    if p.stem != "__init__"]


_CHILD = r"""
import importlib, json, re, sys
allowed, dists, forbidden, modules = json.loads(sys.argv[1])
dists = set(dists)
allowed = set(allowed) | set(sys.stdlib_module_names) | {"erc_core"}
hidden = []

class Hide:
    '''Wraps a meta-path finder: a hidden top-level package (or a forbidden erc_core layer) is not found.'''
    def __init__(self, finder):
        self.finder = finder
    def find_spec(self, name, path=None, target=None):
        top = name.partition(".")[0]
        layer_above = any(name == f or name.startswith(f + ".") for f in forbidden)
        if (top not in allowed and not top.startswith("_sysconfigdata")) or layer_above:
            hidden.append(name)
            return None
        find = getattr(self.finder, "find_spec", None)
        return find(name, path, target) if find else None
    def find_distributions(self, context=None):
        '''importlib.metadata asks the finders too: only the layer's distributions are installed.'''
        find = getattr(self.finder, "find_distributions", None)
        for d in (find(context) if find and context is not None else find() if find else ()):
            name = d.metadata["Name"] or ""
            if re.sub(r"[-_.]+", "-", name).lower() in dists or name.replace("_", "-").lower() == "erc-core":
                yield d
    def invalidate_caches(self):
        getattr(self.finder, "invalidate_caches", lambda: None)()

sys.meta_path[:] = [Hide(f) for f in sys.meta_path]
for m in modules:
    try:
        importlib.import_module(m)
    except ImportError as e:
        print(f"{m}: {type(e).__name__}: {e}")
        sys.exit(1)
print(json.dumps(sorted({n.partition(".")[0] for n in hidden})))
"""


@pytest.mark.parametrize("layer", list(LAYERS))
def test_each_layer_imports_with_only_its_extras(layer):
    extras, forbidden = LAYERS[layer]
    modules = layer_modules(layer)
    arg = json.dumps([*allowed(extras), list(forbidden), modules])
    proc = subprocess.run([sys.executable, "-c", _CHILD, arg], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 0, (f"layer {layer!r} (extras {list(extras)}) does not import with only its "
                                  f"packages:\n{proc.stdout}{proc.stderr[-3000:]}")


def test_the_filter_hides_what_a_layer_does_not_declare():
    """The child refuses a package the layer's extras do not bring (pandas is not a dependency of torch)."""
    arg = json.dumps([*allowed(()), [], ["erc_core", "pandas"]])
    proc = subprocess.run([sys.executable, "-c", _CHILD, arg], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 1 and "pandas" in proc.stdout
    arg = json.dumps([*allowed(("rl",)), ["erc_core.book"], ["erc_core.book.runs"]])
    proc = subprocess.run([sys.executable, "-c", _CHILD, arg], capture_output=True, text=True, cwd=ROOT,
                          timeout=300)
    assert proc.returncode == 1 and "erc_core.book" in proc.stdout


def _imports(path: Path, package: str) -> set[str]:
    """Absolute module names imported anywhere in a file (relative imports resolved against ``package``)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names |= {a.name for a in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([base] if base else []))
            names |= {base} | {f"{base}.{a.name}" for a in node.names}
    return names


def layer_of(path: Path) -> str:
    rel = path.relative_to(PKG).parts
    return rel[0] if rel[0] in ("rl", "book") else "core"


def test_no_layer_imports_a_layer_above_it():
    """Static: core never imports erc_core.rl / erc_core.book, rl never erc_core.book (deferred imports too)."""
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        package = ".".join(("erc_core",) + path.relative_to(PKG).parent.parts)
        forbidden = LAYERS[layer_of(path)][1]
        bad += [f"{path.relative_to(ROOT)} imports {n}" for n in sorted(_imports(path, package))
                if any(n == f or n.startswith(f + ".") for f in forbidden)]
    assert not bad, "\n".join(bad)


def test_every_import_of_a_layer_is_declared_by_its_extras():
    """Static: every package a layer's modules import, deferred imports inside functions too, is the standard
    library, erc_core, or a distribution the layer's own dependency lists name (not one that merely comes along)."""
    direct = {layer: {_norm(r.name) for r in _requirements(extras)} for layer, (extras, _) in LAYERS.items()}
    owners = metadata.packages_distributions()
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        rel = path.relative_to(PKG).parts
        if rel[0] == "integrations":  # each needs its own extra (trl, verl): their tests import them
            continue
        layer = layer_of(path)
        package = ".".join(("erc_core",) + path.relative_to(PKG).parent.parts)
        for top in sorted({n.partition(".")[0] for n in _imports(path, package)} - {"erc_core"}):
            if top in sys.stdlib_module_names:
                continue
            if not {_norm(d) for d in owners.get(top, [])} & direct[layer]:
                bad.append(f"{path.relative_to(ROOT)} imports {top}, which the {layer!r} layer does not declare")
    assert not bad, "\n".join(bad)


def test_the_static_check_sees_deferred_and_relative_imports(tmp_path):
    f = tmp_path / "m.py"
    f.write_text("def f():\n    from ..book import runs\n    from . import study\n")
    assert {"erc_core.book.runs", "erc_core.rl.study"} <= _imports(f, "erc_core.rl")
