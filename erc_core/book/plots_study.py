"""Figures of the claims chapter, drawn from a study's tidy tables (:mod:`erc_core.rl.study`), without pyplot.

::

    table = study.collect("results/claims")                       # a row per (run, step)
    fig_study_curves(table, {"ERC gate": ("erc_clipfrac", ["dapo_erc"])})
    fig_study_bars({"eval accuracy": study.summarize(table, "eval_acc", "last", 1)})
    fig_token_entropy(study.collect_tokens("results/claims"), ["dapo", "dapo_erc"])

Every curve is the mean over seeds with a shaded 95% Student-t band; every bar a mean over seeds with its 95%
interval, so a reader sees at a glance which differences the seeds can resolve. The figures follow the book's
style (:mod:`erc_core.book.style`): book width, text >= 9 pt at the book's display width, panels in a grid of at most
two columns, and one colour per meaning: a variant with the ERC gate (``*_erc``) in the ``erc`` colour, its base
loss in the ``base`` colour (as in chapters 2, 5 and 6); other variants take the meaningless ``PALETTE``
series; a line style tells the loss families (DAPO, GPPO, ...) apart.
"""

from __future__ import annotations

import math
import textwrap

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator

from erc_core.rl.study import ci95

from . import style
from .style import DPI, FIG_WIDTH, ratio_axis, styled

__all__ = ["PALETTE", "seed_band", "variant_styles", "fig_study_curves", "fig_study_bars", "fig_token_entropy",
           "fig_forest"]

#: Colours of variants that are neither a loss with the ERC gate nor its base (no meaning; cycled).
PALETTE = (*style.SERIES, *style.SEQUENCE[1:])

_DASHES = ("-", "--", ":", "-.")
_MARKERS = "os^Dv<>p"


def _family(variant: str) -> str:
    """The variant's loss family: its name without an ``_erc`` part (``gppo_erc`` -> ``gppo``)."""
    return "_".join(p for p in variant.split("_") if p != "erc") or variant


def variant_styles(variants) -> dict[str, dict]:
    """Line colour, dash and marker of each variant (same variant, same look in every panel and figure).

    A variant with the ERC gate (``erc`` among its ``_``-separated parts) takes ``style.PALETTE["erc"]``; a
    variant whose ``*_erc`` twin is among ``variants``, or that is ``dapo`` / ``gppo`` / ``grpo`` / ``ppo``, takes
    ``style.PALETTE["base"]``; the others cycle through ``PALETTE``. Variants of one family (``dapo`` and
    ``dapo_erc``) share a dash; families differ in dash and marker.
    """
    variants = list(dict.fromkeys(variants))
    families = list(dict.fromkeys(_family(v) for v in variants))
    twins = {_family(v) for v in variants if "erc" in v.split("_")}
    out, n_other = {}, 0
    for v in variants:
        fam = families.index(_family(v))
        if "erc" in v.split("_"):
            color = style.PALETTE["erc"]
        elif v in twins or v in ("dapo", "gppo", "grpo", "ppo"):
            color = style.PALETTE["base"]
        else:
            color, n_other = PALETTE[n_other % len(PALETTE)], n_other + 1
        out[v] = dict(color=color, ls=_DASHES[fam % len(_DASHES)], marker=_MARKERS[fam % len(_MARKERS)])
    return out


def _grid(fig: Figure, n: int, **kw) -> tuple[np.ndarray, list]:
    """``n`` panels in rows of at most two; returns the used axes and the empty slots (removed from ``fig``,
    their grid positions returned for a legend)."""
    cols = 1 if n == 1 else 2
    axes = np.atleast_1d(fig.subplots(math.ceil(n / cols), cols, squeeze=False, **kw)).ravel()
    spare = [ax.get_subplotspec() for ax in axes[n:]]
    for ax in axes[n:]:
        fig.delaxes(ax)
    return axes[:n], spare


def _legend(fig: Figure, handles: dict, spare: list) -> None:
    """One legend for the figure: in an empty grid slot if there is one, else below the panels."""
    if not handles:
        return
    if spare:
        ax = fig.add_subplot(spare[0])
        ax.axis("off")
        ax.legend(handles.values(), handles.keys(), loc="center", frameon=False)
    else:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", frameon=False,
                   ncol=min(3, len(handles)))


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


def _wrap(text: str, width: int = 34) -> str:
    """``text`` on lines of at most ``width`` characters (titles and labels that fit half the book's width)."""
    return textwrap.fill(str(text), width, break_on_hyphens=False)


