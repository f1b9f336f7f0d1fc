"""erc_core: Entropy Ratio Clipping (arXiv 2512.05591) and the pieces of GRPO/DAPO/GPPO the ERC Book runs.

One module per idea:

- :mod:`erc_core.entropy`    full-vocabulary entropy and token log-probs in one fp32 pass
- :mod:`erc_core.losses`     policy losses (DAPO, GPPO), the ERC gate, loss aggregation, other entropy controls
- :mod:`erc_core.advantages` GRPO advantages, DAPO dynamic sampling and overlong shaping
- :mod:`erc_core.band`       the ERC band (low, high): its check and which tokens it keeps

What a trainer needs is re-exported here: ``from erc_core import policy_loss, logprobs_and_entropy, Band``.
"""

from .advantages import dynamic_sampling_mask, grpo_advantages, overlong_penalty
from .band import PAPER_BAND, Band
from .entropy import entropy_from_logits, logprobs_and_entropy
from .losses import agg_loss, apply_erc_gate, entropy_ratio, erc_mask, policy_loss

__version__ = "0.1.0"
__all__ = ["Band", "PAPER_BAND", "entropy_ratio", "erc_mask", "apply_erc_gate", "policy_loss", "agg_loss",
           "logprobs_and_entropy", "entropy_from_logits", "grpo_advantages", "dynamic_sampling_mask",
           "overlong_penalty"]
