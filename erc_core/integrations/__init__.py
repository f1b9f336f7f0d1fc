"""Plug-ins that bring the ERC gate into other trainers, for runs that outgrow one machine.

- :mod:`erc_core.integrations.trl`:  ``ERCGRPOTrainer`` / ``ERCGRPOConfig``, a subclass of TRL's ``GRPOTrainer``
  (``pip install -e ".[trl]"``);
- :mod:`erc_core.integrations.verl`: the policy losses ``erc_dapo`` / ``erc_gppo`` for verl's registry, plus the
  documented one-change patch that keeps the old entropies in the batch (``recipes/verl/``).

Neither module is imported here: each imports its trainer library, which is an optional extra.
"""
