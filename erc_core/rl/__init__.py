"""The RL layer (``pip install "erc-core[rl]"``): a small GRPO / DAPO / GPPO trainer around the core, on one machine.

- :mod:`erc_core.rl.tasks`   verifiable tasks (sums, countdown) with rule-based rewards
- :mod:`erc_core.rl.models`  the tiny Llama / Qwen2 of the chapters, SmolLM2-135M, any Hugging Face causal LM
- :mod:`erc_core.rl.config`  the trainer's ``Config``: every knob of a run, validated; YAML presets
- :mod:`erc_core.rl.train`   the trainer: one RL step (``setup``, ``rl_step``), the loop, its run folder
  (``python -m erc_core.rl.train``)
- :mod:`erc_core.rl.study`   grids of runs (variants x seeds) in a process pool, one tidy table
  (``python -m erc_core.rl.study``)

It imports the core (:mod:`erc_core`) and never the book layer (:mod:`erc_core.book`); nothing is imported here.
"""
