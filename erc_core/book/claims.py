"""The claims chapter's analysis, computed from the shipped tables of the v2 claims study (no kernel, seconds).

::

    data = load_claims_data("data/claims-v2")      # {"core": ..., "offpolicy": ..., "others": ...}: (metrics, tokens)
    tests = claim_tests(data)                      # every statistical test: one family, Holm-corrected
    table = claims_table(data, tests)              # claim, source, what we measured, verdict
    health = health_table(data["core"][0])         # the pre-registered harness criteria, run by run
    stress = stress_table(data["offpolicy"][0])    # the pre-registered collapse definition, run by run
    others = others_table(data, tests)             # the other entropy controls and the ERC band sweep

Each claim carries its **source**: ``"paper abstract"`` (the ERC paper's abstract says it), ``"secondary
summary"`` (a summary of the paper says it; we did not find it in the paper), ``"mechanism"`` (it follows from the
gate's definition: a check of the implementation, not a finding) or ``"none"`` (nobody claimed it; the book asks).
Every t-test of the chapter is one family for Holm's correction (:func:`erc_core.book.stats.family`); its size is in
each row. A claim's verdict is "reproduced" only when every test of it is resolved in the claimed direction after
the correction; otherwise it is "not reproduced" and says why (not resolved, or the opposite direction).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

from erc_core.rl import study
from .stats import binomial_ci, family, one_sample_test, paired_test, transformed_ci

__all__ = ["SOURCES", "GRIDS", "PAIRS", "STRESS", "CONTROLS", "BANDS", "load_claims_data", "run_flags", "health_table",
           "stress_table", "others_table", "claim_tests", "claims_table", "collapse_flags", "health_flags"]

SOURCES = ("paper abstract", "secondary summary", "mechanism", "none")
GRIDS = ("core", "offpolicy")                                              # required grid folders
OPTIONAL_GRIDS = ("others",)                                               # analysed where shipped
PAIRS = (("dapo", "dapo_erc"), ("gppo", "gppo_erc"))                      # (base, base + ERC), paired by seed
STRESS = {"u=4": ("dapo_u4", "dapo_erc_u4"), "u=8": ("dapo_u8", "dapo_erc_u8"),      # off-policy stress test
          "u=16": ("dapo_u16", "dapo_erc_u16"),
          "u=4, lr 5e-4": ("dapo_u4_lr5e-4", "dapo_erc_u4_lr5e-4"),
          "u=16, lr 5e-4": ("dapo_u16_lr5e-4", "dapo_erc_u16_lr5e-4")}
ONPOLICY = ("dapo_u1", "dapo_erc_u1")                                       # one update per rollout
ONPOLICY_METRICS = ["reward_mean", "eval_acc", "entropy_mean", "grad_norm", "loss", "ppo_kl", "entropy_ratio_mean"]
LAST_EVALS = 3   # final accuracy: the mean of the last 3 greedy evaluations of a run
#: The other entropy controls of ``grids/claims_v2_others.yaml`` (5 seeds): variant -> (the core-grid variant it
#: is compared with, paired by seed, and its label). Each comparison is one test of the family.
CONTROLS = {
    "dapo_penalty": ("dapo", "batch-mean ratio penalty (chapter 3)"),
    "dapo_ent_bonus": ("dapo", "entropy bonus"),
    "dapo_kl": ("dapo", "KL penalty"),
    "clip_cov": ("dapo", "Clip-Cov"),
    "kl_cov": ("dapo", "KL-Cov"),
    "dppo_kl": ("dapo", "DPPO-KL"),
    "dppo_erc": ("dppo", "DPPO-TV + ERC"),
    "dapo_onpolicy": ("dapo", "DAPO, 1 update per rollout"),
}
#: DAPO + ERC with other bands (same grid) -> (low, high); each is compared with DAPO. ``"dapo_erc"`` (core grid)
#: is the paper's band.
BANDS = {"erc_0.80_1.20": (0.80, 1.20), "erc_0.90_1.10": (0.90, 1.10), "dapo_erc": (0.95, 1.05),
         "erc_0.98_1.02": (0.98, 1.02)}


def load_claims_data(data_dir: str | os.PathLike) -> dict[str, tuple[pd.DataFrame, pd.DataFrame | None]]:
    """``{grid: (metrics table, token table)}`` for the grids of a v2 claims study folder (``--export`` output of
    ``grids/claims_v2.yaml`` in ``core/``, of ``grids/claims_v2_offpolicy.yaml`` in ``offpolicy/`` and, where
    present, of ``grids/claims_v2_others.yaml`` in ``others/``)."""
    d = Path(data_dir)
    missing = [g for g in GRIDS if not (d / g).is_dir()]
    if missing:
        raise FileNotFoundError(f"{d} lacks the grid folders {missing} (expected {list(GRIDS)})")
    return {g: study.load(d / g) for g in GRIDS + OPTIONAL_GRIDS if g in GRIDS or (d / g).is_dir()}


def _others(data: dict) -> pd.DataFrame:
    """The others grid's metrics table (empty where it was not shipped)."""
    return data["others"][0] if "others" in data else data["core"][0].iloc[:0]


