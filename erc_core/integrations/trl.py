"""ERC for TRL: ``ERCGRPOTrainer``, a :class:`trl.GRPOTrainer` that gates each token's policy gradient on its
entropy ratio, and ``ERCGRPOConfig``, a :class:`trl.GRPOConfig` with the two bounds.

    from erc_core.integrations.trl import ERCGRPOConfig, ERCGRPOTrainer

    args = ERCGRPOConfig(output_dir="out", loss_type="dapo", epsilon=0.2, epsilon_high=0.28,
                         delta=10.0,                      # dual clip for A < 0, c = 10 as in the official ERC
                         num_iterations=2,                # ERC only bites off-policy: reuse each batch
                         erc_low=0.95, erc_high=1.05)     # the official band, for DAPO and GPPO alike
    trainer = ERCGRPOTrainer(model=model, reward_funcs=reward, args=args, train_dataset=ds)
    trainer.train()                                       # logs erc_clipfrac next to clip_ratio/* and entropy

What it changes in TRL (1.16), with three small overrides and nothing copied from TRL:

1. **old entropies** (``_generate_and_score_completions``): when TRL runs its old-policy pass (it does when a
   generation batch is reused, ``num_iterations > 1`` or ``steps_per_generation > gradient_accumulation_steps``),
   the full-vocabulary entropies of that same pass are kept as ``old_per_token_entropies`` next to TRL's
   ``old_per_token_logps``. TRL's fused LM head computes them anyway (temperature-scaled, over the whole
   vocabulary); they are fixed for every update that reuses the batch, as ``H_old`` in the paper. When TRL skips
   the old pass (fully on-policy), TRL uses the current log-probs as old ones, and ERC does the same with the
   entropies: every ratio is 1 and nothing is gated. When TRL did run its old pass but no old entropies were
   captured (a TRL version that scores batches differently), the trainer raises instead of silently training as
   plain GRPO.
2. **current entropies**: TRL's training forward already returns the entropies with the log-probs (one pass).
3. **the gate** (``_get_per_token_logps_and_entropies`` during ``_compute_loss``): with
   ``keep = erc_core.losses.erc_mask(H, H_old, mask, (erc_low, erc_high))`` (``low < rho < high``, strict, on
   response tokens), the current log-probs are returned as ``where(keep, logp, logp.detach())``
   (:func:`erc_core.losses.apply_erc_gate`). Values are unchanged, so TRL's own loss (any ``loss_type``: "dapo"
   token-mean, "grpo", "bnpo", "dr_grpo", clip-higher through ``epsilon_high``, ...) and all of its metrics are
   computed as usual; a gated token's loss keeps its value and loses its gradient. For token-level losses this is
   exactly the official ``loss = where(keep, loss, loss.detach())``, because a token's policy loss depends on the
   parameters only through its own log-prob. Two cases differ from the official recipe (both warned about):
   with ``beta != 0`` the KL term of a gated token loses its gradient too (verl's ERC adds the KL loss outside the
   gate), and with ``importance_sampling_level="sequence"`` gated tokens leave the sequence ratio's gradient.

Metrics (in ``trainer.state.log_history`` and every logger TRL reports to): ``erc_clipfrac`` (1 - kept fraction of
response tokens), ``erc_clipfrac_low`` / ``erc_clipfrac_high`` (ratio at or below ``erc_low`` / at or above
``erc_high``), ``entropy_ratio/mean``; TRL's own ``clip_ratio/*`` (PPO clipping) and ``entropy`` sit beside them.
With ``erc_low=0, erc_high=inf`` the trainer's updates equal ``GRPOTrainer``'s bit for bit (tested).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import torch
import trl
from packaging.specifiers import SpecifierSet
from packaging.version import Version

from erc_core.band import Band
from erc_core.losses import apply_erc_gate, entropy_ratio, erc_mask

__all__ = ["ERCGRPOConfig", "ERCGRPOTrainer", "TRL_VERSIONS", "check_trl_version"]

OLD_ENTROPY_KEY = "old_per_token_entropies"
TRL_VERSIONS = ">=1.16,<1.17"  # = pyproject's [trl] extra: this module overrides private hooks of that minor version


def check_trl_version(installed: str) -> None:
    """Raise ImportError, naming both versions, unless TRL ``installed`` is in :data:`TRL_VERSIONS`."""
    if Version(installed) not in SpecifierSet(TRL_VERSIONS):
        raise ImportError(f"erc_core.integrations.trl needs trl{TRL_VERSIONS} (it overrides private GRPOTrainer "
                          f"hooks of that version), but trl {installed} is installed: "
                          f"pip install 'trl{TRL_VERSIONS}' (or pip install -e '.[trl]')")


check_trl_version(trl.__version__)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402  (after the version check)


@dataclass
class ERCGRPOConfig(GRPOConfig):
    """:class:`trl.GRPOConfig` plus the ERC band: tokens with ``erc_low < H / H_old < erc_high`` keep their gradient.

    ``erc_low=0.0, erc_high=float("inf")`` disables the gate (the trainer then equals ``GRPOTrainer``). The
    official ERC scripts use (0.95, 1.05) with both DAPO and GPPO; set ``delta=10`` for their dual clip.
    """

    erc_low: float = field(default=0.95, metadata={"help": "ERC lower bound on H_new / H_old (0 <= low < 1)."})
    erc_high: float = field(default=1.05, metadata={"help": "ERC upper bound on H_new / H_old (> 1, inf allowed)."})

    def __post_init__(self):
        super().__post_init__()
        Band.of((self.erc_low, self.erc_high), "(erc_low, erc_high)")


class ERCGRPOTrainer(GRPOTrainer):
    """:class:`trl.GRPOTrainer` with Entropy Ratio Clipping. Takes an :class:`ERCGRPOConfig` as ``args``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if not isinstance(self.args, ERCGRPOConfig):
            raise TypeError(f"ERCGRPOTrainer needs args=ERCGRPOConfig(...), got {type(self.args).__name__}")
        self.erc_bounds = Band(self.args.erc_low, self.args.erc_high)
        if self.beta != 0.0:
            warnings.warn("ERCGRPOTrainer with beta != 0: the KL term of a gated token loses its gradient too "
                          "(the official ERC adds the KL loss outside the gate)", stacklevel=2)
        if self.args.importance_sampling_level != "token":
            warnings.warn("ERCGRPOTrainer with sequence-level importance sampling: gated tokens are left out of the "
                          "gradient of the sequence ratio; the paper's ERC is token-level", stacklevel=2)
        self._erc_capture: list[torch.Tensor] | None = None  # set while a generation batch is scored
        self._erc_inputs: dict | None = None  # set while _compute_loss runs

    # -- 1. keep the old pass's entropies next to old_per_token_logps
    def _generate_and_score_completions(self, inputs):
        self._erc_capture = []
        try:
            output = super()._generate_and_score_completions(inputs)
        finally:
            captured, self._erc_capture = self._erc_capture, None
        old_logps = output.get("old_per_token_logps")
        if old_logps is not None and not captured:
            raise RuntimeError("TRL ran its old-policy pass (old_per_token_logps is set) but no old entropies were "
                               "captured, so the ERC gate cannot act; refusing to train as plain GRPO. This TRL "
                               f"version ({trl.__version__}) scores batches differently from trl{TRL_VERSIONS}.")
        if old_logps is not None:
            # TRL's old-policy pass is the first forward of self.model while a batch is scored (before the
            # reference pass); if it was skipped, old_per_token_logps is absent and whatever was captured is unused.
            old_entropy = captured[0]
            if old_entropy.shape != old_logps.shape:
                raise RuntimeError(f"captured old entropies {tuple(old_entropy.shape)} do not match old log-probs "
                                   f"{tuple(old_logps.shape)}: this TRL version scores batches differently")
            output[OLD_ENTROPY_KEY] = old_entropy
        return output

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep,
                                           batch_size=None, compute_entropy=False, **kwargs):
        capture = self._erc_capture is not None and not self._erc_capture and model is self.model
        gate = self._erc_inputs is not None and compute_entropy
        logps, entropies, aux = super()._get_per_token_logps_and_entropies(
            model, input_ids, attention_mask, logits_to_keep, batch_size=batch_size,
            compute_entropy=compute_entropy or capture, **kwargs)
        if capture:
            self._erc_capture.append(entropies.detach())
        if gate:
            inputs, self._erc_inputs = self._erc_inputs, None  # one training forward per _compute_loss
            logps = self._erc_gate(logps, entropies, inputs)
        return logps, (entropies if compute_entropy else None), aux

    # -- 2./3. the training forward: gate the current log-probs on the entropy ratio
    def _compute_loss(self, model, inputs):
        self._erc_inputs = inputs
        try:
            return super()._compute_loss(model, inputs)
        finally:
            self._erc_inputs = None

    def _erc_gate(self, logps: torch.Tensor, entropies: torch.Tensor, inputs: dict) -> torch.Tensor:
        mask = inputs["completion_mask"]
        if "tool_mask" in inputs:
            mask = mask * inputs["tool_mask"]
        mask = mask.bool()
        old_entropy = inputs.get(OLD_ENTROPY_KEY)
        if old_entropy is None and inputs.get("old_per_token_logps") is not None:
            raise RuntimeError(f"the batch has TRL's old log-probs but no {OLD_ENTROPY_KEY!r}: the old entropies "
                               "were lost between scoring and the update, so the ERC gate cannot act; refusing to "
                               "train as plain GRPO")
        if old_entropy is None:  # on-policy: TRL takes old log-probs = current ones, so H_old = H and rho = 1
            keep, rho = mask, torch.ones_like(entropies)
        else:
            keep = erc_mask(entropies, old_entropy, mask, self.erc_bounds)
            rho = entropy_ratio(entropies.detach(), old_entropy)
            logps = apply_erc_gate(logps, keep)
        m = mask.float()
        sums = torch.stack([((~keep) & mask).float().sum(), (self.erc_bounds.fell(rho) & mask).float().sum(),
                            (self.erc_bounds.rose(rho) & mask).float().sum(), (rho * m).sum(), m.sum()])
        sums = self.accelerator.reduce(sums, reduction="sum")
        n = sums[4].clamp(min=1.0)
        metrics = self._metrics["train" if self.model.training else "eval"]
        values = (sums[:4] / n).tolist()   # one host sync for the four metrics
        for name, value in zip(("erc_clipfrac", "erc_clipfrac_low", "erc_clipfrac_high", "entropy_ratio/mean"), values):
            metrics[name].append(value)
        return logps
