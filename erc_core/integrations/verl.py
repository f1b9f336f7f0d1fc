"""ERC for verl: the policy losses ``erc_dapo`` and ``erc_gppo`` in verl's policy-loss registry.

Importing this module registers both (``verl.trainer.ppo.core_algos.register_policy_loss``); in a verl job let
every worker import it with ``actor_rollout_ref.model.external_lib=erc_core.integrations.verl`` (or the environment
variable ``VERL_USE_EXTERNAL_MODULES=erc_core.integrations.verl``) and select it with
``actor_rollout_ref.actor.policy_loss.loss_mode=erc_dapo``. The per-token math is :func:`erc_core.losses.policy_loss`
(base loss, then ``where(keep, loss, loss.detach())``); the aggregate is rescaled to verl's ``agg_loss`` meaning
for the global batch (``config.global_batch_info``: ``dp_size``, ``batch_num_tokens``, ``global_batch_size``,
``loss_scale_factor``), so gradients are invariant to data parallelism and micro-batching exactly as verl's own.

Config keys read (``actor_rollout_ref.actor.*``):

=====================================  =============================================================
``clip_ratio_low`` / ``clip_ratio_high``  PPO/DAPO clip range (fall back to ``clip_ratio``); GPPO's bounds
``clip_ratio_c``                          dual clip for A < 0 (verl's default 3.0; the ERC recipe uses 10)
``loss_agg_mode``                         "token-mean" (the recipe), "token-sum", "seq-mean-token-sum",
                                          "seq-mean-token-mean", "seq-mean-token-sum-norm"
``erc_low`` / ``erc_high``                the ERC band (or the official fork's ``entropy_mask_low`` /
                                          ``entropy_mask_high``); default (0.95, 1.05)
=====================================  =============================================================

verl's actor calls a policy loss with log-probs only. ERC also needs the current entropies (computed in the same
forward when ``actor.calculate_entropy=True``) and the old ones (computed by verl's old-log-prob pass, which verl
then drops). ``recipes/verl/verl-0.9.1-erc-old-entropy.patch`` is the one trainer change: keep the old entropies in
the batch as ``old_entropys`` and pass ``entropy=`` / ``old_entropy=`` to the policy loss (plus the two config
fields). Without it these losses raise with a pointer to the patch.

Metrics returned (verl logs them under ``actor/``): ``pg_clipfrac``, ``pg_clipfrac_lower``, ``ppo_kl`` (as verl's
vanilla loss), ``erc_clipfrac`` (1 - kept fraction of response tokens), ``erc_clipfrac_low`` / ``_high``,
``entropy_ratio_mean``.
"""

from __future__ import annotations

from typing import Any

import torch
from verl.trainer.ppo.core_algos import POLICY_LOSS_REGISTRY, register_policy_loss

from erc_core.losses import policy_loss

__all__ = ["compute_policy_loss_erc_dapo", "compute_policy_loss_erc_gppo", "register", "erc_bounds_from_config",
           "LOSS_NAMES", "PATCH"]

LOSS_NAMES = ("erc_dapo", "erc_gppo")
PATCH = "recipes/verl/verl-0.9.1-erc-old-entropy.patch"
DEFAULT_BOUNDS = (0.95, 1.05)


def _cfg(config, key: str, default=None):
    value = config.get(key, None) if config is not None else None
    return default if value is None else value


def erc_bounds_from_config(config) -> tuple[float, float]:
    """(low, high) from ``erc_low``/``erc_high``, else the official fork's ``entropy_mask_low``/``_high``."""
    low = _cfg(config, "erc_low", _cfg(config, "entropy_mask_low", DEFAULT_BOUNDS[0]))
    high = _cfg(config, "erc_high", _cfg(config, "entropy_mask_high", DEFAULT_BOUNDS[1]))
    return float(low), float(high)


