"""The book's interactive widgets, built so that they also work in the static HTML book (no kernel).

An embedded widget has no Python behind it: callbacks never run. So every state a slider can show is computed
in advance and the slider only selects among them in the browser: a ``SelectionSlider`` whose ``index`` is
linked (``jslink``, client side) to the ``selected_index`` of a ``Stack`` holding one precomputed ``HTML`` child
per slider position. A figure becomes such a child as a PNG inside an ``HTML`` widget
(:func:`figure_slider`), so it needs no binary widget buffers either.
"""

from __future__ import annotations

import base64
import html
import io
from typing import Any, Callable, Sequence

import ipywidgets as w
import torch
from matplotlib.figure import Figure

from erc_core.band import Band
from erc_core.losses import entropy_ratio, erc_mask
from erc_core.book.style import TINTS

__all__ = ["gate_table_html", "erc_band_slider", "gradient_table_html", "gradient_gate_sliders",
           "figure_html", "figure_slider"]

_CELL = "padding:1px 2px;text-align:center;font:12px monospace;border:1px solid #fff"
_TABLE = "<table style='border-collapse:collapse'>{}</table>"  # a wide one scrolls in its widget's panel
_BG = {"kept": TINTS["kept"], "low": TINTS["fell"], "high": TINTS["rose"], "pad": TINTS["pad"]}


def gate_table_html(rho: torch.Tensor, keep: torch.Tensor, response_mask: torch.Tensor,
                    bounds: tuple[float, float], max_rows: int = 8, max_cols: int = 16) -> str:
    """An HTML table of the batch: one cell per token with its entropy ratio, colored by the ERC gate.

    Args:
        rho: (B, T) entropy ratios.
        keep: (B, T) bool ERC keep mask for ``bounds``.
        response_mask: (B, T) bool, False on padding.
        bounds: the (low, high) band ``keep`` was computed with.
        max_rows, max_cols: the table shows at most this many responses / positions (the counts use all).

    Returns:
        HTML: a one-line summary (gated counts below / above the band) and the colored table.
    """
    m = response_mask.bool()
    band = Band.of(bounds, "bounds")
    low, high = band
    n_low, n_high = int((band.fell(rho) & m).sum()), int((band.rose(rho) & m).sum())
    n_gated, n_tok = int((~keep & m).sum()), int(m.sum())
    rows = []
    n_rows, n_cols = min(rho.shape[0], max_rows), min(rho.shape[1], max_cols)
    for b in range(n_rows):
        cells = []
        for t in range(n_cols):
            if not m[b, t]:
                kind, text = "pad", "&middot;"
            else:
                r = float(rho[b, t])
                kind = "kept" if keep[b, t] else ("low" if band.fell(r) else "high")
                text = f"{r:.3f}"
            cells.append(f'<td style="{_CELL};background:{_BG[kind]}" title="{kind}">{text}</td>')
        rows.append(f"<tr><th style='{_CELL}'>{b}</th>{''.join(cells)}</tr>")
    summary = (f"<b>bounds ({low:g}, {high:g})</b>: {n_gated} of {n_tok} response tokens gated "
               f"({n_low} with rho &le; {low:g}, {n_high} with rho &ge; {high:g})")
    if (n_rows, n_cols) != tuple(rho.shape):
        summary += f"; table: first {n_rows} x {n_cols} of {rho.shape[0]} x {rho.shape[1]}"
    legend = " ".join(f'<span style="background:{_BG[k]};padding:0 6px;margin-right:6px">{html.escape(lab)}</span>'
                      for k, lab in (("kept", "kept"), ("low", "gated: entropy fell"),
                                     ("high", "gated: entropy rose"), ("pad", "padding")))
    return (f"<div style='margin:4px 0'>{summary}</div><div style='margin:4px 0;font-size:12px'>{legend}</div>"
            + _TABLE.format("".join(rows)))


def erc_band_slider(entropy: torch.Tensor, old_entropy: torch.Tensor, response_mask: torch.Tensor,
                    bounds_list: Sequence[tuple[float, float]], initial: int | None = None,
                    max_rows: int = 8, max_cols: int = 16) -> w.VBox:
    """A slider over ERC bands showing which tokens of a batch each band gates; works without a kernel.

    Args:
        entropy: (B, T) entropies of the current policy.
        old_entropy: (B, T) entropies of the old policy.
        response_mask: (B, T) bool, False on padding.
        bounds_list: the (low, high) bands the slider offers, e.g. narrowest to widest.
        initial: index of the band shown first (default: the middle one).
        max_rows, max_cols: each table shows at most this many responses / positions.

    Returns:
        ``VBox([SelectionSlider, Stack])``; ``Stack`` has one precomputed ``HTML`` child per band (so
        ``len(box.children[1].children) == len(bounds_list)``).
    """
    if not bounds_list:
        raise ValueError("bounds_list must hold at least one (low, high) pair")
    rho = entropy_ratio(entropy.detach(), old_entropy.detach())
    pages = [w.HTML(gate_table_html(rho, erc_mask(entropy, old_entropy, response_mask, tuple(bd)),
                                    response_mask, tuple(bd), max_rows, max_cols)) for bd in bounds_list]
    index = len(bounds_list) // 2 if initial is None else initial
    labels = [f"({lo:g}, {hi:g})" for lo, hi in bounds_list]
    slider = w.SelectionSlider(options=labels, index=index, description="ERC band", continuous_update=True,
                               layout=_slider_layout(420), style={"description_width": "initial"})
    stack = w.Stack(pages, selected_index=index)
    w.jslink((slider, "index"), (stack, "selected_index"))
    return w.VBox([slider, stack])


