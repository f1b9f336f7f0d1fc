"""Statistics of the claims chapter (erc_core.book.stats, erc_core.book.claims): reference values, coverage, bounds,
and the verdict table on the shipped data (no kernel, a few seconds)."""

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.stats as sps

from erc_core.book import claims, plots_study, stats
from erc_core.rl import study

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "data/claims-v2"


# ------------------------------------------------------------------ Holm
def test_holm_hand_computed():
    """m = 4: sorted 0.005, 0.01, 0.03, 0.04 -> x4, x3, x2, x1 = 0.02, 0.03, 0.06, 0.04 -> running max 0.02, 0.03,
    0.06, 0.06 (the same as statsmodels' multipletests(method="holm"))."""
    adj, rej = stats.holm([0.01, 0.04, 0.03, 0.005])
    np.testing.assert_allclose(adj, [0.03, 0.06, 0.06, 0.02])
    assert rej.tolist() == [True, False, False, True]
    adj, rej = stats.holm([0.01, 0.04, 0.03, 0.005], alpha=0.065)
    assert rej.tolist() == [True, True, True, True]


def test_holm_caps_at_one_skips_nan_and_checks_input():
    adj, rej = stats.holm([0.5, math.nan, 0.6])
    assert adj[0] == 1.0 and adj[2] == 1.0 and math.isnan(adj[1]) and not rej.any()  # m = 2, not 3
    adj, _ = stats.holm([0.02, math.nan])
    assert adj[0] == pytest.approx(0.02)  # a family of one is not corrected
    with pytest.raises(ValueError, match="p-values"):
        stats.holm([1.2])
    with pytest.raises(ValueError, match="alpha"):
        stats.holm([0.1], alpha=0.0)


def test_holm_is_at_least_as_strict_as_unadjusted_and_at_most_bonferroni():
    p = np.random.default_rng(0).uniform(0, 0.2, size=12)
    adj, _ = stats.holm(p)
    assert (adj >= p).all() and (adj <= np.minimum(1, p * len(p)) + 1e-15).all()


# ------------------------------------------------------------------ tests, verdicts
def test_paired_test_p_value_is_scipys_paired_t_test():
    runs = pd.DataFrame(dict(variant=["a"] * 4 + ["b"] * 4, seed=[0, 1, 2, 3] * 2,
                             value=[0.40, 0.50, 0.45, 0.55, 0.47, 0.52, 0.50, 0.66]))
    t = stats.paired_test(runs, "a", "b")
    ref = sps.ttest_rel([0.47, 0.52, 0.50, 0.66], [0.40, 0.50, 0.45, 0.55])
    assert t["n"] == 4 and t["mean"] == pytest.approx(0.0625)
    assert t["p"] == pytest.approx(ref.pvalue, rel=1e-9)
    one = stats.one_sample_test([0.3, 0.35, 0.4], 0.5)
    assert one["p"] == pytest.approx(sps.ttest_1samp([0.3, 0.35, 0.4], 0.5).pvalue, rel=1e-9)
    assert one["mean"] == pytest.approx(-0.15)


def test_verdict_words():
    assert stats.verdict(0.2, 0.1, 0.3) == "resolved: +"
    assert stats.verdict(-0.2, -0.3, -0.1) == "resolved: -"
    assert stats.verdict(0.1, -0.1, 0.3) == "not resolved"          # never "no change"
    assert stats.verdict(0.2, 0.1, 0.3, p_adjusted=0.2) == "not resolved"   # Holm takes it back
    assert stats.verdict(0.2, 0.1, 0.3, p_adjusted=0.01) == "resolved: +"
    assert stats.verdict(math.nan, math.nan, math.nan) == "not resolved"
    assert set(stats.VERDICTS) == {"resolved: +", "resolved: -", "not resolved"}


