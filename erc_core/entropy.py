"""Full-vocabulary entropy and token log-probs of a temperature-scaled softmax, in one float32 pass.

ERC needs, for every response token t, the Shannon entropy of the whole next-token distribution::

    H(s_t) = logsumexp(z) - sum_v softmax(z)_v * z_v,        z = logits / temperature,

next to the log-probability of the sampled token, ``log p(y_t) = z[y_t] - logsumexp(z)``. Both come out of the same
pass over the logits here, so the entropy costs about as much as the ``log_softmax`` a trainer computes anyway::

    m = max(z);  e = exp(z - m);  s = sum(e);  lse_c = log s          (logsumexp(z) = m + lse_c)
    logp = (z_y - m) - lse_c;  H = lse_c - <e, z - m> / s

The arithmetic is float32 whatever the logits' dtype (bf16 logits included; float64 logits stay float64,
which ``torch.autograd.gradcheck`` needs) and uses the max-shift, so logits of magnitude 1e4 are fine. ``-inf``
logits (masked vocabulary entries) are allowed (a row that is entirely ``-inf`` counts as uniform: -inf is
clamped to the dtype's lowest finite value); NaN or ``+inf`` logits raise. Two implementations give the same
numbers up to float32 rounding:

- fused (``fused=None``, the default, picks it for vocabularies of ``AUTO_FUSED_MIN_VOCAB`` = 4096 or more, i.e.
  for LLMs): the row reductions compiled once by ``torch.compile`` over all rows, per row one loop over V for the
  max and one for ``s`` and ``<e, z - m>`` while the row is in cache. Nothing (rows x V) is allocated, under
  autograd only the logits (no copy) and three (rows,) tensors are kept, and the backward is one compiled pass
  writing the gradient. Measured with ``benchmarks/bench_entropy.py --threads 1`` (2-core x86 CPU): 0.25-1.25x the
  time of a plain ``log_softmax + gather``, forward + backward 0.2-1.2x plain's. The first call in a process
  compiles: about 8 s for the forward plus 1 s for the backward with inductor's on-disk cache cold, 3-4.5 s with
  it warm, plus a few seconds for each further dtype (bf16) or device; new shapes (rows, V), temperatures and
  chunk sizes reuse the compiled code. It needs a working torch.compile (a C++ compiler on CPU, Triton on GPU):
  in auto mode a failure makes it fall back to eager, with one warning.
- eager (V < 4096 such as the book's character models, float64 logits, ``fused=False``, or after a failed
  compile; also under a TorchDispatchMode or inside a torch.compile trace): plain torch ops over row blocks of
  about 1M logits, so the few passes over a block run from cache; about 2-3.5x a plain ``log_softmax + gather``
  on one CPU thread when plain's output is not page-faulted in (less than 1x when it is).

With ``chunk_size`` the rows are processed ``chunk_size`` at a time. Eager: under autograd each chunk is recomputed
in the backward pass (activation checkpointing), so the extra memory stays O(chunk_size x V) instead of
O(rows x V). Fused: each kernel call covers ``chunk_size`` rows (at least 2); it keeps nothing (rows x V) anyway.
"""

from __future__ import annotations

import math
import types
import warnings
from typing import Callable

import torch
from torch.autograd.function import once_differentiable
from torch.utils._python_dispatch import is_in_torch_dispatch_mode
from torch.utils.checkpoint import checkpoint

__all__ = ["AUTO_FUSED_MIN_VOCAB", "entropy_from_logits", "logprobs_and_entropy"]


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


