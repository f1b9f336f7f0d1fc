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

from erc_core.band import Band

__all__ = ["drift_keep_sampled", "drift_ratios", "TokenBatch", "token_batch", "UpdateTrace", "offpolicy_updates",
           "binary_reward_groups", "per_token_loss_curve", "agg_token_weights", "dynamic_sampling_sweep"]


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


def drift_ratios(old_logits: torch.Tensor, token: int, n_steps: int, *, sampled_ratio: float = 1.1,
                 max_shift: float = 0.98) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """What PPO-clip and ERC see along both drifts of :func:`drift_keep_sampled` (the intro's figure).

    Args:
        old_logits, token, n_steps, sampled_ratio, max_shift: as in :func:`drift_keep_sampled`.

    Returns:
        ``{"collapse": (r, rho), "explode": (r, rho)}``: (n_steps + 1,) float32 each, step 0 the old policy;
        ``r`` the sampled token's probability ratio ``pi_s(token) / pi_old(token)``, ``rho`` the entropy ratio
        ``(H_s + 1e-8) / (H_old + 1e-8)`` (:func:`erc_core.losses.entropy_ratio`).
    """
    from erc_core.entropy import entropy_from_logits
    from erc_core.losses import entropy_ratio

    out = {}
    for target in ("collapse", "explode"):
        steps = drift_keep_sampled(old_logits, token, n_steps, target=target, sampled_ratio=sampled_ratio,
                                   max_shift=max_shift)
        h = entropy_from_logits(steps)
        out[target] = ((steps[:, token] - steps[0, token]).exp(), entropy_ratio(h, h[0].expand_as(h)))
    return out


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


# ---------------------------------------------------------------------------------------------- chapter 2
@dataclass
class UpdateTrace:
    """What K off-policy updates of a toy categorical policy did, position by position (row 0: the old policy).

    Attributes:
        probs: (K+1, B, T, V) the policy after each update.
        ratio: (K+1, B, T) the sampled token's probability ratio pi_k(y_t) / pi_old(y_t).
        entropy: (K+1, B, T) the full-distribution entropy at each position.
        rho: (K+1, B, T) the entropy ratio H_k / H_old.
        sampled: (B, T, V) bool, True at the sampled token of each response position.
        response_mask: (B, T) bool.
        stats: K dicts, the ``policy_loss`` statistics of each update (computed before its step).
    """

    probs: torch.Tensor
    ratio: torch.Tensor
    entropy: torch.Tensor
    rho: torch.Tensor
    sampled: torch.Tensor
    response_mask: torch.Tensor
    stats: list

    def prob_ratio(self) -> torch.Tensor:
        """(K+1, B, T, V) pi_k(v) / pi_old(v) for every token v."""
        return self.probs / self.probs[0]

    def sampled_ratio_range(self) -> torch.Tensor:
        """(K+1, 2) min and max of the sampled tokens' ratios over response positions, per update."""
        r = self.ratio[:, self.response_mask]
        return torch.stack([r.amin(-1), r.amax(-1)], -1)

    def unsampled_ratio_range(self) -> torch.Tensor:
        """(K+1, 2) min and max of pi_k(v) / pi_old(v) over the un-sampled tokens of response positions."""
        keep = ~self.sampled & self.response_mask.unsqueeze(-1)
        r = self.prob_ratio()[:, keep]
        return torch.stack([r.amin(-1), r.amax(-1)], -1)

    def rho_range(self) -> torch.Tensor:
        """(K+1, 2) min and max of the entropy ratio over response positions, per update."""
        r = self.rho[:, self.response_mask]
        return torch.stack([r.amin(-1), r.amax(-1)], -1)

    def rho_deviation(self) -> torch.Tensor:
        """(K+1,) mean over response positions of ``|rho - 1|``, per update."""
        return (self.rho[:, self.response_mask] - 1.0).abs().mean(-1)

    def outside_band(self, bounds: tuple[float, float]) -> torch.Tensor:
        """(K+1,) fraction of response positions whose entropy ratio is outside the open band ``bounds``."""
        r = self.rho[:, self.response_mask]
        return Band.of(bounds, "bounds").gated(r).float().mean(-1)

    def first(self, n_updates: int) -> "UpdateTrace":
        """The trace of the first ``n_updates`` updates only (rows 0..n_updates), e.g. to replay the run.

        Raises:
            ValueError: unless ``0 <= n_updates <= K``.
        """
        k = len(self.stats)
        if not 0 <= n_updates <= k:
            raise ValueError(f"n_updates must be in [0, {k}] (the updates this trace holds), got {n_updates!r}")
        rows = slice(0, n_updates + 1)
        return UpdateTrace(self.probs[rows], self.ratio[rows], self.entropy[rows], self.rho[rows], self.sampled,
                           self.response_mask, self.stats[:n_updates])


