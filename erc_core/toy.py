"""Small, fully controlled policies and token batches that the book's chapters use to explain ERC.

Nothing here is used for training: these are the "toy examples" of chapter 1, kept in the package (and tested)
so that a notebook cell only calls them.

- :func:`drift_keep_sampled`: a sequence of categorical policies in which the sampled token's probability ratio
  stays where PPO-clip allows it while the rest of the distribution collapses onto one token or spreads out;
- :func:`token_batch`: an (old, new) pair of random next-token logits for a batch of responses, as an off-policy
  update would produce them.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

__all__ = ["drift_keep_sampled", "TokenBatch", "token_batch"]


def drift_keep_sampled(old_logits: torch.Tensor, token: int, n_steps: int, *, target: str = "collapse",
                       sampled_ratio: float = 1.1, max_shift: float = 0.98) -> torch.Tensor:
    """Policies that move away from ``softmax(old_logits)`` while PPO-clip sees (almost) nothing.

    At step ``s`` (``a = s / n_steps``) the sampled ``token`` gets probability ``p_old[token] * (1 + a *
    (sampled_ratio - 1))``; the remaining mass is spread over the other tokens as the mixture
    ``(1 - a * max_shift) * q_old + a * max_shift * q_target`` of the old conditional distribution ``q_old`` and a
    target: a one-hot on the most likely other token (``target="collapse"``, entropy falls) or the uniform
    distribution over the other tokens (``target="explode"``, entropy rises).

    Args:
        old_logits: (V,) logits of the old policy at one state (V >= 3).
        token: the sampled token, in [0, V).
        n_steps: number of steps after the old policy (>= 1).
        target: "collapse" or "explode".
        sampled_ratio: pi_new(token) / pi_old(token) reached at the last step; keep it in PPO's clip range.
        max_shift: how far (0..1) the other tokens move towards the target at the last step (< 1 keeps logits
            finite).

    Returns:
        (n_steps + 1, V) float32 logits (log-probabilities); row 0 is the old policy.
    """
    if old_logits.ndim != 1 or old_logits.shape[0] < 3:
        raise ValueError(f"old_logits must have shape (V,) with V >= 3, got {tuple(old_logits.shape)}")
    vocab = old_logits.shape[0]
    if not 0 <= token < vocab:
        raise ValueError(f"token must be in [0, {vocab}), got {token}")
    if n_steps < 1:
        raise ValueError(f"n_steps must be >= 1, got {n_steps}")
    if target not in ("collapse", "explode"):
        raise ValueError(f"target must be 'collapse' or 'explode', got {target!r}")
    if not 0.0 <= max_shift < 1.0:
        raise ValueError(f"max_shift must be in [0, 1), got {max_shift}")
    p_old = torch.softmax(old_logits.float(), dim=-1)
    if not 0.0 < sampled_ratio * float(p_old[token]) < 1.0:
        raise ValueError("sampled_ratio * p_old[token] must stay in (0, 1)")
    others = torch.ones(vocab, dtype=torch.bool)
    others[token] = False
    q_old = torch.where(others, p_old, torch.zeros_like(p_old))
    q_old = q_old / q_old.sum()
    if target == "collapse":
        q_target = torch.zeros(vocab)
        q_target[int(torch.argmax(q_old))] = 1.0
    else:
        q_target = others.float() / (vocab - 1)
    alpha = torch.linspace(0.0, 1.0, n_steps + 1).unsqueeze(-1)  # (S+1, 1)
    p_tok = p_old[token] * (1.0 + alpha * (sampled_ratio - 1.0))  # (S+1, 1)
    q = (1.0 - alpha * max_shift) * q_old + alpha * max_shift * q_target  # (S+1, V), zero at token
    probs = (1.0 - p_tok) * q
    probs[:, token] = p_tok.squeeze(-1)
    return torch.log(probs)


@dataclass
class TokenBatch:
    """A toy batch of B responses of T tokens over a vocabulary of V (all tensors on one device).

    Attributes:
        old_logits: (B, T, V) logits of the rollout (old) policy.
        new_logits: (B, T, V) logits of the current policy after some off-policy updates.
        tokens: (B, T) int64 tokens sampled from the old policy.
        response_mask: (B, T) bool, False on right padding.
        advantages: (B,) one advantage per response (+1 or -1).
    """

    old_logits: torch.Tensor
    new_logits: torch.Tensor
    tokens: torch.Tensor
    response_mask: torch.Tensor
    advantages: torch.Tensor


def token_batch(batch_size: int = 4, seq_len: int = 16, vocab_size: int = 8, *, drift_scale: float = 0.15,
                logit_scale: float = 2.0, min_len: int | None = None,
                generator: torch.Generator | None = None, device: str | torch.device = "cpu") -> TokenBatch:
    """Random old/new policies for a batch: ``new = old + drift_scale * N(0, 1)`` per logit.

    Args:
        batch_size, seq_len, vocab_size: B, T, V.
        drift_scale: std of the logit change between the old and the new policy (0 gives on-policy).
        logit_scale: std of the old logits (larger: peakier distributions, lower entropy).
        min_len: shortest response (default T // 2); lengths are uniform in [min_len, T].
        generator: torch RNG (default: the global one, so a notebook seeds once).
        device: where the returned tensors live (they are drawn on the CPU, so every device sees the same batch).

    Returns:
        A :class:`TokenBatch`.
    """
    if min(batch_size, seq_len, vocab_size) < 1:
        raise ValueError("batch_size, seq_len and vocab_size must be >= 1")
    min_len = max(1, seq_len // 2) if min_len is None else min_len
    if not 1 <= min_len <= seq_len:
        raise ValueError(f"min_len must be in [1, seq_len], got {min_len}")
    g = generator
    old = logit_scale * torch.randn(batch_size, seq_len, vocab_size, generator=g)
    new = old + drift_scale * torch.randn(batch_size, seq_len, vocab_size, generator=g)
    tokens = torch.multinomial(torch.softmax(old, -1).reshape(-1, vocab_size), 1, generator=g)
    lengths = torch.randint(min_len, seq_len + 1, (batch_size,), generator=g)
    mask = torch.arange(seq_len).unsqueeze(0) < lengths.unsqueeze(1)
    adv = torch.where(torch.rand(batch_size, generator=g) < 0.5, -1.0, 1.0)
    out = (old, new, tokens.reshape(batch_size, seq_len), mask, adv)
    return TokenBatch(*(x.to(device) for x in out))
