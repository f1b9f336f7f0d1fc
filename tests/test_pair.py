"""erc_core.book.pair: chapters 5 and 6's two runs (ERC off and on) trained from one config and compared."""

import json
import math

import numpy as np
import pandas as pd
import pytest

from erc_core.book import pair, runs

# a run of a few seconds: a very small model, 2 updates per rollout (as tests/test_runs.py)
FAST = dict(arith_max_operand=4, arith_ops="+", eval_size=5, eval_every=2, tiny_hidden=32, tiny_layers=1,
            tiny_heads=2, warmstart_steps=100, prompts_per_step=4, group_size=4, max_new_tokens=4, mini_batch_size=8,
            steps=3, save_every=0, log_tokens_every=1, log_tokens_responses=4, progress=False, lr=3e-3,
            warmup_steps=1)


def frame(steps: int, reward, erc_clipfrac, start_acc=0.4, end_acc=0.6, warmstart_loss=1.0, updates=4) -> pd.DataFrame:
    """A read_metrics-like frame: row 0 the warm start (eval_acc, warmstart_loss), rows 1..steps the RL steps."""
    rl = dict(reward_mean=reward, entropy_mean=np.full(steps, 0.5), grad_norm=np.full(steps, 1.0),
              erc_clipfrac=erc_clipfrac, ppo_clipfrac=np.full(steps, 0.01), ratio_outside_frac=np.full(steps, 0.2),
              updates_per_step=np.full(steps, updates))
    df = pd.DataFrame(rl, index=pd.RangeIndex(1, steps + 1, name="step"))
    head = pd.DataFrame(dict(eval_acc=[start_acc], warmstart_loss=[warmstart_loss]), index=pd.Index([0], name="step"))
    df = pd.concat([head, df])
    df.loc[steps, "eval_acc"] = end_acc
    return df


def test_compare_pair_windows_records_and_text():
    steps = 40
    base = frame(steps, np.linspace(0.2, 0.6, steps), np.zeros(steps))
    erc = frame(steps, np.linspace(0.2, 0.8, steps), np.full(steps, 0.1), end_acc=0.7)
    rep = pair.compare_pair({"DAPO": base, "DAPO + ERC": erc}, dict(n_gated=3, mean_old_entropy_gated=0.7,
                                                                  mean_old_entropy_kept=0.2), eval_size=100)
    assert rep["win"] == 10 and rep["updates"] == 4   # a quarter of 40 steps
    res = rep["results"]
    json.dumps(res)   # JSON-able, as the chapters print it
    assert len(res["reward_erc"]) == len(res["erc_clipfrac_base"]) == steps
    assert res["reward_last"] == pytest.approx([m["reward_mean"].tail(10).mean() for m in (base, erc)])
    assert res["reward_first10"][1] == pytest.approx(erc["reward_mean"].iloc[1:11].mean())
    assert res["eval_acc_start"] == [0.4, 0.4] and res["eval_acc_end"] == [0.6, 0.7]
    assert res["erc_clipfrac_mean"] == pytest.approx(0.1) and res["n_gated_erc"] == 3
    lines = rep["text"].splitlines()
    assert len(lines) == 4 and lines[0].startswith("DAPO ") and lines[1].startswith("DAPO + ERC ")
    assert "0.40 -> 0.70 on 100 sums" in lines[1]
    d_reward = erc["reward_mean"].tail(10).mean() - base["reward_mean"].tail(10).mean()
    assert f"DAPO + ERC minus DAPO: reward {d_reward:+.3f}" in lines[2] and "in DAPO (gate off) 20.0%" in lines[3]
    assert all(rep["claims"].values())


def test_compare_pair_claims_fail_where_the_runs_do_not_hold_them():
    steps = 400
    flat = np.full(steps, 0.5)
    base = frame(steps, flat, np.r_[0.05, np.zeros(steps - 1)], warmstart_loss=1.1)   # gated once, other start
    erc = frame(steps, np.linspace(0.2, 0.9, steps), np.r_[np.zeros(steps - 10), np.full(10, 0.1)])
    rep = pair.compare_pair({"GPPO": base, "GPPO + ERC": erc}, dict(n_gated=0, mean_old_entropy_gated=math.nan,
                                                                  mean_old_entropy_kept=0.2), 10)
    claims = rep["claims"]
    assert rep["results"]["rose"] == [False, True]  # flat reward vs a rising one
    failed = {c for c, ok in claims.items() if not ok}
    assert failed == {"both runs start from the same warm start and first rollout",
                      "GPPO + ERC gated tokens at most steps", "GPPO never gated, yet tokens left the band",
                      "gated tokens' mean old entropy is a number",
                      "GPPO + ERC gated more tokens than PPO's clip acted on (mean per step)"}


def test_compare_pair_rejects_what_is_not_a_pair():
    one = frame(8, np.full(8, 0.5), np.zeros(8))
    gated = dict(n_gated=1, mean_old_entropy_gated=0.5, mean_old_entropy_kept=0.2)
    with pytest.raises(ValueError, match="two runs"):
        pair.compare_pair({"DAPO": one}, gated, 10)
    with pytest.raises(ValueError, match="same number >= 1 of RL steps, got 8 and 6"):
        pair.compare_pair({"DAPO": one, "DAPO + ERC": frame(6, np.full(6, 0.5), np.zeros(6))}, gated, 10)


def test_train_pair_trains_both_runs_from_one_start(tmp_path, capsys):
    metrics, tokens = pair.train_pair(FAST, tmp_path, "DAPO", overrides=dict(steps=2), workers=2)  # side by side
    assert list(metrics) == list(tokens) == ["DAPO", "DAPO + ERC"]
    base, erc = metrics.values()
    assert list(base.index) == list(erc.index) == [0, 1, 2]   # the override reached both runs
    assert base.loc[0, "eval_acc"] == erc.loc[0, "eval_acc"] and base.loc[1, "reward_mean"] == erc.loc[1, "reward_mean"]
    assert (base.loc[1:, "erc_clipfrac"] == 0).all() and (base.loc[1:, "updates_per_step"] == 2).all()
    assert (tmp_path / "base" / "metrics.jsonl").exists() and (tmp_path / "erc" / "tokens.jsonl").exists()
    assert tokens["DAPO + ERC"]["gated"].sum() == runs.gate_summary(tokens["DAPO + ERC"])["n_gated"]
    assert not tokens["DAPO"]["gated"].any()   # the gate was off: nothing gated, whatever left the band
    out = capsys.readouterr().out.splitlines()
    assert [ln.split(" 2 steps")[0].strip() for ln in out] == ["DAPO", "DAPO + ERC"]
    # a run already there is replaced; one after the other in this process gives the same numbers, token for token
    again, again_tokens = pair.train_pair(FAST, tmp_path, "DAPO", overrides=dict(steps=2), workers=1)
    for label in metrics:
        timing = [c for c in metrics[label] if c.startswith("time") or c == "tokens_per_s"]
        pd.testing.assert_frame_equal(again[label].drop(columns=timing), metrics[label].drop(columns=timing))
        pd.testing.assert_frame_equal(again_tokens[label], tokens[label])
    assert again["DAPO + ERC"]["erc_clipfrac"].loc[1:].gt(0).any()   # the gate acted: the comparison means something
    with pytest.raises(ValueError, match="workers must be 1 or 2"):
        pair.train_pair(FAST, tmp_path, "DAPO", workers=3)