def _shifted_lse_and_entropy(z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, V) float32 -> ``(m, lse_c, entropy)``, each (N,): the row max, ``logsumexp(z) - m`` and the entropy.
    One exp pass over the shifted logits."""
    m = z.amax(dim=-1, keepdim=True).detach()
    zc = z - m  # shifted logits <= 0: exp cannot overflow, and <e, zc> has no cancellation for peaked rows
    e = torch.exp(zc)
    s = e.sum(dim=-1)
    lse_c = torch.log(s)  # logsumexp(z) - m
    entropy = lse_c - torch.linalg.vecdot(e, zc) / s  # H = lse - <p, z> = log s - <e, z - m> / s
    return m.squeeze(-1), lse_c, entropy


def _chunk_entropy(z_raw: torch.Tensor, temperature: float, safe: bool) -> torch.Tensor:
    """(n, V) raw logits -> (n,) entropies."""
    return _shifted_lse_and_entropy(_scaled(z_raw, temperature, safe))[2]


def _chunk_logp_entropy(z_raw: torch.Tensor, tokens: torch.Tensor, temperature: float,
                        safe: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(n, V) raw logits, (n,) token ids -> (n,) log-probs, (n,) entropies.

    ``logp = (z_y - m) - lse_c``: both terms are small, where ``z_y - (m + lse_c)`` would round ``lse_c`` away
    against a large ``m``."""
    z = _scaled(z_raw, temperature, safe)
    m, lse_c, entropy = _shifted_lse_and_entropy(z)
    logp = (z.gather(-1, tokens.unsqueeze(-1)).squeeze(-1) - m) - lse_c
    return logp, entropy


# Rows per block when no chunk_size is given: about 1M logits (4 MB in float32) per temporary, so the few passes
# over a block run from cache instead of faulting in fresh (rows x V) buffers. It does not change the results.
_BLOCK_ELEMENTS = 1 << 20