def _verl_scale(mask: torch.Tensor, loss_agg_mode: str, info: dict) -> tuple[str, float]:
    """erc_core's aggregation mode and the factor that turns its local aggregate into verl's ``agg_loss`` value."""
    dp = int(info.get("dp_size") or 1)
    n_tok = float(mask.sum())
    n_seq = float((mask.sum(dim=-1) > 0).sum())
    batch, horizon = mask.shape[0], mask.shape[-1]

    def total(key: str, local: float) -> float:
        value = info.get(key)
        if value is None:
            if dp > 1:
                raise ValueError(f"(global) {key} is required when dp_size > 1")
            return local
        return float(value)

    if loss_agg_mode == "token-mean":  # erc_core: sum / n_tok
        return "token-mean", max(n_tok, 1.0) / total("batch_num_tokens", n_tok) * dp
    if loss_agg_mode == "token-sum":
        return "token-mean", max(n_tok, 1.0) * dp
    if loss_agg_mode == "seq-mean-token-sum":  # erc_core: sum / batch
        return loss_agg_mode, batch / total("global_batch_size", n_seq) * dp
    if loss_agg_mode == "seq-mean-token-sum-norm":  # erc_core: sum / horizon
        scale = info.get("loss_scale_factor") or horizon
        return loss_agg_mode, horizon / total("global_batch_size", n_seq) * dp / float(scale)
    if loss_agg_mode == "seq-mean-token-mean":  # erc_core: sum of per-sequence means / n_seq
        return loss_agg_mode, max(n_seq, 1.0) / total("global_batch_size", n_seq) * dp
    raise ValueError(f"Invalid loss_agg_mode: {loss_agg_mode}")


def _erc_loss(mode: str, old_log_prob: torch.Tensor, log_prob: torch.Tensor, advantages: torch.Tensor,
              response_mask: torch.Tensor, loss_agg_mode: str, config, rollout_is_weights,
              entropy: torch.Tensor | None, old_entropy: torch.Tensor | None) -> tuple[torch.Tensor, dict[str, Any]]:
    if config is None:
        raise ValueError("verl passes the actor config to policy losses; got config=None")
    if entropy is None or old_entropy is None:
        raise ValueError(f"policy loss erc_{mode} needs entropy= and old_entropy= from the actor: apply {PATCH} to "
                         "verl (keeps the old-log-prob pass's entropies) and set actor.calculate_entropy=True")
    if rollout_is_weights is not None:
        raise NotImplementedError(f"erc_{mode} does not apply rollout-correction weights; disable "
                                  "algorithm.rollout_correction (the ERC recipe does not use it)")
    clip = float(_cfg(config, "clip_ratio", 0.2))
    clip_low = float(_cfg(config, "clip_ratio_low", clip))
    clip_high = float(_cfg(config, "clip_ratio_high", clip))
    clip_c = float(_cfg(config, "clip_ratio_c", 3.0))
    mask = response_mask.bool()
    agg, factor = _verl_scale(mask, loss_agg_mode, dict(_cfg(config, "global_batch_info", {}) or {}))
    loss, stats = policy_loss(log_prob, old_log_prob, advantages, mask, entropy=entropy, old_entropy=old_entropy,
                              mode=mode, clip_low=clip_low, clip_high=clip_high, clip_c=clip_c,
                              erc_bounds=erc_bounds_from_config(config), agg=agg,
                              validate=False)   # no NaN/inf read-back on the hot path: one host sync, for the stats
    metrics = {
        "actor/pg_clipfrac": stats["ppo_clipfrac"],
        "actor/pg_clipfrac_lower": stats["ppo_clipfrac_lower"],
        "actor/ppo_kl": stats["ppo_kl"],
        "actor/erc_clipfrac": stats["erc_clipfrac"],
        "actor/erc_clipfrac_low": stats["erc_clipfrac_low"],
        "actor/erc_clipfrac_high": stats["erc_clipfrac_high"],
        "actor/entropy_ratio_mean": stats["entropy_ratio_mean"],
    }
    return (loss if factor == 1.0 else loss * factor), metrics


def compute_policy_loss_erc_dapo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                 config=None, rollout_is_weights=None, *, entropy=None, old_entropy=None):
    """verl policy loss ``erc_dapo``: clip-higher PPO (+ dual clip) with the ERC gate (official ``grpo_erc``).

    verl's signature, plus ``entropy`` / ``old_entropy`` (B, T) passed by the patched actor. Returns
    ``(loss, metrics)``.
    """
    return _erc_loss("dapo", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                     rollout_is_weights, entropy, old_entropy)


def compute_policy_loss_erc_gppo(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode="token-mean",
                                 config=None, rollout_is_weights=None, *, entropy=None, old_entropy=None):
    """verl policy loss ``erc_gppo``: GPPO's gradient-preserving clip with the ERC gate (official ``gppo_erc``)."""
    return _erc_loss("gppo", old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
                     rollout_is_weights, entropy, old_entropy)


def register() -> None:
    """Register ``erc_dapo`` and ``erc_gppo`` in verl's policy-loss registry (idempotent; done on import)."""
    for name, fn in zip(LOSS_NAMES, (compute_policy_loss_erc_dapo, compute_policy_loss_erc_gppo)):
        if POLICY_LOSS_REGISTRY.get(name) is not fn:
            register_policy_loss(name)(fn)


register()