def test_family_adds_holm_and_size():
    fam = stats.family([dict(name="x", mean=1.0, low=0.5, high=1.5, p=0.01),
                        dict(name="y", mean=-1.0, low=-1.5, high=-0.5, p=0.02),
                        dict(name="z", mean=0.1, low=-0.5, high=0.7, p=0.6)])
    np.testing.assert_allclose(fam["p_holm"], [0.03, 0.04, 0.6])
    assert fam["verdict"].tolist() == ["resolved: +", "resolved: -", "not resolved"]
    assert (fam["family_size"] == 3).all()
    with pytest.raises(ValueError, match="keys"):
        stats.family([dict(name="x", mean=1.0)])


# ------------------------------------------------------------------ intervals that respect bounds
def test_bootstrap_is_reproducible_and_covers_a_known_mean():
    """Percentile bootstrap of the mean, n = 30 draws of Exponential(1) (true mean 1), 200 data sets with fixed
    seeds: about 95% of the intervals cover 1 (a percentile bootstrap runs a little under its level at n = 30)."""
    x = np.random.default_rng(1).exponential(size=30)
    assert stats.bootstrap_ci(x, seed=3) == stats.bootstrap_ci(x, seed=3)
    rng = np.random.default_rng(7)
    hits = [lo <= 1.0 <= hi for lo, hi in (stats.bootstrap_ci(rng.exponential(size=30), n_boot=2000, seed=k)[1:]
                                           for k in range(200))]
    assert 0.85 <= np.mean(hits) <= 0.99


def test_bounded_intervals_stay_inside_the_bounds():
    shares = [0.001, 0.002, 0.0015]          # a t-interval on these goes below 0 ...
    m, lo, hi = study.ci95([0.001, 0.002, 0.03])
    assert lo < 0
    c, lo, hi = stats.transformed_ci([0.001, 0.002, 0.03], 0.0, 1.0)  # ... the logit one does not
    assert 0 < lo < c < hi < 1
    c, lo, hi = stats.transformed_ci(shares, 0.0, math.inf)
    assert c == pytest.approx(float(np.exp(np.mean(np.log(shares)))))  # geometric mean
    assert 0 < lo < c < hi
    _, lo, hi = stats.transformed_ci([0.0, 0.1, 0.2], 0.0, 1.0)       # a value on the bound: bootstrap
    assert 0.0 <= lo <= hi <= 0.2
    _, lo, hi = stats.bootstrap_ci([0.0, 1.0, 1.0, 0.0, 1.0])
    assert 0.0 <= lo <= hi <= 1.0
    with pytest.raises(ValueError, match="lie in"):
        stats.transformed_ci([1.5], 0.0, 1.0)
    with pytest.raises(ValueError, match="low < high"):
        stats.transformed_ci([0.5], 1.0, 0.0)


# ------------------------------------------------------------------ the shipped data
@pytest.fixture(scope="module")
def shipped():
    return claims.load_claims_data(DATA)


@pytest.fixture(scope="module")
def family_table(shipped):
    return claims.claim_tests(shipped)


def test_claim_tests_on_the_shipped_data(shipped, family_table):
    """The family on the shipped v2 data: one Holm family over every test, 10 seeds per core comparison and 5 per
    stress setting, and one test recomputed independently from the raw CSV with scipy's paired t-test."""
    t = family_table
    ran = sum({a, b} <= set(shipped["offpolicy"][0]["variant"]) for a, b in claims.STRESS.values())
    assert (t["family_size"] == len(t)).all()
    assert t.claim.isin(["1", "1b", "2", "3", "4", "DPPO"]).sum() == 16 and (t.claim == "stress").sum() == ran
    assert set(t["source"]) <= set(claims.SOURCES) and set(t["verdict"]) <= set(stats.VERDICTS)
    assert (t.loc[t.claim.isin(["1", "1b", "2", "3", "4", "DPPO"]), "n"] == 10).all()
    assert (t.loc[t.claim == "stress", "n"] == 5).all()
    core = shipped["core"][0]
    last3 = (core.dropna(subset=["eval_acc"]).query("step > 0").sort_values("step")
             .groupby(["variant", "seed"])["eval_acc"].apply(lambda x: x.tail(3).mean()).unstack("variant"))
    ref = sps.ttest_rel(last3["dapo_erc"], last3["dapo"])
    row = t[t.name == "accuracy: dapo_erc - dapo"].iloc[0]
    assert row["mean"] == pytest.approx((last3["dapo_erc"] - last3["dapo"]).mean())
    assert row.p == pytest.approx(ref.pvalue, rel=1e-9)
    assert row.p_holm >= row.p