def offpolicy_updates(batch: TokenBatch, n_updates: int, lr: float, *, mode: str = "dapo",
                      clip_low: float = 0.2, clip_high: float = 0.28, clip_c: float = 10.0,
                      erc_bounds: tuple[float, float] | None = None) -> UpdateTrace:
    """K off-policy gradient steps on a toy categorical policy whose parameters are the logits themselves.

    Each response position ``(b, t)`` of ``batch`` is one state with its own logits (``batch.old_logits``, the
    rollout policy) and one sampled token ``batch.tokens[b, t]``, as in an LLM's response; ``batch.new_logits`` is
    ignored. Every update recomputes log-probs and entropies, calls
    :func:`erc_core.losses.policy_loss` against the fixed old pass (``erc_bounds=None``: plain PPO-clip) and takes
    one plain gradient-descent step. The token-mean loss is multiplied by the number of response tokens, so
    each position's logits move by ``lr`` times their own per-token gradient whatever the batch size.

    Args:
        batch: a :class:`TokenBatch` (old logits, sampled tokens, mask, per-response advantages).
        n_updates: K >= 1 updates on the same samples.
        lr: gradient-descent step size (> 0).
        mode, clip_low, clip_high, clip_c, erc_bounds: passed to ``policy_loss``.

    Returns:
        An :class:`UpdateTrace` with K + 1 rows (row 0: before any update).
    """
    # deferred: erc_core.losses imports nothing from here, but keep toy importable on its own
    from erc_core.entropy import logprobs_and_entropy
    from erc_core.losses import entropy_ratio, policy_loss

    if n_updates < 1:
        raise ValueError(f"n_updates must be >= 1, got {n_updates}")
    if not lr > 0:
        raise ValueError(f"lr must be > 0, got {lr}")
    mask = batch.response_mask.bool()
    n_tok = float(mask.sum().clamp(min=1))
    logits = batch.old_logits.detach().clone().float().requires_grad_()
    with torch.no_grad():
        old_logp, old_h = logprobs_and_entropy(logits, batch.tokens)
    probs, ratio, entropy, stats = [], [], [], []
    for k in range(n_updates + 1):
        logp, h = logprobs_and_entropy(logits, batch.tokens)
        probs.append(torch.softmax(logits.detach(), -1))
        ratio.append((logp.detach() - old_logp).exp())
        entropy.append(h.detach())
        if k == n_updates:
            break
        loss, st = policy_loss(logp, old_logp, batch.advantages, mask, entropy=h, old_entropy=old_h, mode=mode,
                               clip_low=clip_low, clip_high=clip_high, clip_c=clip_c, erc_bounds=erc_bounds)
        (grad,) = torch.autograd.grad(loss * n_tok, logits)
        with torch.no_grad():
            logits -= lr * grad
        stats.append(st)
    entropy_t = torch.stack(entropy)
    sampled = torch.zeros_like(probs[0], dtype=torch.bool).scatter_(-1, batch.tokens.unsqueeze(-1), True)
    return UpdateTrace(probs=torch.stack(probs), ratio=torch.stack(ratio), entropy=entropy_t,
                       rho=entropy_ratio(entropy_t, old_h.unsqueeze(0)), sampled=sampled, response_mask=mask,
                       stats=stats)


