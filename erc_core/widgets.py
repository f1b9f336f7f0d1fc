"""The book's interactive widgets, built so that they also work in the static HTML book (no kernel).

An embedded widget has no Python behind it: callbacks never run. So every state a slider can show is computed
in advance and the slider only selects among them in the browser: a ``SelectionSlider`` whose ``index`` is
linked (``jslink``, client side) to the ``selected_index`` of a ``Stack`` holding one precomputed ``HTML`` child
per slider position.
"""

from __future__ import annotations

import html
from typing import Sequence

import ipywidgets as w
import torch

from erc_core.losses import entropy_ratio, erc_mask

__all__ = ["gate_table_html", "erc_band_slider"]

_CELL = "padding:1px 2px;text-align:center;font:10px monospace;border:1px solid #fff"
_BG = {"kept": "#c7e9c0", "low": "#9ecae1", "high": "#fcae91", "pad": "#f0f0f0"}


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
    low, high = bounds
    n_low, n_high = int(((rho <= low) & m).sum()), int(((rho >= high) & m).sum())
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
                kind = "kept" if keep[b, t] else ("low" if r <= low else "high")
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
            f"<table style='border-collapse:collapse'>{''.join(rows)}</table>")


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
                               layout=w.Layout(width="420px"), style={"description_width": "initial"})
    stack = w.Stack(pages, selected_index=index)
    w.jslink((slider, "index"), (stack, "selected_index"))
    return w.VBox([slider, stack])