def test_claims_table_on_the_shipped_data(shipped, family_table):
    table = claims.claims_table(shipped, family_table)
    assert list(table.columns) == ["claim", "source", "measured", "verdict"]
    assert set(table["source"]) <= set(claims.SOURCES)
    src = dict(zip(table["claim"].str.split(".").str[0], table["source"]))
    assert src["2"] == src["4"] == "paper abstract" and src["3"] == src["1b"] == "secondary summary"
    assert src["5"] == "mechanism"
    assert table.set_index("source").loc["mechanism", "verdict"] == "holds exactly"
    assert not table["verdict"].str.contains("no change").any()
    rows = table.set_index(table["claim"].str.split(".").str[0])["verdict"]
    assert all(rows[c] == "reproduced" or rows[c].startswith("not reproduced (") for c in ("1", "2", "3", "4"))


def test_intro_key_findings_match_the_claims_chapter(shipped, family_table):
    """The intro's key-findings table states, per claim, the verdict the shipped data give (first words)."""
    table = claims.claims_table(shipped, family_table).set_index("claim")
    rows = [line.split("|")[1:4] for line in (ROOT / "book/intro.md").read_text().splitlines()
            if line.startswith("| ") and line[2].isdigit()]
    assert len(rows) == 5
    for claim, source, verdict in (map(str.strip, r) for r in rows):
        assert table.loc[claim, "source"] == source
        assert table.loc[claim, "verdict"].split(" (")[0] == verdict, claim


def test_claim_verdict_words():
    names = ["a", "b"]
    assert claims.claim_verdict(["resolved: +", "resolved: +"], names, "+") == "reproduced"
    assert claims.claim_verdict(["resolved: +", "not resolved"], names, "+") == "not reproduced (not resolved: b)"
    assert claims.claim_verdict(["resolved: -", "not resolved"], names, "+") == \
        "not reproduced (opposite: a; not resolved: b)"
    assert claims.claim_verdict(["resolved: -", "resolved: -"], names, "-") == "reproduced"
    with pytest.raises(ValueError, match="expected"):
        claims.claim_verdict([], [], "up")


def test_stress_verdict_words():
    assert claims._stress_verdict(0, 0) == "not testable here: no run collapsed"
    assert claims._stress_verdict(1, 2).startswith("not supported") and claims._stress_verdict(1, 1).startswith("not s")
    assert claims._stress_verdict(3, 1).startswith("not resolved: fewer collapses with ERC (1 vs 3 runs)")


def test_run_flags_and_stress_table_count_runs():
    """Two seeds of one variant: one collapses (accuracy), one does not; the table counts 1 of 2 with the exact
    interval, and final accuracy is the mean of the last 3 evaluations after step 0."""
    ok = _run({0: 0.5, 100: 0.5, 150: 0.6, 200: 0.7}, [1.0] * 200, [0.5] * 200)
    bad = _run({0: 0.5, 100: 0.3, 150: 0.3, 200: 0.3}, [1.0] * 200, [0.5] * 200)
    table = pd.concat([ok.assign(variant="v", seed=0, run_id="v__seed0"),
                       bad.assign(variant="v", seed=1, run_id="v__seed1")])
    flags = claims.run_flags(table, claims.collapse_flags)
    assert flags["collapsed"].tolist() == [False, True]
    assert flags["final_acc"].tolist() == pytest.approx([0.6, 0.3]) and flags["below_warm"].tolist() == [False, True]
    lo, hi = stats.binomial_ci(1, 2)[1:]
    assert claims.stress_table(table).loc["v", "collapsed"] == f"1 of 2 [{lo:.2f}, {hi:.2f}]"


