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

__all__ = ["COLORS", "fig_temperature", "fig_ppo_blind_spot", "fig_erc_gate"]

COLORS = {"old": "#7f7f7f", "collapse": "#1f77b4", "explode": "#d62728", "kept": "#2ca02c", "band": "#2ca02c",
          "ppo": "#ff7f0e", "low": "#1f77b4", "high": "#d62728", "pad": "#e6e6e6"}


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