def _until(core: pd.DataFrame, others: pd.DataFrame) -> pd.DataFrame:
    """The core grid's rows up to the others grid's last step: a run of the others grid's base is, step for step,
    the core run of the same variant and seed (``grids/claims_v2_others.yaml``), so comparisons pair equal lengths."""
    return core[core.step <= int(others["step"].max())]


def final_accuracy(table: pd.DataFrame) -> pd.DataFrame:
    """One number per run: the mean of its last ``LAST_EVALS`` (3) greedy evaluations (a :func:`study.per_run`
    table)."""
    return study.per_run(table, "eval_acc", "last", LAST_EVALS)


def run_flags(table: pd.DataFrame, flags=None) -> pd.DataFrame:
    """One row per run (``variant, seed``) with its warm-start and final accuracy, ``below_warm`` (final <
    warm start), the mean share of updates in which the gradient clip bound, and the flags of ``flags`` (a function
    of one run's per-step table, e.g. :func:`health_flags` or :func:`collapse_flags`; None: no flags)."""
    rows = []
    for (variant, seed), run in table.groupby(["variant", "seed"], sort=False):
        e = run.dropna(subset=["eval_acc"]).sort_values("step")
        warm = float(e.loc[e.step == 0, "eval_acc"].iloc[0])
        final = float(e.loc[e.step > 0, "eval_acc"].tail(LAST_EVALS).mean())
        row = dict(variant=variant, seed=int(seed), warm_acc=warm, final_acc=final, below_warm=final < warm,
                   clip_binds=float(run.loc[run.step >= 1, "grad_clip_frac"].mean()))
        rows.append({**row, **(flags(run) if flags else {})})
    return pd.DataFrame(rows)


def _count(flags: pd.Series) -> str:
    k, n = int(flags.sum()), len(flags)
    rate, lo, hi = binomial_ci(k, n)
    return f"{k} of {n} [{lo:.2f}, {hi:.2f}]"


def health_table(core: pd.DataFrame) -> pd.DataFrame:
    """The harness criteria (:func:`health_flags`) per variant of the core grid: runs that keep their held-out
    accuracy, runs whose gradient clip binds in < 50% of updates, runs ending below their warm start (each "k of n"
    with its exact 95% interval), and the mean share of updates in which the clip bound (a logit-t interval)."""
    flags = run_flags(core, health_flags)
    rows = {}
    for v, g in flags.groupby("variant", sort=False):
        rows[v] = {"healthy (both criteria)": _count(g["healthy"]), "accuracy kept": _count(g["accuracy_kept"]),
                   "clip binds in < 50% of updates": _count(g["clip_rare"]),
                   "ended below warm start": _count(g["below_warm"]),
                   "share of updates clipped": study.format_ci(*transformed_ci(g["clip_binds"], 0.0, 1.0))}
    return pd.DataFrame(rows).T


def stress_table(offpolicy: pd.DataFrame) -> pd.DataFrame:
    """The off-policy stress test per variant: runs that collapsed under the pre-registered definition
    (:func:`collapse_flags`) as "k of n [exact 95% interval]", each of its three flags, and the final accuracy
    (mean over seeds, 95% t-interval)."""
    flags = run_flags(offpolicy, collapse_flags)
    rows = {}
    for v, g in flags.groupby("variant", sort=False):
        rows[v] = {"collapsed": _count(g["collapsed"]), "accuracy flag": int(g["accuracy"].sum()),
                   "entropy flag": int(g["entropy"].sum()), "reward flag": int(g["reward"].sum()),
                   "warm start": study.format_ci(*study.ci95(g["warm_acc"])),
                   "final accuracy": study.format_ci(*study.ci95(g["final_acc"]))}
    return pd.DataFrame(rows).T


def _test(claim: str, source: str, what: str, t: dict) -> dict:
    return dict(claim=claim, source=source, name=what, **t)


