"""Study runner: grid parsing, a tiny grid end to end (pool, resume/skip, tidy table), statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from erc_core.study import ci95, collect, load_grid, per_run, run_grid, summarize

TINY = dict(steps=2, arith_max_operand=9, eval_size=10, eval_every=2, tiny_hidden=32, tiny_layers=1, tiny_heads=2,
            warmstart_steps=5, warmstart_batch=16, prompts_per_step=4, group_size=4, mini_batch_size=8,
            max_new_tokens=3, log_tokens_every=0, save_every=1)


def write_grid(tmp_path, variants, base=TINY, seeds=2):
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(dict(base=base, seeds=seeds, variants=variants)))
    return path


def test_load_grid_resolves_configs_and_rejects_bad_grids(tmp_path):
    grid = load_grid(write_grid(tmp_path, [dict(name="dapo", config="configs/tiny_arith_dapo.yaml"),
                                           dict(name="erc", config="configs/tiny_arith_erc.yaml",
                                                set=dict(erc_low=0.9))]))
    assert [v.name for v in grid.variants] == ["dapo", "erc"] and grid.seeds == 2
    assert grid.variants[1].overrides == {"erc_low": 0.9}
    bad = [([], "variants"), ([dict(name="a", config="nope.yaml")], "not found"),
           ([dict(name="a b", config="configs/base.yaml")], "name"),
           ([dict(name="a", config="configs/base.yaml")] * 2, "unique")]
    for variants, msg in bad:
        with pytest.raises(ValueError, match=msg):
            load_grid(write_grid(tmp_path, variants))


@pytest.mark.slow
def test_tiny_grid_runs_once_then_reuses_and_reruns_on_change(tmp_path):
    grid = load_grid(write_grid(tmp_path, [dict(name="dapo", config="configs/tiny_arith_dapo.yaml"),
                                           dict(name="erc", config="configs/tiny_arith_erc.yaml")]))
    logs = []
    table = run_grid(grid, tmp_path / "out", workers=2, log=logs.append)
    assert sorted(table["run_id"].unique()) == ["dapo__seed0", "dapo__seed1", "erc__seed0", "erc__seed1"]
    assert set(table["step"]) == {0, 1, 2} and len(table) == 4 * 3
    assert (table.loc[table.variant == "dapo", "erc_clipfrac"].dropna() == 0).all()
    on_disk = pd.read_csv(tmp_path / "out" / "metrics.csv")
    assert len(on_disk) == len(table) and set(on_disk.columns) == set(table.columns)
    # the two seeds differ, the same seed in the same variant is reproducible (rerun below)
    r = table.loc[table.step == 1].set_index("run_id")["reward_mean"]
    assert "4 runs, 0 to run" not in logs[0]

    logs.clear()
    again = run_grid(grid, tmp_path / "out", workers=2, log=logs.append)
    assert "4 runs, 0 to run" in logs[0]
    pd.testing.assert_frame_equal(again, table)

    logs.clear()
    changed = run_grid(grid, tmp_path / "out", workers=2, overrides=dict(steps=3), log=logs.append)
    assert "4 runs, 4 to run" in logs[0] and set(changed["step"]) == {0, 1, 2, 3}
    # runs are resumable: extending 2 -> 3 steps reruns from scratch (config changed), same first steps
    r2 = changed.loc[changed.step == 1].set_index("run_id")["reward_mean"]
    pd.testing.assert_series_equal(r.sort_index(), r2.sort_index())


def test_collect_without_runs_is_an_error(tmp_path):
    with pytest.raises(ValueError, match="no finished runs"):
        collect(tmp_path)


def fake_table() -> pd.DataFrame:
    rows = []
    for variant, jump in (("a", 0.0), ("b", 1.0)):
        for seed in range(3):
            for step in range(0, 11):
                rows.append(dict(run_id=f"{variant}__seed{seed}", variant=variant, seed=seed, step=step,
                                 reward_mean=step / 10 + seed / 100 if step else np.nan,
                                 entropy_mean=1.0 + jump * (step % 2) if step else np.nan))
    return pd.DataFrame(rows)


def test_per_run_reducers_reference_values():
    t = fake_table()
    last = per_run(t, "reward_mean", "last", last_k=2).set_index("run_id")["value"]
    assert last["a__seed1"] == pytest.approx((0.9 + 1.0) / 2 + 0.01)
    mean = per_run(t, "reward_mean", "mean").set_index("run_id")["value"]
    assert mean["b__seed0"] == pytest.approx(0.55)
    jumpy = per_run(t, "entropy_mean", "diff_std").set_index("run_id")["value"]
    assert jumpy["a__seed0"] == 0.0                          # constant entropy: no step-to-step variability
    diffs = np.diff([1.0 + (s % 2) for s in range(1, 11)])
    assert jumpy["b__seed2"] == pytest.approx(diffs.std(ddof=1))


def test_ci95_matches_the_t_interval():
    x = [0.2, 0.5, 0.4, 0.9]
    m, lo, hi = ci95(x)
    half = sps.t.ppf(0.975, 3) * np.std(x, ddof=1) / 2
    assert (m, lo, hi) == pytest.approx((0.5, 0.5 - half, 0.5 + half))
    assert ci95([1.0])[0] == 1.0 and math.isnan(ci95([1.0])[1])
    assert math.isnan(ci95([])[0])


def test_summarize_per_variant():
    s = summarize(fake_table(), "entropy_mean", "diff_std").set_index("variant")
    assert s.loc["a", "n"] == 3 and s.loc["a", "mean"] == 0.0
    assert s.loc["b", "mean"] > 0.9 and s.loc["b", "low"] <= s.loc["b", "mean"] <= s.loc["b", "high"]


def test_bad_arguments():
    t = fake_table()
    with pytest.raises(ValueError, match="reducer"):
        per_run(t, "reward_mean", "median")
    with pytest.raises(ValueError, match="metric"):
        per_run(t, "nope")
    with pytest.raises(ValueError, match="last_k"):
        per_run(t, "reward_mean", last_k=0)