def _layer(i: int) -> dict:
    """Width of the i-th curve of a panel: the first wide and light, the others narrow on top (none hides)."""
    return {"lw": 3.6, "alpha": 0.55, "zorder": 2} if i == 0 else {"lw": 1.6, "alpha": 1.0, "zorder": 3 + i}


@styled
def fig_study_curves(table: pd.DataFrame, panels: dict, smooth: int = 10, logy: tuple[str, ...] = ()) -> Figure:
    """One panel per entry ``{title: (metric, [variant, ...])}``, in rows of two: each variant's seed mean over
    RL steps with its 95% band. ``logy``: titles of panels drawn on a log scale with plain decimal ticks
    (values <= 0 are not shown there; the axis starts 5 times below the smallest mean). One legend for the
    figure (in the empty slot of an odd grid)."""
    if not panels:
        raise ValueError("panels is empty: give at least one {title: (metric, [variants])}")
    fig = Figure(figsize=(FIG_WIDTH, 0.4 + 2.7 * math.ceil(len(panels) / 2)), dpi=DPI, layout="constrained")
    axes, spare = _grid(fig, len(panels))
    looks = variant_styles(v for _, vs in panels.values() for v in vs)
    handles = {}
    for ax, (title, (metric, variants)) in zip(axes, panels.items()):
        floor = np.inf  # smallest positive mean of a log panel: its axis starts a factor 5 below
        for i, v in enumerate(variants):
            look = looks[v]
            b = seed_band(table, v, metric, smooth)
            if title in logy:
                b = b.where(b > 0)
                floor = min(floor, float(b["mean"].min()))
            (line,) = ax.plot(b.index, b["mean"], color=look["color"], ls=look["ls"], label=v, **_layer(i))
            ax.fill_between(b.index, b["low"], b["high"], color=look["color"], alpha=0.18, lw=0)
            handles.setdefault(v, Line2D([], [], color=look["color"], ls=look["ls"], lw=1.8))
        ax.set(title=_wrap(title), xlabel="RL step")
        if title in logy:
            if np.isfinite(floor):
                ax.set_ylim(bottom=floor / 5)
            ratio_axis(ax, "y")
    _legend(fig, handles, spare)
    return fig


@styled
def fig_study_bars(summaries: dict, order: list[str] | None = None, ref: dict | None = None) -> Figure:
    """One panel per entry ``{title: summarize(...) table}``, in rows of two: per variant the mean over seeds
    (dot, in the variant's colour) and its 95% interval (bar). ``order``: variants top to bottom (default: the
    first table's order); ``ref``: optional ``{title: x}`` vertical reference lines (e.g. the baseline's mean)."""
    if not summaries:
        raise ValueError("summaries is empty")
    first = next(iter(summaries.values()))
    order = list(order or first["variant"])
    rows = math.ceil(len(summaries) / 2)
    fig = Figure(figsize=(FIG_WIDTH, rows * (0.3 * len(order) + 1.1) + 0.2), dpi=DPI, layout="constrained")
    axes, _ = _grid(fig, len(summaries), sharey=True)
    looks = variant_styles(order)
    y = np.arange(len(order))[::-1]
    for ax, (title, s) in zip(axes, summaries.items()):
        s = s.set_index("variant").reindex(order)
        err = np.nan_to_num(np.vstack([s["mean"] - s["low"], s["high"] - s["mean"]]))
        for yi, v, m, e in zip(y, order, s["mean"], err.T):
            c = looks[v]["color"]
            ax.errorbar([m], [yi], xerr=e[:, None], fmt=looks[v]["marker"], color=c, ms=5, capsize=3, lw=1.4)
        if ref and title in ref:
            ax.axvline(ref[title], color=style.PALETTE["old"], lw=1.0, ls="--")
        ax.set(title=_wrap(title))
        ax.grid(axis="x", color=style.PALETTE["pad"], lw=0.8)
        ax.xaxis.set_major_locator(MaxNLocator(nbins=4))
    axes[0].set_yticks(y, order)
    return fig