def _run_chunks(fn, flat_logits: torch.Tensor, extra: tuple, temperature: float, chunk_size: int | None,
                validate: bool = True):
    """Eager path: apply ``fn(chunk, *extra_chunks, temperature, safe)`` over row chunks of (N, V) logits.

    With an explicit ``chunk_size`` under autograd each chunk is checkpointed (recomputed in backward), so the
    activations kept for backward are O(chunk_size x V) as well. If a result is not finite (``-inf`` logits give
    0 * -inf), it is recomputed with the logits clamped to finite values; still not finite means bad logits.
    ``validate=False``: one pass with the clamp (the same numbers for finite logits) and no finiteness check.

    Returns: A tuple of (N,) tensors, the outputs of ``fn`` concatenated over the chunks.
    """
    n, vocab = flat_logits.shape
    grad = torch.is_grad_enabled() and flat_logits.requires_grad
    if chunk_size is not None:
        step = chunk_size
    else:  # under autograd all (rows x V) activations are kept anyway: blocks would only add backward work
        step = max(n, 1) if grad else max(1, _BLOCK_ELEMENTS // max(vocab, 1))
    use_ckpt = chunk_size is not None and grad and n > step
    for safe in (False, True) if validate else (True,):
        outs = []
        # split, not slicing: autograd then concatenates the chunks' gradients once, where each slice's backward
        # would add a zero-filled (rows x V) gradient (quadratic in the number of chunks)
        for args in zip(flat_logits.split(step), *(x.split(step) for x in extra)):
            if use_ckpt:
                outs.append(checkpoint(fn, *args, temperature, safe, use_reentrant=False))
            else:
                outs.append(fn(*args, temperature, safe))
        outs = [o if isinstance(o, tuple) else (o,) for o in outs]
        result = tuple(parts[0] if len(parts) == 1 else torch.cat(parts) for parts in zip(*outs))
        if not validate or _all_finite(*result):
            return result
    if flat_logits.dtype != torch.float64 and not bool((torch.isnan(flat_logits) | (flat_logits == math.inf)).any()):
        # finite logits whose spread overflows float32 (|z| ~ 3e38: z - max is -inf): float64 has the range
        return tuple(r.float() for r in _run_chunks(fn, flat_logits.double(), extra, temperature, chunk_size))
    raise _bad_logits()


def _all_finite(*tensors: torch.Tensor) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def _bad_logits() -> ValueError:
    return ValueError("logits contain NaN or +inf: entropy is undefined")


# ---------------------------------------------------------------------------------------------------------------
# Fused path: the row reductions compiled once with torch.compile (inductor) over ALL rows. Inductor emits, per
# row, a loop over V for the max, then one for sum(exp) and <exp, z - m> while the row is still in cache, so no
# (rows x V) temporary exists; the backward is a hand-written single pass that writes only the gradient. Sizes are
# dynamic (one compile for every (N, V) per dtype; a 1-row input is padded to 2 rows so the size-1
# specialisation never triggers a recompile).
# ---------------------------------------------------------------------------------------------------------------

#: Smallest vocabulary for which ``fused=None`` (auto) uses the compiled kernel.
AUTO_FUSED_MIN_VOCAB = 4096

_COMPILED: dict[tuple[str, int], Callable] = {}  # (name, CPU threads or 0) -> compiled function
_FUSED_DISABLED: dict[str, str] = {}  # device type -> why torch.compile failed there (auto mode then stays eager)


def _fused_unclamped(x: torch.Tensor, inv_temperature: float) -> torch.Tensor:
    """(N, V) raw logits -> float32 (float64 stays float64) ``x * (1 / T)``. A multiply, not a branch on T (which
    would make torch.compile specialise on T's value and recompile for every new temperature) nor a division
    (about 10% slower on a CPU); exact for T = 1, within 1-2 ulp of ``x / T`` otherwise."""
    return (x if x.dtype == torch.float64 else x.float()) * inv_temperature


def _fused_scaled(x: torch.Tensor, inv_temperature: float) -> torch.Tensor:
    """``_fused_unclamped`` clamped to finite values, as ``_scaled(..., safe=True)``: -inf logits need no retry."""
    z = _fused_unclamped(x, inv_temperature)
    return z.clamp(min=torch.finfo(z.dtype).min)


def _fused_row_stats(x: torch.Tensor, inv_temperature: float) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, V) raw logits -> ``(m, s, d)``, each (N,) float32 (float64 for float64 logits), of z = x / T (clamped):
    the row max ``m``, ``s = sum(exp(z - m))`` and ``d = sum(exp(z - m) * (z - m))``.

    Only the two row reductions are compiled: inductor then runs both V-loops of a row back to back (the row is
    still in cache for the second) and keeps nothing (N, V). The O(N) rest is done eagerly by ``_fused_forward``.
    """
    z = _fused_scaled(x, inv_temperature)
    m = z.amax(dim=-1, keepdim=True)
    zc = z - m
    e = torch.exp(zc)
    return m.squeeze(-1), e.sum(dim=-1), (e * zc).sum(dim=-1)


def _fused_backward_math(x: torch.Tensor, tokens: torch.Tensor, m: torch.Tensor, lse_c: torch.Tensor,
                         entropy: torch.Tensor, g_logp: torch.Tensor, g_h: torch.Tensor,
                         inv_temperature: float) -> torch.Tensor:
    """Gradient (N, V), in ``x``'s dtype, of ``sum(g_logp * logp + g_h * entropy)`` w.r.t. the raw logits ``x``
    (N, V); the other tensors are (N,). One pointwise pass: reads ``x``, writes the gradient, nothing else (N, V).

    With p = softmax(z), z = x / T:  d logp_y / dz = onehot(y) - p  and  dH / dz = p * (<p, z> - z), where
    <p, z> - z = (lse_c - H) - (z - m) is formed in shifted coordinates (no cancellation for large logits).
    Entries whose z is -inf get 0, as the clamp in the eager path gives them.
    """
    z_raw = _fused_unclamped(x, inv_temperature)
    zc = z_raw.clamp(min=torch.finfo(z_raw.dtype).min) - m.unsqueeze(-1)
    p = torch.exp(zc - lse_c.unsqueeze(-1))
    g_z = p * (g_h.unsqueeze(-1) * ((lse_c - entropy).unsqueeze(-1) - zc) - g_logp.unsqueeze(-1))
    hit = torch.arange(x.shape[-1], device=x.device) == tokens.unsqueeze(-1)
    g_z = g_z + torch.where(hit, g_logp.unsqueeze(-1), 0.0)
    g_z = torch.where(z_raw >= torch.finfo(z_raw.dtype).min, g_z, 0.0)
    return (g_z * inv_temperature).to(x.dtype)


def _compiled(name: str, device_type: str) -> Callable:
    """The ``torch.compile`` version of ``"forward"`` (row stats) or ``"backward"`` (dynamic shapes, full graph;
    torch.compile compiles lazily, on the first call, once per dtype and device).

    On a CPU inductor fixes the number of OpenMP threads when it compiles, and no guard notices a later
    ``torch.set_num_threads``: each thread count gets its own copy of the function (a new code object, hence its
    own compiled graphs), so a kernel compiled single-threaded never serves a multi-threaded run.
    """
    threads = torch.get_num_threads() if device_type == "cpu" else 0
    if (name, threads) not in _COMPILED:
        fn = _fused_row_stats if name == "forward" else _fused_backward_math
        if threads:
            code = fn.__code__.replace(co_name=f"{fn.__name__}_{threads}_threads")
            fn = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
        _COMPILED[(name, threads)] = torch.compile(fn, dynamic=True, fullgraph=True)
    return _COMPILED[(name, threads)]


def _pad_rows(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Row-1 tensors repeated to 2 rows (a size-1 dim would make torch.compile specialise and recompile)."""
    return tuple(torch.cat([t, t]) for t in tensors)


