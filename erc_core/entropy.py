"""Full-vocabulary entropy and token log-probs of a temperature-scaled softmax, in one float32 pass.

ERC needs, for every response token t, the Shannon entropy of the whole next-token distribution

    H(s_t) = logsumexp(z) - sum_v softmax(z)_v * z_v,        z = logits / temperature,

next to the log-probability of the sampled token, log p(y_t) = z_{y_t} - logsumexp(z). Both come out of the same
pass over the logits here, so the entropy costs about as much as the ``log_softmax`` a trainer computes anyway:

    m = max(z);  e = exp(z - m);  s = sum(e);  lse = m + log s
    logp = z_y - lse;  H = lse - <e, z> / s

The arithmetic is float32 whatever the logits' dtype (bf16 logits included; float64 logits stay float64, which
``torch.autograd.gradcheck`` needs) and uses the max-shift, so logits of
magnitude 1e4 are fine. ``-inf`` logits (masked vocabulary entries) are allowed; NaN or ``+inf`` logits raise.
With ``chunk_size`` the rows are processed ``chunk_size`` at a time, so the extra memory is O(chunk_size x V)
instead of O(rows x V); under autograd each chunk is recomputed in the backward pass (activation checkpointing),
so the saved activations stay O(chunk_size x V) too.
"""

from __future__ import annotations

import math

import torch
from torch.utils.checkpoint import checkpoint

__all__ = ["entropy_from_logits", "logprobs_and_entropy"]


def _check_args(logits: torch.Tensor, temperature: float, chunk_size: int | None) -> None:
    if not isinstance(logits, torch.Tensor) or not logits.is_floating_point():
        raise TypeError(f"logits must be a floating-point tensor of shape (..., V), got {type(logits).__name__}"
                        + (f" of dtype {logits.dtype}" if isinstance(logits, torch.Tensor) else ""))
    if logits.ndim < 1 or logits.shape[-1] < 1:
        raise ValueError(f"logits must have shape (..., V) with V >= 1, got {tuple(logits.shape)}")
    if not (isinstance(temperature, (int, float)) and math.isfinite(temperature) and temperature > 0):
        raise ValueError(f"temperature must be a finite number > 0, got {temperature!r}")
    if chunk_size is not None and (not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1):
        raise ValueError(f"chunk_size must be None or an integer >= 1, got {chunk_size!r}")


def _scaled(logits: torch.Tensor, temperature: float, safe: bool) -> torch.Tensor:
    """(N, V) any float dtype -> (N, V) float32 (float64 stays float64) logits / temperature, clamped if ``safe``."""
    z = logits if logits.dtype == torch.float64 else logits.float()
    if temperature != 1.0:
        z = z / temperature
    if safe:  # -inf logits would give 0 * -inf = NaN in <e, z>; the clamp keeps exp(z - m) exactly 0 there
        z = z.clamp(min=torch.finfo(z.dtype).min)
    return z


def _lse_and_entropy(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) float32 -> logsumexp (N,), entropy (N,). One exp pass over the logits."""
    m = z.amax(dim=-1, keepdim=True).detach()
    zc = z - m  # shifted logits, <= 0
    e = torch.exp(zc)
    s = e.sum(dim=-1)
    lse_c = torch.log(s)  # logsumexp(z) - m
    # H = lse - <e, z>/s = lse_c - <e, z - m>/s; a batched dot avoids another (N, V) temporary
    dot = torch.matmul(e.unsqueeze(-2), zc.unsqueeze(-1)).squeeze(-1).squeeze(-1)
    entropy = lse_c - dot / s
    return lse_c + m.squeeze(-1), entropy


def _chunk_entropy(z_raw: torch.Tensor, temperature: float, safe: bool) -> torch.Tensor:
    return _lse_and_entropy(_scaled(z_raw, temperature, safe))[1]


def _chunk_logp_entropy(z_raw: torch.Tensor, tokens: torch.Tensor, temperature: float,
                        safe: bool) -> tuple[torch.Tensor, torch.Tensor]:
    z = _scaled(z_raw, temperature, safe)
    lse, entropy = _lse_and_entropy(z)
    logp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    return logp, entropy


def _run_chunks(fn, flat_logits: torch.Tensor, extra: tuple, chunk_size: int | None, safe: bool):
    """Apply ``fn(chunk, *extra_chunks, safe)`` over row chunks of (N, V) logits and concatenate the outputs."""
    n = flat_logits.shape[0]
    step = n if chunk_size is None else chunk_size
    use_ckpt = chunk_size is not None and torch.is_grad_enabled() and flat_logits.requires_grad and n > step
    outs = []
    for start in range(0, max(n, 1), max(step, 1)):
        args = (flat_logits[start:start + step],) + tuple(x[start:start + step] for x in extra)
        if use_ckpt:
            outs.append(checkpoint(fn, *args, safe, use_reentrant=False))
        else:
            outs.append(fn(*args, safe))
    if isinstance(outs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outs))
    return torch.cat(outs)


def _all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0,
                        chunk_size: int | None = None) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits / temperature)`` over the last axis.

    Args:
        logits: (..., V) any floating dtype.
        temperature: > 0; the sampling temperature (ERC uses the rollout temperature).
        chunk_size: rows processed at a time (None = all at once).

    Returns:
        (...) float32 entropies in [0, log V] (float64 for float64 logits). Differentiable with respect to ``logits``.
    """
    _check_args(logits, temperature, chunk_size)
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, logits.shape[-1])
    h = _run_chunks(lambda z, safe: _chunk_entropy(z, temperature, safe), flat, (), chunk_size, False)
    if not _all_finite(h):
        h = _run_chunks(lambda z, safe: _chunk_entropy(z, temperature, safe), flat, (), chunk_size, True)
        if not _all_finite(h):
            raise ValueError("logits contain NaN or +inf (or a row that is all -inf): entropy is undefined")
    return h.reshape(lead)


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                         chunk_size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``tokens`` and full-vocabulary entropy, from one pass over ``logits``.

    Args:
        logits: (..., V) any floating dtype, e.g. (B, T, V) bf16 from the policy's forward.
        tokens: (...) integer token ids in [0, V), same leading shape as ``logits``.
        temperature: > 0; logits are divided by it before the softmax (as in sampling).
        chunk_size: rows processed at a time (None = all at once).

    Returns:
        ``(logp, entropy)``, both (...) float32 (float64 for float64 logits) and differentiable with respect to ``logits``.
    """
    _check_args(logits, temperature, chunk_size)
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32, torch.int16,
                                                                     torch.uint8, torch.int8):
        raise TypeError("tokens must be an integer tensor of token ids")
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"tokens must have the leading shape of logits {tuple(logits.shape[:-1])}, "
                         f"got {tuple(tokens.shape)}")
    vocab = logits.shape[-1]
    if tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"tokens must be in [0, {vocab}) (the vocabulary size V of logits)")
    lead = logits.shape[:-1]
    flat = logits.reshape(-1, vocab)
    flat_tok = tokens.reshape(-1).long()

    def fn(z, t, safe):
        return _chunk_logp_entropy(z, t, temperature, safe)

    logp, h = _run_chunks(fn, flat, (flat_tok,), chunk_size, False)
    if not _all_finite(h):
        logp, h = _run_chunks(fn, flat, (flat_tok,), chunk_size, True)
        if not _all_finite(h):
            raise ValueError("logits contain NaN or +inf (or a row that is all -inf): entropy is undefined")
    return logp.reshape(lead), h.reshape(lead)