# the book's palette (erc_core.book.style): kept = the ERC band's green, gated = grey (black in the figures),
# PPO-clipped = the base method's orange, both = purple
_GRAD_BG = {"grad": TINTS["kept"], "erc_gated": TINTS["gated"], "ppo_clipped": TINTS["base"], "both": TINTS["both"],
            "zero": TINTS["pad"]}
_GRAD_LABEL = {"grad": "sends gradient", "erc_gated": "stopped by ERC", "ppo_clipped": "stopped by the PPO clip",
               "both": "stopped by both", "zero": "A = 0 or padding"}


def gradient_table_html(flow: dict, tokens: list[list[str]], rho: torch.Tensor, ratio: torch.Tensor,
                        advantages: torch.Tensor, erc_bounds: tuple[float, float], clip: tuple[float, float],
                        max_rows: int = 12) -> str:
    """An HTML table of responses, one cell per token (its text), colored by what stops its policy gradient.

    Args:
        flow: ``erc_core.book.runs.gradient_flow`` output for these (B, T) tokens.
        tokens: B lists of T decoded tokens.
        rho: (B, T) entropy ratios; ratio: (B, T) probability ratios r (both shown on hover).
        advantages: (B,) advantages (first column).
        erc_bounds, clip: the settings ``flow`` was computed with (summary line).
        max_rows: at most this many responses are shown (the counts use all).
    """
    n_act = int(flow["active"].sum())
    counts = {k: int(flow[k].sum()) for k in ("grad", "erc_gated", "ppo_clipped", "both")}
    rows = []
    for b in range(min(len(tokens), max_rows)):
        cells = [f"<th style='{_CELL}'>A={float(advantages[b]):+.2f}</th>"]
        for t, text in enumerate(tokens[b]):
            kind = next((k for k in ("grad", "erc_gated", "ppo_clipped", "both") if flow[k][b, t]), "zero")
            tip = f"rho={float(rho[b, t]):.3f} r={float(ratio[b, t]):.3f}" if text else ""
            label = html.escape(text.replace("<eos>", "\u23ce")) or "&middot;"
            cells.append(f'<td style="{_CELL};min-width:18px;background:{_GRAD_BG[kind]}" title="{tip}">{label}</td>')
        rows.append(f"<tr>{''.join(cells)}</tr>")
    summary = (f"<b>ERC ({erc_bounds[0]:g}, {erc_bounds[1]:g}), clip [1 - {clip[0]:g}, 1 + {clip[1]:g}]</b>: "
               f"{counts['grad']} of {n_act} tokens with A &ne; 0 send gradient; stopped by ERC only "
               f"{counts['erc_gated']}, by the clip only {counts['ppo_clipped']}, by both {counts['both']}")
    legend = " ".join(f'<span style="background:{_GRAD_BG[k]};padding:0 6px;margin-right:6px">{html.escape(v)}</span>'
                      for k, v in _GRAD_LABEL.items())
    return (f"<div style='margin:4px 0'>{summary}</div><div style='margin:4px 0;font-size:12px'>{legend}</div>"
            + _TABLE.format("".join(rows)))