def _row_slices(n: int, chunk_size: int | None) -> list[slice]:
    """Row ranges covering ``range(n)``, ``chunk_size`` rows each (all rows if None), none of exactly 1 row
    unless ``n == 1`` (a trailing single row joins the previous chunk)."""
    step = n if chunk_size is None else max(2, chunk_size)
    starts = list(range(0, n, step))
    if len(starts) > 1 and n - starts[-1] == 1:
        starts.pop()
    return [slice(a, b) for a, b in zip(starts, starts[1:] + [n])]


def _call(name: str, *args):
    """Call the compiled ``name`` kernel. Tensors go in detached: ``requires_grad`` and view-ness (``_base``) are
    part of torch.compile's guards, so this keeps one graph per dtype for training, inference and row slices."""
    return _compiled(name, args[0].device.type)(*(a.detach() if isinstance(a, torch.Tensor) else a for a in args))


def _fused_forward(x: torch.Tensor, tokens: torch.Tensor, inv_temperature: float,
                   chunk_size: int | None) -> tuple[torch.Tensor, ...]:
    """Compiled forward over (N, V) logits, ``chunk_size`` rows per kernel call (all rows if None).

    Returns: A tuple ``(logp, entropy, m, lse_c)`` of (N,) tensors: ``m`` the row max of the scaled logits and
    ``lse_c = logsumexp - m`` (what the backward needs besides the entropy).
    """
    with torch.no_grad():
        if x.shape[0] == 1:
            m, s, d = (t[:1] for t in _call("forward", *_pad_rows(x), inv_temperature))
        else:
            parts = [_call("forward", x[sl], inv_temperature) for sl in _row_slices(x.shape[0], chunk_size)]
            m, s, d = parts[0] if len(parts) == 1 else (torch.cat(p) for p in zip(*parts))
        lse_c = torch.log(s)
        entropy = lse_c - d / s
        z_y = _fused_scaled(x.gather(-1, tokens.unsqueeze(-1)).squeeze(-1), inv_temperature)
        logp = (z_y - m) - lse_c
    return logp, entropy, m, lse_c


class _FusedLogpEntropy(torch.autograd.Function):
    """Compiled forward and backward. Saved for backward: the logits (no copy) and three (N,) tensors."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, tokens: torch.Tensor, inv_temperature: float, chunk_size: int | None,
                strict: bool):
        logp, entropy, m, lse_c = _fused_forward(x, tokens, inv_temperature, chunk_size)
        ctx.save_for_backward(x, tokens, m, lse_c, entropy)
        ctx.inv_temperature, ctx.strict = inv_temperature, strict
        return logp, entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, g_logp: torch.Tensor | None, g_h: torch.Tensor | None):
        x, tokens, m, lse_c, entropy = ctx.saved_tensors
        # contiguous: an expanded (stride-0) incoming gradient, e.g. from .sum(), would be a new graph
        g_logp = torch.zeros_like(m) if g_logp is None else g_logp.to(m.dtype).contiguous()
        g_h = torch.zeros_like(m) if g_h is None else g_h.to(m.dtype).contiguous()
        args = (x, tokens, m, lse_c, entropy, g_logp, g_h)
        if x.shape[0] == 1:
            return _fused_backward(_pad_rows(*args), ctx.inv_temperature, ctx.strict)[:1], None, None, None, None
        return _fused_backward(args, ctx.inv_temperature, ctx.strict), None, None, None, None


def _fused_backward(args: tuple, inv_temperature: float, strict: bool) -> torch.Tensor:
    """The compiled backward on ``args`` (see ``_fused_backward_math``); if it fails to compile and not ``strict``,
    the same math run eagerly (it then allocates (N, V) temporaries)."""
    try:
        return _call("backward", *args, inv_temperature)
    except Exception as err:  # noqa: BLE001 -- see _fallback_or_raise
        _fallback_or_raise(err, args[0].device.type, strict)
    return _fused_backward_math(*args, inv_temperature)


def _run_fused(flat: torch.Tensor, tokens: torch.Tensor, temperature: float, chunk_size: int | None,
               strict: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) logits, (N,) int64 ids -> ``(logp, entropy)`` (N,) through the compiled kernels."""
    if torch.is_grad_enabled() and flat.requires_grad:
        return _FusedLogpEntropy.apply(flat, tokens, 1.0 / temperature, chunk_size, strict)
    return _fused_forward(flat, tokens, 1.0 / temperature, chunk_size)[:2]