@styled
def fig_token_entropy(tokens: pd.DataFrame, variants: list[str], bins: int = 20) -> Figure:
    """Old entropy of the logged tokens inside (``kept`` colour) vs outside (``gated`` colour) each run's
    entropy-ratio band, one panel per variant in rows of two (all seeds pooled; each histogram normalised to a
    density so the two shapes compare)."""
    if not variants:
        raise ValueError("variants is empty")
    fig = Figure(figsize=(FIG_WIDTH, 0.6 + 2.6 * math.ceil(len(variants) / 2)), dpi=DPI, layout="constrained")
    axes, _ = _grid(fig, len(variants), sharey=True, sharex=True)
    edges = np.linspace(0, float(tokens["old_entropy"].max()) * 1.02 + 1e-6, bins + 1)
    kinds = ((False, style.PALETTE["kept"], "-", "inside the band"),
             (True, style.PALETTE["gated"], "--", "outside (gated if ERC)"))
    for ax, v in zip(axes, variants):
        g = tokens[tokens.variant == v]
        if g.empty:
            raise ValueError(f"variant {v!r} has no logged tokens")
        lo, hi = g["erc_low"].iloc[0], g["erc_high"].iloc[0]
        for outside, color, ls, _ in kinds:
            h = g.loc[g["outside_band"] == outside, "old_entropy"].to_numpy(float)
            if len(h):
                ax.hist(h, bins=edges, density=True, histtype="step", lw=1.8, ls=ls, color=color)
        n_out = int(g["outside_band"].sum())
        ax.set_title(f"{v}, band ({lo:g}, {hi:g})\n{n_out} of {len(g)} outside")
    for ax in axes[-2:]:
        ax.set_xlabel("old entropy H_old (nats)")
    for ax in axes[::2]:
        ax.set_ylabel("density")
    fig.legend([Line2D([], [], color=c, ls=ls, lw=1.8) for _, c, ls, _ in kinds], [lab for *_, lab in kinds],
               loc="outside lower center", ncol=2, frameon=False)
    return fig


#: Colour of each Holm verdict in :func:`fig_forest` (the sign is the side of 0; resolved tests are drawn filled).
VERDICT_COLORS = {"resolved: +": style.PALETTE["ink"], "resolved: -": style.PALETTE["ink"],
                  "not resolved": style.PALETTE["old"]}


@styled
def fig_forest(tests: pd.DataFrame, group: str = "claim") -> Figure:
    """Paired-difference forest plot: one row per test of a :func:`erc_core.book.stats.family` table (``name, mean, low,
    high, verdict``; e.g. :func:`erc_core.book.claims.claim_tests`), its mean difference (dot) and 95% interval (bar),
    dark and filled where its Holm verdict resolves the sign, grey and hollow where it does not, a line at 0; one
    panel per value of ``group`` (the tests of a panel share a unit). Unlike overlapping per-variant intervals,
    each bar IS the comparison the verdict rests on."""
    need = {"name", "mean", "low", "high", "verdict", group} - set(tests.columns)
    if tests.empty or need:
        raise ValueError(f"tests must be a non-empty family table; missing columns: {sorted(need)}")
    groups = list(dict.fromkeys(tests[group]))
    names = [_wrap(n, 30) for n in tests["name"]]
    heights = [sum(1 + n.count("\n") * 0.6 for n, g2 in zip(names, tests[group]) if g2 == g) for g in groups]
    fig = Figure(figsize=(FIG_WIDTH, 0.34 * sum(heights) + 0.6 * len(groups) + 0.9), dpi=DPI, layout="constrained")
    axes = np.atleast_1d(fig.subplots(len(groups), 1, gridspec_kw=dict(height_ratios=heights)))
    for ax, g in zip(axes, groups):
        t = tests[tests[group] == g]
        y = np.arange(len(t))[::-1]
        for yi, r in zip(y, t.itertuples()):
            c = VERDICT_COLORS.get(r.verdict, style.PALETTE["old"])
            resolved = r.verdict.startswith("resolved")
            lo, hi = (r.low, r.high) if np.isfinite([r.low, r.high]).all() else (r.mean, r.mean)
            ax.plot([lo, hi], [yi, yi], color=c, lw=2.0 if resolved else 1.4)
            ax.plot([r.mean], [yi], "o", color=c, ms=6, mfc=c if resolved else "white", mew=1.4)
        ax.axvline(0.0, color=style.PALETTE["ink"], lw=0.8, ls="--")
        ax.set_yticks(y, [_wrap(n, 30) for n in t["name"]])
        ax.set_ylim(-0.7, len(t) - 0.3)
        ax.set_title(f"{group} {g}", loc="left")
        ax.grid(axis="x", color=style.PALETTE["pad"], lw=0.8)
    size = tests["family_size"].iloc[0] if "family_size" in tests.columns else len(tests)
    fig.suptitle(f"paired differences with 95% intervals\nfilled: sign resolved (Holm, family of {size} tests)")
    return fig
