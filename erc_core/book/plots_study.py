"""Figures of the claims chapter, drawn from a study's tidy tables (:mod:`erc_core.rl.study`), without pyplot.

    table = study.collect("results/claims")                       # a row per (run, step)
    fig_study_curves(table, {"ERC gate": ("erc_clipfrac", ["dapo_erc"])})
    fig_study_bars({"eval accuracy": study.summarize(table, "eval_acc", "last", 1)})
    fig_token_entropy(study.collect_tokens("results/claims"), ["dapo", "dapo_erc"])

Every curve is the mean over seeds with a shaded 95% Student-t band; every bar a mean over seeds with its 95%
interval, so a reader sees at a glance which differences the seeds can resolve.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from erc_core.rl.study import ci95

__all__ = ["PALETTE", "seed_band", "fig_study_curves", "fig_study_bars", "fig_token_entropy", "fig_forest"]

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22",
           "#17becf", "#393b79", "#637939")


def seed_band(table: pd.DataFrame, variant: str, metric: str, smooth: int = 1) -> pd.DataFrame:
    """Per RL step (>= 1): mean over seeds of ``metric`` (each run first smoothed by a centred rolling mean over
    ``smooth`` steps) and its 95% t-interval. Columns ``mean, low, high, n``, indexed by step."""
    if smooth < 1:
        raise ValueError(f"smooth must be an integer >= 1, got {smooth!r}")
    rows = table[(table.variant == variant) & (table.step >= 1)]
    if rows.empty:
        raise ValueError(f"variant {variant!r} has no RL steps in the table")
    if metric not in rows.columns:
        raise ValueError(f"metric {metric!r} is not a column of the table")
    wide = rows.pivot_table(index="step", columns="seed", values=metric).sort_index()
    wide = wide.rolling(smooth, center=True, min_periods=1).mean()
    band = pd.DataFrame([ci95(row) for row in wide.to_numpy()], index=wide.index, columns=["mean", "low", "high"])
    return band.assign(n=wide.notna().sum(axis=1))


def fig_study_curves(table: pd.DataFrame, panels: dict, smooth: int = 10, logy: tuple[str, ...] = ()) -> Figure:
    """One panel per entry ``{title: (metric, [variant, ...])}``: each variant's seed mean over RL steps with
    its 95% band. ``logy``: titles of panels drawn on a log scale (values <= 0 are not shown there)."""
    if not panels:
        raise ValueError("panels is empty: give at least one {title: (metric, [variants])}")
    fig = Figure(figsize=(3.3 * len(panels), 2.9), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    colors = {}
    for ax, (title, (metric, variants)) in zip(axes, panels.items()):
        for v in variants:
            c = colors.setdefault(v, PALETTE[len(colors) % len(PALETTE)])
            b = seed_band(table, v, metric, smooth)
            if title in logy:
                b = b.where(b > 0)
            ax.plot(b.index, b["mean"], color=c, lw=1.2, label=v)
            ax.fill_between(b.index, b["low"], b["high"], color=c, alpha=0.2, lw=0)
        ax.set(title=title, xlabel="RL step", yscale="log" if title in logy else "linear")
        ax.legend(frameon=False, fontsize=7)
    return fig


def fig_study_bars(summaries: dict, order: list[str] | None = None, ref: dict | None = None) -> Figure:
    """One panel per entry ``{title: summarize(...) table}``: per variant the mean over seeds (dot) and its 95%
    interval (bar). ``order``: variants top to bottom (default: the first table's order); ``ref``: optional
    ``{title: x}`` vertical reference lines (e.g. the baseline's mean)."""
    if not summaries:
        raise ValueError("summaries is empty")
    first = next(iter(summaries.values()))
    order = list(order or first["variant"])
    fig = Figure(figsize=(2.6 * len(summaries) + 1.2, 0.28 * len(order) + 1.0), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(summaries), sharey=True))
    y = np.arange(len(order))[::-1]
    for ax, (title, s) in zip(axes, summaries.items()):
        s = s.set_index("variant").reindex(order)
        err = np.vstack([s["mean"] - s["low"], s["high"] - s["mean"]])
        ax.errorbar(s["mean"], y, xerr=np.nan_to_num(err), fmt="o", color="#1f77b4", ms=4, capsize=2, lw=1)
        if ref and title in ref:
            ax.axvline(ref[title], color="#7f7f7f", lw=0.8, ls="--")
        ax.set(title=title)
        ax.grid(axis="x", alpha=0.3)
    axes[0].set_yticks(y, order, fontsize=8)
    return fig


def fig_token_entropy(tokens: pd.DataFrame, variants: list[str], bins: int = 20) -> Figure:
    """Old entropy of the logged tokens outside vs inside each run's entropy-ratio band, one panel per variant
    (all seeds pooled; each histogram normalised to a density so the two shapes compare)."""
    if not variants:
        raise ValueError("variants is empty")
    fig = Figure(figsize=(2.7 * len(variants), 2.8), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(variants), sharey=True))
    edges = np.linspace(0, float(tokens["old_entropy"].max()) * 1.02 + 1e-6, bins + 1)
    for ax, v in zip(axes, variants):
        g = tokens[tokens.variant == v]
        if g.empty:
            raise ValueError(f"variant {v!r} has no logged tokens")
        lo, hi = g["erc_low"].iloc[0], g["erc_high"].iloc[0]
        for sel, color, label in ((~g["outside_band"], "#2ca02c", "inside the band"),
                                  (g["outside_band"], "#d62728", "outside (gated if ERC)")):
            h = g.loc[sel, "old_entropy"].to_numpy(float)
            if len(h):
                ax.hist(h, bins=edges, density=True, histtype="step", lw=1.5, color=color,
                        label=f"{label}: {len(h)}")
        ax.set(title=f"{v}  ({lo:g}, {hi:g})", xlabel="old entropy H_old (nats)")
        ax.legend(frameon=False, fontsize=7)
    axes[0].set_ylabel("density")
    return fig