def test_forest_plot_draws_every_test(family_table):
    t = family_table
    fig = plots_study.fig_forest(t)
    axes = fig.get_axes()
    assert len(axes) == t["claim"].nunique()
    assert sum(len(ax.get_yticks()) for ax in axes) == len(t)
    with pytest.raises(ValueError, match="missing columns"):
        plots_study.fig_forest(t.drop(columns="verdict"))


def test_binomial_ci_reference_values():
    """Clopper-Pearson: 0 of 10 -> [0, 1 - 0.025^(1/10)] = [0, 0.3085]; 10 of 10 mirrors it; 3 of 10 ->
    [0.0667, 0.6525] (the standard table values)."""
    assert stats.binomial_ci(0, 10) == pytest.approx((0.0, 0.0, 1 - 0.025 ** 0.1))
    assert stats.binomial_ci(10, 10) == pytest.approx((1.0, 0.025 ** 0.1, 1.0))
    rate, lo, hi = stats.binomial_ci(3, 10)
    assert rate == 0.3 and lo == pytest.approx(0.0667, abs=1e-4) and hi == pytest.approx(0.6525, abs=1e-4)
    with pytest.raises(ValueError, match="0 <= k <= n"):
        stats.binomial_ci(4, 3)


def _run(evals: dict, entropy, reward, clip=None):
    """A one-run per-step table: RL steps 1..len(entropy), evaluations at the given steps."""
    n = len(entropy)
    df = pd.DataFrame(dict(step=np.arange(n + 1), entropy_mean=[np.nan] + list(entropy),
                           reward_mean=[np.nan] + list(reward),
                           grad_clip_frac=[np.nan] + list(clip if clip is not None else [0.0] * n)))
    df["eval_acc"] = df["step"].map(evals)
    return df


def test_collapse_flags_reference_cases():
    flat = [1.0] * 200
    ok = _run({0: 0.5, 100: 0.45, 150: 0.5, 200: 0.42}, flat, [0.5] * 200)
    assert claims.collapse_flags(ok) == dict(accuracy=False, entropy=False, reward=False, collapsed=False)
    acc = _run({0: 0.5, 100: 0.45, 150: 0.39, 200: 0.35}, flat, [0.5] * 200)   # last-3 mean 0.397 < 0.40
    assert claims.collapse_flags(acc)["accuracy"] and claims.collapse_flags(acc)["collapsed"]
    blow = [1.0] * 100 + [3.5] * 100                                            # rolling mean reaches 3.5 > 3 x 1.0
    assert claims.collapse_flags(_run({0: 0.5, 200: 0.5}, blow, [0.5] * 200))["entropy"]
    edge = [1.0] * 100 + [3.0] * 100                                            # exactly 3x is not > 3x
    assert not claims.collapse_flags(_run({0: 0.5, 200: 0.5}, edge, [0.5] * 200))["entropy"]
    rew = [0.6] * 20 + [0.4] * 130 + [0.29] * 50                                # 0.29 < 0.5 x 0.6
    assert claims.collapse_flags(_run({0: 0.5, 200: 0.5}, flat, rew))["reward"]
    with pytest.raises(ValueError, match="step 0"):
        claims.collapse_flags(_run({200: 0.5}, flat, [0.5] * 200))


def test_health_flags_reference_cases():
    """Means of 3 consecutive evaluations ending at steps >= 100 against warm start - 0.05 = 0.39."""
    evals = {0: 0.44, 50: 0.30, 100: 0.50, 150: 0.40, 200: 0.35, 250: 0.45}  # means at 150, 200, 250: 0.40 0.417 0.40
    good = _run(evals, [1.0] * 250, [0.5] * 250, [0.0] * 150 + [1.0] * 100)
    assert claims.health_flags(good) == dict(accuracy_kept=True, clip_rare=True, healthy=True)  # one 0.35 is noise
    bad = _run({**evals, 250: 0.40}, [1.0] * 250, [0.5] * 250, [1.0] * 125 + [0.0] * 125)  # 0.383 at 250
    assert claims.health_flags(bad) == dict(accuracy_kept=False, clip_rare=False, healthy=False)


