"""erc_core.plots / erc_core.widgets / erc_core.toy: figures are drawn, sliders hold one state per band."""

from __future__ import annotations

import io
import math

import ipywidgets as w
import pytest
import torch
from matplotlib.figure import Figure

from erc_core import plots, toy, widgets
from erc_core.entropy import entropy_from_logits, logprobs_and_entropy
from erc_core.losses import entropy_ratio, erc_mask, policy_loss


def _png_bytes(fig: Figure) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return len(buf.getvalue())


@pytest.fixture(scope="module")
def batch_pass():
    g = torch.Generator().manual_seed(0)
    b = toy.token_batch(3, 10, 6, drift_scale=0.1, generator=g)
    old_logp, old_h = logprobs_and_entropy(b.old_logits, b.tokens)
    logp, h = logprobs_and_entropy(b.new_logits, b.tokens)
    return b, old_logp, old_h, logp, h


# ---------------------------------------------------------------------------------------------- toy
@pytest.mark.parametrize("target", ["collapse", "explode"])
def test_drift_keeps_the_sampled_ratio_and_moves_the_entropy(target):
    old = torch.linspace(1.0, -1.0, 8) * 1.5
    steps = toy.drift_keep_sampled(old, 2, 4, target=target, sampled_ratio=1.1)
    assert steps.shape == (5, 8) and torch.isfinite(steps).all()
    assert torch.allclose(steps.exp().sum(-1), torch.ones(5), atol=1e-5)
    logp, h = logprobs_and_entropy(steps, torch.full((5,), 2))
    assert torch.allclose(steps[0].softmax(-1), old.softmax(-1), atol=1e-6)
    assert math.isclose(float((logp[-1] - logp[0]).exp()), 1.1, rel_tol=1e-4)
    d = h.diff()
    assert (d < 0).all() if target == "collapse" else (d > 0).all()


def test_drift_rejects_bad_arguments():
    old = torch.zeros(5)
    with pytest.raises(ValueError):
        toy.drift_keep_sampled(old, 7, 3)
    with pytest.raises(ValueError):
        toy.drift_keep_sampled(old, 1, 3, target="sideways")
    with pytest.raises(ValueError):
        toy.drift_keep_sampled(torch.zeros(2, 5), 1, 3)


def test_token_batch_shapes_and_determinism():
    a = toy.token_batch(4, 12, 7, generator=torch.Generator().manual_seed(3))
    b = toy.token_batch(4, 12, 7, generator=torch.Generator().manual_seed(3))
    assert a.old_logits.shape == a.new_logits.shape == (4, 12, 7)
    assert a.tokens.shape == a.response_mask.shape == (4, 12) and a.advantages.shape == (4,)
    assert a.response_mask.dtype == torch.bool and a.response_mask[:, :6].all()
    assert set(a.advantages.tolist()) <= {-1.0, 1.0}
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.new_logits, b.new_logits)
    on = toy.token_batch(2, 5, 4, drift_scale=0.0)
    assert torch.equal(on.old_logits, on.new_logits)