VERDICT_COLORS = {"resolved: +": "#2ca02c", "resolved: -": "#d62728", "not resolved": "#7f7f7f"}


def fig_forest(tests: pd.DataFrame, group: str = "claim") -> Figure:
    """Paired-difference forest plot: one row per test of a :func:`erc_core.book.stats.family` table (``name, mean, low,
    high, verdict``; e.g. :func:`erc_core.book.claims.claim_tests`), its mean difference (dot) and 95% interval (bar),
    coloured by its Holm verdict, a line at 0; one panel per value of ``group`` (the tests of a panel share a
    unit). Unlike overlapping per-variant intervals, each bar IS the comparison the verdict rests on."""
    need = {"name", "mean", "low", "high", "verdict", group} - set(tests.columns)
    if tests.empty or need:
        raise ValueError(f"tests must be a non-empty family table; missing columns: {sorted(need)}")
    groups = list(dict.fromkeys(tests[group]))
    heights = [max(1, int((tests[group] == g).sum())) for g in groups]
    fig = Figure(figsize=(7.5, 0.3 * sum(heights) + 0.55 * len(groups) + 0.6), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(groups), 1, gridspec_kw=dict(height_ratios=heights)))
    for ax, g in zip(axes, groups):
        t = tests[tests[group] == g]
        y = np.arange(len(t))[::-1]
        for yi, r in zip(y, t.itertuples()):
            c = VERDICT_COLORS.get(r.verdict, "#1f77b4")
            lo, hi = (r.low, r.high) if np.isfinite([r.low, r.high]).all() else (r.mean, r.mean)
            ax.plot([lo, hi], [yi, yi], color=c, lw=1.5)
            ax.plot([r.mean], [yi], "o", color=c, ms=4)
        ax.axvline(0.0, color="#333333", lw=0.8, ls="--")
        ax.set_yticks(y, t["name"].tolist(), fontsize=7)
        ax.set_ylim(-0.7, len(t) - 0.3)
        ax.set_title(f"{group} {g}", fontsize=8, loc="left")
        ax.grid(axis="x", alpha=0.3)
    size = tests["family_size"].iloc[0] if "family_size" in tests.columns else len(tests)
    fig.suptitle(f"paired differences, 95% intervals; colour = Holm verdict over a family of {size} "
                 "(green +, red -, grey not resolved)", fontsize=8)
    return fig