def claim_tests(data: str | os.PathLike | dict) -> pd.DataFrame:
    """Every test behind the verdict table, one row each: ``claim, source, name, n, mean, low, high, p`` (paired by
    seed unless said), then Holm's ``p_holm``, ``verdict`` and ``family_size`` over all of them."""
    data = load_claims_data(data) if not isinstance(data, dict) else data
    core, tokens = data["core"]
    off = data["offpolicy"][0]
    rows = []
    for v in ("dapo_erc", "gppo_erc"):   # claim 1: how much more ERC gates than PPO clips (log of the ratio)
        t = core[core.variant == v]
        erc = study.per_run(t, "erc_clipfrac", "mean")["value"].to_numpy(float)
        ppo = study.per_run(t, "ppo_clipfrac", "mean")["value"].to_numpy(float)
        rows.append(_test("1", "paper abstract", f"{v}: log(gated share / PPO-clipped share)",
                          one_sample_test(np.log(erc / ppo))))
        rows.append(_test("1b", "secondary summary", f"{v}: gated share - 0.20", one_sample_test(erc, 0.20)))
    for metric, reducer, label in (("grad_norm_clipped", "diff_std", "J(grad norm received)"),   # claim 2
                                   ("grad_norm_clipped", "rel_diff_std", "J(grad norm received) / mean"),
                                   ("entropy_mean", "diff_std", "J(entropy)")):
        pr = study.per_run(core, metric, reducer)
        for a, b in PAIRS:
            rows.append(_test("2", "paper abstract", f"{label}: {b} - {a}", paired_test(pr, a, b)))
    ts = study.token_stats(tokens)   # claim 3: share of the gated tokens below the run's median entropy - 0.5
    for v in ("dapo_erc", "gppo_erc"):
        rows.append(_test("3", "secondary summary", f"{v}: share of gated tokens below median entropy - 0.5",
                          one_sample_test(ts.loc[ts.variant == v, "low_share_outside"], 0.5)))
    acc = final_accuracy(core)   # claim 4: held-out accuracy, ERC - base
    for a, b in PAIRS:
        rows.append(_test("4", "paper abstract", f"accuracy: {b} - {a}", paired_test(acc, a, b)))
    for a, b in (("dapo", "dppo"), ("dppo", "dapo_erc")):   # DPPO: the per-token trust region, beside ERC
        rows.append(_test("DPPO", "none", f"accuracy: {b} - {a}", paired_test(acc, a, b)))
    acc_off = final_accuracy(off)   # the stress test: ERC - DAPO at each off-policy setting
    for label, (a, b) in STRESS.items():   # settings whose runs are in the table (a grid may ship partly)
        if not {a, b} <= set(acc_off["variant"]):
            continue
        rows.append(_test("stress", "none", f"{label}: accuracy {b} - {a}", paired_test(acc_off, a, b)))
    others = _others(data)
    if not others.empty:   # the other controls and the band sweep (5 seeds), paired with the core grid's seeds
        acc_all = final_accuracy(pd.concat([_until(core, others), others], ignore_index=True))
        ran = set(others["variant"])
        for v, (ref, _) in CONTROLS.items():
            if v in ran:
                rows.append(_test("controls", "none", f"accuracy: {v} - {ref}", paired_test(acc_all, ref, v)))
        for v in BANDS:
            if v in ran:
                rows.append(_test("band", "none", f"accuracy: {v} - dapo", paired_test(acc_all, "dapo", v)))
    return family(rows)


def _short(name: str) -> str:
    return name.split(": ", 1)[-1] if name.count(":") else name


def _measured(part: pd.DataFrame, digits: int = 3) -> str:
    """Each test of a claim as ``name: mean [95% CI] (Holm p)``, joined by semicolons."""
    return "; ".join(f"{r.name}: {study.format_ci(r.mean, r.low, r.high, digits, sign=True)} (Holm p={r.p_holm:.2g})"
                     for r in part.itertuples())


def claim_verdict(verdicts: list[str], names: list[str], expected: str) -> str:
    """A claim's verdict from its tests' Holm verdicts: ``"reproduced"`` when every test is resolved in the
    ``expected`` direction ("+" or "-"); otherwise ``"not reproduced"`` with the tests that were resolved the other
    way ("opposite: ...") and those the seeds could not resolve ("not resolved: ...")."""
    if expected not in ("+", "-"):
        raise ValueError(f"expected must be '+' or '-', got {expected!r}")
    if verdicts and all(v == f"resolved: {expected}" for v in verdicts):
        return "reproduced"
    opposite = [n for n, v in zip(names, verdicts) if v.startswith("resolved") and v != f"resolved: {expected}"]
    unresolved = [n for n, v in zip(names, verdicts) if v == "not resolved"]
    parts = ([f"opposite: {', '.join(opposite)}"] if opposite else []) + \
            ([f"not resolved: {', '.join(unresolved)}"] if unresolved else [])
    return "not reproduced (" + "; ".join(parts) + ")"


