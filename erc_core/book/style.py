"""One look for every figure of the book: a named palette, font sizes that stay legible at the book's width,
and plain decimal ticks on log-scaled ratio axes.

The book shows a figure at most ``DISPLAY_WIDTH_PX`` CSS pixels wide (the content column on a desktop), scaled
down from its PNG. A figure ``FIG_WIDTH`` inches wide rendered at ``DPI`` therefore shows a font of ``s`` points
at ``s * DISPLAY_WIDTH_PX / (FIG_WIDTH * 96)`` CSS points: with 6.4 in and 9-11 pt fonts that is 9.8-12 pt
(:func:`display_points`). Use :func:`styled` on a figure function (it sets :data:`RC` while the figure is built)
and :data:`PALETTE` for colours; each colour has one meaning in the whole book (a policy after updates takes
the colour of its method, ``base`` or ``erc``, or of its drift, ``fell`` or ``rose``; :data:`SERIES` colours
carry no meaning and appear only in figures without ``correct`` / ``wrong``).
"""

from __future__ import annotations

import functools
import math
from typing import Callable

import matplotlib as mpl
import numpy as np
from matplotlib.ticker import FuncFormatter, Locator, LogLocator, MaxNLocator, NullFormatter

__all__ = ["PALETTE", "PALETTE_DOC", "TINTS", "SERIES", "SEQUENCE", "RC", "FIG_WIDTH", "DPI", "DISPLAY_WIDTH_PX",
           "MIN_DISPLAY_PT", "styled", "display_points", "plain_number", "PlainLogLocator", "ratio_axis",
           "palette_html", "palette_colors"]

#: Colour of each meaning (Okabe-Ito, readable with the common colour-vision deficiencies).
PALETTE: dict[str, str] = {
    "base": "#E69F00",     # PPO-clip / DAPO / GPPO without the ERC gate, and PPO's clip band
    "erc": "#009E73",      # with the ERC gate, and the ERC band
    "kept": "#009E73",     # a token inside the ERC band that sends gradient (the band's colour)
    "gated": "#000000",    # a token whose gradient the ERC gate stopped
    "fell": "#0072B2",     # rho below the band: the entropy fell (a drift that collapses)
    "rose": "#D55E00",     # rho above the band: the entropy rose (a drift that explodes)
    "old": "#8C8C8C",      # the old (rollout) policy, reference lines (rho = 1, r = 1)
    "correct": "#56B4E9",  # a rewarded (correct) response
    "wrong": "#CC79A7",    # an unrewarded (wrong) response
    "both": "#6A3D9A",     # stopped by both the clip and the gate
    "ink": "#333333",      # text-like marks: limits (c, max_len), single neutral curves
    "pad": "#E6E6E6",      # padding / no data
    "highlight": "#F0E442",  # the sampled token
}

#: One line per key of :data:`PALETTE`, for the glossary page's colour key.
PALETTE_DOC: dict[str, str] = {
    "base": "PPO-clip, DAPO or GPPO without the ERC gate; PPO's clip band",
    "erc": "the same loss with the ERC gate; the ERC band",
    "kept": "token inside the ERC band (rho_low < rho_t < rho_high): its gradient flows",
    "gated": "token outside the ERC band: the gate stopped its gradient (its loss value stays)",
    "fell": "rho_t <= rho_low: the token's entropy fell (collapse)",
    "rose": "rho_t >= rho_high: the token's entropy rose (explosion)",
    "old": "the old (rollout) policy pi_old; reference lines at 1",
    "correct": "a response with reward 1",
    "wrong": "a response with reward 0",
    "both": "token stopped by both the PPO clip and the ERC gate",
    "ink": "limits and single curves without a method (dual-clip c, max_len, penalties)",
    "pad": "padding",
    "highlight": "the sampled token",
}

#: Light versions for filled areas / table cells (same meaning as the key in :data:`PALETTE`).
TINTS: dict[str, str] = {"base": "#F5D9A0", "erc": "#A8DCC9", "kept": "#C7E9DC", "gated": "#BDBDBD",
                         "fell": "#A6C8E3", "rose": "#F2BFA0", "both": "#CAB2D6", "pad": "#F0F0F0"}

#: Categorical series that carry no ERC meaning (settings, aggregation modes, example distributions).
SERIES: tuple[str, ...] = ("#56B4E9", "#CC79A7", "#333333", "#8C8C8C")
#: Ordered series such as temperatures or group sizes, from light to dark.
SEQUENCE: tuple[str, ...] = ("#9ECAE1", "#4292C6", "#08519C", "#08306B")

#: Width of every figure of the book, in inches.
FIG_WIDTH = 6.4
#: PNG resolution in dots per inch; the book scales the images down, so they stay crisp on dense screens.
DPI = 200
#: The book's content width on a desktop, in CSS pixels.
DISPLAY_WIDTH_PX = 672
#: The smallest text size a figure may show at that width, in CSS points.
MIN_DISPLAY_PT = 9.0