# ---------------------------------------------------------------------------------------------- plots
def test_fig_temperature():
    logits = torch.stack([s * torch.linspace(1, -1, 6) for s in (4.0, 1.0)])
    temps = torch.logspace(-1, 1, 5)
    h = torch.stack([entropy_from_logits(logits, temperature=float(t)) for t in temps])
    probs = torch.stack([torch.softmax(logits[0] / t, -1) for t in (0.5, 2.0)])
    fig = plots.fig_temperature(temps, h, probs, [0.5, 2.0], ["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[1].lines) == 2 + 1  # one curve per distribution + log V
    assert _png_bytes(fig) > 10_000


def test_fig_ppo_blind_spot():
    old = torch.linspace(1.0, -1.0, 6)
    c = toy.drift_keep_sampled(old, 1, 3, target="collapse")
    e = toy.drift_keep_sampled(old, 1, 3, target="explode")
    hc, he = entropy_from_logits(c), entropy_from_logits(e)
    ones = torch.ones(4)
    fig = plots.fig_ppo_blind_spot(c[0].softmax(-1), c[-1].softmax(-1), e[-1].softmax(-1), 1, ones, ones,
                                   entropy_ratio(hc, hc[0]), entropy_ratio(he, he[0]))
    assert len(fig.axes) == 3 and all(ax.has_data() for ax in fig.axes)
    assert _png_bytes(fig) > 10_000


def test_fig_erc_gate(batch_pass):
    b, old_logp, old_h, logp, h = batch_pass
    logp = logp.detach().requires_grad_()
    keep = erc_mask(h, old_h, b.response_mask)
    loss, _ = policy_loss(logp, old_logp, b.advantages, b.response_mask, entropy=h, old_entropy=old_h)
    (grad,) = torch.autograd.grad(loss, logp)
    fig = plots.fig_erc_gate(entropy_ratio(h, old_h), b.response_mask, keep, grad)
    assert len(fig.axes) == 3  # two maps + colorbar
    assert fig.axes[0].images[0].get_array().shape == (3, 10)
    assert _png_bytes(fig) > 10_000
    small = plots.fig_erc_gate(entropy_ratio(h, old_h), b.response_mask, keep, grad, max_rows=2, max_cols=4)
    assert small.axes[0].images[0].get_array().shape == (2, 4)


# ---------------------------------------------------------------------------------------------- widgets
BANDS = [(0.99, 1.01), (0.95, 1.05), (0.9, 1.1), (0.5, 1.5)]


def test_erc_band_slider_has_one_precomputed_state_per_band(batch_pass):
    b, _, old_h, _, h = batch_pass
    box = widgets.erc_band_slider(h, old_h, b.response_mask, BANDS)
    slider, stack = box.children
    assert isinstance(slider, w.SelectionSlider) and isinstance(stack, w.Stack)
    assert len(stack.children) == len(slider.options) == len(BANDS)
    assert slider.index == stack.selected_index == len(BANDS) // 2
    slider.index = 0  # jslink syncs in the browser; the pages themselves are static HTML
    for page, (lo, hi) in zip(stack.children, BANDS):
        assert isinstance(page, w.HTML) and f"bounds ({lo:g}, {hi:g})" in page.value
    n_tok = int(b.response_mask.sum())
    gated = [int((b.response_mask & ~erc_mask(h, old_h, b.response_mask, bd)).sum()) for bd in BANDS]
    for page, n in zip(stack.children, gated):
        assert f"{n} of {n_tok} response tokens gated" in page.value
    assert widgets.erc_band_slider(h, old_h, b.response_mask, BANDS, initial=1).children[1].selected_index == 1


def test_gate_table_html_rows_and_crop(batch_pass):
    b, _, old_h, _, h = batch_pass
    rho = entropy_ratio(h, old_h)
    keep = erc_mask(h, old_h, b.response_mask)
    full = widgets.gate_table_html(rho, keep, b.response_mask, (0.95, 1.05))
    assert full.count("<tr>") == 3 and full.count("<td") == 3 * 10
    crop = widgets.gate_table_html(rho, keep, b.response_mask, (0.95, 1.05), max_rows=2, max_cols=4)
    assert crop.count("<tr>") == 2 and crop.count("<td") == 8 and "first 2 x 4 of 3 x 10" in crop


def test_erc_band_slider_needs_a_band(batch_pass):
    b, _, old_h, _, h = batch_pass
    with pytest.raises(ValueError):
        widgets.erc_band_slider(h, old_h, b.response_mask, [])


# ---------------------------------------------------------------------------------------------- chapters 2 and 4
def test_fig_offpolicy_drift_and_position():
    b = toy.token_batch(2, 6, 5, drift_scale=0.0, generator=torch.Generator().manual_seed(1))
    ppo = toy.offpolicy_updates(b, 4, 0.1)
    erc = toy.offpolicy_updates(b, 4, 0.1, erc_bounds=(0.95, 1.05))
    fig = plots.fig_offpolicy_drift(ppo, erc)
    assert len(fig.axes) == 4 and all(ax.has_data() for ax in fig.axes)
    assert _png_bytes(fig) > 10_000
    fig = plots.fig_position_drift(ppo.probs[0, 0, 0], ppo.probs[-1, 0, 0], erc.probs[-1, 0, 0],
                                   int(b.tokens[0, 0]), 1.1, 1.0)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) >= 3 * 5
    assert _png_bytes(fig) > 10_000


def test_figs_of_chapter_4():
    from erc_core.advantages import grpo_advantages, overlong_penalty

    s = toy.binary_reward_groups(4)
    fig = plots.fig_group_advantages(s, grpo_advantages(s), grpo_advantages(s, norm_by_std=False))
    assert len(fig.axes) == 2 and _png_bytes(fig) > 10_000
    r = torch.logspace(-0.5, 1.3, 50)
    curves = {(n, a): toy.per_token_loss_curve(r, a, clip_high=h) for n, h in (("sym", 0.2), ("hi", 0.28))
              for a in (1, -1)}
    fig = plots.fig_clip_higher(r, curves, 10.0, {"sym": (0.8, 1.2), "hi": (0.8, 1.28)})
    assert len(fig.axes) == 2 and all(ax.has_data() for ax in fig.axes) and _png_bytes(fig) > 10_000
    lengths = torch.tensor([4, 16, 64])
    fig = plots.fig_agg_weights(lengths, {a: toy.agg_token_weights(lengths, 64, a)
                                          for a in ("token-mean", "seq-mean-token-mean")})
    assert len(fig.axes[1].patches) == 6 and _png_bytes(fig) > 10_000
    p = torch.linspace(0, 1, 5)
    kept, exp = toy.dynamic_sampling_sweep(p, 50, 4)
    fig = plots.fig_dynamic_sampling(p, {4: kept}, {4: exp})
    assert len(fig.axes) == 2 and _png_bytes(fig) > 10_000
    n = torch.arange(0, 65)
    fig = plots.fig_overlong(n, overlong_penalty(n, 64, 16), 64, 16)
    assert fig.axes[0].has_data() and _png_bytes(fig) > 10_000