def _family_verdict(part: pd.DataFrame) -> str:
    """A row of the verdict table for a group of comparisons no claim predicts: the resolved ones by name and
    direction, those equal to their reference in every seed (a difference of exactly 0), then
    how many the seeds could not resolve."""
    if part.empty:
        return "not run"
    same = (part["low"] == 0) & (part["high"] == 0)
    res = [f"{_short(r.name)} {'higher' if r.verdict == 'resolved: +' else 'lower'}" for r in part.itertuples()
           if r.verdict.startswith("resolved")]
    res += [f"{_short(n)}: equal in every seed" for n in part.loc[same, "name"]]
    k = int(((part.verdict == "not resolved") & ~same).sum())
    if k == len(part):
        return "not resolved" if k == 1 else f"all {k} not resolved"
    return "; ".join(res + ([f"{k} of {len(part)} not resolved"] if k else []))


def others_table(data: str | os.PathLike | dict, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """The other entropy controls and the ERC band sweep, one row per variant of the others grid, after DAPO (their
    reference) and DAPO + ERC with the paper's band from the core grid (the same seeds, up to the same step): seeds,
    the share of tokens gated by ERC and clipped (or masked) by the base loss (intervals inside [0, 1]), the final
    accuracy (95% t-interval), and the paired accuracy difference with the variant's reference (:data:`CONTROLS`,
    :data:`BANDS`) with its Holm verdict from ``tests`` (none for the two core-grid rows: claim 4 compares those)."""
    data = load_claims_data(data) if not isinstance(data, dict) else data
    tests = claim_tests(data) if tests is None else tests
    core, others = data["core"][0], _others(data)
    if others.empty:
        raise ValueError("the data hold no others grid (data/claims-v2/others)")
    seeds = sorted(set(others["seed"]))
    core = _until(core, others)
    table = pd.concat([others, core[core.variant.isin(["dapo", "dapo_erc"]) & core.seed.isin(seeds)]],
                      ignore_index=True)
    by_name = tests.set_index("name")
    rows = {}
    for v in [v for v in ["dapo", *CONTROLS, *BANDS] if v in set(table["variant"])]:
        t = table[table.variant == v]
        ref = CONTROLS[v][0] if v in CONTROLS else "" if v in ("dapo", "dapo_erc") else "dapo"
        share = {m: study.per_run(t, m, "mean")["value"] for m in ("erc_clipfrac", "ppo_clipfrac")}
        fa = final_accuracy(t)["value"]
        test = by_name.loc[f"accuracy: {v} - {ref}"] if f"accuracy: {v} - {ref}" in by_name.index else None
        what = (CONTROLS[v][1] if v in CONTROLS else "DAPO (the reference)" if v == "dapo"
                else f"ERC band ({BANDS[v][0]:.2f}, {BANDS[v][1]:.2f})" + (", the paper's" if v == "dapo_erc" else ""))
        rows[v] = {"what": what,
                   "seeds": t["seed"].nunique(),
                   "gated by ERC": (study.format_ci(*transformed_ci(share["erc_clipfrac"], 0.0, 1.0))
                                    if share["erc_clipfrac"].max() > 0 else "0"),
                   "clipped / masked": study.format_ci(*transformed_ci(share["ppo_clipfrac"], 0.0, 1.0), 4),
                   "final accuracy": study.format_ci(*study.ci95(fa)),
                   "vs": ref,
                   "difference (Holm)": "" if test is None else
                   f"{study.format_ci(test['mean'], test['low'], test['high'], sign=True)} ({test['verdict']})"}
    return pd.DataFrame(rows).T


def _stress_verdict(k_base: int, k_erc: int) -> str:
    """The stress test's collapse verdict from the collapsed-run counts of DAPO and DAPO + ERC (same settings and
    seeds): with 5 seeds per setting no difference of rates is resolved, so the words say what the counts allow."""
    if k_base == k_erc == 0:
        return "not testable here: no run collapsed"
    if k_erc >= k_base:
        return f"not supported: DAPO+ERC collapsed as often or more ({k_erc} vs {k_base} runs)"
    return f"not resolved: fewer collapses with ERC ({k_erc} vs {k_base} runs), too few runs to resolve the rates"


def claims_table(data: str | os.PathLike | dict, tests: pd.DataFrame | None = None) -> pd.DataFrame:
    """The chapter's verdict table: one row per claim with ``claim, source, measured, verdict`` (``tests``: the
    :func:`claim_tests` family, computed when None). ``measured`` gives each test's mean difference, 95% interval
    and Holm-adjusted p; shares are shown with intervals that stay inside [0, 1]."""
    data = load_claims_data(data) if not isinstance(data, dict) else data
    tests = claim_tests(data) if tests is None else tests
    core, off = data["core"][0], data["offpolicy"][0]

    def part(claim: str) -> pd.DataFrame:
        return tests[tests.claim == claim]

    def verdict(claim: str, expected: str) -> str:
        t = part(claim)
        return claim_verdict(t.verdict.tolist(), t.name.tolist(), expected)

    def share(v: str, metric: str, digits: int = 3) -> str:
        x = study.per_run(core[core.variant == v], metric, "mean")["value"]
        return study.format_ci(*transformed_ci(x, 0.0, 1.0), digits)

    onp_diff = max(study.max_abs_diff(off, *ONPOLICY, ONPOLICY_METRICS).values())
    onp_gated = float(off.loc[off.variant == ONPOLICY[1], "erc_clipfrac"].max())
    below = run_flags(core).groupby("variant")["below_warm"].agg(["sum", "count"])
    collapsed = run_flags(off, collapse_flags).groupby("variant")["collapsed"].agg(["sum", "count"])
    ran = [(a, b) for a, b in STRESS.values() if a in collapsed.index and b in collapsed.index]
    (k_base, n_base), (k_erc, n_erc) = ((int(collapsed.loc[list(vs), "sum"].sum()),
                                        int(collapsed.loc[list(vs), "count"].sum())) for vs in zip(*ran))
    t1b = part("1b")
    rows = [
        dict(claim="1. ERC gates far more tokens than PPO's clip", source="secondary summary",
             measured=f"gated share: DAPO+ERC {share('dapo_erc', 'erc_clipfrac')}, GPPO+ERC "
                      f"{share('gppo_erc', 'erc_clipfrac')}; PPO-clipped: {share('dapo_erc', 'ppo_clipfrac', 4)}, "
                      f"{share('gppo_erc', 'ppo_clipfrac', 4)}",
             verdict=verdict("1", "+")),
        dict(claim="1b. about 20% of tokens gated", source="secondary summary", measured=_measured(t1b),
             verdict="; ".join(f"{n.split(':')[0]}: " + ("not resolved from 20%" if v == "not resolved" else
                                                         ("above 20%" if v == "resolved: +" else "below 20%"))
                               for n, v in zip(t1b.name, t1b.verdict))),
        dict(claim="2. smoother entropy and gradient norm", source="paper abstract", measured=_measured(part("2")),
             verdict=verdict("2", "-")),
        dict(claim="3. the gated tokens are mostly low-entropy", source="secondary summary",
             measured=_measured(part("3")), verdict=verdict("3", "+")),
        dict(claim="4. ERC consistently improves accuracy", source="paper abstract",
             measured=_measured(part("4")) + "; runs ending below their warm start: " +
                      ", ".join(f"{v} {int(below.loc[v, 'sum'])}/{int(below.loc[v, 'count'])}"
                                for v in ("dapo", "dapo_erc", "gppo", "gppo_erc")),
             verdict=verdict("4", "+")),
        dict(claim="5. ERC is inactive on-policy", source="mechanism",
             measured=f"one update per rollout: largest gated share {onp_gated}; largest |ERC - DAPO| over "
                      f"{len(ONPOLICY_METRICS)} metrics and every step {onp_diff}",
             verdict="holds exactly" if onp_gated == 0 and onp_diff == 0 else "does not hold"),
        dict(claim="DPPO's trust-region mask vs ERC (accuracy)", source="none", measured=_measured(part("DPPO")),
             verdict="; ".join(f"{_short(n)}: {v}" for n, v in zip(part("DPPO").name, part("DPPO").verdict))),
        dict(claim="ERC prevents collapse under many off-policy updates", source="none",
             measured=f"collapsed runs (pre-registered definition): DAPO {k_base} of {n_base}, DAPO+ERC {k_erc} of "
                      f"{n_erc}; " + _measured(part("stress")),
             verdict=_stress_verdict(k_base, k_erc) + "; accuracy " +
                     "; ".join(f"{n.split(':')[0]}: {v}" for n, v in zip(part("stress").name, part("stress").verdict))),
    ]
    if not part("controls").empty:
        rows.append(dict(claim="Other entropy controls vs DAPO (accuracy)", source="none",
                         measured=_measured(part("controls")), verdict=_family_verdict(part("controls"))))
    if not part("band").empty:
        rows.append(dict(claim="The ERC band's width (accuracy vs DAPO)", source="none",
                         measured=_measured(part("band")), verdict=_family_verdict(part("band"))))
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
