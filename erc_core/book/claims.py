"""The claims chapter's verdict table, computed from a claims study's shipped tables (no kernel, a few seconds).

    tests = claim_tests("data/claims-2026-11-28")     # every statistical test: one family, Holm-corrected
    table = claims_table("data/claims-2026-11-28")    # claim, source, measured, verdict

Each claim carries its **source**: ``"paper abstract/text"`` (the ERC paper says it), ``"secondary summary"``
(a summary of the paper says it, the paper does not), ``"mechanism"`` (it follows from the gate's definition; a
check of the implementation, not of a finding) or ``"none"`` (nobody claimed it; the book asked). Every t-test of
the table is one family for Holm's correction (:func:`erc_core.book.stats.family`); its size is in each row.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from erc_core.rl import study
from .stats import family, one_sample_test, paired_test, transformed_ci

__all__ = ["SOURCES", "load_claims_data", "claim_tests", "claims_table", "collapse_flags", "health_flags"]

SOURCES = ("paper abstract/text", "secondary summary", "mechanism", "none")
GRIDS = ("arith", "onpolicy", "countdown", "tokens")
BANDS = {"erc_0.80_1.20": "(0.80, 1.20)", "erc_0.90_1.10": "(0.90, 1.10)", "erc_0.98_1.02": "(0.98, 1.02)"}
ONPOLICY_METRICS = ["reward_mean", "eval_acc", "entropy_mean", "grad_norm", "loss", "ppo_kl", "entropy_ratio_mean"]


def load_claims_data(data_dir: str | os.PathLike) -> dict[str, tuple[pd.DataFrame, pd.DataFrame | None]]:
    """``{grid: (metrics table, token table)}`` for the four grids of a claims study folder (``--export`` output)."""
    d = Path(data_dir)
    missing = [g for g in GRIDS if not (d / g).is_dir()]
    if missing:
        raise FileNotFoundError(f"{d} lacks the grid folders {missing} (expected {list(GRIDS)})")
    return {g: study.load(d / g) for g in GRIDS}


def _test(claim: str, source: str, what: str, t: dict, unit: str = "") -> dict:
    return dict(claim=claim, source=source, name=what, unit=unit, **t)


def claim_tests(data: str | os.PathLike | dict, last_evals: int = 3) -> pd.DataFrame:
    """Every test behind the verdict table, one row each: ``claim, source, name, n, mean, low, high, p`` (paired by
    seed unless said), then Holm's ``p_holm``, ``verdict`` and ``family_size`` over all of them."""
    data = load_claims_data(data) if not isinstance(data, dict) else data
    arith, tokens_grid, countdown = data["arith"][0], data["tokens"][0], data["countdown"][0]
    rows = []

    # claim 1: how much more ERC gates than PPO clips (per run: log of the ratio of the two shares)
    for v in ("dapo_erc", "gppo_erc"):
        t = arith[arith.variant == v]
        erc = study.per_run(t, "erc_clipfrac", "mean")["value"].to_numpy(float)
        ppo = study.per_run(t, "ppo_clipfrac", "mean")["value"].to_numpy(float)
        rows.append(_test("1", "paper abstract/text", f"{v}: log(gated share / PPO-clipped share)",
                          one_sample_test(np.log(erc / ppo))))
        rows.append(_test("1b", "secondary summary", f"{v}: gated share - 0.20 (the quoted ~20% at 7B)",
                          one_sample_test(erc, 0.20)))

    # claim 2: jumpiness J = std of step-to-step changes, ERC - base paired by seed
    for metric, reducer, label in (("grad_norm", "diff_std", "J(grad norm, pre-clip)"),
                                   ("grad_norm", "rel_diff_std", "J(grad norm) / mean"),
                                   ("entropy_mean", "diff_std", "J(entropy)")):
        pr = study.per_run(arith, metric, reducer)
        for a, b in (("dapo", "dapo_erc"), ("gppo", "gppo_erc")):
            rows.append(_test("2", "paper abstract/text", f"{label}: {b} - {a}", paired_test(pr, a, b)))

    # claim 3: share of the tokens outside the band whose old entropy is below the run's median, minus 0.5
    ts = study.token_stats(data["tokens"][1])
    for v in ("dapo_erc", "gppo_erc"):
        rows.append(_test("3", "secondary summary", f"{v}: share of gated tokens below the median entropy - 0.5",
                          one_sample_test(ts.loc[ts.variant == v, "low_share_outside"], 0.5)))

    # claim 4: held-out accuracy (mean of the last evaluations), ERC - base, on both draws of sums and on countdown
    for grid, t in (("arith", arith), ("tokens (2nd draw)", tokens_grid), ("countdown", countdown)):
        pr = study.per_run(t, "eval_acc", "last", last_evals)
        for a, b in (("dapo", "dapo_erc"), ("gppo", "gppo_erc")):
            rows.append(_test("4", "paper abstract/text", f"{grid}: accuracy {b} - {a}", paired_test(pr, a, b)))

    # claim 6: the band: accuracy of each other band minus (0.95, 1.05); gated share narrowest minus widest
    pr = study.per_run(arith, "eval_acc", "last", last_evals)
    for v, band in BANDS.items():
        rows.append(_test("6", "none", f"accuracy {band} - (0.95, 1.05)", paired_test(pr, "dapo_erc", v)))
    gated = study.per_run(arith, "erc_clipfrac", "mean")
    rows.append(_test("6", "none", "gated share (0.98, 1.02) - (0.80, 1.20)",
                      paired_test(gated, "erc_0.80_1.20", "erc_0.98_1.02")))
    return family(rows)


