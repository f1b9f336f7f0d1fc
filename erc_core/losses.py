"""Policy losses for RL on LLMs: DAPO and GPPO clipping, the ERC gate, loss aggregation, other entropy controls.

The semantics follow the official ERC code (Kwai-Klear/ERC, ``verl/trainer/ppo/core_algos.py``,
``compute_policy_loss_grpo_erc`` / ``compute_policy_loss_gppo_erc``, ``agg_loss``):

1. base per-token loss: ``ratio = exp(clamp(logp - old_logp, -20, 20))``; PPO clip with decoupled
   ``clip_low`` / ``clip_high`` ("dapo") or GPPO's gradient-preserving clip ("gppo"); dual clip ``clip_c`` for A < 0;
2. ERC gate, applied last: ``rho = (H + 1e-8) / (H_old + 1e-8)``, ``keep = (low < rho < high) & response_mask``
   (strict), ``loss = where(keep, loss, loss.detach())``: out-of-band tokens keep their loss value and lose their
   gradient;
3. aggregation: "token-mean" divides by ALL response tokens, gated ones included.

Every base mode is a function ``(ratio, advantages, mask, clip_low, clip_high, clip_c, *, log_prob, log_ratio,
**options) -> (loss_mat, stats)`` kept in :data:`POLICY_LOSSES` (a registry in the style of verl's
``register_policy_loss``): "dapo", "gppo", the other entropy controls "clip_cov" and "kl_cov" (Cui et al. 2025), and
DPPO's per-token trust regions "dppo_tv" / "dppo_kl" (arXiv 2602.04879), which the ERC gate can also be put on top
of. A mode may also take ``old_log_prob`` (keyword-only); policy_loss then passes it. All modes clamp the log-ratio
to [-20, 20] (verl's clip_cov / kl_cov do not; it only matters beyond that range).
"""

from __future__ import annotations

import inspect
import math
from typing import Callable

import torch

from .band import PAPER_BAND, Band
from .checks import require

__all__ = [
    "POLICY_LOSSES", "AGG_MODES", "register_policy_loss", "policy_loss", "agg_loss", "masked_mean",
    "entropy_ratio", "erc_mask", "apply_erc_gate", "entropy_ratio_penalty", "kl_penalty", "stats_to_floats",
    "check_clip", "check_clip_cov", "check_kl_cov",
]

