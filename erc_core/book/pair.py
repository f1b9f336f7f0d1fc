"""Two runs of one config and seed, ERC off and on: what chapters 5 (DAPO) and 6 (GPPO) train and compare.

::

    metrics, tokens = train_pair("../configs/book_ch05.yaml", out, "DAPO", overrides=dict(steps=800))
    report = compare_pair(metrics, runs.gate_summary(tokens["DAPO + ERC"]), eval_size=100)
    print(report["text"])

The warm start and every rollout's random numbers depend only on the seed and the step, so the two runs start from
the same model and see the same first rollout; they differ only in ``erc``. On two or more cores the two runs train
side by side, one process each.
"""

from __future__ import annotations

import os
from pathlib import Path

import pandas as pd

from erc_core.book.runs import read_metrics, read_tokens
from erc_core.rl.config import load_config
from erc_core.rl.study import process_pool
from erc_core.rl.train import train

__all__ = ["train_pair", "compare_pair", "rose"]


def train_pair(config: str | os.PathLike | dict, out_dir: str | os.PathLike, name: str,
               overrides: dict | None = None, workers: int | None = None
               ) -> tuple[dict[str, pd.DataFrame], dict[str, pd.DataFrame]]:
    """Train ``config`` (+ ``overrides``) twice, ERC off into ``out_dir/base`` and on into ``out_dir/erc`` (a run
    already there is replaced), and print one line per run: its wall time, warm-start time and eval accuracies.

    Args:
        config: a YAML preset path or a config dict (:func:`erc_core.rl.config.load_config`).
        out_dir: the folder of the two runs.
        name: the method without ERC, e.g. ``"DAPO"``; the ERC run is called ``f"{name} + ERC"``.
        overrides: config keys set on top of ``config`` (``erc`` is set here, per run).
        workers: 2 trains the runs side by side in two processes (:func:`erc_core.rl.study.process_pool`), 1 one
            after the other in this process; default 2 where twice the config's ``num_threads`` fits the cores.
            The numbers are the same either way (each run seeds itself and uses its config's ``num_threads``).

    Returns:
        ``(metrics, tokens)``, each a dict ``{name: ..., f"{name} + ERC": ...}`` in that order:
        :func:`~erc_core.book.runs.read_metrics` frames (index ``step``: row 0 the warm start, rows 1..steps the RL
        steps) and :func:`~erc_core.book.runs.read_tokens` frames (one row per logged response token).
    """
    if workers is None:  # side by side when two runs' threads fit the cores (num_threads 0: all cores, one run)
        threads = load_config(config, overrides).num_threads
        workers = 2 if threads and 2 * threads <= (os.cpu_count() or 1) else 1
    if workers not in (1, 2):
        raise ValueError(f"workers must be 1 or 2 (the pair's two runs), got {workers!r}")
    if isinstance(config, (str, os.PathLike)):
        config = Path(config).resolve()  # a worker process need not share this one's working directory
    runs = {label: (Path(out_dir).resolve() / ("erc" if erc else "base"), dict(overrides or {}, erc=erc))
            for label, erc in ((name, False), (f"{name} + ERC", True))}
    if workers == 1:
        for run_dir, ov in runs.values():
            train(config, run_dir, overrides=ov, overwrite=True)
    else:
        with process_pool(2) as pool:
            for fut in [pool.submit(train, config, run_dir, overrides=ov, overwrite=True)
                        for run_dir, ov in runs.values()]:
                fut.result()
    metrics, tokens = {}, {}
    for label, (run_dir, _) in runs.items():
        m = metrics[label] = read_metrics(run_dir)
        tokens[label] = read_tokens(run_dir)
        print(f"{label:11s} {len(m) - 1} steps in {m['time_total'].iloc[-1]:.0f} s "
              f"(warm start {m.loc[0, 'time_warmstart']:.0f} s), eval accuracy after the warm start "
              f"{m.loc[0, 'eval_acc']:.2f}, at the end {m['eval_acc'].dropna().iloc[-1]:.2f}")
    return metrics, tokens