def _fmt(r) -> str:
    return (f"{study.format_ci(r.mean, r.low, r.high, sign=True)} (n={r.n}, p={r.p:.3g}, Holm p={r.p_holm:.3g}, "
            f"family of {r.family_size})")


def _overall(verdicts: list[str]) -> str:
    """One verdict for a claim from its tests' verdicts (listed when they differ)."""
    uniq = sorted(set(verdicts))
    return uniq[0] if len(uniq) == 1 else "; ".join(verdicts)


def claims_table(data: str | os.PathLike | dict, last_evals: int = 3) -> pd.DataFrame:
    """The chapter's verdict table: one row per claim with ``claim, source, measured, verdict``.

    ``measured`` states each test of the claim (mean [95% CI], n, p, Holm-adjusted p, family size); ``verdict`` is
    the tests' Holm verdicts in the order listed ("resolved: +" / "resolved: -" / "not resolved"), or for the
    mechanism check of claim 5 "holds exactly" / "does not hold"."""
    data = load_claims_data(data) if not isinstance(data, dict) else data
    tests = claim_tests(data, last_evals)
    arith = data["arith"][0]

    def part(claim: str) -> pd.DataFrame:
        return tests[tests.claim == claim]

    def measured(claim: str) -> str:
        return "; ".join(f"{r.name}: {_fmt(r)}" for r in part(claim).itertuples())

    erc_share, ppo_share = (transformed_ci(study.per_run(arith[arith.variant == "dapo_erc"], m, "mean")["value"],
                                           0.0, 1.0) for m in ("erc_clipfrac", "ppo_clipfrac"))
    onp = data["onpolicy"][0]
    onp_diff = max(max(study.max_abs_diff(onp, a, b, ONPOLICY_METRICS).values())
                   for a, b in (("dapo", "dapo_erc"), ("gppo", "gppo_erc")))
    onp_gated = float(onp.loc[onp.variant.isin(["dapo_erc", "gppo_erc"]), "erc_clipfrac"].max())
    rows = [
        dict(claim="1. ERC gates far more tokens than PPO's clip", source="paper abstract/text",
             measured=f"DAPO+ERC gated share {study.format_ci(*erc_share)} vs PPO-clipped "
                      f"{study.format_ci(*ppo_share, digits=4)} (logit-t intervals); " + measured("1"),
             verdict=_overall(part("1").verdict.tolist())),
        dict(claim="1b. about 20% gated vs 0.02% PPO-clipped, at 7B", source="secondary summary",
             measured=measured("1b"), verdict=_overall(part("1b").verdict.tolist())),
        dict(claim="2. ERC keeps entropy and gradient norm smoother", source="paper abstract/text",
             measured=measured("2"), verdict=_overall(part("2").verdict.tolist())),
        dict(claim="3. the gated tokens are mostly low-entropy", source="secondary summary",
             measured=measured("3"), verdict=_overall(part("3").verdict.tolist())),
        dict(claim="4. ERC does not hurt / improves accuracy", source="paper abstract/text",
             measured=measured("4"), verdict=_overall(part("4").verdict.tolist())),
        dict(claim="5. ERC is inactive on-policy", source="mechanism",
             measured=f"largest erc_clipfrac on-policy {onp_gated}; largest |ERC - base| over {len(ONPOLICY_METRICS)} "
                      f"metrics and all steps {onp_diff}",
             verdict="holds exactly" if onp_gated == 0 and onp_diff == 0 else "does not hold"),
        dict(claim="6. the bounds matter", source="none",
             measured=measured("6"), verdict=_overall(part("6").verdict.tolist())),
    ]
    return pd.DataFrame(rows)


