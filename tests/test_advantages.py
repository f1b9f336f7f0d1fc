"""GRPO advantages, dynamic sampling and DAPO's overlong penalty."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from erc_core.advantages import dynamic_sampling_mask, grpo_advantages, overlong_penalty


def test_reference_values():
    scores = torch.tensor([[1.0, 0.0, 0.0, 0.0], [2.0, 2.0, 2.0, 2.0]])
    adv = grpo_advantages(scores)
    std = math.sqrt(((0.75**2) + 3 * 0.25**2) / 3)  # unbiased
    torch.testing.assert_close(adv[0], torch.tensor([0.75, -0.25, -0.25, -0.25]) / (std + 1e-6))
    assert torch.equal(adv[1], torch.zeros(4))
    torch.testing.assert_close(grpo_advantages(scores, norm_by_std=False)[0], torch.tensor([0.75, -0.25, -0.25, -0.25]))


def test_group_of_one_uses_mean_0_std_1():
    scores = torch.tensor([[3.0], [-1.0]])
    torch.testing.assert_close(grpo_advantages(scores), scores / (1 + 1e-6))


@settings(max_examples=50, deadline=None)
@given(st.integers(1, 6), st.integers(2, 8), st.integers(0, 2**31 - 1), st.booleans())
def test_zero_mean_per_group_and_constant_groups_zero(groups, size, seed, binary):
    g = torch.Generator().manual_seed(seed)
    scores = (torch.rand(groups, size, generator=g) > 0.5).float() if binary else torch.randn(groups, size, generator=g)
    scores[0] = scores[0, 0]  # one constant group
    adv = grpo_advantages(scores)
    torch.testing.assert_close(adv.mean(dim=1), torch.zeros(groups), atol=1e-5, rtol=0)
    assert torch.equal(adv[0], torch.zeros(size))
    keep = dynamic_sampling_mask(scores)
    assert not keep[0]
    assert torch.equal(keep, adv.abs().amax(dim=1) > 0)  # dropped groups are exactly those with no signal


def test_dynamic_sampling_mask():
    scores = torch.tensor([[1, 1, 1], [0, 1, 0], [0, 0, 0]])
    assert dynamic_sampling_mask(scores).tolist() == [False, True, False]


def test_overlong_penalty_reference():
    # max 20, buffer 8: free up to 12, then -1/8 per token down to -factor at 20
    out = overlong_penalty(torch.tensor([0, 12, 13, 16, 20]), max_len=20, buffer_len=8, penalty_factor=0.5)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, -0.0625, -0.25, -0.5]))


@pytest.mark.parametrize("kw, name", [
    (dict(max_len=0, buffer_len=1), "max_len"), (dict(max_len=10, buffer_len=0), "buffer_len"),
    (dict(max_len=10, buffer_len=11), "buffer_len"), (dict(max_len=10, buffer_len=4, penalty_factor=-1.0),
                                                        "penalty_factor"),
])
def test_overlong_validation(kw, name):
    with pytest.raises(ValueError, match=name):
        overlong_penalty(torch.tensor([1, 2]), **kw)


def test_overlong_lengths_out_of_range():
    with pytest.raises(ValueError, match="lengths"):
        overlong_penalty(torch.tensor([11]), max_len=10, buffer_len=4)


def test_scores_validation():
    with pytest.raises(ValueError, match="scores"):
        grpo_advantages(torch.zeros(4))
    with pytest.raises(ValueError, match="NaN"):
        grpo_advantages(torch.tensor([[0.0, math.nan]]))


def test_eps_zero_and_huge_scores_give_no_nan():
    """eps = 0 on an all-equal group (0 / 0) and finite scores near float32's limit used to give NaN."""
    equal = torch.tensor([[1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])
    adv = grpo_advantages(equal, eps=0.0)
    assert torch.equal(adv[0], torch.zeros(3))
    assert torch.allclose(adv[1], torch.tensor([-1 / 3, 2 / 3, -1 / 3]) / (1 / 3) ** 0.5)
    huge = torch.tensor([[3e38, -3e38, 3e38, -3e38], [3e38, 3e38, 3e38, 3e38]])
    adv = grpo_advantages(huge)
    assert adv.dtype == torch.float32 and bool(torch.isfinite(adv).all())
    assert torch.allclose(adv[0], torch.tensor([1.0, -1.0, 1.0, -1.0]) * (3 / 4) ** 0.5)
    assert torch.equal(adv[1], torch.zeros(4))
    # the float64 result of a scale-free problem: scores x 1e38 give the advantages of the scores
    small = torch.tensor([[0.5, 2.0, 3.0, 1.0]])
    assert torch.allclose(grpo_advantages(small * 1e38, eps=0.0), grpo_advantages(small, eps=0.0))