# ---------------------------------------------------------------------------------------------- chapter 4
def binary_reward_groups(group_size: int) -> torch.Tensor:
    """Every possible outcome of a group of binary rewards, up to order: (G + 1, G), row k has k ones first."""
    if group_size < 1:
        raise ValueError(f"group_size must be >= 1, got {group_size}")
    return (torch.arange(group_size).unsqueeze(0) < torch.arange(group_size + 1).unsqueeze(1)).float()


def per_token_loss_curve(ratios: torch.Tensor, advantage: float, *, mode: str = "dapo", clip_low: float = 0.2,
                         clip_high: float = 0.28, clip_c: float = 10.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The per-token policy loss of ``mode`` and its derivative as functions of the ratio, for one advantage.

    Args:
        ratios: (N,) probability ratios r > 0.
        advantage: the token's advantage A.
        mode, clip_low, clip_high, clip_c: as in :func:`erc_core.losses.policy_loss` (base loss, no ERC gate).

    Returns:
        ``(loss, dloss_dr)``, (N,) each; ``dloss_dr == 0`` where the clip stops the gradient.
    """
    from erc_core.losses import POLICY_LOSSES

    r = ratios.detach().float().clone().requires_grad_()
    adv = torch.full_like(r, float(advantage))
    log_r = r.detach().log()
    loss, _ = POLICY_LOSSES[mode](r, adv, torch.ones_like(r), clip_low, clip_high, clip_c, log_prob=log_r,
                                  log_ratio=log_r)
    (grad,) = torch.autograd.grad(loss.sum(), r)
    return loss.detach(), grad


def agg_token_weights(lengths: torch.Tensor, max_len: int, agg: str) -> torch.Tensor:
    """The weight ``agg_loss`` gives one token of each response: d(aggregated loss) / d(per-token loss).

    Args:
        lengths: (B,) response lengths, each in [0, max_len].
        max_len: T, the padded length.
        agg: one of :data:`erc_core.losses.AGG_MODES`.

    Returns:
        (B,) the weight of each response's tokens (0 for an empty response); a response's total weight is
        ``weight * length``.
    """
    from erc_core.losses import agg_loss

    lengths = torch.as_tensor(lengths)
    if lengths.ndim != 1 or bool((lengths < 0).any()) or bool((lengths > max_len).any()):
        raise ValueError(f"lengths must be a 1-D tensor with values in [0, max_len={max_len}]")
    mask = torch.arange(max_len).unsqueeze(0) < lengths.unsqueeze(1)
    loss_mat = torch.ones(len(lengths), max_len, requires_grad=True)
    (grad,) = torch.autograd.grad(agg_loss(loss_mat, mask, agg), loss_mat)
    return torch.where(lengths > 0, grad[:, 0], torch.zeros(()))


def dynamic_sampling_sweep(accuracies: torch.Tensor, n_groups: int, group_size: int,
                           generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fraction of groups DAPO's dynamic sampling keeps when every response is correct with probability p.

    For each accuracy p, ``n_groups`` groups of ``group_size`` Bernoulli(p) rewards are drawn and passed to
    :func:`erc_core.advantages.dynamic_sampling_mask`.

    Returns:
        ``(kept, expected)``, (N,) each: the measured fraction and its closed form ``1 - p^G - (1 - p)^G``.
    """
    from erc_core.advantages import dynamic_sampling_mask

    if n_groups < 1 or group_size < 1:
        raise ValueError("n_groups and group_size must be >= 1")
    p = torch.as_tensor(accuracies, dtype=torch.float32)
    kept = torch.stack([
        dynamic_sampling_mask(torch.bernoulli(torch.full((n_groups, group_size), float(pi)), generator=generator))
        .float().mean() for pi in p])
    expected = 1.0 - p ** group_size - (1.0 - p) ** group_size
    return kept, expected
