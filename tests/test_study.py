"""Study runner: grid parsing, a tiny grid end to end (pool, resume/skip, tidy table), statistics."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats as sps

from erc_core.book import plots_study
from erc_core.rl.study import (ci95, collect, collect_tokens, export, format_ci, load, load_grid, max_abs_diff,
                              paired_diff, per_run, run_grid, summarize, token_stats)

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


def test_rel_diff_std_divides_by_the_mean_level():
    t = fake_table()
    rel = per_run(t, "entropy_mean", "rel_diff_std").set_index("run_id")["value"]
    x = np.array([1.0 + (s % 2) for s in range(1, 11)])
    assert rel["b__seed0"] == pytest.approx(np.diff(x).std(ddof=1) / x.mean())
    assert rel["a__seed0"] == 0.0


def test_paired_diff_matches_seeds_and_gives_the_t_interval():
    runs = pd.DataFrame(dict(variant=["a"] * 3 + ["b"] * 4, seed=[0, 1, 2, 2, 1, 0, 7],
                             value=[1.0, 2.0, 3.0, 3.5, 2.1, 1.6, 99.0]))
    d = paired_diff(runs, "a", "b")          # seed 7 has no partner; differences 0.6, 0.1, 0.5
    m, lo, hi = ci95([0.6, 0.1, 0.5])
    assert d["n"] == 3 and (d["mean"], d["low"], d["high"]) == pytest.approx((m, lo, hi))
    with pytest.raises(ValueError, match="variant 'c'"):
        paired_diff(runs, "a", "c")
    with pytest.raises(ValueError, match="share no seed"):
        paired_diff(pd.DataFrame(dict(variant=["a", "b"], seed=[0, 1], value=[1.0, 2.0])), "a", "b")


def test_max_abs_diff_is_zero_only_for_identical_runs():
    t = fake_table()
    same = t[t.variant == "a"].assign(variant="c", run_id=lambda d: d.run_id.str.replace("a__", "c__"))
    both = pd.concat([t, same])
    assert max_abs_diff(both, "a", "c", ["reward_mean", "entropy_mean"]) == {"reward_mean": 0.0, "entropy_mean": 0.0}
    d = max_abs_diff(both, "a", "b", ["reward_mean", "entropy_mean"])
    assert d == {"reward_mean": 0.0, "entropy_mean": 1.0}
    one_nan = both.copy()
    one_nan.loc[(one_nan.variant == "c") & (one_nan.step == 3), "reward_mean"] = np.nan
    assert max_abs_diff(one_nan, "a", "c", ["reward_mean"])["reward_mean"] == math.inf
    with pytest.raises(ValueError, match="metric"):
        max_abs_diff(both, "a", "c", ["nope"])


def test_token_stats_reference_values():
    tok = pd.DataFrame(dict(run_id="x__seed0", variant="x", seed=0,
                            old_entropy=[0.1, 0.2, 0.3, 0.4, 0.5], outside_band=[True, False, False, True, True]))
    s = token_stats(tok).iloc[0]
    assert s["n_tokens"] == 5 and s["outside_frac"] == pytest.approx(0.6) and s["h_median"] == pytest.approx(0.3)
    assert s["h_outside"] == pytest.approx(1.0 / 3) and s["h_inside"] == pytest.approx(0.25)
    assert s["low_share_outside"] == pytest.approx(1 / 3) and s["low_share_inside"] == pytest.approx(0.5)


def test_format_ci():
    assert format_ci(0.35127, 0.26987, 0.43269) == "0.351 [0.270, 0.433]"
    assert format_ci(0.163, 0.069, 0.257, sign=True) == "+0.163 [+0.069, +0.257]"
    assert format_ci(1.0, math.nan, math.nan, digits=1) == "1.0 (n < 2)"


@pytest.mark.slow
def test_tokens_export_and_load_round_trip(tmp_path):
    grid = load_grid(write_grid(tmp_path, [dict(name="dapo", config="configs/tiny_arith_dapo.yaml"),
                                           dict(name="erc", config="configs/tiny_arith_erc.yaml",
                                                set=dict(erc_low=0.9, erc_high=1.2))],
                                base=dict(TINY, log_tokens_every=1, warmstart_steps=150, steps=3), seeds=1))
    table = run_grid(grid, tmp_path / "out", workers=2, log=lambda s: None)
    tok = collect_tokens(tmp_path / "out")
    assert set(tok["variant"]) == {"dapo", "erc"} and len(tok) > 0
    erc = tok[tok.variant == "erc"]
    assert (erc["erc"]).all() and (erc["erc_low"] == 0.9).all() and (erc["erc_high"] == 1.2).all()
    assert (erc["gated"] == erc["outside_band"]).all() and not tok.loc[tok.variant == "dapo", "gated"].any()
    inside = (erc["rho"] > 0.9) & (erc["rho"] < 1.2)
    assert (erc["outside_band"] == ~inside).all()   # the run's own band, not the default one
    written = export(tmp_path / "out", tmp_path / "shipped")
    assert set(written) == {"metrics", "runs", "tokens"}
    for source in (tmp_path / "out", tmp_path / "shipped"):
        m, t = load(source)
        pd.testing.assert_frame_equal(m, table, check_dtype=False)
        pd.testing.assert_frame_equal(t.reset_index(drop=True), tok, check_dtype=False)
    (tmp_path / "out" / "runs.csv").unlink()   # a study stopped early: export ships its finished runs only
    (tmp_path / "out" / "runs" / "erc__seed0" / "DONE").unlink()
    export(tmp_path / "out", tmp_path / "partial")
    runs = pd.read_csv(tmp_path / "partial" / "runs.csv")
    assert runs["run_id"].tolist() == ["dapo__seed0"] and (runs["status"] == "finished").all()
    assert set(load(tmp_path / "partial")[0]["variant"]) == {"dapo"}
    with pytest.raises(FileNotFoundError, match="neither"):
        load(tmp_path)
    figs = (plots_study.fig_study_curves(table, {"erc": ("erc_clipfrac", ["dapo", "erc"])}, smooth=1),
            plots_study.fig_study_bars({"eval": summarize(table, "eval_acc", "last", 1)}),
            plots_study.fig_token_entropy(tok, ["dapo", "erc"]))
    assert [len(f.axes) for f in figs] == [1, 1, 2]


def test_seed_band_mean_and_interval():
    t = fake_table()
    b = plots_study.seed_band(t, "a", "reward_mean")
    assert list(b.index) == list(range(1, 11)) and (b["n"] == 3).all()
    assert b.loc[4, "mean"] == pytest.approx(0.41)
    m, lo, hi = ci95([0.4, 0.41, 0.42])
    assert (b.loc[4, "low"], b.loc[4, "high"]) == pytest.approx((lo, hi))
    smooth = plots_study.seed_band(t, "a", "reward_mean", smooth=3)
    assert smooth.loc[5, "mean"] == pytest.approx(0.51)        # centred mean of steps 4, 5, 6
    with pytest.raises(ValueError, match="variant 'z'"):
        plots_study.seed_band(t, "z", "reward_mean")
    with pytest.raises(ValueError, match="smooth"):
        plots_study.seed_band(t, "a", "reward_mean", smooth=0)


def test_study_figures_draw_every_variant_and_reject_empty_input():
    t = fake_table()
    fig = plots_study.fig_study_curves(t, {"reward": ("reward_mean", ["a", "b"]), "ent": ("entropy_mean", ["b"])})
    assert [len(ax.lines) for ax in fig.axes] == [2, 1] and [len(ax.collections) for ax in fig.axes] == [2, 1]
    s = summarize(t, "reward_mean", "last", 2)
    fig = plots_study.fig_study_bars({"r": s, "r2": s}, order=["b", "a"], ref={"r": 0.5})
    assert len(fig.axes) == 2 and [tl.get_text() for tl in fig.axes[0].get_yticklabels()] == ["b", "a"]
    for bad in (lambda: plots_study.fig_study_curves(t, {}), lambda: plots_study.fig_study_bars({}),
                lambda: plots_study.fig_token_entropy(pd.DataFrame(), [])):
        with pytest.raises(ValueError):
            bad()


def test_whole_grid_is_validated_before_any_run(tmp_path, capsys):
    """A bad last variant used to cost every earlier run first; now nothing starts and the error names it."""
    from erc_core.rl.study import main
    from erc_core.rl.config import ConfigError

    path = write_grid(tmp_path, [dict(name="good", config="configs/tiny_arith_dapo.yaml"),
                                 dict(name="typo", config="configs/tiny_arith_erc.yaml", set=dict(erc_low=2.0))])
    with pytest.raises(ConfigError, match=r"grid variant 'typo' .*'erc_low' = 2.0 is invalid"):
        run_grid(load_grid(path), tmp_path / "out", workers=1)
    assert not (tmp_path / "out").exists()
    assert main(["--grid", str(path), "--out", str(tmp_path / "out")]) == 2
    assert "'typo'" in capsys.readouterr().err and not (tmp_path / "out").exists()


def _children(pid: int) -> list[int]:
    """Live (not zombie) processes whose parent is ``pid`` (Linux /proc)."""
    from pathlib import Path

    kids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == pid and fields[0] != "Z":
            kids.append(int(stat.parent.name))
    return kids


def _alive(pid: int) -> bool:
    from pathlib import Path

    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_the_study_runner(tmp_path):
    """kill -9 of the runner: no worker survives it (they used to finish their runs as orphans, then hang)."""
    import os
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    path = write_grid(tmp_path, [dict(name="long", config="configs/tiny_arith_dapo.yaml")],
                      base=dict(TINY, steps=100000, eval_every=100000, save_every=0), seeds=1)
    code = ("import sys; from erc_core.rl.study import load_grid, run_grid; "
            f"run_grid(load_grid({str(path)!r}), {str(tmp_path / 'out')!r}, workers=1)")
    env = dict(os.environ, PYTHONPATH=str(root), OMP_NUM_THREADS="1")
    runner = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL)
    workers = []
    try:
        deadline = time.time() + 300
        while not (tmp_path / "out/runs/long__seed0/metrics.jsonl").exists():  # the worker is training
            assert runner.poll() is None and time.time() < deadline
            time.sleep(0.2)
        workers = _children(runner.pid)
        assert workers
        runner.send_signal(signal.SIGKILL)
        runner.wait()
        deadline = time.time() + 30
        while any(_alive(w) for w in workers) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(w) for w in workers), "a worker outlived the study runner"
    finally:
        runner.kill()
        for w in workers:
            if _alive(w):
                os.kill(w, signal.SIGKILL)


@pytest.mark.skipif(not __import__("sys").platform.startswith("linux"), reason="reads /proc")
def test_interrupted_pool_stops_its_runs_at_once(tmp_path):
    """An exception inside ``with process_pool(...)`` (a notebook cell interrupted while runs train) terminates the
    workers instead of waiting for their runs (here: minutes of steps); leaving it normally waits for the runs."""
    import time

    from erc_core.rl.study import process_pool
    from erc_core.rl.train import train

    cfg = dict(TINY, steps=20000, eval_every=100000, save_every=0)   # minutes: finite if the pool did wait
    t0, workers = time.time(), []
    with pytest.raises(KeyboardInterrupt):
        with process_pool(1) as pool:
            fut = pool.submit(train, "configs/tiny_arith_dapo.yaml", str(tmp_path / "run"), overrides=cfg)
            while not (tmp_path / "run" / "metrics.jsonl").exists():  # the worker is training
                assert not fut.done() and time.time() - t0 < 300, fut.exception() if fut.done() else "no start"
                time.sleep(0.2)
            workers = [p.pid for p in pool._processes.values()]
            t_interrupt = time.time()
            raise KeyboardInterrupt
    assert time.time() - t_interrupt < 10, "the pool waited for its runs"
    deadline = time.time() + 10
    while any(_alive(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    assert workers and not any(_alive(w) for w in workers), "a worker kept training after the interrupt"
    with process_pool(1) as pool:   # the normal exit waits for the submitted run
        fut = pool.submit(train, "configs/tiny_arith_dapo.yaml", str(tmp_path / "short"),
                          overrides=dict(TINY, steps=1, save_every=0))
    assert fut.done() and (tmp_path / "short" / "metrics.jsonl").exists()


@pytest.mark.slow
def test_half_finished_run_is_resumed_not_refused(tmp_path):
    """A run interrupted after step 1 (same config) is continued by the study, matching an uninterrupted one."""
    from erc_core.rl.study import _overrides, run_id
    from erc_core.rl.train import train

    grid = load_grid(write_grid(tmp_path, [dict(name="erc", config="configs/tiny_arith_erc.yaml")], seeds=1))
    v = grid.variants[0]
    rdir = tmp_path / "out/runs" / run_id(v, 0)
    train(v.config, rdir, overrides=_overrides(grid, v, 0, None), stop_at=1)
    logs = []
    table = run_grid(grid, tmp_path / "out", workers=1, log=logs.append)
    assert "1 runs, 1 to run" in logs[0] and sorted(table["step"]) == [0, 1, 2]
    fresh = run_grid(grid, tmp_path / "fresh", workers=1, log=logs.append)
    drop = ["time_generate", "time_old", "time_update", "time_eval", "time_step", "time_total", "tokens_per_s",
            "time_warmstart"]
    pd.testing.assert_frame_equal(table.drop(columns=drop, errors="ignore"), fresh.drop(columns=drop, errors="ignore"))