def _compile_unsafe_context() -> bool:
    """True while torch.compile traces us (the outer graph fuses the eager ops itself) or under any
    TorchDispatchMode (FakeTensorMode, tracers, memory counters): dynamo skips compiled frames there, and having
    skipped a frame once it keeps skipping it afterwards, outside the mode too."""
    return torch.compiler.is_compiling() or is_in_torch_dispatch_mode()


def _want_fused(logits: torch.Tensor, fused: bool | None) -> bool:
    """The fused/eager decision: ``fused`` if given, else auto (V >= AUTO_FUSED_MIN_VOCAB, not float64, and
    torch.compile has not failed on this device type before). Never fused for empty input or in an unsafe context."""
    if logits.numel() == 0 or _compile_unsafe_context():
        return False
    if fused is not None:
        return bool(fused)
    return (logits.shape[-1] >= AUTO_FUSED_MIN_VOCAB and logits.dtype != torch.float64
            and logits.device.type not in _FUSED_DISABLED)


def _logp_entropy(flat: torch.Tensor, tokens: torch.Tensor, temperature: float, chunk_size: int | None,
                  fused: bool | None, with_logp: bool, validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """(N, V) logits, (N,) int64 ids -> ``(logp, entropy)`` (N,), fused or eager (see ``_want_fused``).

    In auto mode (``fused=None``) any torch.compile failure disables the fused path for this device type, with one
    warning, and the eager path answers instead; with ``fused=True`` the error propagates.
    """
    if _want_fused(flat, fused):
        try:
            logp, entropy = _run_fused(flat, tokens, temperature, chunk_size, strict=bool(fused))
        except Exception as err:  # noqa: BLE001 -- see _fallback_or_raise
            _fallback_or_raise(err, flat.device.type, strict=bool(fused))
        else:
            if not validate or _all_finite(logp, entropy):
                return logp, entropy
            # not finite: the eager path below retries (-inf logits clamped, then float64) or names bad logits
    if with_logp:
        return _run_chunks(_chunk_logp_entropy, flat, (tokens,), temperature, chunk_size, validate)
    (entropy,) = _run_chunks(_chunk_entropy, flat, (), temperature, chunk_size, validate)
    return entropy, entropy


def _fallback_or_raise(err: Exception, device_type: str, strict: bool) -> None:
    """Called with a fused-path error: re-raise it if ``strict`` (``fused=True``) or if it is an out-of-memory
    error; otherwise any error (a missing C++ compiler or Triton, a codegen failure) means "no usable
    torch.compile here": the fused path is off for ``device_type`` from now on, with one warning."""
    oom = isinstance(err, (torch.OutOfMemoryError, MemoryError)) or "can't allocate memory" in str(err)
    if strict or oom:
        raise err
    if device_type not in _FUSED_DISABLED:
        text = str(err).strip()
        reason = f"{type(err).__name__}: {text.splitlines()[0] if text else ''}"[:300]
        _FUSED_DISABLED[device_type] = reason
        warnings.warn(f"erc_core.entropy: torch.compile failed on {device_type} ({reason}); using the eager "
                      "entropy kernel from now on (fused=False avoids the attempt)", RuntimeWarning, stacklevel=4)


def entropy_from_logits(logits: torch.Tensor, temperature: float = 1.0, chunk_size: int | None = None, *,
                        fused: bool | None = None, validate: bool = True) -> torch.Tensor:
    """Shannon entropy (nats) of ``softmax(logits / temperature)`` over the last axis.

    Args:
        logits: (..., V) any floating dtype.
        temperature: > 0; the sampling temperature (ERC uses the rollout temperature).
        chunk_size: rows per chunk; the extra memory is O(chunk_size x V), under autograd too (eager: each chunk is
            recomputed in backward; fused: nothing (rows x V) is kept anyway). None: eager uses cache-sized blocks
            without recomputation (under autograd the saved activations are then O(rows x V)).
        fused: ``None`` (default, auto): the compiled kernel when V >= ``AUTO_FUSED_MIN_VOCAB`` (4096) and the
            logits are not float64, else eager (eager for good, after one warning, on a device type where
            torch.compile failed). ``True``: always compiled (errors propagate). ``False``: always eager. The
            first compiled call in a process compiles (seconds, see the module docstring); later shapes reuse it.
        validate: True (default) checks values on the host (NaN / +inf logits raise), one device sync
            each. False skips those checks for a trainer's hot path that checks its loss instead: the same numbers
            for valid input (``-inf`` logits included), NaN instead of an error for NaN / +inf logits.

    Returns:
        A ``(...)`` tensor of entropies in [0, log V], float32 (float64 for float64 logits), differentiable in
        ``logits``.
    """
    _check_args(logits, temperature, chunk_size)
    flat = logits.reshape(-1, logits.shape[-1])
    tokens = torch.zeros(flat.shape[0], dtype=torch.long, device=flat.device)
    _, h = _logp_entropy(flat, tokens, float(temperature), chunk_size, fused, with_logp=False, validate=validate)
    return h.reshape(logits.shape[:-1])


def logprobs_and_entropy(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0,
                         chunk_size: int | None = None, *, fused: bool | None = None,
                         validate: bool = True) -> tuple[torch.Tensor, torch.Tensor]:
    """Log-probability of ``tokens`` and full-vocabulary entropy, from one pass over ``logits``.

    Args:
        logits: (..., V) any floating dtype, e.g. (B, T, V) bf16 from the policy's forward.
        tokens: (...) integer token ids in [0, V), same leading shape as ``logits``.
        temperature: > 0; logits are divided by it before the softmax (as in sampling).
        chunk_size: rows per chunk; the extra memory is O(chunk_size x V), under autograd too (eager: each chunk is
            recomputed in backward; fused: nothing (rows x V) is kept anyway). None: eager uses cache-sized blocks
            without recomputation (under autograd the saved activations are then O(rows x V)).
        fused: ``None`` (default, auto): the compiled kernel when V >= ``AUTO_FUSED_MIN_VOCAB`` (4096) and the
            logits are not float64, else eager (eager for good, after one warning, on a device type where
            torch.compile failed). ``True``: always compiled (errors propagate). ``False``: always eager. The
            first compiled call in a process compiles (seconds, see the module docstring); later shapes reuse it.
        validate: True (default) checks values on the host (NaN / +inf logits raise; token ids out of [0, V)
            raise), one device sync each. False skips those checks for a trainer's hot path that checks its loss
            instead: the same numbers for valid input (``-inf`` logits included), NaN instead of an error for NaN /
            +inf logits.

    Returns:
        A tuple ``(logp, entropy)`` of ``(...)`` float32 tensors (float64 for float64 logits), differentiable in
        ``logits``.
    """
    _check_args(logits, temperature, chunk_size)
    if not isinstance(tokens, torch.Tensor) or tokens.dtype not in (torch.int64, torch.int32, torch.int16,
                                                                     torch.uint8, torch.int8):
        raise TypeError("tokens must be an integer tensor of token ids")
    if tokens.shape != logits.shape[:-1]:
        raise ValueError(f"tokens must have the leading shape of logits {tuple(logits.shape[:-1])}, "
                         f"got {tuple(tokens.shape)}")
    vocab = logits.shape[-1]
    if validate and tokens.numel() and (int(tokens.min()) < 0 or int(tokens.max()) >= vocab):
        raise ValueError(f"tokens must be in [0, {vocab}) (the vocabulary size V of logits)")
    flat = logits.reshape(-1, vocab)
    logp, h = _logp_entropy(flat, tokens.reshape(-1).long(), float(temperature), chunk_size, fused, with_logp=True,
                            validate=validate)
    return logp.reshape(logits.shape[:-1]), h.reshape(logits.shape[:-1])
