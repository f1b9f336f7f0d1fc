"""The book layer (``pip install "erc-core[book]"``): what the chapters of the ERC Book call besides the core.

- :mod:`erc_core.book.toy`          toy policies and batches of the first chapters
- :mod:`erc_core.book.plots`        the chapters' figures; :mod:`erc_core.book.plots_llm` and
  :mod:`erc_core.book.plots_study` those of the SmolLM2 and claims chapters; :mod:`erc_core.book.style` their one
  palette and type scale
- :mod:`erc_core.book.widgets`      sliders whose every position is precomputed (they work without a kernel)
- :mod:`erc_core.book.runs`         reading training runs back, one replayed RL step, which tokens send gradient
- :mod:`erc_core.book.pair`         two runs of one config and seed, ERC off and on, trained and compared
- :mod:`erc_core.book.stats`, :mod:`erc_core.book.claims`  the statistics and verdict tables of the claims chapter

It imports the core (:mod:`erc_core`) and the RL layer (:mod:`erc_core.rl`); nothing is imported here.
"""