def gradient_gate_sliders(logp: torch.Tensor, old_logp: torch.Tensor, advantages: torch.Tensor,
                          response_mask: torch.Tensor, entropy: torch.Tensor, old_entropy: torch.Tensor,
                          tokens: list[list[str]], bands: Sequence[tuple[float, float]],
                          clips: Sequence[tuple[float, float]], mode: str = "dapo", clip_c: float = 10.0,
                          initial: tuple[int, int] | None = None, max_rows: int = 12) -> w.VBox:
    """Two sliders, the ERC band and the PPO clip range, over which tokens of a batch keep their gradient.

    Works without a kernel: every (band, clip) pair is precomputed with ``erc_core.book.runs.gradient_flow``; the
    band slider selects a child of an outer ``Stack`` and the clip slider (linked to every inner ``Stack``)
    selects the table inside it.

    Args:
        logp, old_logp, entropy, old_entropy: (B, T); advantages: (B,); response_mask: (B, T) bool.
        tokens: B lists of T decoded tokens (shown in the cells).
        bands: ERC (low, high) pairs; clips: PPO (clip_low, clip_high) pairs.
        mode, clip_c: base loss, as in :func:`erc_core.losses.policy_loss`.
        initial: (band index, clip index) shown first (default: the middle of each list).
        max_rows: responses shown per table.

    Returns:
        ``VBox([band slider, clip slider, outer Stack])``, the outer Stack holding ``len(bands)`` inner Stacks
        of ``len(clips)`` ``HTML`` tables each.
    """
    from erc_core.book.runs import gradient_flow

    if not bands or not clips:
        raise ValueError("bands and clips must each hold at least one pair")
    bi, ci = initial if initial is not None else (len(bands) // 2, len(clips) // 2)
    if not (0 <= bi < len(bands) and 0 <= ci < len(clips)):
        raise ValueError(f"initial must index bands (0..{len(bands) - 1}) and clips (0..{len(clips) - 1}), "
                         f"got {initial!r}")
    rho = entropy_ratio(entropy.detach(), old_entropy.detach())
    ratio = (logp.detach() - old_logp.detach()).exp()
    inner = []
    for band in bands:
        pages = [w.HTML(gradient_table_html(gradient_flow(logp, old_logp, advantages, response_mask, entropy,
                                                          old_entropy, tuple(band), tuple(clip), mode, clip_c),
                                            tokens, rho, ratio, advantages, tuple(band), tuple(clip), max_rows))
                 for clip in clips]
        inner.append(w.Stack(pages, selected_index=ci))
    style, layout = {"description_width": "initial"}, _slider_layout(460)
    band_slider = w.SelectionSlider(options=[f"({lo:g}, {hi:g})" for lo, hi in bands], index=bi,
                                    description="ERC band", layout=layout, style=style)
    clip_slider = w.SelectionSlider(options=[f"[1-{lo:g}, 1+{hi:g}]" for lo, hi in clips], index=ci,
                                    description="PPO clip", layout=layout, style=style)
    outer = w.Stack(inner, selected_index=bi)
    w.jslink((band_slider, "index"), (outer, "selected_index"))
    for stack in inner:
        w.jslink((clip_slider, "index"), (stack, "selected_index"))
    return w.VBox([band_slider, clip_slider, outer])


def _slider_layout(max_px: int) -> w.Layout:
    """A slider as wide as its place on the page, at most ``max_px`` pixels (a phone's screen is narrower)."""
    return w.Layout(width="100%", max_width=f"{max_px}px")


def figure_html(fig: Figure, dpi: float = 110, alt: str = "") -> str:
    """``fig`` as an ``<img>`` tag holding its PNG (base64 data URI), scaled to the page width at most.

    Args:
        fig: a matplotlib figure (e.g. from :mod:`erc_core.book.plots`).
        dpi: resolution of the PNG (lower than the book's static figures: a slider holds one per position).
        alt: the image's alternative text.
    """
    if dpi <= 0:
        raise ValueError(f"dpi must be > 0, got {dpi!r}")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return (f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}" '
            f'style="max-width:100%;height:auto">')


def figure_slider(draw: Callable[[Any], Figure], values: Sequence, description: str,
                  labels: Sequence[str] | None = None, initial: int | None = None, dpi: float = 110) -> w.VBox:
    """A slider over ``values`` showing the figure ``draw(value)`` drawn for each; works without a kernel.

    Every figure is drawn now, as a PNG in an ``HTML`` child of a ``Stack``; the slider's ``index`` is linked
    (``jslink``) to the stack's ``selected_index``, so the static HTML book switches figures in the browser.

    Args:
        draw: called once per value, returns a matplotlib ``Figure``.
        values: the slider's positions, in order (at least one).
        description: the slider's label, e.g. ``"eps_high"``.
        labels: the text shown for each position (default: ``f"{value:g}"`` for numbers, else ``str``).
        initial: index of the position shown first (default: the middle one).
        dpi: resolution of each PNG.

    Returns:
        ``VBox([SelectionSlider, Stack])``, the Stack holding ``len(values)`` ``HTML`` children.

    Raises:
        ValueError: ``values`` empty or with repeated labels, ``labels`` of another length, ``initial`` out of
            range; TypeError: ``draw`` did not return a ``Figure``.
    """
    values = list(values)
    if not values:
        raise ValueError("values must hold at least one slider position")
    if labels is None:
        labels = [f"{v:g}" if isinstance(v, (int, float)) else str(v) for v in values]
    labels = [str(lab) for lab in labels]
    if len(labels) != len(values):
        raise ValueError(f"labels must have one entry per value ({len(values)}), got {len(labels)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct (the slider selects by label), got {labels}")
    index = len(values) // 2 if initial is None else initial
    if not 0 <= index < len(values):
        raise ValueError(f"initial must index values (0..{len(values) - 1}), got {initial!r}")
    pages = []
    for v in values:
        fig = draw(v)
        if not isinstance(fig, Figure):
            raise TypeError(f"draw({v!r}) must return a matplotlib Figure, got {type(fig).__name__}")
        pages.append(w.HTML(figure_html(fig, dpi, alt=f"{description} = {v}")))
    slider = w.SelectionSlider(options=labels, index=index, description=description, continuous_update=True,
                               layout=_slider_layout(420), style={"description_width": "initial"})
    stack = w.Stack(pages, selected_index=index)
    w.jslink((slider, "index"), (stack, "selected_index"))
    return w.VBox([slider, stack])
