"""erc_core: Entropy Ratio Clipping (arXiv 2512.05591) and the pieces of GRPO/DAPO/GPPO the ERC Book runs.

One module per idea:

- :mod:`erc_core.entropy`    full-vocabulary entropy and token log-probs in one fp32 pass
- :mod:`erc_core.losses`     policy losses (DAPO, GPPO), the ERC gate, loss aggregation, other entropy controls
- :mod:`erc_core.advantages` GRPO advantages, DAPO dynamic sampling and overlong shaping
"""

__version__ = "0.1.0"