#: rcParams set while a figure is built (fonts are stored in each artist when it is created).
RC: dict = {
    "font.size": 10, "axes.titlesize": 11, "axes.labelsize": 10, "xtick.labelsize": 9, "ytick.labelsize": 9,
    "legend.fontsize": 9, "legend.title_fontsize": 9, "figure.titlesize": 11, "figure.labelsize": 10,
    "lines.linewidth": 1.8, "lines.markersize": 5, "axes.spines.top": False, "axes.spines.right": False,
    "legend.frameon": False, "axes.titlelocation": "center", "savefig.dpi": DPI, "figure.dpi": DPI,
    "axes.prop_cycle": mpl.cycler(color=list(SERIES)),
}


def styled(fn: Callable) -> Callable:
    """Decorator: build the figure under :data:`RC` (does not change the caller's rcParams)."""
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with mpl.rc_context(RC):
            return fn(*args, **kwargs)
    return wrapper


def display_points(font_pt: float, png_width_px: float, dpi: float) -> float:
    """CSS points a ``font_pt`` font occupies when a ``png_width_px``-wide PNG (rendered at ``dpi``) is shown
    at most :data:`DISPLAY_WIDTH_PX` CSS px wide (96 CSS px per inch)."""
    scale = min(1.0, DISPLAY_WIDTH_PX / png_width_px)
    return font_pt / 72.0 * dpi * scale * 72.0 / 96.0


def palette_colors() -> set[str]:
    """Every colour of the book, lower-case hex (the palette, its tints and the series)."""
    return {c.lower() for c in (*PALETTE.values(), *TINTS.values(), *SERIES, *SEQUENCE)}


def plain_number(v: float, _pos=None) -> str:
    """A tick label without exponent: 0.95, 1, 1.05, 20, 1000 (at most 6 significant digits)."""
    if v == 0 or not math.isfinite(v):
        return "0" if v == 0 else ""
    text = np.format_float_positional(float(v), precision=6, unique=True, fractional=False, trim="-")
    return text


class PlainLogLocator(Locator):
    """Major ticks of a log axis at round numbers (1-2-5 per decade, finer when the axis spans less than a
    decade), at least ``min_ticks`` of them and at most ``max_ticks``; a linear locator when even 0.05 steps
    are too coarse."""

    _SUBS = ((1.0,), (1.0, 3.0), (1.0, 2.0, 5.0), (1.0, 1.5, 2.0, 3.0, 5.0, 7.0),
             tuple(np.round(np.arange(1.0, 10.0, 0.5), 2)), tuple(np.round(np.arange(1.0, 10.0, 0.1), 2)),
             tuple(np.round(np.arange(1.0, 10.0, 0.05), 3)))

    def __init__(self, min_ticks: int = 3, max_ticks: int = 8):
        self.min_ticks, self.max_ticks = min_ticks, max_ticks

    def __call__(self):
        vmin, vmax = self.axis.get_view_interval()
        return self.tick_values(vmin, vmax)

    def tick_values(self, vmin, vmax):
        vmin, vmax = sorted((float(vmin), float(vmax)))
        if vmin <= 0:
            vmin = max(vmax * 1e-3, 1e-12)
        lo, hi = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
        for subs in self._SUBS:
            ticks = np.array([round(m * 10.0 ** k, 12) for k in range(lo, hi + 1) for m in subs])
            inside = ticks[(ticks >= vmin * (1 - 1e-9)) & (ticks <= vmax * (1 + 1e-9))]
            if len(inside) >= self.min_ticks:
                if len(inside) > self.max_ticks:  # a coarser set had too few: thin this one evenly
                    step = math.ceil(len(inside) / self.max_ticks)
                    keep = inside[::step]
                    inside = keep if len(keep) >= self.min_ticks else inside
                return inside
        return MaxNLocator(nbins=self.min_ticks + 1).tick_values(vmin, vmax)


def ratio_axis(ax, which: str = "y") -> None:
    """Log scale with plain decimal labels (no ``10^k`` / ``9x10^-1``) and at least 3 labelled ticks.

    Call after plotting and setting the limits (the locator reads the view interval when drawn).
    """
    if which not in ("x", "y"):
        raise ValueError(f"which must be 'x' or 'y', got {which!r}")
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    axis.set_major_locator(PlainLogLocator())
    axis.set_major_formatter(FuncFormatter(plain_number))
    axis.set_minor_locator(LogLocator(subs="auto"))
    axis.set_minor_formatter(NullFormatter())


def palette_html() -> str:
    """The colour key as an HTML table (swatch, key, meaning), for the notation-and-glossary page."""
    import html

    rows = "".join(
        f"<tr><td style='background:{PALETTE[k]};width:2.5em;border:1px solid #ccc'></td>"
        f"<td style='padding:0 0.6em'><code>{k}</code></td><td>{html.escape(PALETTE_DOC[k])}</td></tr>"
        for k in PALETTE)
    return f"<table class='erc-palette'>{rows}</table>"
