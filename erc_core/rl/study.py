"""Grid studies: many :func:`erc_core.rl.train.train` runs (variants x seeds) in a process pool, one tidy table.

A grid file (YAML) names the variants; each is a preset plus a short diff, and ``base`` applies to all::

    base: {steps: 60, eval_every: 10}
    seeds: 3
    variants:
      - {name: dapo,     config: configs/tiny_arith_dapo.yaml}
      - {name: dapo_erc, config: configs/tiny_arith_erc.yaml}
      - {name: erc_0.9,  config: configs/tiny_arith_erc.yaml, set: {erc_low: 0.9, erc_high: 1.1}}

``python -m erc_core.rl.study --grid grids/small.yaml --seeds 3 --out results/small`` runs every (variant, seed) in
``out/runs/<variant>__seed<k>/`` with a pool sized to the machine, skips finished runs and resumes half-finished
ones from their checkpoints (so an interrupted study is simply started again), then writes

- ``out/metrics.csv``: one row per (run, step): ``run_id, variant, seed, step`` and every metric of that step;
- ``out/runs.csv``: one row per run: its config file, overrides, status and wall time.

:func:`summarize` reduces the table to one number per run (e.g. the mean of the last steps, or the step-to-step
variability of a metric) and reports, per variant, the mean over seeds with a 95% t-interval.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import dataclasses
import json
import math
import multiprocessing as mp
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import yaml
from scipy import stats as sps

__all__ = ["Variant", "Grid", "load_grid", "run_id", "run_grid", "collect", "collect_tokens", "export", "load",
           "tokens_table", "per_run", "summarize", "ci95", "paired_diff", "max_abs_diff", "token_stats", "format_ci",
           "process_pool", "main"]

_NAME = re.compile(r"^[A-Za-z0-9_.\-]+$")


@dataclass(frozen=True)
class Variant:
    """One arm of a study: a preset file plus overrides (``set``)."""

    name: str
    config: str
    overrides: dict = field(default_factory=dict)


@dataclass(frozen=True)
class Grid:
    """The variants, the overrides shared by all of them, and the default number of seeds."""

    variants: tuple[Variant, ...]
    base: dict = field(default_factory=dict)
    seeds: int = 3


def load_grid(path: str | os.PathLike) -> Grid:
    """Read a grid YAML (see the module docstring). Config paths are relative to the grid file, else to the CWD.

    Raises ``ValueError`` naming the bad key: no variants, duplicate or unsafe names, missing config files.
    """
    path = Path(path)
    raw = yaml.safe_load(path.read_text()) or {}
    unknown = set(raw) - {"base", "seeds", "variants"}
    if unknown:
        raise ValueError(f"grid {path}: unknown top-level keys {sorted(unknown)} (allowed: base, seeds, variants)")
    if not raw.get("variants"):
        raise ValueError(f"grid {path}: 'variants' must be a non-empty list")
    seeds = raw.get("seeds", 3)
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"grid {path}: 'seeds' must be an integer >= 1, got {seeds!r}")
    variants = []
    for i, v in enumerate(raw["variants"]):
        if not isinstance(v, dict) or set(v) - {"name", "config", "set"} or "name" not in v or "config" not in v:
            raise ValueError(f"grid {path}: variants[{i}] must be a mapping with 'name', 'config' and optional 'set'")
        if not _NAME.match(str(v["name"])):
            raise ValueError(f"grid {path}: variants[{i}].name {v['name']!r} may use only letters, digits, _ . -")
        cfg = Path(v["config"])
        cfg = next((p for p in (path.parent / cfg, cfg) if p.exists()), None)
        if cfg is None:
            raise ValueError(f"grid {path}: variants[{i}].config {v['config']!r} not found")
        variants.append(Variant(str(v["name"]), str(cfg), dict(v.get("set") or {})))
    names = [v.name for v in variants]
    if len(set(names)) != len(names):
        raise ValueError(f"grid {path}: variant names must be unique, got {names}")
    return Grid(tuple(variants), dict(raw.get("base") or {}), seeds)


def run_id(variant: Variant, seed: int) -> str:
    """Directory name and table key of one run: ``<variant>__seed<k>``."""
    return f"{variant.name}__seed{seed}"


def _resolved(config: str, overrides: dict) -> str:
    """The fully resolved config of a run as canonical JSON (validates it: bad keys fail before any compute)."""
    from .config import load_config

    return json.dumps(dataclasses.asdict(load_config(config, overrides)), sort_keys=True)


def _die_with_parent(parent: int) -> None:
    """Pool-worker initializer: a worker must not outlive the study runner (an orphan would finish its run and
    hang, and be a second writer for an immediate rerun). Workers are forked by the forkserver (see
    :func:`_pool_context`), which exits when the runner dies; on Linux the kernel then SIGKILLs the worker
    (``prctl(PR_SET_PDEATHSIG)``); everywhere a daemon thread checks every second that the runner is alive."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(1, int(signal.SIGKILL), 0, 0, 0)  # 1 = PR_SET_PDEATHSIG
        except (OSError, AttributeError):  # pragma: no cover - no libc prctl: the thread below still watches
            pass
    if not _alive(parent) or os.getppid() == 1:  # the runner (or the forkserver) died before prctl took effect
        os._exit(1)

    def watch() -> None:
        while True:
            time.sleep(1.0)
            if not _alive(parent) or os.getppid() == 1:
                os._exit(1)

    threading.Thread(target=watch, name="erc-study-parent-watch", daemon=True).start()


