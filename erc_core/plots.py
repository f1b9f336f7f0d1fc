"""The book's figures: each function draws one figure from numbers a chapter computed with erc_core.

Functions take tensors (or arrays) and return a :class:`matplotlib.figure.Figure` built without pyplot, so they
hold no global state; a notebook with ``%matplotlib inline`` shows the returned figure as a PNG.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import torch
from matplotlib.colors import ListedColormap, TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.patches import Patch
from matplotlib.ticker import NullFormatter

__all__ = ["COLORS", "fig_temperature", "fig_ppo_blind_spot", "fig_erc_gate", "fig_offpolicy_drift",
           "fig_position_drift", "fig_group_advantages", "fig_clip_higher", "fig_agg_weights",
           "fig_dynamic_sampling", "fig_overlong", "fig_rho_tokens", "fig_offpolicy_updates", "fig_gate_plane",
           "fig_run_curves", "fig_gated_entropy"]

COLORS = {"old": "#7f7f7f", "collapse": "#1f77b4", "explode": "#d62728", "kept": "#2ca02c", "band": "#2ca02c",
          "ppo": "#ff7f0e", "erc": "#2ca02c", "low": "#1f77b4", "high": "#d62728", "pad": "#e6e6e6"}


def _np(x: torch.Tensor | np.ndarray | Sequence[float]) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


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
    fig = Figure(figsize=(7.5, 3.2), dpi=120, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    width = 0.8 / len(p)
    for i, (row, temp) in enumerate(zip(p, prob_temperatures)):
        ax1.bar(np.arange(p.shape[1]) + (i - (len(p) - 1) / 2) * width, row, width, label=f"T = {temp:g}")
    ax1.set(xlabel="token" if vocab <= max_tokens else f"token (first {max_tokens} of {vocab})",
            ylabel="probability", title=f"softmax(z / T), '{labels[0]}'")
    ax1.legend(frameon=False)
    for k, name in enumerate(labels):
        ax2.plot(t, h[:, k], marker="o", ms=3, label=name)
    ax2.axhline(np.log(vocab), color=COLORS["old"], ls="--", lw=1)
    ax2.text(t[0], np.log(vocab), f"log V = {np.log(vocab):.2f}", va="bottom", fontsize=8)
    ax2.set(xscale="log", xlabel="temperature T", ylabel="entropy H (nats)", title="entropy vs temperature",
            ylim=(0, np.log(vocab) * 1.12))
    ax2.legend(frameon=False, fontsize=8)
    return fig


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
    fig = Figure(figsize=(7.5, 5.6), dpi=120, layout="constrained")
    axes = fig.subplot_mosaic([["p", "p"], ["ppo", "erc"]])
    ax1 = axes["p"]
    x = np.arange(len(p0))
    for i, (row, name) in enumerate(((p0, "old"), (pc, "collapse"), (pe, "explode"))):
        ax1.bar(x + (i - 1) * 0.27, row, 0.27, color=COLORS[name], label=name if name == "old" else f"{name} (last step)")
    if token < len(p0):
        ax1.axvspan(token - 0.45, token + 0.45, color="#ffd92f", alpha=0.35, lw=0, label="sampled token")
    ax1.set(xlabel="token" if vocab <= max_tokens else f"token (first {max_tokens} of {vocab})",
            ylabel="probability", title="the old policy and the last step of each drift", xticks=x)
    ax1.legend(frameon=False, fontsize=8)
    steps = np.arange(len(_np(ratio_collapse)))
    for ax, (a, b), band, title, ylabel in (
            (axes["ppo"], (ratio_collapse, ratio_explode), (1 - clip[0], 1 + clip[1]), "what PPO-clip sees",
             "sampled-token ratio r"),
            (axes["erc"], (rho_collapse, rho_explode), erc_bounds, "what ERC sees", "entropy ratio rho")):
        ax.axhspan(*band, color=COLORS["band"], alpha=0.15, lw=0, label=f"band ({band[0]:.2f}, {band[1]:.2f})")
        ax.plot(steps, _np(a), marker="o", color=COLORS["collapse"], label="collapse")
        ax.plot(steps, _np(b), marker="s", color=COLORS["explode"], label="explode")
        ax.axhline(1.0, color=COLORS["old"], lw=0.8)
        ax.set(xlabel="step", ylabel=ylabel, title=title, xticks=steps)
        ax.legend(frameon=False, fontsize=8)
    lo = min(1 - clip[0], float(_np(rho_collapse).min())) - 0.05
    hi = max(1 + clip[1], float(_np(rho_explode).max())) + 0.05
    axes["ppo"].set_ylim(lo, hi)
    axes["erc"].set_ylim(lo, hi)
    return fig


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
    fig = Figure(figsize=(7.5, 2.4 + 0.7 * batch), dpi=120, layout="constrained")
    ax1, ax2 = fig.subplots(2, 1, sharex=True)
    span = max(abs(float(r[m].min()) - 1.0), abs(float(r[m].max()) - 1.0), bounds[1] - 1.0, 1.0 - bounds[0]) * 1.05
    im = ax1.imshow(np.where(m, r, np.nan), cmap="coolwarm", aspect="auto",
                    norm=TwoSlopeNorm(vcenter=1.0, vmin=1.0 - span, vmax=1.0 + span))
    gated = m & ~k
    yy, xx = np.nonzero(gated)
    ax1.scatter(xx, yy, marker="x", color="black", s=30, label=f"gated: rho outside ({bounds[0]:g}, {bounds[1]:g})")
    fig.colorbar(im, ax=ax1, label="rho", shrink=0.9)
    ax1.set(title="entropy ratio rho = H_new / H_old per token", ylabel="response")
    ax1.legend(loc="upper right", frameon=True, fontsize=8)
    state = np.where(~m, 0, np.where(gated, 1, np.where(g != 0, 2, 3)))
    cmap = ListedColormap([COLORS["pad"], "#000000", COLORS["kept"], "#b8e0b8"])
    ax2.imshow(state, cmap=cmap, vmin=-0.5, vmax=3.5, aspect="auto")
    ax2.set(title="gradient each token sends to the policy", xlabel="token position t", ylabel="response")
    handles = [Patch(color=c, label=lab) for c, lab in
               ((COLORS["kept"], "kept, gradient != 0"), ("#b8e0b8", "kept, PPO-clipped: gradient 0"),
                ("#000000", "gated by ERC: gradient 0"), (COLORS["pad"], "padding"))]
    fig.legend(handles=handles, loc="outside lower center", ncol=2, frameon=False, fontsize=8)
    for ax in (ax1, ax2):
        ax.set_yticks(range(batch))
        ax.set_xticks(range(0, seq, max(1, seq // 8)))
    return fig


# ---------------------------------------------------------------------------------------------- chapter 2
def _envelope(ax, x, rng, color, label, ls="-"):
    lo, hi = rng[:, 0], rng[:, 1]
    ax.fill_between(x, lo, hi, color=color, alpha=0.18, lw=0)
    ax.plot(x, lo, color=color, ls=ls, lw=1.6, label=label)
    ax.plot(x, hi, color=color, ls=ls, lw=1.6)


def fig_offpolicy_drift(ppo, erc, clip: tuple[float, float] = (0.2, 0.28),
                        erc_bounds: tuple[float, float] = (0.95, 1.05)) -> Figure:
    """K off-policy updates on the same samples, PPO-clip alone vs with the ERC gate (x: update).

    Top left: range (min to max) of the sampled tokens' ratios; top right: of the un-sampled tokens' ratios
    pi_k(v) / pi_old(v); bottom left: the entropy ratio per position (thin lines: PPO-clip) and its range;
    bottom right: mean ``|rho - 1|`` over positions.

    Args:
        ppo, erc: :class:`erc_core.toy.UpdateTrace` of the run without and with the ERC gate.
        clip: PPO's (clip_low, clip_high).
        erc_bounds: ERC's (low, high).
    """
    x = np.arange(_np(ppo.ratio).shape[0])
    fig = Figure(figsize=(7.5, 5.8), dpi=120, layout="constrained")
    axes = fig.subplots(2, 2, sharex=True)
    band = (1 - clip[0], 1 + clip[1])
    panels = ((axes[0, 0], "sampled_ratio_range", "sampled tokens: r = pi / pi_old"),
              (axes[0, 1], "unsampled_ratio_range", "un-sampled tokens: pi(v) / pi_old(v)"))
    lims = []
    for ax, meth, title in panels:
        ax.axhspan(*band, color=COLORS["ppo"], alpha=0.12, lw=0, label=f"PPO clip band [{band[0]:g}, {band[1]:g}]")
        _envelope(ax, x, _np(getattr(ppo, meth)()), COLORS["ppo"], "PPO-clip")
        _envelope(ax, x, _np(getattr(erc, meth)()), COLORS["erc"], "PPO-clip + ERC", ls="--")
        ax.axhline(1.0, color=COLORS["old"], lw=0.8)
        ax.set(title=title, ylabel="probability ratio")
        lims += list(ax.get_ylim())
    for ax, _, _ in panels:
        ax.set_ylim(min(lims), max(lims))
    axes[0, 0].legend(frameon=False, fontsize=7, loc="upper left")
    ax = axes[1, 0]
    rho_p = _np(ppo.rho)[:, _np(ppo.response_mask).astype(bool)]
    ax.plot(x, rho_p, color=COLORS["ppo"], lw=0.5, alpha=0.35)
    ax.axhspan(*erc_bounds, color=COLORS["band"], alpha=0.15, lw=0,
               label=f"ERC band ({erc_bounds[0]:g}, {erc_bounds[1]:g})")
    _envelope(ax, x, _np(ppo.rho_range()), COLORS["ppo"], "PPO-clip (lines: positions)")
    _envelope(ax, x, _np(erc.rho_range()), COLORS["erc"], "PPO-clip + ERC", ls="--")
    ax.axhline(1.0, color=COLORS["old"], lw=0.8)
    ax.set(title="entropy ratio rho = H / H_old", xlabel="update", ylabel="rho")
    ax.legend(frameon=False, fontsize=7, loc="upper left")
    ax = axes[1, 1]
    ax.plot(x, _np(ppo.rho_deviation()), color=COLORS["ppo"], marker="o", ms=3, label="PPO-clip")
    ax.plot(x, _np(erc.rho_deviation()), color=COLORS["erc"], marker="s", ms=3, ls="--", label="PPO-clip + ERC")
    ax.axhline(erc_bounds[1] - 1.0, color=COLORS["band"], lw=0.8, ls=":", label="half-width of the ERC band")
    ax.set(title="mean |rho - 1| over positions", xlabel="update", ylabel="|rho - 1|", ylim=(0, None))
    ax.legend(frameon=False, fontsize=7)
    return fig


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
    fig = Figure(figsize=(7.5, 2.9), dpi=120, layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(rows[0]))
    for i, (row, color, label) in enumerate(zip(rows, (COLORS["old"], COLORS["ppo"], COLORS["erc"]),
                                                ("old policy", f"PPO-clip (rho = {rho_ppo:.2f})",
                                                 f"PPO-clip + ERC (rho = {rho_erc:.2f})"))):
        ax.bar(x + (i - 1) * 0.27, row, 0.27, color=color, label=label)
    if token < len(x):
        ax.axvspan(token - 0.45, token + 0.45, color="#ffd92f", alpha=0.35, lw=0, label="sampled token")
    ax.set(xlabel="token", ylabel="probability", xticks=x, title="one position, before and after the updates")
    ax.legend(frameon=False, fontsize=8)
    return fig


# ---------------------------------------------------------------------------------------------- chapter 4
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
    fig = Figure(figsize=(7.5, 3.0), dpi=120, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    for ax, a, title in ((axes[0], a1, "GRPO: (r - mean) / std"), (axes[1], a2, "Dr. GRPO: r - mean")):
        correct = np.array([a[i][s[i] == 1][0] if (s[i] == 1).any() else np.nan for i in range(len(s))])
        wrong = np.array([a[i][s[i] == 0][0] if (s[i] == 0).any() else np.nan for i in range(len(s))])
        ax.plot(k, correct, marker="o", color=COLORS["kept"], label="a correct response")
        ax.plot(k, wrong, marker="s", color=COLORS["high"], label="a wrong response")
        ax.axhline(0, color=COLORS["old"], lw=0.8)
        ax.set(title=title, xlabel=f"correct responses in the group (of {g})", xticks=k)
    axes[0].set_ylabel("advantage")
    axes[0].legend(frameon=False, fontsize=8)
    return fig


def fig_clip_higher(ratios: torch.Tensor, curves: dict, clip_c: float, bands: dict, pos_max: float = 2.0) -> Figure:
    """Per-token loss against the ratio, for A > 0 (left, linear) and A < 0 (right, log); dotted where its gradient is 0.

    Args:
        ratios: (N,) ratios (x axis, log scale).
        curves: ``{(name, sign): (loss, dloss_dr)}`` with sign +1 or -1, (N,) tensors each
            (``toy.per_token_loss_curve``).
        clip_c: the dual-clip bound (marked on the A < 0 panel).
        bands: ``{name: (1 - clip_low, 1 + clip_high)}``, the clip band of each setting.
        pos_max: the A > 0 panel shows ratios up to this value.
    """
    r = _np(ratios)
    fig = Figure(figsize=(7.5, 3.2), dpi=120, layout="constrained")
    axes = fig.subplots(1, 2)
    colors = [COLORS["old"], COLORS["ppo"], COLORS["low"], COLORS["high"]]
    names = list(bands)
    for ax, sign in ((axes[0], 1), (axes[1], -1)):
        shown = (r <= pos_max) if sign > 0 else np.ones_like(r, dtype=bool)  # A > 0: nothing happens past the band
        for i, name in enumerate(names):
            if (name, sign) not in curves:
                continue
            loss, grad = (_np(v)[shown] for v in curves[(name, sign)])
            flows = grad != 0
            c = colors[i % len(colors)]
            lw = 3.2 - 1.4 * i
            ax.plot(r[shown], np.where(flows, loss, np.nan), color=c, lw=lw, label=f"{name}: gradient")
            ax.plot(r[shown], np.where(flows, np.nan, loss), color=c, lw=lw, ls=":", label=f"{name}: clipped")
            for edge in bands[name]:
                ax.axvline(edge, color=c, lw=0.7, ls="--")
        ax.axvline(1.0, color="black", lw=0.6)
        ax.set(xscale="linear" if sign > 0 else "log", ylabel="per-token loss",
               xlabel="ratio r" if sign > 0 else "ratio r (log scale)",
               title=f"A = {sign:+d}" + ("" if sign > 0 else f" (dual clip c = {clip_c:g})"))
    axes[1].axvline(clip_c, color=COLORS["high"], lw=1.0)
    axes[1].text(clip_c, axes[1].get_ylim()[0], " c", color=COLORS["high"], va="bottom")
    axes[0].legend(frameon=False, fontsize=7)
    return fig


def fig_agg_weights(lengths: torch.Tensor, weights: dict) -> Figure:
    """How each aggregation weighs responses of different lengths: per token (left), per response (right).

    Args:
        lengths: (B,) response lengths.
        weights: ``{agg_mode: (B,) per-token weight}`` (``toy.agg_token_weights``).
    """
    n = _np(lengths).astype(float)
    fig = Figure(figsize=(7.5, 3.2), dpi=120, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    x = np.arange(len(n))
    width = 0.8 / len(weights)
    for i, (name, wt) in enumerate(weights.items()):
        wt = _np(wt).astype(float)
        share = wt * n / max(float((wt * n).sum()), 1e-30)
        off = (i - (len(weights) - 1) / 2) * width
        ax1.bar(x + off, wt / max(float(wt.max()), 1e-30), width, label=name)
        ax2.bar(x + off, share, width, label=name)
    labels = [f"{int(v)}" for v in n]
    ax1.set(xticks=x, xticklabels=labels, xlabel="response length (tokens)", yscale="log",
            ylabel="weight of one token (max = 1)", title="weight per token")
    ax2.set(xticks=x, xticklabels=labels, xlabel="response length (tokens)", ylabel="share of the loss",
            title="weight per response")
    ax2.legend(frameon=False, fontsize=7)
    return fig


def fig_dynamic_sampling(accuracies: torch.Tensor, kept: dict, expected: dict) -> Figure:
    """DAPO dynamic sampling: fraction of groups kept (left) and prompts sampled per kept group (right).

    Args:
        accuracies: (N,) per-response success probability p.
        kept: ``{group_size: (N,) measured kept fraction}``.
        expected: ``{group_size: (N,) closed form 1 - p^G - (1 - p)^G}``.
    """
    p = _np(accuracies)
    fig = Figure(figsize=(7.5, 3.0), dpi=120, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for i, g in enumerate(kept):
        c = [COLORS["low"], COLORS["high"], COLORS["kept"], COLORS["ppo"]][i % 4]
        k, e = _np(kept[g]), _np(expected[g])
        ax1.plot(p, e, color=c, lw=1.2, label=f"G = {g}: 1 - p^G - (1-p)^G")
        ax1.plot(p, k, ls="none", marker="o", ms=4, color=c, label=f"G = {g}: measured")
        inner = e > 0
        ax2.plot(p[inner], 1.0 / e[inner], color=c, marker="o", ms=3, label=f"G = {g}")
    ax1.set(xlabel="accuracy p of the policy on the prompt", ylabel="fraction of groups kept",
            title="groups kept by dynamic sampling", ylim=(-0.03, 1.03))
    ax1.legend(frameon=False, fontsize=7, loc="lower center")
    ax2.set(xlabel="accuracy p", ylabel="prompts sampled per kept group", title="cost of filling a batch",
            ylim=(0.9, None))
    ax2.legend(frameon=False, fontsize=8, loc="upper center")
    return fig


def fig_overlong(lengths: torch.Tensor, penalty: torch.Tensor, max_len: int, buffer_len: int) -> Figure:
    """DAPO's soft overlong punishment against the response length.

    Args:
        lengths: (N,) response lengths.
        penalty: (N,) ``overlong_penalty(lengths, max_len, buffer_len)``.
        max_len, buffer_len: the settings used.
    """
    fig = Figure(figsize=(7.5, 2.8), dpi=120, layout="constrained")
    ax = fig.subplots()
    ax.axvspan(max_len - buffer_len, max_len, color=COLORS["high"], alpha=0.12, lw=0,
               label=f"buffer: last {buffer_len} tokens")
    ax.plot(_np(lengths), _np(penalty), color=COLORS["high"], lw=2, label="reward penalty")
    ax.axvline(max_len, color="black", lw=0.8)
    ax.text(max_len, -0.5, "max_len ", va="center", ha="right", fontsize=8)
    ax.set(xlabel="response length (tokens)", ylabel="added to the reward", title="overlong reward shaping")
    ax.legend(frameon=False, fontsize=8, loc="lower left")
    return fig


def _gate_kind(rho: np.ndarray, bounds: tuple[float, float]) -> np.ndarray:
    """0 kept, 1 gated because the entropy fell (rho <= low), 2 because it rose (rho >= high)."""
    return np.where(rho <= bounds[0], 1, np.where(rho >= bounds[1], 2, 0))


def fig_rho_tokens(rho, old_entropy, bounds: tuple[float, float] = (0.95, 1.05), clip_to: float = 0.5) -> Figure:
    """Entropy ratios of logged response tokens: their distribution (left) and against the old entropy (right).

    Args:
        rho: (N,) entropy ratios of N tokens (e.g. ``tokens.jsonl``'s ``ratio``).
        old_entropy: (N,) their old entropies (nats).
        bounds: the ERC band.
        clip_to: the histogram shows log-ratios in [-clip_to, clip_to] (values beyond are piled at the edges).
    """
    r, h = _np(rho).astype(float), _np(old_entropy).astype(float)
    kind = _gate_kind(r, bounds)
    fig = Figure(figsize=(7.5, 3.2), dpi=120, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    lr = np.clip(np.log(r), -clip_to, clip_to)
    bins = np.linspace(-clip_to, clip_to, 41)
    names = ("kept", "gated: entropy fell", "gated: entropy rose")
    colors = (COLORS["kept"], COLORS["low"], COLORS["high"])
    ax1.hist([lr[kind == k] for k in range(3)], bins=bins, stacked=True, color=colors, label=names)
    ax1.axvspan(np.log(bounds[0]), np.log(bounds[1]), color=COLORS["band"], alpha=0.12, lw=0)
    ax1.set(xlabel="log rho (clipped to the axis)", ylabel="tokens", title="entropy ratio of logged tokens",
            yscale="log")
    ax1.legend(frameon=False, fontsize=7)
    for k in range(3):
        ax2.scatter(h[kind == k], r[kind == k], s=6, color=colors[k], alpha=0.6, label=names[k])
    ax2.axhspan(*bounds, color=COLORS["band"], alpha=0.12, lw=0)
    ax2.axhline(1.0, color=COLORS["old"], lw=0.6)
    ax2.set(xlabel="old entropy H_old (nats)", ylabel="rho", yscale="log", title="ratio against old entropy")
    return fig


def fig_offpolicy_updates(rho: torch.Tensor, ratio: torch.Tensor, response_mask: torch.Tensor,
                          bounds: tuple[float, float] = (0.95, 1.05), clip: tuple[float, float] = (0.2, 0.28)) -> Figure:
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
    fig = Figure(figsize=(7.5, 3.0), dpi=120, layout="constrained")
    ax1, ax2 = fig.subplots(1, 2)
    for q, alpha in ((0.0, 0.15), (0.05, 0.3), (0.25, 0.5)):
        ax1.fill_between(u, [np.quantile(v, q) for v in vals], [np.quantile(v, 1 - q) for v in vals],
                         color=COLORS["old"], alpha=alpha, lw=0,
                         label="min-max" if q == 0 else f"{q:.0%}-{1 - q:.0%}")
    ax1.axhspan(*bounds, color=COLORS["band"], alpha=0.15, lw=0, label=f"ERC band {bounds}")
    ax1.set(xlabel="updates already taken on this rollout", ylabel="rho", title="entropy ratio spread", xticks=u)
    ax1.legend(frameon=False, fontsize=7)
    erc = [float(((v <= bounds[0]) | (v >= bounds[1])).mean()) for v in vals]
    ppo = [float(((p[m] < 1 - clip[0]) | (p[m] > 1 + clip[1])).mean()) for p in pr]
    ax2.plot(u, erc, marker="o", color=COLORS["erc"], label="outside the ERC band")
    ax2.plot(u, ppo, marker="s", color=COLORS["ppo"], label=f"r outside [1-{clip[0]:g}, 1+{clip[1]:g}]")
    ax2.set(xlabel="updates already taken on this rollout", ylabel="fraction of response tokens",
            title="what each gate would see", xticks=u, ylim=(-0.02, None))
    ax2.legend(frameon=False, fontsize=7)
    return fig


def fig_gate_plane(ratio: torch.Tensor, rho: torch.Tensor, flow: dict, bounds: tuple[float, float],
                   clip: tuple[float, float]) -> Figure:
    """Every token with A != 0 in the (probability ratio r, entropy ratio rho) plane, colored by what stops its
    gradient; A > 0 (left) and A < 0 (right), since PPO clips them on opposite sides.

    Args:
        ratio, rho: (B, T) probability and entropy ratios.
        flow: ``erc_core.runs.gradient_flow`` output for the same tokens.
        bounds: the ERC band; clip: PPO's (clip_low, clip_high).
    """
    r, q = _np(ratio).astype(float), _np(rho).astype(float)
    act = _np(flow["active"]).astype(bool)
    adv = _np(flow["advantage"]).astype(float)
    kinds = [("grad", "sends gradient", COLORS["kept"]), ("erc_gated", "stopped by ERC", COLORS["high"]),
             ("ppo_clipped", "stopped by the clip", COLORS["low"]), ("both", "stopped by both", "#756bb1")]
    fig = Figure(figsize=(7.5, 3.2), dpi=120, layout="constrained")
    axes = fig.subplots(1, 2, sharey=True)
    pos = act & (adv > 0)
    for ax, sel, title in ((axes[0], pos, "A > 0"), (axes[1], act & ~pos, "A < 0")):
        for key, label, color in kinds:
            k = sel & _np(flow[key]).astype(bool)
            ax.scatter(r[k], q[k], s=8, color=color, alpha=0.7, label=f"{label} ({int(k.sum())})")
        ax.axhspan(*bounds, color=COLORS["band"], alpha=0.12, lw=0)
        ax.axvspan(1 - clip[0], 1 + clip[1], color=COLORS["ppo"], alpha=0.10, lw=0)
        ax.set(xscale="log", yscale="log", xlabel="probability ratio r", title=title)
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.legend(frameon=False, fontsize=7)
    axes[0].set_ylabel("entropy ratio rho")
    return fig


_CURVES = (("reward_mean", "mean sampled reward"), ("eval_acc", "greedy eval accuracy"),
           ("entropy_mean", "mean token entropy (nats)"), ("grad_norm", "grad norm (before clipping)"),
           ("ppo_clipfrac", "PPO clip fraction"), ("erc_clipfrac", "ERC gated fraction"))


def fig_run_curves(runs: dict, smooth: int = 3) -> Figure:
    """Training curves of several runs, one panel per metric; for a run without ERC the gated-fraction panel
    shows (dashed) the fraction of tokens the gate WOULD have gated (``ratio_outside_frac``).

    Args:
        runs: ``{name: erc_core.runs.read_metrics(...)}`` DataFrames indexed by step.
        smooth: moving-average window in steps for the per-step metrics (1 = raw).
    """
    fig = Figure(figsize=(7.5, 5.0), dpi=120, layout="constrained")
    axes = fig.subplots(2, 3).ravel()
    colors = [COLORS["ppo"], COLORS["erc"], COLORS["low"], COLORS["high"]]
    for i, (name, df) in enumerate(runs.items()):
        c = colors[i % len(colors)]
        erc_on = bool((df["erc_clipfrac"].fillna(0) > 0).any())
        for ax, (key, title) in zip(axes, _CURVES):
            if key == "eval_acc":
                s = df[key].dropna()
                ax.plot(s.index, s.values, marker="o", ms=3, color=c, label=name)
            else:
                col = key if (key != "erc_clipfrac" or erc_on) else "ratio_outside_frac"
                s = df.loc[df.index > 0, col].rolling(smooth, min_periods=1).mean()
                ls = "--" if col == "ratio_outside_frac" else "-"
                label = f"{name} (would gate)" if col == "ratio_outside_frac" else name
                ax.plot(s.index, s.values, color=c, ls=ls, label=label)
            ax.set(title=title, xlabel="RL step")
    axes[0].legend(frameon=False, fontsize=7)
    axes[5].legend(frameon=False, fontsize=7)
    return fig


def fig_gated_entropy(tokens: dict, bounds: tuple[float, float] = (0.95, 1.05)) -> Figure:
    """Old entropy of the tokens an ERC band keeps and gates (outside the band), one panel per run.

    Args:
        tokens: ``{name: (rho (N,), old_entropy (N,))}`` of logged tokens (``tokens.jsonl``'s ``ratio`` and
            ``old_entropy``).
        bounds: the ERC band.
    """
    fig = Figure(figsize=(7.5, 2.9), dpi=120, layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(tokens), sharey=True))
    hmax = max(float(_np(h).max()) for _, h in tokens.values())
    bins = np.linspace(0, hmax * 1.02 + 1e-6, 25)
    for ax, (name, (rho, h)) in zip(axes, tokens.items()):
        r, h = _np(rho).astype(float), _np(h).astype(float)
        kind = _gate_kind(r, bounds)
        ax.hist([h[kind == 0], h[kind == 1], h[kind == 2]], bins=bins, stacked=True,
                color=(COLORS["kept"], COLORS["low"], COLORS["high"]),
                label=("inside the band", "rho <= low", "rho >= high"))
        ax.set(title=name, xlabel="old entropy H_old (nats)", yscale="log")
    axes[0].set_ylabel("tokens")
    axes[0].legend(frameon=False, fontsize=7)
    return fig
