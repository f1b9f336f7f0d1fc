"""The book's figures: each function draws one figure from numbers a chapter computed with erc_core.

Functions take tensors (or arrays) and return a :class:`matplotlib.figure.Figure` built without pyplot, so they
hold no global state; a notebook with ``%matplotlib inline`` shows the returned figure as a PNG. Every figure is
:data:`erc_core.book.style.FIG_WIDTH` inches wide at :data:`erc_core.book.style.DPI` dpi, built under
:data:`erc_core.book.style.RC` (text >= 9 pt at the book's display width), coloured from
:data:`erc_core.book.style.PALETTE` (one meaning per colour), with plain decimal ticks on log-scaled ratio axes.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
import torch
from matplotlib.colors import LinearSegmentedColormap, ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from erc_core.band import Band
from .style import DPI, FIG_WIDTH, PALETTE, SEQUENCE, SERIES, TINTS, ratio_axis, styled

__all__ = ["COLORS", "fig_temperature", "fig_ppo_blind_spot", "fig_erc_gate", "fig_offpolicy_drift",
           "fig_offpolicy_drift_upto", "fig_position_drift", "fig_group_advantages", "fig_clip_higher",
           "fig_agg_weights", "fig_dynamic_sampling", "fig_overlong", "fig_rho_tokens", "fig_offpolicy_updates",
           "fig_gate_plane", "fig_run_curves", "fig_gated_entropy", "fig_hero", "HERO_WIDTH"]

#: Older names of :data:`erc_core.book.style.PALETTE` colours (kept for callers such as ``plots_llm``).
COLORS = {"old": PALETTE["old"], "collapse": PALETTE["fell"], "explode": PALETTE["rose"], "kept": PALETTE["kept"],
          "band": PALETTE["erc"], "ppo": PALETTE["base"], "erc": PALETTE["erc"], "low": PALETTE["fell"],
          "high": PALETTE["rose"], "pad": PALETTE["pad"]}


def _figure(height: float) -> Figure:
    """A book-width figure (constrained layout) ``height`` inches tall."""
    return Figure(figsize=(FIG_WIDTH, height), dpi=DPI, layout="constrained")


def _np(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


@styled
def fig_temperature(temperatures: torch.Tensor, entropy: torch.Tensor, probs: torch.Tensor,
                    prob_temperatures: Sequence[float], labels: Sequence[str], max_tokens: int = 16) -> Figure:
    """Softmax at a few temperatures (left) and entropy against temperature (right).

    Args:
        temperatures: (N,) temperatures of the entropy curves.
        entropy: (N, K) entropy (nats) of K example distributions at each temperature.
        probs: (M, V) probabilities of the first distribution at the M temperatures ``prob_temperatures``.
        prob_temperatures: M temperatures (legend of the left panel).
        labels: K names of the example distributions.
        max_tokens: at most this many (the first) tokens are drawn as bars.
    """
    t, h, p = _np(temperatures), _np(entropy), _np(probs)
    vocab = p.shape[-1]
    p = p[:, :max_tokens]
    fig = _figure(3.2)
    ax1, ax2 = fig.subplots(1, 2)
    width = 0.8 / len(p)
    for i, (row, temp) in enumerate(zip(p, prob_temperatures)):
        ax1.bar(np.arange(p.shape[1]) + (i - (len(p) - 1) / 2) * width, row, width, label=f"T = {temp:g}",
                color=SEQUENCE[i % len(SEQUENCE)])
    ax1.set(xlabel="token" if vocab <= max_tokens else f"token (first {max_tokens} of {vocab})",
            ylabel="probability", title=f"softmax(z / T), '{labels[0]}'")
    ax1.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax1.legend(frameon=False)
    for k, name in enumerate(labels):
        ax2.plot(t, h[:, k], marker="os^D"[k % 4], ms=4, ls=("-", "--", ":", "-.")[k % 4], label=name,
                 color=SERIES[k % len(SERIES)])
    ax2.axhline(np.log(vocab), color=PALETTE["old"], ls="--", lw=1)
    ax2.text(t[0], np.log(vocab), f"log V = {np.log(vocab):.2f}", va="bottom")
    ax2.set(xlabel="temperature T", ylabel="entropy H (nats)", title="entropy vs temperature",
            ylim=(0, np.log(vocab) * 1.15))
    ratio_axis(ax2, "x")
    ax2.legend(frameon=False, loc="lower right")
    return fig


@styled
def fig_ppo_blind_spot(probs_old: torch.Tensor, probs_collapse: torch.Tensor, probs_explode: torch.Tensor,
                       token: int, ratio_collapse: torch.Tensor, ratio_explode: torch.Tensor,
                       rho_collapse: torch.Tensor, rho_explode: torch.Tensor,
                       clip: tuple[float, float] = (0.2, 0.28),
                       erc_bounds: tuple[float, float] = (0.95, 1.05), max_tokens: int = 16) -> Figure:
    """Two drifts PPO-clip lets through: the policies (top), what PPO sees and what ERC sees (bottom).

    Args:
        probs_old, probs_collapse, probs_explode: (V,) the old policy and the last step of each drift.
        token: the sampled token (shaded).
        ratio_collapse, ratio_explode: (S,) the sampled token's probability ratio at each step.
        rho_collapse, rho_explode: (S,) the entropy ratio at each step.
        clip: PPO's (clip_low, clip_high); the band is [1 - clip_low, 1 + clip_high].
        erc_bounds: ERC's (low, high).
        max_tokens: at most this many (the first) tokens are drawn as bars.
    """
    p0, pc, pe = (_np(x)[:max_tokens] for x in (probs_old, probs_collapse, probs_explode))
    vocab = _np(probs_old).shape[0]
    fig = _figure(5.8)
    axes = fig.subplot_mosaic([["p", "p"], ["ppo", "erc"]])
    ax1 = axes["p"]
    x = np.arange(len(p0))
    for i, (row, name, key) in enumerate(((p0, "old", "old"), (pc, "collapse", "fell"), (pe, "explode", "rose"))):
        ax1.bar(x + (i - 1) * 0.27, row, 0.27, color=PALETTE[key],
                label=name if name == "old" else f"{name} (last step)")
    if token < len(p0):
        ax1.axvspan(token - 0.45, token + 0.45, color=PALETTE["highlight"], alpha=0.35, lw=0, label="sampled token")
    ax1.set(xlabel="token" if vocab <= max_tokens else f"token (first {max_tokens} of {vocab})",
            ylabel="probability", title="the old policy and the last step of each drift", xticks=x)
    ax1.legend(frameon=False, ncol=2)
    steps = np.arange(len(_np(ratio_collapse)))
    for ax, (a, b), band, title, ylabel, key in (
            (axes["ppo"], (ratio_collapse, ratio_explode), (1 - clip[0], 1 + clip[1]), "what PPO-clip sees",
             "sampled-token ratio r", "base"),
            (axes["erc"], (rho_collapse, rho_explode), erc_bounds, "what ERC sees", "entropy ratio rho", "erc")):
        ax.axhspan(*band, color=PALETTE[key], alpha=0.18, lw=0, label=f"band ({band[0]:.2f}, {band[1]:.2f})")
        ax.axhline(1.0, color=PALETTE["old"], lw=0.8)
        # the two drifts can have the same sampled-token ratio: a wide line with big markers under a dashed one
        ax.plot(steps, _np(a), marker="o", ms=9, lw=4.0, alpha=0.55, color=PALETTE["fell"], label="collapse")
        ax.plot(steps, _np(b), marker="s", ms=4, lw=1.6, ls="--", color=PALETTE["rose"], label="explode")
        ax.set(xlabel="step", ylabel=ylabel, title=title, xticks=steps)
        ax.legend(frameon=False, loc="lower left")
    lo = min(1 - clip[0], float(_np(rho_collapse).min())) - 0.05
    hi = max(1 + clip[1], float(_np(rho_explode).max())) + 0.05
    axes["ppo"].set_ylim(lo, hi)
    axes["erc"].set_ylim(lo, hi)
    return fig


@styled
def fig_erc_gate(rho: torch.Tensor, response_mask: torch.Tensor, keep: torch.Tensor, grad: torch.Tensor,
                 bounds: tuple[float, float] = (0.95, 1.05), max_rows: int = 16, max_cols: int = 64) -> Figure:
    """The ERC gate on a batch: entropy ratio per token (top) and the gradient each token sends (bottom).

    Args:
        rho: (B, T) entropy ratios.
        response_mask: (B, T) bool, False on padding.
        keep: (B, T) bool ERC keep mask (``erc_mask``).
        grad: (B, T) gradient of the loss with respect to the token log-probs.
        bounds: the (low, high) band used for ``keep``.
        max_rows, max_cols: at most this many responses / positions are drawn (the first ones).
    """
    crop = (slice(0, max_rows), slice(0, max_cols))
    r, m = _np(rho).astype(float)[crop], _np(response_mask).astype(bool)[crop]
    k, g = _np(keep).astype(bool)[crop], _np(grad)[crop]
    batch, seq = r.shape
    fig = _figure(3.0 + 0.5 * batch)
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    span = max(abs(float(r[m].min()) - 1.0), abs(float(r[m].max()) - 1.0), bounds[1] - 1.0, 1.0 - bounds[0]) * 1.05
    im = ax1.imshow(np.where(m, r, np.nan), cmap=_RHO_CMAP, aspect="auto",
                    norm=TwoSlopeNorm(vcenter=1.0, vmin=1.0 - span, vmax=1.0 + span))
    gated = m & ~k
    yy, xx = np.nonzero(gated)
    ax1.scatter(xx, yy, marker="x", color=PALETTE["gated"], s=30,
                label=f"gated: rho outside ({bounds[0]:g}, {bounds[1]:g})")
    fig.colorbar(im, ax=ax1, label="rho", shrink=0.9)
    ax1.set(title="entropy ratio rho = H_new / H_old per token", ylabel="response")
    fig.legend(handles=ax1.get_legend_handles_labels()[0], loc="outside upper center", frameon=False)
    state = np.where(~m, 0, np.where(gated, 1, np.where(g != 0, 2, 3)))
    cmap = ListedColormap([PALETTE["pad"], PALETTE["gated"], PALETTE["kept"], TINTS["kept"]])
    ax2.imshow(state, cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto")
    ax2.set(title="gradient each token sends to the policy", xlabel="token position t", ylabel="response")
    handles = [Patch(color=c, label=lab) for c, lab in
               ((PALETTE["kept"], "kept, gradient != 0"), (TINTS["kept"], "kept, PPO-clipped: gradient 0"),
                (PALETTE["gated"], "gated by ERC: gradient 0"), (PALETTE["pad"], "padding"))]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    for ax in (ax1, ax2):
        ax.set_yticks(range(0, batch, max(1, batch // 8)))
        ax.set_xticks(range(0, seq, max(1, seq // 8)))
    return fig


#: rho below 1 (entropy fell) in the ``fell`` blue, above 1 (rose) in the ``rose`` red, light grey at 1.
_RHO_CMAP = LinearSegmentedColormap.from_list("rho", [PALETTE["fell"], TINTS["pad"], PALETTE["rose"]])


# ---------------------------------------------------------------------------------------------- chapter 2
def _envelope(ax, x, rng, color, label, ls="-", lw=1.6):
    lo, hi = rng[:, 0], rng[:, 1]
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    ax.plot(x, lo, color=color, ls=ls, lw=lw, label=label)
    ax.plot(x, hi, color=color, ls=ls, lw=lw)


@styled
def fig_offpolicy_drift(ppo, erc, clip: tuple[float, float] = (0.2, 0.28),
                        erc_bounds: tuple[float, float] = (0.95, 1.05)) -> Figure:
    """K off-policy updates on the same samples, PPO-clip alone vs with the ERC gate (x: update).

    Top left: range (min to max) of the sampled tokens' ratios; top right: of the un-sampled tokens' ratios
    pi_k(v) / pi_old(v); bottom left: the entropy ratio per position (thin lines: PPO-clip) and its range;
    bottom right: mean ``|rho - 1|`` over positions.

    Args:
        ppo, erc: :class:`erc_core.book.toy.UpdateTrace` of the run without and with the ERC gate.
        clip: PPO's (clip_low, clip_high).
        erc_bounds: ERC's (low, high).
    """
    x = np.arange(_np(ppo.ratio).shape[0])
    fig = _figure(6.0)
    axes = fig.subplots(2, 2, sharex=True)
    band = (1 - clip[0], 1 + clip[1])
    panels = ((axes[0, 0], "sampled_ratio_range", "sampled tokens: r = pi / pi_old"),
              (axes[0, 1], "unsampled_ratio_range", "un-sampled tokens: pi(v) / pi_old(v)"))
    lims = []
    for ax, meth, title in panels:
        ax.axhspan(*band, color=PALETTE["base"], alpha=0.12, lw=0, label=f"PPO clip band [{band[0]:g}, {band[1]:g}]")
        _envelope(ax, x, _np(getattr(ppo, meth)()), PALETTE["base"], "PPO-clip", lw=3.2)
        _envelope(ax, x, _np(getattr(erc, meth)()), PALETTE["erc"], "PPO-clip + ERC", ls="--")
        ax.axhline(1.0, color=PALETTE["old"], lw=0.8)
        ax.set(title=title, ylabel="probability ratio")
        lims += list(ax.get_ylim())
    for ax, _, _ in panels:
        ax.set_ylim(min(lims), max(lims))
    ax = axes[1, 0]
    rho_p = _np(ppo.rho)[:, _np(ppo.response_mask).astype(bool)]
    ax.plot(x, rho_p, color=PALETTE["base"], lw=0.5, alpha=0.35)
    ax.axhspan(*erc_bounds, color=PALETTE["erc"], alpha=0.15, lw=0,
               label=f"ERC band ({erc_bounds[0]:g}, {erc_bounds[1]:g})")
    _envelope(ax, x, _np(ppo.rho_range()), PALETTE["base"], "PPO-clip (thin: positions)", lw=3.2)
    _envelope(ax, x, _np(erc.rho_range()), PALETTE["erc"], "PPO-clip + ERC", ls="--")
    ax.axhline(1.0, color=PALETTE["old"], lw=0.8)
    ax.set(title="entropy ratio rho = H / H_old", xlabel="update", ylabel="rho")
    ax = axes[1, 1]
    ax.plot(x, _np(ppo.rho_deviation()), color=PALETTE["base"], marker="o", ms=7, lw=3.2, alpha=0.7,
            label="PPO-clip")
    ax.plot(x, _np(erc.rho_deviation()), color=PALETTE["erc"], marker="s", ms=4, ls="--", label="PPO-clip + ERC")
    ax.axhline(erc_bounds[1] - 1.0, color=PALETTE["erc"], lw=1.0, ls=":", label="ERC band half-width")
    ax.set(title="mean |rho - 1| over positions", xlabel="update", ylabel="|rho - 1|", ylim=(0, None))
    handles = {}
    for a in (axes[0, 0], axes[1, 0], axes[1, 1]):
        for h, lab in zip(*a.get_legend_handles_labels()):
            if lab not in ("PPO-clip", "PPO-clip + ERC") or a is axes[1, 1]:
                handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=2, frameon=False)
    return fig


@styled
def fig_offpolicy_drift_upto(ppo, erc, n_shown: int, clip: tuple[float, float] = (0.2, 0.28),
                             erc_bounds: tuple[float, float] = (0.95, 1.05)) -> Figure:
    """:func:`fig_offpolicy_drift` after only the first ``n_shown`` of the K updates, on the full run's axes.

    Every panel keeps the x and y limits of the figure of all K updates, so figures for growing ``n_shown``
    (the frames of a slider) show the same curves growing rather than rescaled.

    Args:
        ppo, erc: :class:`erc_core.book.toy.UpdateTrace` of K updates each, without and with the ERC gate.
        n_shown: how many updates to draw, in [1, K] (a ``ValueError`` names it otherwise).
        clip, erc_bounds: as in :func:`fig_offpolicy_drift`.
    """
    k = len(ppo.stats)
    if not 1 <= n_shown <= k:
        raise ValueError(f"n_shown must be in [1, {k}] (the updates of the traces), got {n_shown!r}")
    full = fig_offpolicy_drift(ppo, erc, clip=clip, erc_bounds=erc_bounds)
    fig = fig_offpolicy_drift(ppo.first(n_shown), erc.first(n_shown), clip=clip, erc_bounds=erc_bounds)
    for ax, ref in zip(fig.axes, full.axes):
        ax.set_xlim(ref.get_xlim())
        ax.set_ylim(ref.get_ylim())
    fig.suptitle(f"after {n_shown} of {k} off-policy updates", fontsize="medium")
    return fig


@styled
def fig_position_drift(probs_old: torch.Tensor, probs_ppo: torch.Tensor, probs_erc: torch.Tensor, token: int,
                       rho_ppo: float, rho_erc: float, max_tokens: int = 16) -> Figure:
    """One position's distribution before the updates and after them, with PPO-clip alone and with ERC.

    Args:
        probs_old, probs_ppo, probs_erc: (V,) the old policy and the two final policies at the position.
        token: the token sampled there (shaded).
        rho_ppo, rho_erc: the final entropy ratios (shown in the legend).
        max_tokens: at most this many (the first) tokens are drawn.
    """
    rows = [_np(p)[:max_tokens] for p in (probs_old, probs_ppo, probs_erc)]
    fig = _figure(3.2)
    ax = fig.subplots()
    x = np.arange(len(rows[0]))
    for i, (row, color, label) in enumerate(zip(rows, (PALETTE["old"], PALETTE["base"], PALETTE["erc"]),
                                                ("old policy", f"PPO-clip (rho = {rho_ppo:.2f})",
                                                 f"PPO-clip + ERC (rho = {rho_erc:.2f})"))):
        ax.bar(x + (i - 1) * 0.27, row, 0.27, color=color, label=label)
    if token < len(x):
        ax.axvspan(token - 0.45, token + 0.45, color=PALETTE["highlight"], alpha=0.35, lw=0, label="sampled token")
    ax.set(xlabel="token", ylabel="probability", xticks=x, title="one position, before and after the updates")
    ax.legend(frameon=False)
    return fig


# ---------------------------------------------------------------------------------------------- chapter 4
@styled
def fig_group_advantages(scores: torch.Tensor, adv_std: torch.Tensor, adv_mean: torch.Tensor) -> Figure:
    """Advantage of a correct and of a wrong response against the number of correct responses in the group.

    Args:
        scores: (G + 1, G) binary rewards, row k holding k ones (``toy.binary_reward_groups``).
        adv_std: (G + 1, G) GRPO advantages (divided by the group's std).
        adv_mean: (G + 1, G) Dr. GRPO advantages (mean-centred only).
    """
    s, a1, a2 = _np(scores), _np(adv_std), _np(adv_mean)
    g = s.shape[1]
    k = s.sum(1)
    fig = _figure(3.0)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, a, title in ((axes[0], a1, "GRPO: (r - mean) / std"), (axes[1], a2, "Dr. GRPO: r - mean")):
        correct = np.array([a[i][s[i] == 1][0] if (s[i] == 1).any() else np.nan for i in range(len(s))])
        wrong = np.array([a[i][s[i] == 0][0] if (s[i] == 0).any() else np.nan for i in range(len(s))])
        ax.plot(k, correct, marker="o", color=PALETTE["correct"], label="a correct response")
        ax.plot(k, wrong, marker="s", ls="--", color=PALETTE["wrong"], label="a wrong response")
        ax.axhline(0, color=PALETTE["old"], lw=0.8)
        ax.set(title=title, xlabel=f"correct in the group (of {g})", xticks=k)
    axes[0].set_ylabel("advantage")
    axes[0].legend(frameon=False)
    return fig


@styled
def fig_clip_higher(ratios: torch.Tensor, curves: dict, clip_c: float, bands: dict, pos_max: float = 2.0,
                    grad_panel: bool = True, grad_wrt: str = "logp") -> Figure:
    """Per-token loss (top) and its gradient with respect to the token's log-probability (bottom) against the
    ratio r, for A > 0 (left, linear) and A < 0 (right, log); the loss is dotted where its gradient is 0.

    Two settings can have the same loss values (PPO clip and GPPO's gradient-preserving clip do): the bottom row
    shows where they differ. The first setting is drawn wide and light, the next ones narrow on top of it, so
    coinciding curves stay visible.

    Args:
        ratios: (N,) ratios (x axis).
        curves: ``{(name, sign): (loss, dloss_dr)}`` with sign +1 or -1, (N,) tensors each
            (``toy.per_token_loss_curve``, autograd through ``erc_core.losses.POLICY_LOSSES``), or
            ``(loss, dloss_dr, dloss_dlogp)``. The bottom row plots ``dloss_dlogp``, by default
            ``r * dloss_dr``: the chain rule through ``r = exp(log pi - log pi_old)``.
        clip_c: the dual-clip bound (marked on the A < 0 panels).
        bands: ``{name: (1 - clip_low, 1 + clip_high)}``, the clip band of each setting.
        pos_max: the A > 0 panels show ratios up to this value.
        grad_panel: draw the bottom row (d loss / d log pi).
        grad_wrt: what the bottom row differentiates by: ``"logp"`` (d loss / d log pi) or ``"ratio"``
            (d loss / d r); both are zero exactly where the clip stops the gradient.
    """
    if grad_wrt not in ("logp", "ratio"):
        raise ValueError(f"grad_wrt must be 'logp' or 'ratio', got {grad_wrt!r}")
    r = _np(ratios)
    fig = _figure(6.0 if grad_panel else 3.4)
    axes = np.atleast_2d(fig.subplots(2 if grad_panel else 1, 2, sharex="col"))
    names = list(bands)
    for col, sign in ((0, 1), (1, -1)):
        shown = (r <= pos_max) if sign > 0 else np.ones_like(r, dtype=bool)  # A > 0: nothing happens past the band
        for i, name in enumerate(names):
            if (name, sign) not in curves:
                continue
            loss, grad, dlogp = clip_curve_gradients(r, curves[(name, sign)])
            loss, grad, dlogp, x = loss[shown], grad[shown], dlogp[shown], r[shown]
            flows = grad != 0
            c, style = SERIES[i % len(SERIES)], _layer_style(i)
            ax = axes[0, col]
            ax.plot(x, np.where(flows, loss, np.nan), color=c, **style, label=name)
            ax.plot(x, np.where(flows, np.nan, loss), color=c, **{**style, "ls": ":"})
            if grad_panel:
                axes[1, col].plot(x, dlogp if grad_wrt == "logp" else grad, color=c, **style)
            for ax in axes[:, col]:
                for edge in bands[name]:
                    ax.axvline(edge, color=c, lw=0.9, ls="--")
        for row, ax in enumerate(axes[:, col]):
            ax.axvline(1.0, color=PALETTE["ink"], lw=0.6)
            if sign < 0:
                ax.axvline(clip_c, color=PALETTE["ink"], lw=1.0)
            ax.set_xlim(r[shown].min(), r[shown].max())
        axes[0, col].set(ylabel="per-token loss",
                         title=f"A = {sign:+d}" + ("" if sign > 0 else f" (dual clip c = {clip_c:g})"))
        if grad_panel:
            axes[1, col].axhline(0.0, color=PALETTE["old"], lw=0.6)
            wrt = "log pi" if grad_wrt == "logp" else "r"
            axes[1, col].set(ylabel=f"d loss / d {wrt}", title=f"gradient, A = {sign:+d}")
        axes[-1, col].set_xlabel("ratio r" if sign > 0 else "ratio r (log scale)")
        if sign < 0:
            ratio_axis(axes[0, col], "x")
    ax = axes[0, 1]
    ax.text(clip_c, 0.02, " c", color=PALETTE["ink"], va="bottom", transform=ax.get_xaxis_transform())
    handles = [h for h in axes[0, 0].get_legend_handles_labels()[0]]
    handles += [Line2D([], [], color=PALETTE["ink"], ls=":", lw=1.8, label="dotted: the clip stopped the gradient"),
                Line2D([], [], color=PALETTE["ink"], ls="--", lw=0.9, label="dashed: clip band edges")]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False)
    return fig


def _layer_style(i: int) -> dict:
    """Line style of the i-th of curves that may coincide: the first wide and light, the others narrow on top."""
    return {"lw": 5.0, "alpha": 0.45, "zorder": 2} if i == 0 else {"lw": 1.8, "alpha": 1.0, "zorder": 3 + i}


def clip_curve_gradients(ratios, curve) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(loss, dloss_dr, dloss_dlogp)`` of one ``toy.per_token_loss_curve`` output, (N,) each.

    ``dloss_dlogp`` is the curve's third entry if it has one, otherwise ``r * dloss_dr`` (the chain rule through
    ``r = exp(log pi - log pi_old)``; ``dloss_dr`` comes from autograd through the loss function).
    """
    loss, grad = _np(curve[0]).astype(float), _np(curve[1]).astype(float)
    dlogp = _np(curve[2]).astype(float) if len(curve) > 2 else _np(ratios).astype(float) * grad
    return loss, grad, dlogp


@styled
def fig_agg_weights(lengths: torch.Tensor, weights: dict) -> Figure:
    """How each aggregation weighs responses of different lengths: per token (left), per response (right).

    Args:
        lengths: (B,) response lengths.
        weights: ``{agg_mode: (B,) per-token weight}`` (``toy.agg_token_weights``).
    """
    n = _np(lengths).astype(float)
    fig = _figure(3.2)
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(n))
    width = 0.8 / len(weights)
    for i, (name, wt) in enumerate(weights.items()):
        wt = _np(wt).astype(float)
        share = wt * n / max(float((wt * n).sum()), 1e-30)
        off = (i - (len(weights) - 1) / 2) * width
        ax1.bar(x + off, wt / max(float(wt.max()), 1e-30), width, label=name, color=SERIES[i % len(SERIES)])
        ax2.bar(x + off, share, width, label=name, color=SERIES[i % len(SERIES)])
    labels = [f"{int(v)}" for v in n]
    ax1.set(xticks=x, xticklabels=labels, xlabel="response length (tokens)",
            ylabel="weight of one token (max = 1)", title="weight per token")
    ratio_axis(ax1, "y")
    ax2.set(xticks=x, xticklabels=labels, xlabel="response length (tokens)", ylabel="share of the loss",
            title="weight per response")
    fig.legend(*ax2.get_legend_handles_labels(), loc="outside lower center", ncol=min(3, len(weights)),
               frameon=False)
    return fig


@styled
def fig_dynamic_sampling(accuracies: torch.Tensor, kept: dict, expected: dict) -> Figure:
    """DAPO dynamic sampling: fraction of groups kept (left) and prompts sampled per kept group (right).

    Args:
        accuracies: (N,) per-response success probability p.
        kept: ``{group_size: (N,) measured kept fraction}``.
        expected: ``{group_size: (N,) closed form 1 - p^G - (1 - p)^G}``.
    """
    p = _np(accuracies)
    fig = _figure(3.0)
    ax1, ax2 = fig.subplots(1, 2)
    for i, g in enumerate(kept):
        c = SEQUENCE[(i + (len(SEQUENCE) - len(kept)) if len(kept) < len(SEQUENCE) else i) % len(SEQUENCE)]
        k, e = _np(kept[g]), _np(expected[g])
        ax1.plot(p, e, color=c, lw=1.2, label=f"G = {g}: 1 - p^G - (1-p)^G")
        ax1.plot(p, k, ls="none", marker="o", ms=4, color=c, label=f"G = {g}: measured")
        inner = e > 0
        ax2.plot(p[inner], 1.0 / e[inner], color=c, marker="o", ms=3, label=f"G = {g}")
    ax1.set(xlabel="accuracy p of the policy on the prompt", ylabel="fraction of groups kept",
            title="groups kept by dynamic sampling", ylim=(-0.03, 1.03))
    ax1.legend(frameon=False, loc="lower center", fontsize=9)
    ax2.set(xlabel="accuracy p", ylabel="prompts sampled per kept group", title="cost of filling a batch",
            ylim=(0.9, None))
    ax2.legend(frameon=False, loc="upper center")
    return fig


@styled
def fig_overlong(lengths: torch.Tensor, penalty: torch.Tensor, max_len: int, buffer_len: int) -> Figure:
    """DAPO's soft overlong punishment against the response length.

    Args:
        lengths: (N,) response lengths.
        penalty: (N,) ``overlong_penalty(lengths, max_len, buffer_len)``.
        max_len, buffer_len: the settings used.
    """
    fig = _figure(3.0)
    ax = fig.subplots()
    ax.axvspan(max_len - buffer_len, max_len, color=PALETTE["ink"], alpha=0.10, lw=0,
               label=f"buffer: last {buffer_len} tokens")
    ax.plot(_np(lengths), _np(penalty), color=PALETTE["ink"], lw=2, label="reward penalty")
    ax.axvline(max_len, color="black", lw=0.8)
    ax.text(max_len, -0.5, "max_len ", va="center", ha="right")
    ax.set(xlabel="response length (tokens)", ylabel="added to the reward", title="overlong reward shaping")
    ax.legend(frameon=False, loc="lower left")
    return fig


def _gate_kind(rho: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """0 kept, 1 gated because the entropy fell (rho <= low), 2 because it rose (rho >= high)."""
    return np.asarray(Band.of(bounds, "bounds").kind(np.asarray(rho)))


@styled
def fig_rho_tokens(rho, old_entropy, bounds: tuple[float, float] = (0.95, 1.05), clip_to: float = 0.5) -> Figure:
    """Entropy ratios of logged response tokens: their distribution (left) and against the old entropy (right).

    Args:
        rho: (N,) entropy ratios of N tokens (e.g. ``tokens.jsonl``'s ``rho``).
        old_entropy: (N,) their old entropies (nats).
        bounds: the ERC band.
        clip_to: the histogram shows log-ratios in [-clip_to, clip_to] (values beyond are piled at the edges).
    """
    r, h = _np(rho).astype(float), _np(old_entropy).astype(float)
    kind = _gate_kind(r, bounds)
    fig = _figure(3.2)
    ax1, ax2 = fig.subplots(1, 2)
    lr = np.clip(np.log(r), -clip_to, clip_to)
    bins = np.linspace(-clip_to, clip_to, 41)
    names = ("kept", "gated: entropy fell", "gated: entropy rose")
    colors = (PALETTE["kept"], PALETTE["fell"], PALETTE["rose"])
    ax1.hist([lr[kind == k] for k in range(3)], bins=bins, stacked=True, color=colors, label=names)
    ax1.axvspan(np.log(bounds[0]), np.log(bounds[1]), color=PALETTE["erc"], alpha=0.12, lw=0)
    ax1.set(xlabel="log rho (clipped to the axis)", ylabel="tokens", title="entropy ratio of logged tokens")
    ratio_axis(ax1, "y")
    for k in range(3):
        ax2.scatter(h[kind == k], r[kind == k], s=6, color=colors[k], alpha=0.6, label=names[k])
    ax2.axhspan(*bounds, color=PALETTE["erc"], alpha=0.12, lw=0)
    ax2.axhline(1.0, color=PALETTE["old"], lw=0.6)
    ax2.set(xlabel="old entropy H_old (nats)", ylabel="rho (log scale)", title="ratio against old entropy")
    ratio_axis(ax2, "y")
    fig.legend(*ax1.get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
    return fig


@styled
def fig_offpolicy_updates(rho: torch.Tensor, ratio: torch.Tensor, response_mask: torch.Tensor,
                          bounds: tuple[float, float] = (0.95, 1.05),
                          clip: tuple[float, float] = (0.2, 0.28)) -> Figure:
    """How one rollout's tokens drift over the mini-batch updates of a step: spread of the entropy ratio (left),
    and the fraction of tokens outside the ERC band and outside the PPO band (right).

    Args:
        rho: (U + 1, B, T) entropy ratios of every token before update u (u = U: after the last one).
        ratio: (U + 1, B, T) probability ratios r, same positions.
        response_mask: (B, T) bool.
        bounds: the ERC band; clip: PPO's (clip_low, clip_high).
    """
    m = _np(response_mask).astype(bool)
    r, pr = _np(rho).astype(float), _np(ratio).astype(float)
    u = np.arange(r.shape[0])
    vals = [r[i][m] for i in u]
    fig = _figure(3.4)
    ax1, ax2 = fig.subplots(1, 2)
    for q, alpha in ((0.0, 0.15), (0.05, 0.3), (0.25, 0.5)):
        ax1.fill_between(u, [np.quantile(v, q) for v in vals], [np.quantile(v, 1 - q) for v in vals],
                         color=PALETTE["old"], alpha=alpha, lw=0,
                         label="min-max" if q == 0 else f"{q:.0%}-{1 - q:.0%}")
    ax1.axhspan(*bounds, color=PALETTE["erc"], alpha=0.25, lw=0, label=f"ERC band {tuple(bounds)}")
    ax1.set(xlabel="updates already taken on this rollout", ylabel="rho", title="entropy ratio spread", xticks=u)
    ax1.legend(frameon=False)
    erc = [float(Band.of(bounds, "bounds").gated(v).mean()) for v in vals]
    ppo = [float(((p[m] < 1 - clip[0]) | (p[m] > 1 + clip[1])).mean()) for p in pr]
    ax2.plot(u, erc, marker="o", color=PALETTE["erc"], label="outside the ERC band")
    ax2.plot(u, ppo, marker="s", ls="--", color=PALETTE["base"], label=f"r outside [1-{clip[0]:g}, 1+{clip[1]:g}]")
    ax2.set(xlabel="updates already taken on this rollout", ylabel="fraction of response tokens",
            title="what each gate would see", xticks=u, ylim=(-0.02, None))
    ax2.legend(frameon=False)
    return fig


@styled
def fig_gate_plane(ratio: torch.Tensor, rho: torch.Tensor, flow: dict, bounds: tuple[float, float],
                   clip: tuple[float, float]) -> Figure:
    """Every token with A != 0 in the (probability ratio r, entropy ratio rho) plane, colored by what stops its
    gradient; A > 0 (left) and A < 0 (right), since PPO clips them on opposite sides.

    Args:
        ratio, rho: (B, T) probability and entropy ratios.
        flow: ``erc_core.book.runs.gradient_flow`` output for the same tokens.
        bounds: the ERC band; clip: PPO's (clip_low, clip_high).
    """
    r, q = _np(ratio).astype(float), _np(rho).astype(float)
    act = _np(flow["active"]).astype(bool)
    adv = _np(flow["advantage"]).astype(float)
    kinds = [("grad", "sends gradient", PALETTE["kept"]), ("erc_gated", "stopped by ERC", PALETTE["gated"]),
             ("ppo_clipped", "stopped by the clip", PALETTE["base"]), ("both", "stopped by both", PALETTE["both"])]
    fig = _figure(4.6)
    axes = fig.subplots(1, 2, sharey=True)
    pos = act & (adv > 0)
    for ax, sel, title in ((axes[0], pos, "A > 0"), (axes[1], act & ~pos, "A < 0")):
        for key, label, color in kinds:
            k = sel & _np(flow[key]).astype(bool)
            ax.scatter(r[k], q[k], s=8, color=color, alpha=0.7, label=f"{label} ({int(k.sum())})")
        ax.axhspan(*bounds, color=PALETTE["erc"], alpha=0.15, lw=0)
        ax.axvspan(1 - clip[0], 1 + clip[1], color=PALETTE["base"], alpha=0.15, lw=0)
        ax.set(xlabel="probability ratio r", title=title)
        ratio_axis(ax, "x")
        ratio_axis(ax, "y")
        ax.legend(frameon=False, markerscale=1.5, loc="upper center", bbox_to_anchor=(0.5, -0.2), ncol=1)
    axes[0].set_ylabel("entropy ratio rho")
    return fig


_CURVES = (("reward_mean", "mean sampled reward"), ("eval_acc", "greedy eval accuracy"),
           ("entropy_mean", "mean token entropy (nats)"), ("grad_norm", "grad norm (before clipping)"),
           ("ppo_clipfrac", "PPO clip fraction"), ("erc_clipfrac", "ERC gated fraction"))


@styled
def fig_run_curves(runs: dict, smooth: int = 3) -> Figure:
    """Training curves of several runs, one panel per metric; for a run without ERC the gated-fraction panel
    shows (dashed) the fraction of tokens the gate WOULD have gated (``ratio_outside_frac``).

    Args:
        runs: ``{name: erc_core.book.runs.read_metrics(...)}`` DataFrames indexed by step.
        smooth: moving-average window in steps for the per-step metrics (1 = raw).
    """
    fig = _figure(7.4)
    axes = fig.subplots(3, 2, sharex=True).ravel()
    used: set[str] = set()
    for i, (name, df) in enumerate(runs.items()):
        erc_on = bool((df["erc_clipfrac"].fillna(0) > 0).any())
        c = PALETTE["erc"] if erc_on else PALETTE["base"]
        if c in used:  # a second run of the same kind: a colour without meaning
            c = SERIES[i % len(SERIES)]
        used.add(c)
        style = {"lw": 3.0, "alpha": 0.6, "zorder": 2} if i == 0 else {"lw": 1.5, "zorder": 3 + i}
        for ax, (key, title) in zip(axes, _CURVES):
            if key == "eval_acc":
                s = df[key].dropna()
                ax.plot(s.index, s.values, marker="os^D"[i % 4], ms=4, color=c, label=name, lw=1.4, zorder=3 + i)
            else:
                col = key if (key != "erc_clipfrac" or erc_on) else "ratio_outside_frac"
                s = df.loc[df.index > 0, col].rolling(smooth, min_periods=1).mean()
                ls = "--" if col == "ratio_outside_frac" else "-"
                label = f"{name} (would gate)" if col == "ratio_outside_frac" else name
                ax.plot(s.index, s.values, color=c, ls=ls, label=label, **style)
            ax.set(title=title)
    for ax in axes[-2:]:
        ax.set_xlabel("RL step")
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(lab, h)
    fig.legend(handles.values(), handles.keys(), loc="outside lower center", ncol=min(3, len(handles)),
               frameon=False)
    return fig


@styled
def fig_gated_entropy(tokens: dict, bounds: tuple[float, float] = (0.95, 1.05)) -> Figure:
    """Old entropy of the tokens an ERC band keeps and gates (outside the band), one panel per run.

    Args:
        tokens: ``{name: (rho (N,), old_entropy (N,))}`` of logged tokens (``tokens.jsonl``'s ``rho`` and
            ``old_entropy``).
        bounds: the ERC band.
    """
    n = len(tokens)
    fig = _figure(3.4 if n <= 2 else 3.0 * math.ceil(n / 2) + 0.6)
    axes = np.atleast_1d(fig.subplots(1 if n <= 2 else math.ceil(n / 2), min(n, 2), sharey=True)).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    hmax = max(float(_np(h).max()) for _, h in tokens.values())
    bins = np.linspace(0, hmax * 1.02 + 1e-6, 25)
    for ax, (name, (rho, h)) in zip(axes, tokens.items()):
        r, h = _np(rho).astype(float), _np(h).astype(float)
        kind = _gate_kind(r, bounds)
        ax.hist([h[kind == 0], h[kind == 1], h[kind == 2]], bins=bins, stacked=True,
                color=(PALETTE["kept"], PALETTE["fell"], PALETTE["rose"]),
                label=("inside the band", "rho <= low", "rho >= high"))
        ax.set(title=name, xlabel="old entropy H_old (nats)")
        ratio_axis(ax, "y")
    axes[0].set_ylabel("tokens")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="outside lower center", ncol=3, frameon=False)
    return fig


#: Width of the intro's figure in inches (shown at most 420 CSS px wide, so that it stays legible on a
#: 390 px phone).
HERO_WIDTH = 4.0
#: Font sizes of the intro's figure (larger than :data:`erc_core.book.style.RC`'s: it is shown at phone width too).
_HERO_RC = {"font.size": 11, "axes.titlesize": 12, "axes.labelsize": 11, "xtick.labelsize": 10,
            "ytick.labelsize": 10, "legend.fontsize": 10}


@styled
def fig_hero(drifts: dict, clip: tuple[float, float] = (0.2, 0.28),
             erc_bounds: tuple[float, float] = (0.95, 1.05)) -> Figure:
    """PPO-clip vs ERC on the same drifts, step by step: which steps each lets the sampled token's gradient
    through (dot) and which it stops (cross). Top: the probability ratio r that PPO-clip checks; bottom: the
    entropy ratio rho that ERC checks. :data:`HERO_WIDTH` inches wide, with text that stays >= 9 pt at 390 px.

    Args:
        drifts: ``{"collapse": (r, rho), "explode": (r, rho)}``, (S + 1,) each (:func:`erc_core.book.toy.drift_ratios`).
        clip: PPO's (clip_low, clip_high): r passes inside [1 - clip_low, 1 + clip_high].
        erc_bounds: ERC's band: rho passes strictly inside it.
    """
    import matplotlib as mpl

    with mpl.rc_context(_HERO_RC):
        fig = Figure(figsize=(HERO_WIDTH, 5.6), dpi=DPI, layout="constrained")
        ax_ppo, ax_erc = fig.subplots(2, 1, sharex=True)
        erc_band = Band.of(erc_bounds, "erc_bounds")
        ppo_band = (1 - clip[0], 1 + clip[1])
        names = {"collapse": ("fell", "entropy collapses"), "explode": ("rose", "entropy explodes")}
        for ax, idx, band, key, title in (
                (ax_ppo, 0, ppo_band, "base", "PPO-clip checks r, the sampled\ntoken's probability ratio"),
                (ax_erc, 1, erc_band, "erc", "ERC checks rho, the entropy ratio")):
            low, high = band
            ax.axhspan(low, high, color=TINTS[key], alpha=0.7, lw=0, zorder=0)
            ax.axhline(1.0, color=PALETTE["old"], lw=0.8, zorder=1)
            for i, (target, (color, label)) in enumerate(names.items()):
                y = _np(drifts[target][idx]).astype(float)
                x = np.arange(len(y))
                keep = np.asarray(erc_band.keep(y)) if key == "erc" else (y >= low) & (y <= high)
                lay = _layer_style(i)
                ax.plot(x, y, color=PALETTE[color], lw=lay["lw"], alpha=lay["alpha"], zorder=lay["zorder"],
                        label=label)
                ax.scatter(x[keep], y[keep], s=36 if i == 0 else 16, color=PALETTE[color], zorder=5 + i)
                ax.scatter(x[~keep], y[~keep], s=60, marker="X", color=PALETTE["gated"], zorder=7)
            ax.set(title=title, ylabel="r" if key == "base" else "rho")
            ax.text(0.03, 0.04, f"{'clip' if key == 'base' else 'ERC'} band ({low:g}, {high:g})",
                    transform=ax.transAxes, va="bottom", ha="left")
        ax_erc.set_xlabel("drift step (updates on one rollout)")
        ax_erc.xaxis.set_major_locator(MaxNLocator(integer=True))
        handles = [Line2D([], [], color=PALETTE[c], lw=2.0, label=lab) for c, lab in names.values()]
        handles += [Line2D([], [], ls="none", marker="o", color=PALETTE["ink"], label="gradient passes"),
                    Line2D([], [], ls="none", marker="X", ms=8, color=PALETTE["gated"], label="gradient stopped")]
        fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, handlelength=1.4,
                   columnspacing=1.0)
    return fig
