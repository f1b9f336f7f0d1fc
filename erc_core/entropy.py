"""Full-vocabulary entropy and token log-probs of a temperature-scaled softmax, in one float32 pass.

ERC needs, for every response token t, the Shannon entropy of the whole next-token distribution::

    H(s_t) = logsumexp(z) - sum_v softmax(z)_v * z_v,        z = logits / temperature,

next to the log-probability of the sampled token, ``log p(y_t) = z[y_t] - logsumexp(z)``. Both come out of the same
pass over the logits here, so the entropy costs about as much as the ``log_softmax`` a trainer computes anyway::

    m = max(z);  e = exp(z - m);  s = sum(e);  lse = m + log s
    logp = z_y - lse;  H = lse - <e, z> / s

The arithmetic is float32 whatever the logits' dtype (bf16 logits included; float64 logits stay float64,
which ``torch.autograd.gradcheck`` needs) and uses the max-shift, so logits of magnitude 1e4 are fine. ``-inf`` logits (masked vocabulary entries) are allowed; NaN or ``+inf`` logits raise.
Rows are processed in blocks (about 1M logits each by default, so the few passes over a block run from cache);
with ``chunk_size`` the block is ``chunk_size`` rows and, under autograd, each chunk is recomputed in the backward
pass (activation checkpointing), so the extra memory stays O(chunk_size x V) instead of O(rows x V).
``fused=True`` compiles the per-block computation with ``torch.compile`` into one kernel (about the cost of a
plain ``log_softmax``; the first call compiles for ~15 s on a CPU and needs a C++ compiler / Triton on GPU).
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
    """(N, V) float32 -> logsumexp (N,), entropy (N,). One exp pass over the shifted logits."""
    m = z.amax(dim=-1, keepdim=True).detach()
    zc = z - m  # shifted logits <= 0: exp cannot overflow, and <e, zc> has no cancellation for peaked rows
    e = torch.exp(zc)
    s = e.sum(dim=-1)
    lse_c = torch.log(s)  # logsumexp(z) - m
    entropy = lse_c - torch.linalg.vecdot(e, zc) / s  # H = lse - <p, z> = log s - <e, z - m> / s
    return lse_c + m.squeeze(-1), entropy


def _chunk_entropy(z_raw: torch.Tensor, temperature: float, safe: bool) -> torch.Tensor:
    """(n, V) raw logits -> (n,) entropies."""
    return _lse_and_entropy(_scaled(z_raw, temperature, safe))[1]


def _chunk_logp_entropy(z_raw: torch.Tensor, tokens: torch.Tensor, temperature: float,
                        safe: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, V) raw logits, (n,) token ids -> (n,) log-probs, (n,) entropies."""
    z = _scaled(z_raw, temperature, safe)
    lse, entropy = _lse_and_entropy(z)
    logp = z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - lse
    return logp, entropy


_COMPILED: dict = {}


def _kernel(fn, fused: bool):
    """``fn`` itself, or its ``torch.compile`` version (one fused loop instead of five passes; compiled once)."""
    if not fused:
        return fn
    if fn not in _COMPILED:
        _COMPILED[fn] = torch.compile(fn, dynamic=True)
    return _COMPILED[fn]


# Rows per block when no chunk_size is given: about 1M logits (4 MB in float32) per temporary, so the few passes
# over a block run from cache instead of faulting in fresh (rows x V) buffers. It does not change the results.
_BLOCK_ELEMENTS = 1 << 20


def _run_chunks(fn, flat_logits: torch.Tensor, extra: tuple, temperature: float, chunk_size: int | None,
                fused: bool):
    """Apply ``fn(chunk, *extra_chunks, temperature, safe)`` over row chunks of (N, V) logits; concatenate.

    With an explicit ``chunk_size`` under autograd each chunk is checkpointed (recomputed in backward), so the
    activations kept for backward are O(chunk_size x V) as well. If a result is not finite (``-inf`` logits give
    0 * -inf), it is recomputed with the logits clamped to finite values; still not finite means bad logits.
    """
    n, vocab = flat_logits.shape
    step = chunk_size if chunk_size is not None else max(1, _BLOCK_ELEMENTS // max(vocab, 1))
    use_ckpt = chunk_size is not None and torch.is_grad_enabled() and flat_logits.requires_grad and n > step
    kernel = _kernel(fn, fused)
    for safe in (False, True):
        outs = []
        for start in range(0, max(n, 1), step):
            args = (flat_logits[start:start + step],) + tuple(x[start:start + step] for x in extra)
            if use_ckpt:
                outs.append(checkpoint(kernel, *args, temperature, safe, use_reentrant=False))
            else:
                outs.append(kernel(*args, temperature, safe))
        outs = [o if isinstance(o, tuple) else (o,) for o in outs]
        result = tuple(parts[0] if len(parts) == 1 else torch.cat(parts) for parts in zip(*outs))
        if all(bool(torch.isfinite(r).all()) for r in result):
            return result
    raise ValueError("logits contain NaN or +inf (or a row that is all -inf): entropy is undefined")


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int | None = None, *,
                        fused: bool = False) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits / temperature)`` over the last axis.

    Args:
        logits: (..., V) any floating dtype.
        temperature: > 0; the sampling temperature (ERC uses the rollout temperature).
        chunk_size: rows per chunk; the extra memory is O(chunk_size x V), under autograd too (each chunk is
            recomputed in backward). None: automatic cache-sized blocks without recomputation (under autograd the
            saved activations are then O(rows x V)).
        fused: run each chunk through ``torch.compile`` (one fused kernel; the first call compiles, ~15 s on CPU).

    Returns:
        (...) float32 entropies in [0, log V] (float64 for float64 logits), differentiable in ``logits``.
    """
    _check_args(logits, temperature, chunk_size)
    flat = logits.reshape(-1, logits.shape[-1])
    (h,) = _run_chunks(_chunk_entropy, flat, (), float(temperature), chunk_size, fused)
    return h.reshape(logits.shape[:-1])


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                         chunk_size: int | None = None, *,
                         fused: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``tokens`` and full-vocabulary entropy, from one pass over ``logits``.

    Args:
        logits: (..., V) any floating dtype, e.g. (B, T, V) bf16 from the policy's forward.
        tokens: (...) integer token ids in [0, V), same leading shape as ``logits``.
        temperature: > 0; logits are divided by it before the softmax (as in sampling).
        chunk_size: rows per chunk; the extra memory is O(chunk_size x V), under autograd too (each chunk is
            recomputed in backward). None: automatic cache-sized blocks without recomputation (under autograd the
            saved activations are then O(rows x V)).
        fused: run each chunk through ``torch.compile`` (one fused kernel; the first call compiles, ~15 s on CPU).

    Returns:
        ``(logp, entropy)``, both (...) float32 (float64 for float64 logits), differentiable in ``logits``.
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
    flat = logits.reshape(-1, vocab)
    logp, h = _run_chunks(_chunk_logp_entropy, flat, (tokens.reshape(-1).long(),), float(temperature), chunk_size,
                          fused)
    return logp.reshape(logits.shape[:-1]), h.reshape(logits.shape[:-1])
