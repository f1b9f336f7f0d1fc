"""erc_core.book.toy, chapters 2 and 4: off-policy updates of a toy policy, loss curves, aggregation weights, sweeps."""

from __future__ import annotations

import math

import pytest
import torch

from erc_core.book import toy
from erc_core.advantages import grpo_advantages
from erc_core.losses import AGG_MODES

BAND = (0.95, 1.05)


@pytest.fixture(scope="module")
def runs():
    batch = toy.token_batch(3, 8, 6, drift_scale=0.0, logit_scale=2.5, generator=torch.Generator().manual_seed(0))
    ppo = toy.offpolicy_updates(batch, 12, 0.05)
    erc = toy.offpolicy_updates(batch, 12, 0.05, erc_bounds=BAND)
    return batch, ppo, erc


def test_offpolicy_updates_shapes_and_first_row(runs):
    batch, ppo, _ = runs
    assert ppo.probs.shape == (13, 3, 8, 6) and ppo.ratio.shape == ppo.rho.shape == (13, 3, 8)
    assert len(ppo.stats) == 12 and ppo.sampled.sum(-1).eq(1).all()
    assert torch.allclose(ppo.probs[0], batch.old_logits.softmax(-1))
    assert torch.allclose(ppo.ratio[0], torch.ones(3, 8)) and torch.allclose(ppo.rho[0], torch.ones(3, 8))
    assert torch.allclose(ppo.probs.sum(-1), torch.ones(13, 3, 8), atol=1e-5)
    # padding positions never move
    pad = ~batch.response_mask
    assert torch.equal(ppo.probs[-1][pad], ppo.probs[0][pad])
    assert ppo.sampled_ratio_range().shape == ppo.unsampled_ratio_range().shape == ppo.rho_range().shape == (13, 2)
    assert ppo.outside_band(BAND)[0] == 0 and ppo.rho_deviation()[0] == 0


def test_ppo_clip_bounds_sampled_ratios_but_not_the_rest(runs):
    _, ppo, _ = runs
    step = math.exp(2 * 0.05 * 1.28)
    s, u = ppo.sampled_ratio_range(), ppo.unsampled_ratio_range()
    assert (s[:, 0] >= 0.8 / step).all() and (s[:, 1] <= 1.28 * step).all()
    assert u[-1].log().abs().max() > s[-1].log().abs().max()
    assert ppo.rho_deviation()[-1] > 0.05


def test_erc_gate_holds_the_entropy_ratio(runs):
    _, ppo, erc = runs
    assert erc.stats[0]["erc_clipfrac"] == 0  # on-policy first update
    assert erc.rho_deviation()[-1] < ppo.rho_deviation()[-1]
    m = erc.response_mask
    assert (erc.rho[-1] - 1)[m].abs().max() < (ppo.rho[-1] - 1)[m].abs().max()
    gated = m & ((erc.rho[-2] <= BAND[0]) | (erc.rho[-2] >= BAND[1]))
    assert gated.any() and torch.equal(erc.probs[-1][gated], erc.probs[-2][gated])


def test_offpolicy_updates_rejects_bad_arguments(runs):
    batch = runs[0]
    with pytest.raises(ValueError):
        toy.offpolicy_updates(batch, 0, 0.1)
    with pytest.raises(ValueError):
        toy.offpolicy_updates(batch, 2, 0.0)


def test_binary_reward_groups():
    s = toy.binary_reward_groups(4)
    assert s.shape == (5, 4) and s.sum(1).tolist() == [0, 1, 2, 3, 4]
    adv = grpo_advantages(s)
    assert (adv[[0, -1]] == 0).all()
    with pytest.raises(ValueError):
        toy.binary_reward_groups(0)


@pytest.mark.parametrize("clip_high", [0.2, 0.28])
def test_per_token_loss_curve_stops_the_gradient_at_the_band(clip_high):
    r = torch.tensor([0.5, 0.9, 1.1, 1.25, 1.5, 5.0, 20.0])
    loss, grad = toy.per_token_loss_curve(r, 1.0, clip_high=clip_high)
    assert torch.allclose(loss[:3], -r[:3])
    assert (grad[r > 1 + clip_high] == 0).all() and (grad[r < 1 + clip_high] == -1).all()
    loss, grad = toy.per_token_loss_curve(r, -1.0, clip_c=10.0)
    assert loss[0] == pytest.approx(0.8) and grad[0] == 0  # below 1 - clip_low
    assert loss[-1] == pytest.approx(10.0) and grad[-1] == 0  # dual clip
    assert (grad[(r > 0.8) & (r < 10)] == 1).all()


def test_agg_token_weights():
    lengths = torch.tensor([2, 4, 8, 0])
    w = {agg: toy.agg_token_weights(lengths, 8, agg) for agg in AGG_MODES}
    assert torch.allclose(w["token-mean"], torch.tensor([1 / 14] * 3 + [0.0]))
    assert torch.allclose(w["seq-mean-token-sum"], torch.tensor([0.25] * 3 + [0.0]))
    assert torch.allclose(w["seq-mean-token-mean"], torch.tensor([1 / 6, 1 / 12, 1 / 24, 0.0]))
    assert torch.allclose(w["seq-mean-token-sum-norm"], torch.tensor([1 / 8] * 3 + [0.0]))
    with pytest.raises(ValueError):
        toy.agg_token_weights(torch.tensor([9]), 8, "token-mean")


def test_dynamic_sampling_sweep():
    p = torch.tensor([0.0, 0.5, 1.0])
    kept, expected = toy.dynamic_sampling_sweep(p, 400, 8, generator=torch.Generator().manual_seed(0))
    assert kept[0] == 0 and kept[-1] == 0 and kept[1] > 0.95
    assert torch.allclose(expected, torch.tensor([0.0, 1 - 2 * 0.5 ** 8, 0.0]))
    with pytest.raises(ValueError):
        toy.dynamic_sampling_sweep(p, 0, 8)
