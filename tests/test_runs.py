"""erc_core.book.runs: reading a training run back, gate summaries, the replayed step and gradient_flow."""

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from erc_core.book import runs
from erc_core.losses import entropy_ratio
from erc_core.rl.train import train

DATA = Path(__file__).resolve().parents[1] / "data"

# a run of a few seconds: a very small model, 2 updates per rollout
FAST = dict(arith_max_operand=4, arith_ops="+", eval_size=5, eval_every=2, tiny_hidden=32, tiny_layers=1,
            tiny_heads=2, warmstart_steps=100, prompts_per_step=4, group_size=4, max_new_tokens=4, mini_batch_size=8,
            steps=3, save_every=0, log_tokens_every=1, log_tokens_responses=4, progress=False, lr=3e-3,
            warmup_steps=1, erc=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    train(FAST, out)
    return out


def test_read_metrics_and_tokens(run_dir):
    m = runs.read_metrics(run_dir)
    assert list(m.index) == [0, 1, 2, 3] and math.isnan(m.loc[1, "eval_acc"]) and m.loc[2, "eval_acc"] >= 0
    assert (m.loc[1:, "updates_per_step"] == 2).all()
    t = runs.read_tokens(run_dir)
    assert {"token", "old_entropy", "rho", "gated", "advantage"} <= set(t.columns)
    assert len(t) and set(t["step"]) <= {1, 2, 3} and t["token"].map(type).eq(str).all()   # only A != 0 logged
    assert (t["rho"] - (t["entropy"] + 1e-8) / (t["old_entropy"] + 1e-8)).abs().max() < 1e-6
    first = int(t["step"].min())
    assert set(runs.read_tokens(run_dir, steps=[first])["step"]) == {first}


def test_token_tables_written_with_ratio_load_with_rho(run_dir, tmp_path):
    """Token tables written before the entropy-ratio column was named ``rho`` (the shipped data) read the same,
    under the one name: a run folder's tokens.jsonl and an exported study's tokens.csv.gz."""
    from erc_core.rl import study

    new = runs.read_tokens(run_dir)
    old_run = tmp_path / "old"
    old_run.mkdir()
    lines = (run_dir / "tokens.jsonl").read_text().replace('"rho":', '"ratio":')
    (old_run / "tokens.jsonl").write_text(lines)
    pd.testing.assert_frame_equal(runs.read_tokens(old_run), new)
    for name in ("arith", "tokens"):
        shipped = study.load(DATA / "claims-2026-11-28" / name)[1]
        assert "rho" in shipped.columns and "ratio" not in shipped.columns and shipped["rho"].gt(0).all()
    assert "rho" in study.load(DATA / "smollm2-2026-11-30")[1].columns
    mixed = study.load(DATA / "claims-v2" / "offpolicy")[1]   # runs written before and after the rename
    assert "ratio" not in mixed.columns and mixed["rho"].gt(0).all()
    both = pd.DataFrame({"rho": [1.0, None], "ratio": [None, 0.9]})
    pd.testing.assert_series_equal(study._rho_named(both)["rho"], pd.Series([1.0, 0.9], name="rho"))
    with pytest.raises(ValueError, match="ambiguous"):
        study._rho_named(pd.DataFrame({"rho": [1.0], "ratio": [0.9]}))


def test_missing_run_files_name_the_folder(tmp_path):
    with pytest.raises(FileNotFoundError, match="metrics.jsonl"):
        runs.read_metrics(tmp_path)
    with pytest.raises(FileNotFoundError, match="checkpoint.pt"):
        (tmp_path / "config.yaml").write_text("seed: 0\n")
        runs.replay_step(tmp_path)


def test_gate_summary_reference_values():
    t = pd.DataFrame({"rho": [0.5, 0.95, 1.0, 1.04, 1.05, 2.0], "old_entropy": [0.1, 0.3, 1.0, 2.0, 0.5, 0.7]})
    s = runs.gate_summary(t, (0.95, 1.05))   # strict band: 0.95 and 1.05 are gated
    assert (s["n_tokens"], s["n_gated"], s["n_gated_low"], s["n_gated_high"]) == (6, 4, 2, 2)
    assert s["mean_old_entropy_gated"] == pytest.approx((0.1 + 0.3 + 0.5 + 0.7) / 4)
    assert s["mean_old_entropy_kept"] == pytest.approx(1.5)
    assert math.isnan(runs.gate_summary(t, (0.1, 10.0))["mean_old_entropy_gated"])
    with pytest.raises(ValueError, match="bounds"):
        runs.gate_summary(t, (1.0, 1.05))


def test_compare_runs_windows():
    df = pd.DataFrame({"reward_mean": [None, 0.0, 1.0, 2.0, 3.0], "eval_acc": [0.1, None, 0.2, None, 0.4]},
                      index=pd.Index(range(5), name="step"))
    table = runs.compare_runs({"a": df}, ["reward_mean", "eval_acc"], last=2)
    assert table.loc["a", "reward_mean first"] == 0.5 and table.loc["a", "reward_mean last"] == 2.5
    assert (table.loc["a", "eval_acc first"], table.loc["a", "eval_acc last"]) == (0.1, 0.4)
    with pytest.raises(ValueError, match="last"):
        runs.compare_runs({"a": df}, ["reward_mean"], last=0)


def test_replay_step_is_the_next_training_step(run_dir, tmp_path):
    tr = runs.replay_step(run_dir)
    assert tr.step == 4 and tr.logp.shape[0] == 3 and len(tr.stats) == 2   # 2 updates (+ after the last)
    m = tr.response_mask
    # before the first update the policy IS the rollout policy: rho == 1 and r == 1 exactly
    assert torch.equal(entropy_ratio(tr.entropy[0], tr.old_entropy)[m], torch.ones(int(m.sum())))
    assert torch.allclose(tr.logp[0][m], tr.old_logp[m], atol=1e-6)
    assert (entropy_ratio(tr.entropy[-1], tr.old_entropy)[m] != 1).any()   # the updates moved it
    assert tr.updated.sum(0).tolist() == [1] * tr.updated.shape[1]          # each response in one mini-batch
    assert all(len(row) == m.shape[1] for row in tr.tokens)
    # it is what train would do at step 4 (same rollout, same updates)
    full = runs.read_metrics(train(dict(FAST, steps=4), tmp_path / "full") and tmp_path / "full")
    for key in ("erc_clipfrac", "ppo_clipfrac", "pg_loss"):
        assert sum(s[key] for s in tr.stats) / len(tr.stats) == pytest.approx(full.loc[4, key], abs=1e-6), key


def test_gradient_flow_categories():
    # 4 tokens, A = +1: in band & in clip; rho out of band; r past 1 + clip_high; both
    logp = torch.log(torch.tensor([[1.0, 1.0, 1.5, 1.5]]))
    old_logp = torch.zeros(1, 4)
    ent = torch.tensor([[1.0, 1.2, 1.0, 0.5]])
    old_ent = torch.ones(1, 4)
    mask = torch.ones(1, 4, dtype=torch.bool)
    f = runs.gradient_flow(logp, old_logp, torch.ones(1), mask, ent, old_ent, (0.95, 1.05), (0.2, 0.28))
    assert f["grad"].tolist() == [[True, False, False, False]]
    assert f["erc_gated"].tolist() == [[False, True, False, False]]
    assert f["ppo_clipped"].tolist() == [[False, False, True, False]]
    assert f["both"].tolist() == [[False, False, False, True]]
    assert f["grad_ppo"][0, 1] != 0 and f["grad_erc"][0, 1] == 0
    # GPPO keeps the clipped token's gradient; zero advantage means no category at all
    g = runs.gradient_flow(logp, old_logp, torch.ones(1), mask, ent, old_ent, (0.95, 1.05), (0.2, 0.28), mode="gppo")
    assert g["grad"][0, 2] and not g["ppo_clipped"].any()
    z = runs.gradient_flow(logp, old_logp, torch.zeros(1), mask, ent, old_ent, (0.95, 1.05), (0.2, 0.28))
    assert not z["active"].any() and not z["grad"].any()


def test_hardware_names_torch_and_threads():
    hw = runs.hardware()
    assert hw["torch"] == torch.__version__ and hw["threads"] == torch.get_num_threads() >= 1
