"""Outcome advantages and DAPO's sample shaping: GRPO group normalisation, dynamic sampling, overlong penalty.

Semantics of verl's ``compute_grpo_outcome_advantage`` (as used by the ERC recipe) and DAPO's reward manager.
"""

from __future__ import annotations

import math

import torch

__all__ = ["grpo_advantages", "dynamic_sampling_mask", "overlong_penalty"]


def _check_scores(scores: torch.Tensor) -> None:
    if not isinstance(scores, torch.Tensor) or scores.ndim != 2:
        raise ValueError("scores must be a tensor of shape (num_groups, group_size), got "
                         + (str(tuple(scores.shape)) if isinstance(scores, torch.Tensor) else type(scores).__name__))
    if scores.shape[1] < 1:
        raise ValueError("scores must have group_size >= 1")
    if scores.is_floating_point() and not bool(torch.isfinite(scores).all()):
        raise ValueError("scores contains NaN or inf")


def grpo_advantages(scores: torch.Tensor, eps: float = 1e-6, norm_by_std: bool = True) -> torch.Tensor:
    """GRPO advantages: each response's reward minus its group's mean, divided by (unbiased std + eps).

    Args:
        scores: (num_groups, group_size) one scalar reward per response; a row is the n samples of one prompt.
        eps: added to the std (verl's 1e-6).
        norm_by_std: False gives Dr. GRPO's mean-centring only.

    Returns:
        (num_groups, group_size) float advantages. A group of one has mean 0 and std 1 (verl's convention), so
        its advantage is ``score / (1 + eps)``; a group whose rewards are all equal gets zeros.
    """
    _check_scores(scores)
    if not (eps >= 0 and math.isfinite(eps)):
        raise ValueError(f"eps must be a finite number >= 0, got {eps!r}")
    s = scores.float() if not scores.is_floating_point() else scores
    if s.dtype != torch.float64 and s.numel() and float(s.abs().max()) > torch.finfo(s.dtype).max ** 0.5 / s.shape[1]:
        # the squares in the std (and the sums in the mean) would overflow: |s| ~ 3e38 in float32 gave NaN, or a
        # silent inf std and zero advantages; float64 has the range
        return _grpo(s.double(), eps, norm_by_std).to(s.dtype)
    return _grpo(s, eps, norm_by_std)


def _grpo(s: torch.Tensor, eps: float, norm_by_std: bool) -> torch.Tensor:
    """The body of :func:`grpo_advantages` on float scores (G, n) -> (G, n)."""
    if s.shape[1] == 1:
        mean, std = torch.zeros_like(s), torch.ones_like(s)
    else:
        mean = s.mean(dim=1, keepdim=True)
        std = s.std(dim=1, keepdim=True)  # unbiased (n - 1), as torch.std in verl
    # Exact zeros for all-equal groups: the float mean of n equal numbers can be off by an ulp, which the tiny std
    # would blow up into a spurious advantage.
    centred = s - mean
    if s.shape[1] > 1:
        centred = torch.where(dynamic_sampling_mask(s).unsqueeze(1), centred, torch.zeros_like(s))
    if not norm_by_std:
        return centred
    # eps = 0 and an all-equal group: 0 / 0; its centred scores are exact zeros, and so is its advantage
    return torch.where(centred == 0, torch.zeros_like(s), centred / (std + eps))


def dynamic_sampling_mask(scores: torch.Tensor) -> torch.Tensor:
    """DAPO dynamic sampling: keep groups whose rewards are not all equal. (num_groups, group_size) -> bool (G,).

    An all-equal group has zero advantages everywhere and contributes no policy gradient, only noise in the
    token-mean denominator; DAPO drops it and samples more prompts.
    """
    _check_scores(scores)
    return scores.amax(dim=1) != scores.amin(dim=1)


def overlong_penalty(lengths: torch.Tensor, max_len: int, buffer_len: int,
                     penalty_factor: float = 1.0) -> torch.Tensor:
    """DAPO's soft overlong punishment, added to the reward of each response.

    With ``expected = max_len - buffer_len``, a response of length L gets
    ``min(0, -(L - expected) / buffer_len * penalty_factor)``: 0 up to ``expected``, then linearly down to
    ``-penalty_factor`` at ``max_len``.

    Args:
        lengths: (N,) response lengths in tokens, each in [0, max_len].
        max_len: the maximum response length (> 0).
        buffer_len: the length of the soft-punishment zone, 0 < buffer_len <= max_len.
        penalty_factor: >= 0, the penalty at ``max_len``.

    Returns:
        (N,) float penalties in [-penalty_factor, 0].
    """
    if not (isinstance(max_len, int) and max_len > 0):
        raise ValueError(f"max_len must be an integer > 0, got {max_len!r}")
    if not (isinstance(buffer_len, int) and 0 < buffer_len <= max_len):
        raise ValueError(f"buffer_len must be an integer with 0 < buffer_len <= max_len ({max_len}), "
                         f"got {buffer_len!r}")
    if not penalty_factor >= 0:
        raise ValueError(f"penalty_factor must be >= 0, got {penalty_factor!r}")
    lengths = torch.as_tensor(lengths)
    if lengths.numel() and (bool((lengths < 0).any()) or bool((lengths > max_len).any())):
        raise ValueError(f"lengths must be in [0, max_len={max_len}]")
    exceed = lengths.float() - (max_len - buffer_len)
    return torch.clamp(-exceed / buffer_len * penalty_factor, max=0.0) + 0.0  # + 0.0 turns -0.0 into 0.0