def test_first_harness_dapo_runs_fail_the_health_criteria():
    """The first harness (issue 14's finding): every DAPO run drops below its warm start after step 100 or
    clips on almost every update; the shipped runs predate grad_clip_frac, so it is derived from grad_norm > 1."""
    arith = study.load(ROOT / "data/claims-2026-11-28/arith")[0]
    for seed, run in arith[arith.variant == "dapo"].groupby("seed"):
        run = run.assign(grad_clip_frac=(run["grad_norm"] + 1e-6 > 1.0).astype(float))
        flags = claims.health_flags(run)
        assert not flags["clip_rare"] and not flags["healthy"], seed


@pytest.mark.parametrize("grid", sorted((ROOT / "grids").glob("claims_v2*.yaml")), ids=lambda p: p.name)
def test_v2_grids_load_and_every_run_config_is_valid(grid):
    """The prepared (not yet run) v2 grids: each loads, each variant's resolved config validates, and the
    seed counts are the issue's (10 for the core comparison, >= 5 elsewhere)."""
    from erc_core.rl.config import load_config

    g = study.load_grid(grid)
    for v in g.variants:
        load_config(v.config, {**g.base, **v.overrides, "seed": 0})
    assert g.seeds == (10 if grid.name == "claims_v2.yaml" else 5)
    if grid.name == "claims_v2.yaml":
        assert {v.name for v in g.variants} == {"dapo", "dapo_erc", "gppo", "gppo_erc", "dppo"}


def test_others_grid_adds_paired_tests_and_a_table(shipped):
    """An others grid (here: copies of DAPO's seeds 0-4, one shifted by +0.05 accuracy) adds one paired test per
    control / band to the same Holm family, and others_table reports each beside its reference."""
    core = shipped["core"][0]
    dapo = core[(core.variant == "dapo") & (core.seed < 5) & (core.step <= 400)]   # a 400-step others grid
    shifted = dapo.assign(variant="clip_cov", eval_acc=dapo["eval_acc"] + 0.05)
    data = {**shipped, "others": (pd.concat([dapo.assign(variant="dapo_penalty"), shifted,
                                             dapo.assign(variant="erc_0.90_1.10")]), None)}
    t = claims.claim_tests(data)
    base = claims.claim_tests({k: v for k, v in shipped.items() if k != "others"})
    assert len(t) == len(base) + 3 and (t["family_size"] == len(t)).all()
    row = t.set_index("name").loc["accuracy: clip_cov - dapo"]
    assert row["n"] == 5 and row["mean"] == pytest.approx(0.05) and row["verdict"] == "resolved: +"
    assert t.set_index("name").loc["accuracy: dapo_penalty - dapo", "verdict"] == "not resolved"
    table = claims.claims_table(data, t).set_index("claim")
    verdict = table.loc["Other entropy controls vs DAPO (accuracy)", "verdict"]
    assert verdict == "clip_cov - dapo higher; dapo_penalty - dapo: equal in every seed"
    band = table.loc["The ERC band's width (accuracy vs DAPO)", "verdict"]
    assert band == "erc_0.90_1.10 - dapo: equal in every seed"
    unresolved = pd.DataFrame(dict(name=["x: a - b", "x: c - b"], low=[-0.1, -0.2], high=[0.1, 0.05],
                                   verdict=["not resolved"] * 2))
    assert claims._family_verdict(unresolved) == "all 2 not resolved"
    others = claims.others_table(data, t)
    assert list(others.index) == ["dapo", "dapo_penalty", "clip_cov", "erc_0.90_1.10", "dapo_erc"]
    assert (others["seeds"] == 5).all() and others.loc["clip_cov", "difference (Holm)"].endswith("(resolved: +)")
    # the core-grid rows are taken up to the others grid's last step: DAPO's row equals its copy's
    assert others.loc["dapo", "final accuracy"] == others.loc["dapo_penalty", "final accuracy"]
    assert others.loc["dapo_erc", "difference (Holm)"] == ""
    with pytest.raises(ValueError, match="no others grid"):
        claims.others_table({k: v for k, v in shipped.items() if k != "others"}, base)