def _alive(pid: int) -> bool:
    """True while process ``pid`` exists (signal 0 checks without sending anything)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - exists, owned by someone else
        return True
    return True


def _pool_context():
    """The pool's start method: a forkserver that imports the trainer once (about 7 s of torch + transformers
    imports) and forks every worker from it, so a worker starts in milliseconds instead of re-importing them.
    The server starts with the first grid of a process and imports erc_core from disk then: a kernel that edits
    erc_core between two grids must restart to run the new code."""
    ctx = mp.get_context("forkserver")
    ctx.set_forkserver_preload([f"{__package__}.train"])
    return ctx


@contextlib.contextmanager
def process_pool(workers: int) -> Iterator[ProcessPoolExecutor]:
    """``with process_pool(n) as pool:`` a pool of ``n`` processes for training runs: forked from a server that has
    imported the trainer (``_pool_context``), each dying with this process (``_die_with_parent``). A run's
    numbers do not depend on the pool: each run seeds itself and uses its config's ``num_threads``. Leaving the
    block normally waits for the submitted runs; leaving it by an exception (an interrupted notebook cell, a run
    that failed) terminates the workers at once instead of waiting for the runs still going."""
    if not (isinstance(workers, int) and workers >= 1):
        raise ValueError(f"workers must be an integer >= 1, got {workers!r}")
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=_pool_context(), initializer=_die_with_parent,
                               initargs=(os.getpid(),))
    try:
        yield pool
    except BaseException:
        for proc in list((pool._processes or {}).values()):  # Python 3.14 has pool.terminate_workers()
            proc.terminate()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _run_one(config: str, out_dir: str, overrides: dict, threads: int) -> tuple[str, float]:
    """Worker: run (or resume) one training run, then mark it DONE with its resolved config."""
    import torch

    from .train import train

    torch.set_num_threads(threads)
    t0 = time.perf_counter()
    train(config, out_dir, resume=True, overrides=overrides)
    (Path(out_dir) / "DONE").write_text(_resolved(config, overrides))
    return out_dir, time.perf_counter() - t0


def _overrides(grid: Grid, variant: Variant, seed: int, extra: dict | None) -> dict:
    return {**grid.base, **variant.overrides, **(extra or {}), "seed": seed, "progress": False}


def _validate(grid: Grid, seeds: int, extra: dict | None) -> dict[tuple[str, int], str]:
    """Every run's resolved config (:func:`_resolved`) keyed by ``(variant, seed)``; a bad one raises
    :class:`erc_core.rl.config.ConfigError` naming the variant, before any run starts (not when its turn comes)."""
    from .config import ConfigError

    out = {}
    for v in grid.variants:
        for s in range(seeds):
            try:
                out[v.name, s] = _resolved(v.config, _overrides(grid, v, s, extra))
            except ConfigError as e:
                raise ConfigError(f"grid variant {v.name!r} (config {v.config}, seed {s}): {e}") from None
    return out


def run_grid(grid: Grid, out_dir: str | os.PathLike, seeds: int | None = None, workers: int | None = None,
             threads_per_run: int = 1, overrides: dict | None = None, log=print) -> pd.DataFrame:
    """Run every (variant, seed) not finished yet, in a process pool; then write and return the metrics table.

    Args:
        grid: from :func:`load_grid`.
        out_dir: the study directory (``runs/``, ``metrics.csv``, ``runs.csv``).
        seeds: seeds 0..seeds-1 (default: the grid's).
        workers: parallel runs (default: cores // threads_per_run).
        threads_per_run: torch threads inside each run.
        overrides: config keys applied to every run (after the grid's ``base`` and each variant's ``set``).
    """
    seeds = grid.seeds if seeds is None else seeds
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ValueError(f"seeds must be an integer >= 1, got {seeds!r}")
    if not (isinstance(threads_per_run, int) and threads_per_run >= 1):
        raise ValueError(f"threads_per_run must be an integer >= 1, got {threads_per_run!r}")
    workers = workers or max(1, (os.cpu_count() or 1) // threads_per_run)
    out = Path(out_dir)
    resolved = _validate(grid, seeds, overrides)  # every run's config, before any run starts
    jobs, rows = [], []
    for v in grid.variants:
        for s in range(seeds):
            ov = _overrides(grid, v, s, overrides)
            rdir = out / "runs" / run_id(v, s)
            done = rdir / "DONE"
            finished = done.exists() and done.read_text() == resolved[v.name, s]  # same config: reuse
            rows.append(dict(run_id=run_id(v, s), variant=v.name, seed=s, config=v.config,
                             overrides=json.dumps(ov, sort_keys=True), status="cached" if finished else "run"))
            if not finished:
                started = rdir / "config.yaml"
                if started.exists() and json.dumps(yaml.safe_load(started.read_text()), sort_keys=True) != \
                        resolved[v.name, s]:  # the config changed since that run started: start afresh
                    shutil.rmtree(rdir)
                jobs.append((v.config, str(rdir), ov, threads_per_run))
    log(f"[study] {len(rows)} runs, {len(jobs)} to run, {workers} worker(s) x {threads_per_run} thread(s)")
    wall = {}
    if jobs:
        with process_pool(min(workers, len(jobs))) as pool:
            futures = [pool.submit(_run_one, *job) for job in jobs]
            for i, fut in enumerate(as_completed(futures), 1):
                rdir, secs = fut.result()
                wall[Path(rdir).name] = secs
                log(f"[study] {i}/{len(jobs)} {Path(rdir).name} done in {secs:.1f} s")
    runs = pd.DataFrame(rows)
    runs["wall_s"] = runs["run_id"].map(wall)
    out.mkdir(parents=True, exist_ok=True)
    runs.to_csv(out / "runs.csv", index=False)
    table = collect(out)
    table.to_csv(out / "metrics.csv", index=False)
    return table


def _finished(out_dir: str | os.PathLike) -> list[tuple[Path, dict]]:
    """``(run_dir, {run_id, variant, seed})`` of every finished run (a ``DONE`` marker) under ``out_dir/runs``."""
    runs = []
    for done in sorted(Path(out_dir).glob("runs/*/DONE")):
        rid = done.parent.name
        variant, seed = rid.rsplit("__seed", 1)
        runs.append((done.parent, dict(run_id=rid, variant=variant, seed=int(seed))))
    return runs


def _with_keys(df: pd.DataFrame, keys: dict) -> pd.DataFrame:
    """``df`` with the ``keys`` as its first columns (constant values), in order."""
    for i, (k, v) in enumerate(keys.items()):
        df.insert(i, k, v)
    return df


def collect(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Gather every finished run's ``metrics.jsonl`` under ``out_dir/runs`` into one tidy table (a row per step)."""
    from .train import read_jsonl

    frames = [_with_keys(pd.DataFrame(read_jsonl(run / "metrics.jsonl")), keys) for run, keys in _finished(out_dir)]
    if not frames:
        raise ValueError(f"no finished runs under {out_dir}/runs")
    return pd.concat(frames, ignore_index=True)


def tokens_table(path: str | os.PathLike) -> pd.DataFrame:
    """A ``tokens.jsonl`` file of :func:`erc_core.rl.train.train` as a DataFrame, one row per logged response token
    (``step, response, t, token, old_entropy, entropy, rho, outside_band, gated, advantage, reward``); ``token``
    stays text, so a digit token is not read as a number."""
    return _rho_named(pd.read_json(path, lines=True, dtype={"token": str}))


def _rho_named(tokens: pd.DataFrame) -> pd.DataFrame:
    """The entropy-ratio column named ``rho``: token tables written before 2026-12 (the shipped data of
    ``data/claims-2026-11-28``, ``data/smollm2-2026-11-30``, ``data/claims-v2``) call it ``ratio``; a table that
    joins runs of both ages (``data/claims-v2/offpolicy``) has both columns, each empty where the other is set."""
    if "ratio" not in tokens.columns:
        return tokens
    if "rho" not in tokens.columns:
        return tokens.rename(columns={"ratio": "rho"})
    both = tokens["rho"].notna() & tokens["ratio"].notna()
    if both.any():
        raise ValueError(f"token table has both 'rho' and 'ratio' set in {int(both.sum())} rows: which is the "
                         "entropy ratio is ambiguous")
    return tokens.assign(rho=tokens["rho"].fillna(tokens["ratio"])).drop(columns="ratio")


def collect_tokens(out_dir: str | os.PathLike) -> pd.DataFrame:
    """Every finished run's ``tokens.jsonl`` under ``out_dir/runs`` in one table (a row per logged token).

    Columns: ``run_id, variant, seed, erc, erc_low, erc_high`` (the run's gate and band, from its resolved config
    in ``DONE``) and the columns of :func:`tokens_table` (``old_entropy``, ``rho``,
    ``outside_band`` = outside the run's own band, ``gated``, ...). Runs that logged no tokens are skipped.
    """
    frames = []
    for run, keys in _finished(out_dir):
        path = run / "tokens.jsonl"
        if not path.exists() or path.stat().st_size == 0:
            continue
        cfg = json.loads((run / "DONE").read_text())
        band = dict(erc=bool(cfg["erc"]), erc_low=float(cfg["erc_low"]), erc_high=float(cfg["erc_high"]))
        frames.append(_with_keys(tokens_table(path), {**keys, **band}))
    if not frames:
        raise ValueError(f"no finished run under {out_dir}/runs logged tokens (log_tokens_every >= 1)")
    return pd.concat(frames, ignore_index=True)


REDUCERS = ("last", "mean", "diff_std", "rel_diff_std")


def per_run(table: pd.DataFrame, metric: str, reducer: str = "last", last_k: int = 10) -> pd.DataFrame:
    """One number per run from the per-step ``metric`` (NaN steps dropped, e.g. steps without evaluation).

    ``reducer``: "last" = mean of the last ``last_k`` values; "mean" = mean over all steps >= 1;
    "diff_std" = standard deviation of the step-to-step differences (how jumpy the metric is);
    "rel_diff_std" = that divided by the mean absolute value of the metric (jumpiness relative to its level).
    Returns columns ``run_id, variant, seed, value``.
    """
    if reducer not in REDUCERS:
        raise ValueError(f"reducer must be one of {REDUCERS}, got {reducer!r}")
    if metric not in table.columns:
        raise ValueError(f"metric {metric!r} is not a column of the table")
    if not (isinstance(last_k, int) and last_k >= 1):
        raise ValueError(f"last_k must be an integer >= 1, got {last_k!r}")
    rows = []
    for (rid, variant, seed), g in table.groupby(["run_id", "variant", "seed"], sort=True):
        x = g.sort_values("step")
        x = x.loc[x["step"] >= (0 if metric == "eval_acc" else 1), metric].dropna().to_numpy(float)
        if reducer == "last":
            value = x[-last_k:].mean() if len(x) else math.nan
        elif reducer == "mean":
            value = x.mean() if len(x) else math.nan
        else:
            value = np.diff(x).std(ddof=1) if len(x) >= 3 else math.nan
            if reducer == "rel_diff_std":
                value = value / np.abs(x).mean() if len(x) >= 3 and np.abs(x).mean() > 0 else math.nan
        rows.append(dict(run_id=rid, variant=variant, seed=seed, value=float(value)))
    return pd.DataFrame(rows)


def ci95(values) -> tuple[float, float, float]:
    """Mean and the two-sided 95% Student-t interval of ``values`` (NaNs dropped): ``(mean, low, high)``.

    With fewer than two values the interval is undefined: ``(mean, nan, nan)``.
    """
    x = np.asarray(values, dtype=float)
    x = x[~np.isnan(x)]
    if len(x) == 0:
        return math.nan, math.nan, math.nan
    m = float(x.mean())
    if len(x) < 2:
        return m, math.nan, math.nan
    half = float(sps.t.ppf(0.975, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
    return m, m - half, m + half


def summarize(table: pd.DataFrame, metric: str, reducer: str = "last", last_k: int = 10) -> pd.DataFrame:
    """Per variant: the per-run values' mean over seeds and its 95% CI. Columns ``variant, n, mean, low, high``."""
    runs = per_run(table, metric, reducer, last_k)
    rows = []
    for variant, g in runs.groupby("variant", sort=False):
        m, lo, hi = ci95(g["value"])
        rows.append(dict(variant=variant, n=int(g["value"].notna().sum()), mean=m, low=lo, high=hi))
    return pd.DataFrame(rows)


def export(out_dir: str | os.PathLike, dest: str | os.PathLike) -> dict[str, Path]:
    """Write a study's tables, compressed, for shipping with the book: ``dest/metrics.csv.gz``, ``dest/runs.csv``
    and (when runs logged tokens) ``dest/tokens.csv.gz``. Returns the written paths.

    A study stopped before its end (no ``runs.csv`` yet) exports its finished runs (``DONE`` markers) only, with a
    ``runs.csv`` of ``run_id, variant, seed, config, status="finished"`` (no wall time or overrides: read each run's
    ``config.yaml``); say so wherever the data ship."""
    out, dest = Path(out_dir), Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    written = {"metrics": dest / "metrics.csv.gz", "runs": dest / "runs.csv"}
    collect(out).to_csv(written["metrics"], index=False)
    if (out / "runs.csv").exists():
        shutil.copyfile(out / "runs.csv", written["runs"])
    else:
        pd.DataFrame([dict(keys, config=str(d / "config.yaml"), status="finished") for d, keys in _finished(out)]
                     ).to_csv(written["runs"], index=False)
    try:
        tokens = collect_tokens(out)
    except ValueError:
        return written
    written["tokens"] = dest / "tokens.csv.gz"
    tokens.to_csv(written["tokens"], index=False)
    return written


def load(study_dir: str | os.PathLike) -> tuple[pd.DataFrame, pd.DataFrame | None]:
    """``(metrics, tokens)`` of a study: a :func:`run_grid` output folder (read from its runs) or an
    :func:`export` folder (read from its files). ``tokens`` is None when no run logged tokens."""
    d = Path(study_dir)
    if (d / "metrics.csv.gz").exists():
        tok = d / "tokens.csv.gz"
        tokens = (_rho_named(pd.read_csv(tok, dtype={"token": str}, keep_default_na=False, na_values=[""]))
                  if tok.exists() else None)
        return pd.read_csv(d / "metrics.csv.gz"), tokens
    if not (d / "runs").is_dir():
        raise FileNotFoundError(f"{d} is neither a study folder (runs/) nor an exported one (metrics.csv.gz)")
    try:
        tokens = collect_tokens(d)
    except ValueError:
        tokens = None
    return collect(d), tokens


def paired_diff(runs: pd.DataFrame, a: str, b: str) -> dict:
    """``b - a`` per seed (runs of the same seed share the warm start and first rollout), with its 95% CI.

    Args:
        runs: a :func:`per_run` table (``variant, seed, value``).
        a: the reference variant; b: the compared one.

    Returns:
        A dict with ``n`` (seeds present in both), ``mean``, ``low``, ``high`` of the per-seed differences.
    """
    for name in (a, b):
        if name not in set(runs["variant"]):
            raise ValueError(f"variant {name!r} is not in the table (have {sorted(set(runs['variant']))})")
    x = runs[runs.variant == a].set_index("seed")["value"]
    y = runs[runs.variant == b].set_index("seed")["value"]
    seeds = sorted(set(x.index) & set(y.index))
    if not seeds:
        raise ValueError(f"variants {a!r} and {b!r} share no seed")
    d = (y.loc[seeds] - x.loc[seeds]).to_numpy(float)
    m, lo, hi = ci95(d)
    return dict(n=int((~np.isnan(d)).sum()), mean=m, low=lo, high=hi)


def max_abs_diff(table: pd.DataFrame, a: str, b: str, metrics: list[str]) -> dict:
    """Largest ``|b - a|`` of each metric over all (seed, step) rows the two variants share (0.0 = identical runs).

    NaN in both runs at the same row counts as equal; NaN in one only counts as ``inf``.
    """
    x = table[table.variant == a].set_index(["seed", "step"])
    y = table[table.variant == b].set_index(["seed", "step"])
    rows = x.index.intersection(y.index)
    if len(rows) == 0:
        raise ValueError(f"variants {a!r} and {b!r} share no (seed, step) rows")
    out = {}
    for m in metrics:
        if m not in table.columns:
            raise ValueError(f"metric {m!r} is not a column of the table")
        u, v = x.loc[rows, m].to_numpy(float), y.loc[rows, m].to_numpy(float)
        both_nan = np.isnan(u) & np.isnan(v)
        diff = np.where(both_nan, 0.0, np.abs(u - v))
        out[m] = float(np.nan_to_num(diff, nan=np.inf).max())
    return out


def token_stats(tokens: pd.DataFrame) -> pd.DataFrame:
    """Per run: which logged tokens left the run's entropy-ratio band, and how uncertain they were before.

    Args:
        tokens: a :func:`collect_tokens` table.

    Returns:
        A DataFrame with a row per run and the columns ``run_id, variant, seed, n_tokens, outside_frac``,
        ``h_outside`` / ``h_inside`` (mean old entropy of the tokens outside / inside the band, nats), ``h_median``
        (the run's median old entropy)
        and ``low_share_outside`` / ``low_share_inside`` (share of each group whose old entropy is below that
        median; 0.5 means no preference for low- or high-entropy tokens).
    """
    rows = []
    for (rid, variant, seed), g in tokens.groupby(["run_id", "variant", "seed"], sort=True):
        h, out = g["old_entropy"].to_numpy(float), g["outside_band"].to_numpy(bool)
        med = float(np.median(h))

        def mean(x: np.ndarray) -> float:
            return float(x.mean()) if len(x) else math.nan

        rows.append(dict(run_id=rid, variant=variant, seed=int(seed), n_tokens=len(h), outside_frac=float(out.mean()),
                         h_outside=mean(h[out]), h_inside=mean(h[~out]), h_median=med,
                         low_share_outside=mean(h[out] < med), low_share_inside=mean(h[~out] < med)))
    return pd.DataFrame(rows)


def format_ci(mean: float, low: float, high: float, digits: int = 3, sign: bool = False) -> str:
    """``"0.351 [0.270, 0.433]"`` (``sign=True``: ``"+0.163 [+0.069, +0.257]"``); ``"0.351 (n < 2)"`` without an
    interval."""
    f = f"{{:{'+' if sign else ''}.{digits}f}}"
    if math.isnan(low) or math.isnan(high):
        return f"{f.format(mean)} (n < 2)"
    return f"{f.format(mean)} [{f.format(low)}, {f.format(high)}]"


def main(argv: list[str] | None = None) -> int:
    from .config import ConfigError, parse_set

    ap = argparse.ArgumentParser(prog="python -m erc_core.rl.study", description=__doc__.split("\n\n")[0])
    ap.add_argument("--grid", required=True, help="grid YAML (variants x seeds)")
    ap.add_argument("--out", required=True, help="study directory (runs/, metrics.csv, runs.csv)")
    ap.add_argument("--seeds", type=int, default=None, help="number of seeds (default: the grid's)")
    ap.add_argument("--workers", type=int, default=None, help="parallel runs (default: cores / threads per run)")
    ap.add_argument("--threads-per-run", type=int, default=1)
    ap.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="override config keys in every run")
    ap.add_argument("--export", default=None, metavar="DIR",
                    help="then write metrics.csv.gz, runs.csv, tokens.csv.gz to DIR (to ship the results)")
    args = ap.parse_args(argv)
    t0 = time.perf_counter()
    try:
        table = run_grid(load_grid(args.grid), args.out, args.seeds, args.workers, args.threads_per_run,
                         parse_set(args.set))
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"[study] {table['run_id'].nunique()} runs, {len(table)} rows -> {Path(args.out) / 'metrics.csv'} "
          f"({time.perf_counter() - t0:.0f} s)")
    if args.export:
        for path in export(args.out, args.export).values():
            print(f"[study] wrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