def _window(steps: int) -> int:
    """RL steps of the "first" / "last" means: 50, or a quarter of a shorter run (at least 1)."""
    return max(1, min(50, steps // 4))


def _summary_text(name: str, m_base: pd.DataFrame, m_erc: pd.DataFrame, win: int, eval_size: int) -> str:
    """The chapters' closing lines: reward and accuracy from start to end, the pair's difference, the clip fractions."""
    base, erc, lines = m_base.loc[1:], m_erc.loc[1:], []
    for label, m in ((name, m_base), (f"{name} + ERC", m_erc)):
        rl, acc = m.loc[1:], m["eval_acc"].dropna()
        lines.append(f"{label:11s} mean sampled reward: first 10 steps {rl['reward_mean'].head(10).mean():.3f}, "
                     f"last {win} steps {rl['reward_mean'].tail(win).mean():.3f}; greedy eval accuracy "
                     f"{acc.iloc[0]:.2f} -> {acc.iloc[-1]:.2f} on {eval_size} sums")
    tb, te = base.tail(win), erc.tail(win)
    d_reward = te["reward_mean"].mean() - tb["reward_mean"].mean()
    noise = (tb["reward_mean"].std() + te["reward_mean"].std()) / win ** 0.5
    d_ent = te["entropy_mean"].mean() - tb["entropy_mean"].mean()
    lines.append(f"last {win} steps, {name} + ERC minus {name}: reward {d_reward:+.3f} (about {noise:.3f} from "
                 f"step-to-step noise alone, and more from seed to seed), entropy {d_ent:+.3f} nats")
    lines.append(f"ERC gated {erc['erc_clipfrac'].mean():.1%} of response tokens per step on average; "
                 f"PPO's clip acted on {erc['ppo_clipfrac'].mean():.1%}; in {name} (gate off) "
                 f"{base['ratio_outside_frac'].mean():.1%} of tokens left the band")
    return "\n".join(lines)


def _claims(name: str, m_base: pd.DataFrame, m_erc: pd.DataFrame, gated: dict, updates: int, win: int) -> dict:
    """What both chapters assert about their pair of runs. Whether each run learned is not among them: that is
    each chapter's own statement about its seed (``results["rose"]``, :func:`rose`)."""
    rl_b, rl_e = m_base.loc[1:], m_erc.loc[1:]
    same_start = (m_base.loc[0, "eval_acc"] == m_erc.loc[0, "eval_acc"]
                  and m_base.loc[0, "warmstart_loss"] == m_erc.loc[0, "warmstart_loss"]
                  and m_base.loc[1, "reward_mean"] == m_erc.loc[1, "reward_mean"])
    claims = {
        "both runs start from the same warm start and first rollout": bool(same_start),
        "training is off-policy (several updates per rollout)": updates > 1,
        f"{name} + ERC gated tokens at most steps": bool((rl_e["erc_clipfrac"] > 0).mean() > 0.5),
        f"{name} never gated, yet tokens left the band": bool((rl_b["erc_clipfrac"] == 0).all()
                                                             and rl_b["ratio_outside_frac"].mean() > 0),
        "gated tokens' mean old entropy is a number": bool(gated["n_gated"] > 0
                                                           and gated["mean_old_entropy_gated"] >= 0),
        f"{name} + ERC gated more tokens than PPO's clip acted on (mean per step)":
            bool(rl_e["erc_clipfrac"].mean() > rl_e["ppo_clipfrac"].mean()),
        "all metrics finite": bool(all(m.loc[1:, ["reward_mean", "entropy_mean", "grad_norm"]].notna().all().all()
                                       for m in (m_base, m_erc))),
    }
    return claims


def rose(metrics: pd.DataFrame, win: int) -> bool:
    """Whether a run's mean sampled reward over its last ``win`` RL steps is above that of its first 10."""
    rl = metrics.loc[1:, "reward_mean"]
    return bool(rl.tail(win).mean() > rl.head(10).mean())


def compare_pair(metrics: dict[str, pd.DataFrame], gated: dict, eval_size: int) -> dict:
    """What chapters 5 and 6 print, assert and record about the two runs of :func:`train_pair`.

    Args:
        metrics: :func:`train_pair`'s metrics, ``{name: ..., f"{name} + ERC": ...}`` (this order).
        gated: :func:`~erc_core.book.runs.gate_summary` of the ERC run's tokens.
        eval_size: held-out problems per evaluation (for the text).

    Returns:
        dict with ``win`` (int, the RL steps of the "last steps" means: min(50, steps // 4), at least 1),
        ``updates`` (int, mini-batch updates per rollout), ``text`` (str, four lines: each run's reward and
        accuracy from start to end, the difference between the runs, the clip fractions), ``claims``
        (``{statement: bool}``, the shared checks; every one holds for a healthy off-policy pair) and ``results``
        (JSON-able: lists of length steps ``erc_clipfrac_erc``, ``erc_clipfrac_base``, ``ratio_outside_base``,
        ``reward_base``, ``reward_erc``; pairs ``[base, erc]`` ``eval_acc_start``, ``eval_acc_end``,
        ``reward_first10``, ``reward_last``, ``rose`` (bools, :func:`rose`); numbers ``mean_old_entropy_gated``,
        ``mean_old_entropy_kept``,
        ``n_gated_erc``, ``erc_clipfrac_mean``, ``ppo_clipfrac_mean``, ``updates_per_step``).
    """
    if len(metrics) != 2:
        raise ValueError(f"metrics must hold two runs (ERC off, then on), got {list(metrics)}")
    name = next(iter(metrics))
    m_base, m_erc = metrics.values()
    rl_b, rl_e = m_base.loc[1:], m_erc.loc[1:]
    if len(rl_b) < 1 or len(rl_b) != len(rl_e):
        raise ValueError(f"the two runs must have the same number >= 1 of RL steps, got {len(rl_b)} and {len(rl_e)}")
    win, updates = _window(len(rl_b)), int(m_erc["updates_per_step"].dropna().iloc[0])
    floats = lambda s: [float(v) for v in s]  # noqa: E731
    results = {
        "updates_per_step": updates,
        "erc_clipfrac_erc": floats(rl_e["erc_clipfrac"]), "erc_clipfrac_base": floats(rl_b["erc_clipfrac"]),
        "ratio_outside_base": floats(rl_b["ratio_outside_frac"]),
        "reward_base": floats(rl_b["reward_mean"]), "reward_erc": floats(rl_e["reward_mean"]),
        "eval_acc_start": floats([m_base.loc[0, "eval_acc"], m_erc.loc[0, "eval_acc"]]),
        "mean_old_entropy_gated": gated["mean_old_entropy_gated"],
        "mean_old_entropy_kept": gated["mean_old_entropy_kept"],
        "n_gated_erc": gated["n_gated"],
        "reward_first10": floats([rl_b["reward_mean"].head(10).mean(), rl_e["reward_mean"].head(10).mean()]),
        "reward_last": floats([rl_b["reward_mean"].tail(win).mean(), rl_e["reward_mean"].tail(win).mean()]),
        "eval_acc_end": floats([m_base["eval_acc"].dropna().iloc[-1], m_erc["eval_acc"].dropna().iloc[-1]]),
        "erc_clipfrac_mean": float(rl_e["erc_clipfrac"].mean()),
        "ppo_clipfrac_mean": float(rl_e["ppo_clipfrac"].mean()),
        "rose": [rose(m_base, win), rose(m_erc, win)],
    }
    return dict(win=win, updates=updates, text=_summary_text(name, m_base, m_erc, win, eval_size),
                claims=_claims(name, m_base, m_erc, gated, updates, win), results=results)