# ------------------------------------------------------------------ pre-registered run-level definitions
COLLAPSE = dict(acc_drop=0.10, last_evals=3, entropy_factor=3.0, window=20, reward_factor=0.5, reward_last=50)
HEALTH = dict(acc_drop=0.05, from_step=100, clip_frac=0.5, window=3)


def _rl(run: pd.DataFrame, metric: str) -> np.ndarray:
    if metric not in run.columns:
        raise ValueError(f"the run's table has no column {metric!r}")
    r = run[run.step >= 1].sort_values("step")
    return r[metric].to_numpy(float)


def _evals(run: pd.DataFrame) -> pd.Series:
    if "eval_acc" not in run.columns:
        raise ValueError("the run's table has no column 'eval_acc'")
    e = run.dropna(subset=["eval_acc"]).sort_values("step").set_index("step")["eval_acc"]
    if 0 not in e.index or len(e) < 2:
        raise ValueError("the run needs the warm-start evaluation (step 0) and at least one later one")
    return e


def collapse_flags(run: pd.DataFrame) -> dict[str, bool]:
    """The off-policy stress test's collapse definition (fixed before the grid ran; see
    ``grids/claims_v2_offpolicy.yaml``), for ONE run's per-step table (``step``, ``eval_acc``, ``entropy_mean``,
    ``reward_mean``). A run collapsed if any of:

    - ``accuracy``: the mean of its last 3 greedy evaluations is below its warm-start accuracy (step 0) - 0.10;
    - ``entropy``: the 20-step rolling mean of ``entropy_mean`` exceeds 3x its mean over RL steps 1-20, at any step;
    - ``reward``: the mean sampled reward of the last 50 RL steps is below half its mean over RL steps 1-20.

    Returns the three flags and ``collapsed`` (their or)."""
    c = COLLAPSE
    e = _evals(run)
    acc = bool(e.iloc[1:].tail(c["last_evals"]).mean() < e.loc[0] - c["acc_drop"])
    ent = pd.Series(_rl(run, "entropy_mean")).dropna()
    roll = ent.rolling(c["window"], min_periods=c["window"]).mean()
    blow = bool(len(ent) >= c["window"] and (roll > c["entropy_factor"] * ent.iloc[:c["window"]].mean()).any())
    rew = _rl(run, "reward_mean")
    drop = bool(len(rew) >= c["window"]
                and rew[-c["reward_last"]:].mean() < c["reward_factor"] * rew[:c["window"]].mean())
    return dict(accuracy=acc, entropy=blow, reward=drop, collapsed=acc or blow or drop)


def health_flags(run: pd.DataFrame) -> dict[str, bool]:
    """The harness-health criteria for a baseline run (one run's per-step table with ``eval_acc`` and
    ``grad_clip_frac``): ``accuracy_kept``: the mean of every 3 consecutive greedy evaluations after the warm start
    whose last one is at a step >= 100 is >= warm-start accuracy - 0.05; ``clip_rare``: the gradient clip binds in
    < 50% of the run's updates (mean of ``grad_clip_frac``); ``healthy``: both.

    Why 3 evaluations: one evaluation of 100 problems at accuracy ~0.5 has a standard deviation of ~0.05, the
    size of the margin, so a single-evaluation rule would fail a run that did not change at all."""
    h = HEALTH
    e = _evals(run).iloc[1:]
    roll = e.rolling(h["window"], min_periods=h["window"]).mean()
    later = roll[(roll.index >= h["from_step"]) & roll.notna()]
    warm = _evals(run).loc[0]
    kept = bool(len(later) and (later >= warm - h["acc_drop"] - 1e-12).all())
    rare = bool(np.nanmean(_rl(run, "grad_clip_frac")) < h["clip_frac"])
    return dict(accuracy_kept=kept, clip_rare=rare, healthy=kept and rare)