RATIO_EPS = 1e-8  # the official code's epsilon in (H + eps) / (H_old + eps)
LOG_RATIO_CLAMP = 20.0  # log-ratio clamp before exp, as in verl
AGG_MODES = ("token-mean", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm")

BaseLoss = Callable[..., "tuple[torch.Tensor, dict[str, torch.Tensor]]"]
POLICY_LOSSES: dict[str, BaseLoss] = {}


def register_policy_loss(name: str) -> Callable[[BaseLoss], BaseLoss]:
    """Decorator: register a base per-token policy loss under ``name`` (usable as ``policy_loss(mode=name)``)."""
    def decorator(fn: BaseLoss) -> BaseLoss:
        if name in POLICY_LOSSES:
            raise ValueError(f"policy loss {name!r} is already registered")
        POLICY_LOSSES[name] = fn
        return fn
    return decorator


# ----------------------------------------------------------------------------------------------- helpers
def masked_mean(values: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``values`` over entries where ``mask`` is set; 0 (not NaN) when the mask is empty. Shapes equal."""
    mask = mask.to(values.dtype)
    return (values * mask).sum() / mask.sum().clamp(min=1.0)


def agg_loss(loss_mat: torch.Tensor, mask: torch.Tensor, agg: str = "token-mean") -> torch.Tensor:
    """Aggregate a per-token loss (B, T) with its mask (B, T) into a scalar, with verl's meanings.

    - "token-mean": sum over response tokens / number of response tokens (DAPO; the ERC recipe);
    - "seq-mean-token-sum": per-sequence token sum, averaged over all B sequences;
    - "seq-mean-token-mean": per-sequence token mean, averaged over sequences that have >= 1 response token;
    - "seq-mean-token-sum-norm": total token sum / T (Dr. GRPO's constant normaliser).

    An all-zero mask gives 0 with zero gradients in every mode.
    """
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")
    if loss_mat.shape != mask.shape:
        raise ValueError(f"loss_mat {tuple(loss_mat.shape)} and mask {tuple(mask.shape)} must have the same shape")
    m = mask.to(loss_mat.dtype)
    if agg == "token-mean":
        return masked_mean(loss_mat, m)
    if loss_mat.ndim != 2:
        raise ValueError(f"agg={agg!r} needs (B, T) tensors, got shape {tuple(loss_mat.shape)}")
    seq_sum = (loss_mat * m).sum(dim=-1)
    if agg == "seq-mean-token-sum":
        return seq_sum.mean() if seq_sum.numel() else seq_sum.sum()
    if agg == "seq-mean-token-mean":
        n_tok = m.sum(dim=-1)
        has_tok = (n_tok > 0).to(loss_mat.dtype)
        return masked_mean(seq_sum / n_tok.clamp(min=1.0), has_tok)
    return seq_sum.sum() / max(loss_mat.shape[-1], 1)  # "seq-mean-token-sum-norm"


# ----------------------------------------------------------------------------------------------- ERC
def entropy_ratio(entropy: torch.Tensor, old_entropy: torch.Tensor) -> torch.Tensor:
    """rho_t = (H_new + 1e-8) / (H_old + 1e-8), elementwise. Shapes (B, T) -> (B, T)."""
    return (entropy + RATIO_EPS) / (old_entropy + RATIO_EPS)


def erc_mask(entropy: torch.Tensor, old_entropy: torch.Tensor, response_mask: torch.Tensor,
             bounds: Band | tuple[float, float] = PAPER_BAND) -> torch.Tensor:
    """The ERC keep mask: ``low < rho_t < high`` (strict, :meth:`erc_core.band.Band.keep`) and t is a response token.
    (B, T) -> bool (B, T)."""
    rho = entropy_ratio(entropy.detach(), old_entropy.detach())
    return Band.of(bounds, "erc_bounds").keep(rho) & response_mask.bool()


def apply_erc_gate(loss_mat: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
    """``where(keep, loss, loss.detach())``: gated tokens keep their value and lose their gradient. (B, T)."""
    return torch.where(keep, loss_mat, loss_mat.detach())


# ----------------------------------------------------------------------------------------------- base modes
def _dual_clip(loss_clipped: torch.Tensor, advantages: torch.Tensor, clip_c: float,
               mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dual-clip PPO for A < 0: the loss is capped at ``-A * clip_c``. Returns (loss, fraction capped)."""
    loss_cap = -advantages * clip_c
    capped = torch.minimum(loss_cap, loss_clipped)
    frac_lower = masked_mean(((loss_clipped > loss_cap) & (advantages < 0)).float(), mask)
    return torch.where(advantages < 0, capped, loss_clipped), frac_lower


@register_policy_loss("dapo")
def dapo_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_low: float,
              clip_high: float, clip_c: float, *, log_prob: torch.Tensor,
              log_ratio: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """PPO clip with decoupled bounds ``clip(r, 1 - clip_low, 1 + clip_high)`` and dual clip (B, T) -> (B, T)."""
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    clipped = torch.maximum(loss1, loss2)
    loss, frac_lower = _dual_clip(clipped, advantages, clip_c, mask)
    return loss, {"ppo_clipfrac": masked_mean((loss2 > loss1).float(), mask), "ppo_clipfrac_lower": frac_lower}


@register_policy_loss("gppo")
def gppo_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_low: float,
              clip_high: float, clip_c: float, *, log_prob: torch.Tensor,
              log_ratio: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GPPO's gradient-preserving clip: out of [1-clip_low, 1+clip_high] the VALUE is clipped, yet the gradient
    flows, scaled by the bound: ``clamp(r, (1-clip_low) * r / sg(r), (1+clip_high) * r / sg(r))``. (B, T) -> (B, T).
    """
    r_sg = ratio.detach()
    lower = (1.0 - clip_low) / r_sg * ratio
    upper = (1.0 + clip_high) / r_sg * ratio
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, lower, upper)
    clipped = torch.maximum(loss1, loss2)
    loss, frac_lower = _dual_clip(clipped, advantages, clip_c, mask)
    return loss, {"ppo_clipfrac": masked_mean((loss2 > loss1).float(), mask), "ppo_clipfrac_lower": frac_lower}


def _token_covariance(advantages: torch.Tensor, log_prob: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Per-token centred product (A - mean A) (logp - mean logp), means over response tokens. (B, T) -> (B, T)."""
    logp = log_prob.detach()
    return (advantages - masked_mean(advantages, mask)) * (logp - masked_mean(logp, mask))


@register_policy_loss("clip_cov")
def clip_cov_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_low: float,
                  clip_high: float, clip_c: float, *, log_prob: torch.Tensor, log_ratio: torch.Tensor,
                  clip_cov_ratio: float = 2e-4, clip_cov_lb: float = 1.0, clip_cov_ub: float = 5.0,
                  generator: torch.Generator | None = None) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Clip-Cov (Cui et al. 2025, "The Entropy Mechanism of RL for Reasoning LMs"; verl's ``clip_cov``).

    PPO clip with decoupled bounds (no dual clip), then ``max(1, int(clip_cov_ratio * n_tokens))`` tokens drawn at
    random among those with ``clip_cov_lb < (A - mean A)(logp - mean logp) < clip_cov_ub`` that the ratio clip did
    not already clip lose their gradient AND their loss (multiplied by 0). (B, T) -> (B, T).
    """
    check_clip_cov(clip_cov_ratio, clip_cov_lb, clip_cov_ub)
    valid = mask.bool()
    loss1 = -advantages * ratio
    loss2 = -advantages * torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high)
    ratio_clipped = (loss2 > loss1) & valid
    cov = _token_covariance(advantages, log_prob, mask)
    candidates = torch.nonzero(((cov > clip_cov_lb) & (cov < clip_cov_ub) & valid & ~ratio_clipped).reshape(-1))[:, 0]
    n_clip = max(int(clip_cov_ratio * float(mask.sum())), 1)
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:n_clip].to(candidates.device)]
    corr = torch.ones(ratio.numel(), dtype=ratio.dtype, device=ratio.device)
    corr[chosen] = 0.0
    corr = corr.reshape(ratio.shape)
    loss = torch.maximum(loss1, loss2) * corr
    zero = torch.zeros((), dtype=ratio.dtype)
    return loss, {"ppo_clipfrac": masked_mean(ratio_clipped.to(ratio.dtype), mask), "ppo_clipfrac_lower": zero,
                  "cov_clipfrac": masked_mean((corr == 0).to(ratio.dtype), mask)}


@register_policy_loss("kl_cov")
def kl_cov_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_low: float,
                clip_high: float, clip_c: float, *, log_prob: torch.Tensor, log_ratio: torch.Tensor,
                kl_cov_ratio: float = 2e-4,
                ppo_kl_coef: float = 1.0) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """KL-Cov (Cui et al. 2025; verl's ``kl_cov``): NO ratio clip (``-A r`` everywhere); the
    ``max(1, int(kl_cov_ratio * n_tokens))`` response tokens with the largest ``(A - mean A)(logp - mean logp)``
    get ``ppo_kl_coef * |logp - old_logp|`` added. ``clip_low``/``clip_high``/``clip_c`` are unused. (B, T) -> (B, T).
    """
    check_kl_cov(kl_cov_ratio, ppo_kl_coef)
    loss = -advantages * ratio
    valid_idx = torch.nonzero(mask.bool().reshape(-1))[:, 0]
    penalised = torch.zeros(ratio.numel(), dtype=torch.bool, device=ratio.device)
    if len(valid_idx):
        cov = _token_covariance(advantages, log_prob, mask).reshape(-1)[valid_idx]
        k = max(1, int(len(valid_idx) * kl_cov_ratio))
        penalised[valid_idx[torch.topk(cov, k).indices]] = True
    penalised = penalised.reshape(ratio.shape)
    loss = torch.where(penalised, loss + ppo_kl_coef * log_ratio.abs(), loss)
    zero = torch.zeros((), dtype=ratio.dtype)
    return loss, {"ppo_clipfrac": zero, "ppo_clipfrac_lower": zero,
                  "cov_klfrac": masked_mean(penalised.to(ratio.dtype), mask)}


def _dppo_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_c: float,
               log_prob: torch.Tensor, valid: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPPO's per-token loss ``-A * sg(min(r, clip_c)) * log_prob * valid`` and its stats. (B, T) -> (B, T).

    Its gradient on a trusted token is ``-A * min(r, clip_c)`` per unit of log-prob: the PPO policy gradient
    ``-A r``, truncated at ``clip_c`` (truncated importance sampling instead of a dual clip); a token outside the
    trust region (``valid`` False) has loss 0 and no gradient."""
    valid = valid.detach().to(ratio.dtype)
    truncated = torch.clamp(ratio, max=clip_c).detach()
    loss = -advantages * truncated * log_prob * valid
    return loss, {"ppo_clipfrac": masked_mean(1.0 - valid, mask),
                  "ppo_clipfrac_lower": masked_mean((ratio > clip_c).to(ratio.dtype) * valid, mask)}


@register_policy_loss("dppo_tv")
def dppo_tv_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_low: float,
                 clip_high: float, clip_c: float, *, log_prob: torch.Tensor, log_ratio: torch.Tensor,
                 old_log_prob: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPPO-Binary-TV (Divergence PPO, "Rethinking the Trust Region in LLM RL", arXiv 2602.04879; verl's
    ``dppo_tv``). ``clip_low`` / ``clip_high`` are TV thresholds on the sampled token's probability change
    ``p - p_old`` (the DPPO recipe: 0.15 / 0.15), ``clip_c`` the truncation of the importance ratio (the recipe:
    10000, i.e. off). A token is trusted when ``p - p_old <= clip_high`` for A > 0, ``p - p_old >= -clip_low``
    otherwise; see :func:`_dppo_loss` for the loss. ppo_clipfrac = share of untrusted tokens, ppo_clipfrac_lower =
    share of trusted tokens whose ratio was truncated. (B, T) -> (B, T).

    How the two masks differ: DPPO's trust region looks at ONE probability, the sampled token's, and at the sign of
    the advantage (only a move in the advantage's direction beyond the threshold is cut: for A > 0 a rise, for A < 0
    a fall); ERC looks at the full-vocabulary entropy of the whole next-token distribution, relative to the old one,
    and gates a token whichever the sign of its advantage and whichever way the entropy moved. A DPPO-masked token
    also loses its loss value (0); an ERC-gated token keeps its value and loses only its gradient.
    """
    prob, old_prob = torch.exp(log_prob), torch.exp(old_log_prob)
    valid = torch.where(advantages > 0, prob - old_prob <= clip_high, prob - old_prob >= -clip_low)
    return _dppo_loss(ratio, advantages, mask, clip_c, log_prob, valid)


@register_policy_loss("dppo_kl")
def dppo_kl_loss(ratio: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor, clip_low: float,
                 clip_high: float, clip_c: float, *, log_prob: torch.Tensor, log_ratio: torch.Tensor,
                 old_log_prob: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """DPPO-Binary-KL (arXiv 2602.04879; verl's ``dppo_kl``): as :func:`dppo_tv_loss`, with the binary KL
    ``p_old log(p_old / p) + (1 - p_old) log((1 - p_old + 1e-8) / (1 - p + 1e-8))`` between the old and new
    Bernoulli "sampled token or not" as the divergence, thresholds ``clip_low`` / ``clip_high`` (the recipe: 0.05).
    Trusted: for A > 0 ``KL <= clip_high`` or ``p <= p_old``; otherwise ``KL <= clip_low`` or ``p >= p_old``.
    (B, T) -> (B, T)."""
    prob, old_prob = torch.exp(log_prob), torch.exp(old_log_prob)
    binary_kl = old_prob * (old_log_prob - log_prob) + (1.0 - old_prob) * torch.log(
        (1.0 - old_prob + 1e-8) / (1.0 - prob + 1e-8))
    valid = torch.where(advantages > 0, (binary_kl <= clip_high) | (prob <= old_prob),
                        (binary_kl <= clip_low) | (prob >= old_prob))
    return _dppo_loss(ratio, advantages, mask, clip_c, log_prob, valid)


# ----------------------------------------------------------------------------------------------- policy_loss
def _check_tensor(name: str, x: torch.Tensor, shape: torch.Size, values: bool = True) -> None:
    """Type and shape of ``x``; with ``values`` also no NaN / inf (a host sync)."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.shape != shape:
        raise ValueError(f"{name} must have the shape of log_prob {tuple(shape)}, got {tuple(x.shape)}")
    if values and x.is_floating_point() and not bool(torch.isfinite(x).all()):
        raise ValueError(f"{name} contains NaN or inf")


def _check_float(name: str, x: torch.Tensor) -> None:
    """Log-probs and entropies are real numbers: an integer tensor is a caller's mistake, not data."""
    if not x.is_floating_point():
        raise TypeError(f"{name} must be a floating-point tensor, got dtype {x.dtype}")


#: Entropies below this are an error; above it (down from 0) they are a kernel's rounding (lse - <p, z>).
ENTROPY_ROUNDING = -1e-3


def _check_entropy(name: str, x: torch.Tensor) -> None:
    """Entropies are >= 0; a negative one (beyond rounding) would make the ratio meaningless or NaN."""
    _check_float(name, x)
    low = float(x.detach().min()) if x.numel() else 0.0
    if low < ENTROPY_ROUNDING:
        raise ValueError(f"{name} must be >= 0 (an entropy, in nats), got a minimum of {low!r}")


def _fp32(x: torch.Tensor | None) -> torch.Tensor | None:
    """fp16 / bf16 -> float32 (differentiably): exp(log-ratio) and the masked sums overflow or round in half
    precision (a silent NaN loss in fp16). float32 and float64 pass unchanged."""
    return x.float() if x is not None and x.dtype in (torch.float16, torch.bfloat16) else x


#: what a Clip-Cov / KL-Cov token ratio may be
_FRACTION = "in (0, 1] (0 < value <= 1: a fraction of the response tokens)"


def check_clip(clip_low: float, clip_high: float, clip_c: float) -> None:
    """The rules of the clip settings: ``0 <= clip_low < 1``, ``clip_high`` finite and >= 0, ``clip_c > 1`` (inf
    disables the dual clip). Raises :class:`~erc_core.checks.ParamError` naming the first bad one."""
    require(0.0 <= clip_low < 1.0, "clip_low", clip_low, "a number with 0 <= clip_low < 1")
    require(0.0 <= clip_high < math.inf, "clip_high", clip_high, "a finite number >= 0")
    require(1.0 < clip_c, "clip_c", clip_c, "a number > 1 (the dual-clip bound for A < 0; inf disables it)")


def check_clip_cov(clip_cov_ratio: float, clip_cov_lb: float, clip_cov_ub: float) -> None:
    """The rules of the "clip_cov" options: ``0 < clip_cov_ratio <= 1`` and ``clip_cov_lb < clip_cov_ub``.
    Raises :class:`~erc_core.checks.ParamError` naming the first bad one."""
    require(0 < clip_cov_ratio <= 1, "clip_cov_ratio", clip_cov_ratio, _FRACTION)
    require(clip_cov_lb < clip_cov_ub, "clip_cov_ub", clip_cov_ub,
            f"a number with clip_cov_ub > clip_cov_lb = {clip_cov_lb!r}")


def check_kl_cov(kl_cov_ratio: float, ppo_kl_coef: float) -> None:
    """The rules of the "kl_cov" options: ``0 < kl_cov_ratio <= 1`` and ``ppo_kl_coef`` finite and >= 0.
    Raises :class:`~erc_core.checks.ParamError` naming the first bad one."""
    require(0 < kl_cov_ratio <= 1, "kl_cov_ratio", kl_cov_ratio, _FRACTION)
    require(math.isfinite(ppo_kl_coef) and ppo_kl_coef >= 0, "ppo_kl_coef", ppo_kl_coef, "a finite number >= 0")


def _mode_options(fn: BaseLoss) -> set[str]:
    """The keyword-only options a base mode accepts beyond the common ``log_prob`` / ``log_ratio``."""
    params = inspect.signature(fn).parameters.values()
    return {p.name for p in params if p.kind is p.KEYWORD_ONLY} - {"log_prob", "log_ratio", "old_log_prob"}


def policy_loss(log_prob: torch.Tensor, old_log_prob: torch.Tensor, advantages: torch.Tensor,
                response_mask: torch.Tensor, *, entropy: torch.Tensor | None = None,
                old_entropy: torch.Tensor | None = None, mode: str = "dapo", clip_low: float = 0.2,
                clip_high: float = 0.28, clip_c: float = 10.0,
                erc_bounds: Band | tuple[float, float] | None = PAPER_BAND,
                agg: str = "token-mean", mode_options: dict | None = None, validate: bool = True,
                stats_as_tensors: bool = False) -> tuple[torch.Tensor, dict]:
    """Clipped policy-gradient loss with the ERC gate, as in the official ``grpo_erc`` / ``gppo_erc``.

    Args:
        log_prob: (B, T) log-probs of the sampled tokens under the current policy (with grad).
        old_log_prob: (B, T) log-probs under the rollout (old) policy.
        advantages: (B, T) per-token advantages, or (B,) one per sequence (broadcast over T).
        response_mask: (B, T) 1/True on response tokens, 0/False on prompt and padding.
        entropy: (B, T) current full-vocabulary entropies; needed when ``erc_bounds`` is set.
        old_entropy: (B, T) the old policy's entropies, fixed for all updates of a rollout step.
        mode: base loss, a key of :data:`POLICY_LOSSES` ("dapo": clip-higher PPO; "gppo": gradient-preserving;
            "dppo_tv" / "dppo_kl": DPPO's trust region on the sampled token's probability change).
        clip_low, clip_high: decoupled clip range [1 - clip_low, 1 + clip_high] (DAPO 0.2 / 0.28; GPPO 0.2 / 0.2);
            for the DPPO modes the divergence thresholds (TV 0.15, KL 0.05 in the DPPO recipe).
        clip_c: dual-clip bound for negative advantages (> 1; the recipe uses 10); for the DPPO modes the
            truncation of the importance ratio (the DPPO recipe: 10000).
        erc_bounds: (low, high) with 0 <= low < 1 < high; tokens whose entropy ratio leaves the open band lose
            their gradient. ``None`` gives the base loss.
        agg: one of :data:`AGG_MODES`; "token-mean" divides by all response tokens.
        mode_options: extra keyword arguments of the base mode, e.g. ``{"clip_cov_ratio": 2e-4}`` for "clip_cov"
            or ``{"kl_cov_ratio": 2e-3, "ppo_kl_coef": 1.0}`` for "kl_cov".
        validate: True (default) checks the tensors' values too (NaN / inf), which reads them on the host (one
            device sync each). A trainer's hot path that checks its loss once per step instead can pass False: only
            the checks that need no sync (types, shapes, options) remain; the loss and stats are the same.
        stats_as_tensors: False (default) returns the stats as Python floats (read back together, one sync);
            True returns them as detached 0-d tensors on the loss's device (no sync), e.g. to accumulate them over
            micro-batches and read them once per step.

    Returns:
        ``(loss, stats)``: scalar loss, and floats ``ppo_clipfrac``, ``ppo_clipfrac_lower``, ``ppo_kl``,
        ``erc_clipfrac`` (fraction of response tokens outside the band; 0 without ERC), ``erc_clipfrac_low`` /
        ``erc_clipfrac_high`` (below / above it), ``entropy_ratio_mean`` (NaN-free; 1.0 without entropies); 0-d
        tensors instead of floats with ``stats_as_tensors=True``.
    """
    if mode not in POLICY_LOSSES:
        raise ValueError(f"mode must be one of {sorted(POLICY_LOSSES)}, got {mode!r}")
    if agg not in AGG_MODES:
        raise ValueError(f"agg must be one of {AGG_MODES}, got {agg!r}")
    check_clip(clip_low, clip_high, clip_c)
    shape = log_prob.shape if isinstance(log_prob, torch.Tensor) else None
    _check_tensor("log_prob", log_prob, shape, validate)
    _check_tensor("old_log_prob", old_log_prob, shape, validate)
    _check_tensor("response_mask", response_mask, shape, validate)
    _check_float("log_prob", log_prob)
    _check_float("old_log_prob", old_log_prob)
    if isinstance(advantages, torch.Tensor) and log_prob.ndim == 2 and advantages.shape == shape[:1]:
        advantages = advantages.unsqueeze(-1).expand(shape)
    _check_tensor("advantages", advantages, shape, validate)
    bounds = None
    if erc_bounds is not None:
        bounds = Band.of(erc_bounds, "erc_bounds")
        if entropy is None or old_entropy is None:
            raise ValueError("erc_bounds is set, so entropy and old_entropy are required "
                             "(pass erc_bounds=None for the loss without the ERC gate)")
    for name, ent in (("entropy", entropy), ("old_entropy", old_entropy)):
        if ent is not None:
            _check_tensor(name, ent, shape, validate)
            if validate:
                _check_entropy(name, ent)
    log_prob, old_log_prob, entropy, old_entropy = map(_fp32, (log_prob, old_log_prob, entropy, old_entropy))
    if advantages.is_floating_point():
        advantages = _fp32(advantages)

    mask = response_mask.to(log_prob.dtype)
    log_ratio = torch.clamp(log_prob - old_log_prob, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = torch.exp(log_ratio)
    base = POLICY_LOSSES[mode]
    options = dict(mode_options or {})
    allowed = _mode_options(base)
    unknown = sorted(set(options) - allowed)
    if unknown:
        raise ValueError(f"mode_options {unknown} are not options of mode {mode!r} (allowed: {sorted(allowed)})")
    if "old_log_prob" in inspect.signature(base).parameters:  # the DPPO modes compare probabilities
        options["old_log_prob"] = old_log_prob
    loss_mat, base_stats = base(ratio, advantages, mask, clip_low, clip_high, clip_c, log_prob=log_prob,
                                log_ratio=log_ratio, **options)

    stats = {k: v.detach() for k, v in base_stats.items()}
    stats["ppo_kl"] = masked_mean(-log_ratio.detach(), mask)
    zero = torch.zeros((), dtype=mask.dtype, device=mask.device)
    stats.update(erc_clipfrac=zero, erc_clipfrac_low=zero, erc_clipfrac_high=zero, entropy_ratio_mean=zero + 1.0)
    if entropy is not None and old_entropy is not None:
        rho = entropy_ratio(entropy.detach(), old_entropy.detach())
        stats["entropy_ratio_mean"] = masked_mean(rho, mask)
        if bounds is not None:
            keep = erc_mask(entropy, old_entropy, response_mask, bounds)
            loss_mat = apply_erc_gate(loss_mat, keep)
            stats["erc_clipfrac"] = masked_mean((~keep).to(mask.dtype), mask)
            stats["erc_clipfrac_low"] = masked_mean(bounds.fell(rho).to(mask.dtype), mask)
            stats["erc_clipfrac_high"] = masked_mean(bounds.rose(rho).to(mask.dtype), mask)
    return agg_loss(loss_mat, mask, agg), (stats if stats_as_tensors else stats_to_floats(stats))


def stats_to_floats(stats: dict) -> dict[str, float]:
    """A dict of 0-d tensors (or numbers) -> the same dict of Python floats, exact. On an accelerator the values
    are read back in ONE host sync (stacked as float64, which holds float32 values exactly); on the CPU, where a
    read costs no sync, one ``float()`` each is cheaper."""
    dev = next((v.device for v in stats.values() if isinstance(v, torch.Tensor)), torch.device("cpu"))
    if dev.type == "cpu":
        return {k: float(v) for k, v in stats.items()}
    values = torch.stack([torch.as_tensor(v, dtype=torch.float64, device=dev).detach().reshape(())
                          for v in stats.values()])
    return dict(zip(stats, values.tolist()))


# ----------------------------------------------------------------------------------------------- other controls
def entropy_ratio_penalty(entropy: torch.Tensor, old_entropy: torch.Tensor, response_mask: torch.Tensor,
                          bounds: tuple[float, float] = (0.9, 1.1), coef: float = 0.1) -> torch.Tensor:
    """The commonly quoted "ERC" summary, which is a DIFFERENT method: a dead-zone penalty on the batch-mean ratio.

    ``r = mean_t(H_new) / mean_t(H_old)`` over response tokens (one number per batch), and the penalty is
    ``coef * (r - clamp(r, low, high))**2``, differentiable through the current entropy only. It is added to the
    loss. Unlike the paper's ERC it (a) acts on one global ratio, so a few tokens whose entropy collapses are
    averaged away; (b) changes the loss value and pushes the entropy back once the band is left, instead of
    removing those tokens' policy gradient; (c) is exactly 0 inside the band, so it rarely binds.

    Shapes: (B, T) each -> scalar.
    """
    low, high = Band.of(bounds, "bounds")
    if not (math.isfinite(coef) and coef >= 0):
        raise ValueError(f"coef must be a finite number >= 0, got {coef!r}")
    for name, x in (("old_entropy", old_entropy), ("response_mask", response_mask)):
        _check_tensor(name, x, entropy.shape)
    _check_tensor("entropy", entropy, entropy.shape)
    _check_entropy("entropy", entropy)
    _check_entropy("old_entropy", old_entropy)
    entropy, old_entropy = _fp32(entropy), _fp32(old_entropy)
    mask = response_mask.to(entropy.dtype)
    r = (masked_mean(entropy, mask) + RATIO_EPS) / (masked_mean(old_entropy.detach(), mask) + RATIO_EPS)
    return coef * (r - r.clamp(low, high)) ** 2


KL_KINDS = ("kl", "abs", "mse", "low_var_kl")


def kl_penalty(log_prob: torch.Tensor, ref_log_prob: torch.Tensor, kind: str = "low_var_kl") -> torch.Tensor:
    """Per-token KL(pi || pi_ref) estimate from sampled tokens, as verl's ``kl_penalty``. (B, T) -> (B, T).

    "kl" (k1): ``logp - ref``; "abs": ``|logp - ref|``; "mse" (k2): ``0.5 (logp - ref)^2``;
    "low_var_kl" (k3): ``exp(ref - logp) - (ref - logp) - 1``, clamped to [-10, 10].
    """
    if kind not in KL_KINDS:
        raise ValueError(f"kind must be one of {KL_KINDS}, got {kind!r}")
    _check_tensor("ref_log_prob", ref_log_prob, log_prob.shape)
    diff = log_prob - ref_log_prob
    if kind == "kl":
        return diff
    if kind == "abs":
        return diff.abs()
    if kind == "mse":
        return 0.5 * diff.square()
    log_r = torch.clamp(-diff, -20.0, 20.0)
    return torch.clamp(torch.exp(log_r) - log_r - 1.0, -10.0, 10.0)
