"""erc_core.book.plots / .widgets / .toy: figures are drawn, sliders hold one state per band."""

from __future__ import annotations

import io
import math

import ipywidgets as w
import pytest
import torch
from matplotlib.figure import Figure

from erc_core.book import plots, toy, widgets
from erc_core.entropy import entropy_from_logits, logprobs_and_entropy
from erc_core.losses import entropy_ratio, erc_mask, policy_loss


def _png_bytes(fig: Figure) -> int:
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    return len(buf.getvalue())


@pytest.fixture(scope="module")
def batch_pass():
    g = torch.Generator().manual_seed(0)
    b = toy.token_batch(3, 10, 6, drift_scale=0.1, generator=g)
    old_logp, old_h = logprobs_and_entropy(b.old_logits, b.tokens)
    logp, h = logprobs_and_entropy(b.new_logits, b.tokens)
    return b, old_logp, old_h, logp, h


# ---------------------------------------------------------------------------------------------- toy
@pytest.mark.parametrize("target", ["collapse", "explode"])
def test_drift_keeps_the_sampled_ratio_and_moves_the_entropy(target):
    old = torch.linspace(1.0, -1.0, 8) * 1.5
    steps = toy.drift_keep_sampled(old, 2, 4, target=target, sampled_ratio=1.1)
    assert steps.shape == (5, 8) and torch.isfinite(steps).all()
    assert torch.allclose(steps.exp().sum(-1), torch.ones(5), atol=1e-5)
    logp, h = logprobs_and_entropy(steps, torch.full((5,), 2))
    assert torch.allclose(steps[0].softmax(-1), old.softmax(-1), atol=1e-6)
    assert math.isclose(float((logp[-1] - logp[0]).exp()), 1.1, rel_tol=1e-4)
    d = h.diff()
    assert (d < 0).all() if target == "collapse" else (d > 0).all()


def test_drift_rejects_bad_arguments():
    old = torch.zeros(5)
    with pytest.raises(ValueError):
        toy.drift_keep_sampled(old, 7, 3)
    with pytest.raises(ValueError):
        toy.drift_keep_sampled(old, 1, 3, target="sideways")
    with pytest.raises(ValueError):
        toy.drift_keep_sampled(torch.zeros(2, 5), 1, 3)


def test_token_batch_shapes_and_determinism():
    a = toy.token_batch(4, 12, 7, generator=torch.Generator().manual_seed(3))
    b = toy.token_batch(4, 12, 7, generator=torch.Generator().manual_seed(3))
    assert a.old_logits.shape == a.new_logits.shape == (4, 12, 7)
    assert a.tokens.shape == a.response_mask.shape == (4, 12) and a.advantages.shape == (4,)
    assert a.response_mask.dtype == torch.bool and a.response_mask[:, :6].all()
    assert set(a.advantages.tolist()) <= {-1.0, 1.0}
    assert torch.equal(a.tokens, b.tokens) and torch.equal(a.new_logits, b.new_logits)
    on = toy.token_batch(2, 5, 4, drift_scale=0.0)
    assert torch.equal(on.old_logits, on.new_logits)


# ---------------------------------------------------------------------------------------------- plots
def test_fig_temperature():
    logits = torch.stack([s * torch.linspace(1, -1, 6) for s in (4.0, 1.0)])
    temps = torch.logspace(-1, 1, 5)
    h = torch.stack([entropy_from_logits(logits, temperature=float(t)) for t in temps])
    probs = torch.stack([torch.softmax(logits[0] / t, -1) for t in (0.5, 2.0)])
    fig = plots.fig_temperature(temps, h, probs, [0.5, 2.0], ["a", "b"])
    assert isinstance(fig, Figure) and len(fig.axes) == 2
    assert len(fig.axes[1].lines) == 2 + 1  # one curve per distribution + log V
    assert _png_bytes(fig) > 10_000


def test_fig_ppo_blind_spot():
    old = torch.linspace(1.0, -1.0, 6)
    c = toy.drift_keep_sampled(old, 1, 3, target="collapse")
    e = toy.drift_keep_sampled(old, 1, 3, target="explode")
    hc, he = entropy_from_logits(c), entropy_from_logits(e)
    ones = torch.ones(4)
    fig = plots.fig_ppo_blind_spot(c[0].softmax(-1), c[-1].softmax(-1), e[-1].softmax(-1), 1, ones, ones,
                                   entropy_ratio(hc, hc[0]), entropy_ratio(he, he[0]))
    assert len(fig.axes) == 3 and all(ax.has_data() for ax in fig.axes)
    assert _png_bytes(fig) > 10_000


def test_fig_erc_gate(batch_pass):
    b, old_logp, old_h, logp, h = batch_pass
    logp = logp.detach().requires_grad_()
    keep = erc_mask(h, old_h, b.response_mask)
    loss, _ = policy_loss(logp, old_logp, b.advantages, b.response_mask, entropy=h, old_entropy=old_h)
    (grad,) = torch.autograd.grad(loss, logp)
    fig = plots.fig_erc_gate(entropy_ratio(h, old_h), b.response_mask, keep, grad)
    assert len(fig.axes) == 3  # two maps + colorbar
    assert fig.axes[0].images[0].get_array().shape == (3, 10)
    assert _png_bytes(fig) > 10_000
    small = plots.fig_erc_gate(entropy_ratio(h, old_h), b.response_mask, keep, grad, max_rows=2, max_cols=4)
    assert small.axes[0].images[0].get_array().shape == (2, 4)


# ---------------------------------------------------------------------------------------------- widgets
BANDS = [(0.99, 1.01), (0.95, 1.05), (0.9, 1.1), (0.5, 1.5)]


def test_erc_band_slider_has_one_precomputed_state_per_band(batch_pass):
    b, _, old_h, _, h = batch_pass
    box = widgets.erc_band_slider(h, old_h, b.response_mask, BANDS)
    slider, stack = box.children
    assert isinstance(slider, w.SelectionSlider) and isinstance(stack, w.Stack)
    assert len(stack.children) == len(slider.options) == len(BANDS)
    assert slider.index == stack.selected_index == len(BANDS) // 2
    slider.index = 0  # jslink syncs in the browser; the pages themselves are static HTML
    for page, (lo, hi) in zip(stack.children, BANDS):
        assert isinstance(page, w.HTML) and f"bounds ({lo:g}, {hi:g})" in page.value
    n_tok = int(b.response_mask.sum())
    gated = [int((b.response_mask & ~erc_mask(h, old_h, b.response_mask, bd)).sum()) for bd in BANDS]
    for page, n in zip(stack.children, gated):
        assert f"{n} of {n_tok} response tokens gated" in page.value
    assert widgets.erc_band_slider(h, old_h, b.response_mask, BANDS, initial=1).children[1].selected_index == 1


def test_gate_table_html_rows_and_crop(batch_pass):
    b, _, old_h, _, h = batch_pass
    rho = entropy_ratio(h, old_h)
    keep = erc_mask(h, old_h, b.response_mask)
    full = widgets.gate_table_html(rho, keep, b.response_mask, (0.95, 1.05))
    assert full.count("<tr>") == 3 and full.count("<td") == 3 * 10
    crop = widgets.gate_table_html(rho, keep, b.response_mask, (0.95, 1.05), max_rows=2, max_cols=4)
    assert crop.count("<tr>") == 2 and crop.count("<td") == 8 and "first 2 x 4 of 3 x 10" in crop


def test_erc_band_slider_needs_a_band(batch_pass):
    b, _, old_h, _, h = batch_pass
    with pytest.raises(ValueError):
        widgets.erc_band_slider(h, old_h, b.response_mask, [])


# ---------------------------------------------------------------------------------------------- chapters 2 and 4
def test_fig_offpolicy_drift_and_position():
    b = toy.token_batch(2, 6, 5, drift_scale=0.0, generator=torch.Generator().manual_seed(1))
    ppo = toy.offpolicy_updates(b, 4, 0.1)
    erc = toy.offpolicy_updates(b, 4, 0.1, erc_bounds=(0.95, 1.05))
    fig = plots.fig_offpolicy_drift(ppo, erc)
    assert len(fig.axes) == 4 and all(ax.has_data() for ax in fig.axes)
    assert _png_bytes(fig) > 10_000
    fig = plots.fig_position_drift(ppo.probs[0, 0, 0], ppo.probs[-1, 0, 0], erc.probs[-1, 0, 0],
                                   int(b.tokens[0, 0]), 1.1, 1.0)
    assert len(fig.axes) == 1 and len(fig.axes[0].patches) >= 3 * 5
    assert _png_bytes(fig) > 10_000


def test_figs_of_chapter_4():
    from erc_core.advantages import grpo_advantages, overlong_penalty

    s = toy.binary_reward_groups(4)
    fig = plots.fig_group_advantages(s, grpo_advantages(s), grpo_advantages(s, norm_by_std=False))
    assert len(fig.axes) == 2 and _png_bytes(fig) > 10_000
    r = torch.logspace(-0.5, 1.3, 50)
    curves = {(n, a): toy.per_token_loss_curve(r, a, clip_high=h) for n, h in (("sym", 0.2), ("hi", 0.28))
              for a in (1, -1)}
    fig = plots.fig_clip_higher(r, curves, 10.0, {"sym": (0.8, 1.2), "hi": (0.8, 1.28)})
    assert len(fig.axes) == 4 and all(ax.has_data() for ax in fig.axes) and _png_bytes(fig) > 10_000
    fig = plots.fig_clip_higher(r, curves, 10.0, {"sym": (0.8, 1.2), "hi": (0.8, 1.28)}, grad_panel=False)
    assert len(fig.axes) == 2 and all(ax.has_data() for ax in fig.axes)
    lengths = torch.tensor([4, 16, 64])
    fig = plots.fig_agg_weights(lengths, {a: toy.agg_token_weights(lengths, 64, a)
                                          for a in ("token-mean", "seq-mean-token-mean")})
    assert len(fig.axes[1].patches) == 6 and _png_bytes(fig) > 10_000
    p = torch.linspace(0, 1, 5)
    kept, exp = toy.dynamic_sampling_sweep(p, 50, 4)
    fig = plots.fig_dynamic_sampling(p, {4: kept}, {4: exp})
    assert len(fig.axes) == 2 and _png_bytes(fig) > 10_000
    n = torch.arange(0, 65)
    fig = plots.fig_overlong(n, overlong_penalty(n, 64, 16), 64, 16)
    assert fig.axes[0].has_data() and _png_bytes(fig) > 10_000


# ---------------------------------------------------------------------------------------------- legibility, palette
def _every_figure() -> dict[str, Figure]:
    """Every figure function of ``erc_core.book.plots`` on small toy inputs (as the chapters call them)."""
    import numpy as np
    import pandas as pd

    from erc_core.advantages import grpo_advantages, overlong_penalty
    from erc_core.book.runs import gradient_flow

    figs = {}
    logits = torch.stack([s * torch.linspace(1, -1, 12) for s in (4.0, 1.0)])
    temps = torch.logspace(-1, 1, 9)
    h_t = torch.stack([entropy_from_logits(logits, temperature=float(t)) for t in temps])
    probs = torch.stack([torch.softmax(logits[0] / t, -1) for t in (0.5, 1.0, 2.0)])
    figs["temperature"] = plots.fig_temperature(temps, h_t, probs, [0.5, 1.0, 2.0], ["peaked", "flat"])
    old = torch.linspace(1.0, -1.0, 12) * 1.5
    c, e = (toy.drift_keep_sampled(old, 1, 5, target=t) for t in ("collapse", "explode"))
    hc, he = entropy_from_logits(c), entropy_from_logits(e)
    rc, re_ = (c[:, 1] - c[0, 1]).exp(), (e[:, 1] - e[0, 1]).exp()
    figs["blind_spot"] = plots.fig_ppo_blind_spot(c[0].softmax(-1), c[-1].softmax(-1), e[-1].softmax(-1), 1, rc, re_,
                                                  entropy_ratio(hc, hc[0]), entropy_ratio(he, he[0]))
    g = torch.Generator().manual_seed(0)
    b = toy.token_batch(8, 24, 6, drift_scale=0.3, generator=g)
    old_logp, old_h = logprobs_and_entropy(b.old_logits, b.tokens)
    logp, h = logprobs_and_entropy(b.new_logits, b.tokens)
    logp = logp.detach().requires_grad_()
    keep = erc_mask(h, old_h, b.response_mask)
    loss, _ = policy_loss(logp, old_logp, b.advantages, b.response_mask, entropy=h, old_entropy=old_h)
    (grad,) = torch.autograd.grad(loss, logp)
    rho = entropy_ratio(h, old_h)
    figs["erc_gate"] = plots.fig_erc_gate(rho, b.response_mask, keep, grad)
    b2 = toy.token_batch(2, 6, 5, drift_scale=0.0, generator=torch.Generator().manual_seed(1))
    ppo, erc = toy.offpolicy_updates(b2, 6, 0.1), toy.offpolicy_updates(b2, 6, 0.1, erc_bounds=(0.95, 1.05))
    figs["offpolicy_drift"] = plots.fig_offpolicy_drift(ppo, erc)
    figs["offpolicy_drift_upto"] = plots.fig_offpolicy_drift_upto(ppo, erc, 3)
    figs["position_drift"] = plots.fig_position_drift(ppo.probs[0, 0, 0], ppo.probs[-1, 0, 0], erc.probs[-1, 0, 0],
                                                      int(b2.tokens[0, 0]), 1.1, 1.0)
    s = toy.binary_reward_groups(8)
    figs["group_advantages"] = plots.fig_group_advantages(s, grpo_advantages(s), grpo_advantages(s, norm_by_std=False))
    figs["clip_higher"] = plots.fig_clip_higher(*_clip_curves("dapo"))
    figs["gppo"] = plots.fig_clip_higher(*_clip_curves("gppo"))
    lengths = torch.tensor([4, 16, 64])
    aggs = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum-norm")
    figs["agg_weights"] = plots.fig_agg_weights(lengths, {a: toy.agg_token_weights(lengths, 64, a) for a in aggs})
    p = torch.linspace(0, 1, 11)
    kept, exp = zip(*(toy.dynamic_sampling_sweep(p, 50, gs, generator=torch.Generator().manual_seed(0))
                      for gs in (4, 8)))
    figs["dynamic_sampling"] = plots.fig_dynamic_sampling(p, dict(zip((4, 8), kept)), dict(zip((4, 8), exp)))
    n = torch.arange(0, 65)
    figs["overlong"] = plots.fig_overlong(n, overlong_penalty(n, 64, 16), 64, 16)
    m = b.response_mask
    figs["rho_tokens"] = plots.fig_rho_tokens(rho[m], old_h[m])
    ratio = (logp.detach() - old_logp).exp()
    drift = torch.linspace(0, 1, 4)[:, None, None]
    figs["offpolicy_updates"] = plots.fig_offpolicy_updates(1 + (rho - 1) * drift, 1 + (ratio - 1) * drift, m)
    flow = gradient_flow(logp, old_logp, b.advantages, m, h, old_h, (0.95, 1.05), (0.2, 0.28))
    figs["gate_plane"] = plots.fig_gate_plane(ratio, rho, flow, (0.95, 1.05), (0.2, 0.28))
    steps = np.arange(0, 40)
    rng = np.random.default_rng(0)

    def run(erc_on):
        df = pd.DataFrame({"reward_mean": rng.random(40), "eval_acc": np.where(steps % 10 == 0, rng.random(40), np.nan),
                           "entropy_mean": rng.random(40), "grad_norm": rng.random(40),
                           "ppo_clipfrac": rng.random(40) * 0.1, "erc_clipfrac": rng.random(40) * 0.2 * erc_on,
                           "ratio_outside_frac": rng.random(40) * 0.2}, index=pd.Index(steps, name="step"))
        return df
    figs["run_curves"] = plots.fig_run_curves({"DAPO": run(False), "DAPO + ERC": run(True)})
    figs["gated_entropy"] = plots.fig_gated_entropy({"DAPO": (rho[m], old_h[m]),
                                                     "DAPO + ERC": (rho[m] ** 0.5, old_h[m])})
    figs["hero"] = plots.fig_hero(toy.drift_ratios(old, 1, 5))
    return figs


def _clip_curves(mode: str):
    """(ratios, curves, clip_c, bands) of the chapter 4 (``"dapo"``) or chapter 6 (``"gppo"``) clip figure."""
    r = torch.logspace(-0.6, 1.4, 400)
    settings = ({"PPO (0.2, 0.2)": ("dapo", 0.2), "DAPO (0.2, 0.28)": ("dapo", 0.28)} if mode == "dapo" else
                {"PPO clip (0.2, 0.2)": ("dapo", 0.2), "GPPO (0.2, 0.2)": ("gppo", 0.2)})
    curves = {(n, a): toy.per_token_loss_curve(r, a, mode=md, clip_low=0.2, clip_high=hi, clip_c=10.0)
              for n, (md, hi) in settings.items() for a in (1, -1)}
    return r, curves, 10.0, {n: (0.8, 1 + hi) for n, (_, hi) in settings.items()}


@pytest.fixture(scope="module")
def every_figure():
    torch.manual_seed(0)
    return _every_figure()


def test_every_figure_function_is_covered(every_figure):
    drawn = {f.__name__ for f in (getattr(plots, n) for n in plots.__all__ if n.startswith("fig_"))}
    names = {"fig_" + k for k in every_figure} | {"fig_clip_higher"}
    assert drawn <= names | {"fig_ppo_blind_spot"}, drawn - names


def _png_width(fig: Figure) -> int:
    """Width in pixels of the PNG IPython shows for ``fig`` (``print_figure``: bbox 'tight', the figure's dpi)."""
    from IPython.core.pylabtools import print_figure

    png = print_figure(fig, "png")
    return int.from_bytes(png[16:20], "big")


def test_every_text_is_at_least_9pt_at_the_books_width(every_figure):
    from matplotlib.text import Text

    from erc_core.book import style

    for name, fig in every_figure.items():
        assert fig.dpi >= 150, (name, fig.dpi)
        width = _png_width(fig)
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert texts, name
        small = {(t.get_text(), t.get_fontsize()) for t in texts
                 if style.display_points(t.get_fontsize(), width, fig.dpi) < style.MIN_DISPLAY_PT}
        assert not small, (name, width, sorted(small)[:5])


def test_hero_figure_is_legible_on_a_phone_and_marks_what_each_gate_stops():
    """The intro's figure is shown at most 420 CSS px wide (book/intro.md), about 358 px on a 390 px phone: its
    text stays >= 9 pt there; a dot marks a step whose gradient passes, a cross one the gate stops."""
    import numpy as np
    from matplotlib.text import Text

    from erc_core.book import style

    drifts = toy.drift_ratios(torch.linspace(1.5, -1.5, 12), 1, 8)
    fig = plots.fig_hero(drifts)
    assert fig.get_figwidth() == plots.HERO_WIDTH
    phone = 358 / (plots.HERO_WIDTH * 96)  # CSS px shown / CSS px of the figure at its size
    texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
    assert texts and min(t.get_fontsize() * phone for t in texts) >= style.MIN_DISPLAY_PT
    ppo, erc = fig.axes[:2]
    crosses = [c for ax in (ppo, erc) for c in ax.collections if c.get_paths() and len(c.get_offsets())
               and np.allclose(c.get_facecolor()[0][:3], (0, 0, 0))]
    assert all(c.axes is erc for c in crosses)  # PPO-clip stops nothing on these drifts
    rho = np.concatenate([np.asarray(drifts[t][1]) for t in ("collapse", "explode")])
    n_out = int((~((0.95 < rho) & (rho < 1.05))).sum())
    assert sum(len(c.get_offsets()) for c in crosses) == n_out > 0


def test_drift_ratios_are_the_drifts_ratios():
    old = torch.linspace(1.5, -1.5, 10)
    out = toy.drift_ratios(old, 2, 4, sampled_ratio=1.2)
    for target, (r, rho) in out.items():
        steps = toy.drift_keep_sampled(old, 2, 4, target=target, sampled_ratio=1.2)
        h = entropy_from_logits(steps)
        torch.testing.assert_close(r, steps[:, 2].exp() / steps[0, 2].exp())
        torch.testing.assert_close(rho, entropy_ratio(h, h[0].expand(5)))
        assert r[-1] == pytest.approx(1.2, rel=1e-5) and rho[0] == 1.0
    assert out["collapse"][1][-1] < 1 < out["explode"][1][-1]


def test_display_points_follows_the_scaling():
    from erc_core.book import style

    # a 7.5 in, 120 dpi PNG (900 px) shown 672 px wide: a 7 pt legend is 5.2 CSS pt, too small
    assert style.display_points(7, 900, 120) == pytest.approx(7 * 672 / 900 * 120 / 96)
    assert style.display_points(7, 900, 120) < style.MIN_DISPLAY_PT
    assert style.display_points(9, 6.4 * 200, 200) >= style.MIN_DISPLAY_PT  # the book's 6.4 in at 200 dpi
    assert style.display_points(10, 300, 100) == pytest.approx(10 * 100 / 96)  # narrower than the column: 1:1


def test_log_axes_have_plain_decimal_ticks(every_figure):
    import re

    n_log = 0
    for name, fig in every_figure.items():
        fig.canvas.draw()
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
                assert not [s for s in labels if re.search(r"\\times|\^|e[+-]|10\$", s)], (name, labels)
                if axis.get_scale() == "log" and ax.get_visible():
                    n_log += 1
                    lo, hi = sorted(axis.get_view_interval())
                    inside = [t for t, lab in zip(axis.get_majorticklocs(), axis.get_majorticklabels())
                              if lo <= t <= hi and lab.get_text() and lab.get_visible()]
                    shared = ax.get_shared_x_axes() if axis is ax.xaxis else ax.get_shared_y_axes()
                    if inside or len(shared.get_siblings(ax)) == 1:  # a shared axis may show its labels once
                        assert len(inside) >= 3, (name, labels)
    assert n_log >= 6  # temperature, clip (A < 0), agg weights, rho tokens, gate plane, gated entropy ...


@pytest.mark.parametrize("lo,hi", [(0.93, 1.08), (0.5, 2.0), (0.25, 25.0), (1.0, 5000.0), (0.999, 1.001)])
def test_plain_log_locator_gives_at_least_3_round_ticks(lo, hi):
    from erc_core.book.style import PlainLogLocator, plain_number

    ticks = PlainLogLocator().tick_values(lo, hi)
    assert 3 <= len(ticks) <= 8 and all(lo <= t <= hi for t in ticks), ticks
    labels = [plain_number(t) for t in ticks]
    assert len(set(labels)) == len(labels) and not any("e" in s for s in labels), labels


def _figure_colors(fig: Figure) -> set[str]:
    """Hex colours of every visible line, patch, scatter and fill of ``fig`` (images / colormaps excluded)."""
    from matplotlib.collections import Collection
    from matplotlib.colors import to_hex, to_rgba
    from matplotlib.legend import Legend
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    skip = {fig.patch, *(ax.patch for ax in fig.axes)}
    skip |= {leg.legendPatch for leg in fig.findobj(Legend)}
    out = set()
    for art in fig.findobj(lambda a: isinstance(a, (Line2D, Patch, Collection))):
        if art in skip or not art.get_visible():
            continue
        if isinstance(art, Line2D):
            cols = [art.get_color()] if art.get_linestyle() not in ("None", "none", "") else []
            cols += [art.get_markerfacecolor()] if art.get_marker() not in (None, "None", "none", "") else []
        elif isinstance(art, Patch):
            cols = [art.get_facecolor()] if art.get_fill() else []
        else:
            if art.get_array() is not None:
                continue  # colormapped (imshow, colorbar)
            cols = list(art.get_facecolors())
        out |= {to_hex(c) for c in cols if to_rgba(c)[3] > 0}
    return out


def test_every_figure_uses_only_palette_colours(every_figure):
    from matplotlib.colors import to_hex

    from erc_core.book import style

    allowed = {to_hex(c) for c in style.palette_colors()} | {"#ffffff", "#000000"}  # white frames, black spines
    for name, fig in every_figure.items():
        used = {to_hex(c) for c in _figure_colors(fig)}
        assert used <= allowed, (name, used - allowed)


def test_palette_has_one_doc_per_key():
    from erc_core.book import style

    assert set(style.PALETTE_DOC) == set(style.PALETTE) and all(style.PALETTE_DOC.values())
    meaning = {k: v for k, v in style.PALETTE.items() if k != "kept"}  # kept is the ERC band's colour on purpose
    assert len(set(map(str.lower, meaning.values()))) == len(meaning)
    assert set(plots.COLORS.values()) <= set(style.PALETTE.values())


def _logp_gradient(ratios: torch.Tensor, sign: int, mode: str, clip_high: float) -> torch.Tensor:
    """d loss_t / d log pi_t of ``policy_loss`` (the public function), one token per ratio, by autograd in float64."""
    logp = ratios.double().log().requires_grad_()
    old = torch.zeros_like(logp)
    adv, mask = torch.full_like(logp, float(sign)), torch.ones_like(logp, dtype=torch.bool)
    loss, _ = policy_loss(logp[None], old[None], adv[None], mask[None], mode=mode, clip_low=0.2,
                          clip_high=clip_high, clip_c=10.0, agg="token-mean", erc_bounds=None)
    (grad,) = torch.autograd.grad(loss * len(ratios), logp)  # token-mean divides by N
    return grad


@pytest.mark.parametrize("mode", ["dapo", "gppo"])
def test_clip_figure_gradient_panel_equals_autograd_through_policy_loss(mode):
    import numpy as np

    r, curves, clip_c, bands = _clip_curves(mode)
    fig = plots.fig_clip_higher(r, curves, clip_c, bands)
    assert len(fig.axes) == 4
    names = list(bands)
    for col, sign in ((0, 1), (1, -1)):
        ax = fig.axes[2 + col]
        assert "log pi" in ax.get_ylabel()
        lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
        assert len(lines) == len(names)
        for line, name in zip(lines, names):
            md = "gppo" if name.startswith("GPPO") else "dapo"
            hi = bands[name][1] - 1
            x = torch.as_tensor(np.asarray(line.get_xdata(), dtype=float))
            want = _logp_gradient(x, sign, md, hi).numpy()
            np.testing.assert_allclose(np.asarray(line.get_ydata(), dtype=float), want, rtol=1e-4, atol=1e-5)


def test_gppo_keeps_the_gradient_the_ppo_clip_zeroes():
    import numpy as np

    r, curves, clip_c, bands = _clip_curves("gppo")
    fig = plots.fig_clip_higher(r, curves, clip_c, bands)
    ppo, gppo = (ln for ln in fig.axes[2].get_lines() if len(ln.get_xdata()) > 2)
    x = np.asarray(ppo.get_xdata())
    beyond = x > 1.2 + 1e-3  # A > 0, past the upper clip edge
    assert beyond.sum() > 10
    assert np.all(np.asarray(ppo.get_ydata())[beyond] == 0)
    np.testing.assert_allclose(np.asarray(gppo.get_ydata())[beyond], -1.2, rtol=1e-5)  # -(1 + eps) A
    # the loss values coincide, so only the gradient row tells them apart
    assert torch.allclose(curves[("PPO clip (0.2, 0.2)", 1)][0], curves[("GPPO (0.2, 0.2)", 1)][0])


def test_coinciding_traces_stay_visible(every_figure):
    """Where two traces can coincide, the one below is wider than the one on top (or dashed under solid)."""
    fig = every_figure["blind_spot"]
    ax = fig.axes[1]  # what PPO-clip sees: both drifts keep the same sampled-token ratio
    collapse, explode = (ln for ln in ax.get_lines() if ln.get_label() in ("collapse", "explode"))
    assert collapse.get_zorder() <= explode.get_zorder()
    assert collapse.get_linewidth() > explode.get_linewidth() + 1
    assert collapse.get_markersize() > explode.get_markersize()
    assert explode.get_linestyle() != "-"
    for name in ("clip_higher", "gppo"):
        for ax in every_figure[name].axes:
            lines = [ln for ln in ax.get_lines() if len(ln.get_xdata()) > 2]
            widths = sorted({round(ln.get_linewidth(), 2) for ln in lines})
            assert len(widths) >= 2 and widths[-1] >= 2 * widths[0], (name, widths)


def test_palette_html_lists_every_key_with_its_colour():
    from erc_core.book import style

    page = style.palette_html()
    assert page.count("<tr>") == len(style.PALETTE)
    for key, colour in style.PALETTE.items():
        assert f"<code>{key}</code>" in page and f"background:{colour}" in page


def test_glossary_shows_the_palette_the_figures_use():
    """The colour key on the glossary page is the palette's own table (a palette change must update the page)."""
    from pathlib import Path

    from erc_core.book.style import palette_html

    text = (Path(__file__).resolve().parents[1] / "book" / "glossary.md").read_text()
    start, end = "<!-- palette: generated by erc_core.book.style.palette_html(); tests/test_plots.py checks it -->\n", \
        "\n<!-- /palette -->"
    assert start in text and end in text
    assert text.split(start, 1)[1].split(end, 1)[0] == palette_html()


# ---------------------------------------------------------------------------------------------- chapters 7 and 8
def _llm_and_study_figures() -> dict[str, Figure]:
    """Every figure of ``erc_core.book.plots_llm`` and ``erc_core.book.plots_study`` on small synthetic tables."""
    import numpy as np
    import pandas as pd

    from erc_core.book import plots_llm, plots_study

    rng = np.random.default_rng(0)
    rows, toks = [], []
    for variant in ("dapo", "dapo_erc", "gppo", "gppo_erc", "dapo_kl"):
        erc = variant.endswith("_erc")
        for seed in range(3):
            run_id = f"{variant}__seed{seed}"
            rows.append(dict(run_id=run_id, variant=variant, seed=seed, step=0, eval_acc=0.2, time_total=1.0))
            for step in range(1, 13):
                out = float(rng.uniform(0.1, 0.4))
                rows.append(dict(run_id=run_id, variant=variant, seed=seed, step=step, reward_mean=rng.uniform(),
                                 entropy_mean=rng.uniform(0.5, 1.5), grad_norm=rng.uniform(0.5, 3),
                                 ppo_clipfrac=rng.uniform(1e-3, 0.05), erc_clipfrac=out if erc else 0.0,
                                 ratio_outside_frac=out, time_generate=1.0, time_old=0.5, time_update=2.0,
                                 time_step=3.5, tokens_per_s=4.0, time_total=1.0 + 3.5 * step,
                                 eval_acc=rng.uniform() if step % 4 == 0 else None))
            for t in range(40):
                rho = float(rng.lognormal(0, 0.06))
                toks.append(dict(variant=variant, step=4, response=t // 8, t=t % 8, token=f" {t}",
                                 old_entropy=rng.exponential(0.5), rho=rho, erc_low=0.95, erc_high=1.05,
                                 outside_band=not 0.95 < rho < 1.05, gated=erc and not 0.95 < rho < 1.05,
                                 advantage=0.5, reward=1.0, run_id=run_id))
    table, tokens = pd.DataFrame(rows), pd.DataFrame(toks)
    summary = pd.DataFrame({"variant": ["dapo", "dapo_erc", "gppo", "gppo_erc"], "mean": [0.4, 0.5, 0.45, 0.42],
                            "low": [0.3, 0.4, 0.35, 0.3], "high": [0.5, 0.6, 0.55, 0.54]})
    tests = pd.DataFrame({"name": ["a long comparison: accuracy dapo_erc - dapo", "b", "c"], "mean": [0.1, -0.2, 3.0],
                          "low": [-0.1, -0.3, 2.0], "high": [0.3, -0.1, 4.0], "claim": ["1", "1", "2"],
                          "verdict": ["not resolved", "resolved: -", "resolved: +"], "family_size": 3})
    h = torch.linspace(0.01, 5, 60)
    metrics = {name: table[table.run_id == f"{v}__seed0"].set_index("step")
               for name, v in (("DAPO + ERC", "dapo_erc"), ("DAPO", "dapo"))}
    return {
        "precision_ratio": plots_llm.fig_precision_ratio({"ref": h, "a": h * torch.linspace(0.9, 1.1, 60)}),
        "llm_run": plots_llm.fig_llm_run(metrics),
        "token_text": plots_llm.fig_token_text(tokens, [(4, 0), (4, 1)]),
        "shipped_runs": plots_llm.fig_shipped_runs(table, {"dapo": "DAPO", "dapo_erc": "DAPO + ERC"}),
        "study_curves": plots_study.fig_study_curves(table, {
            "gated": ("erc_clipfrac", ["dapo_erc", "gppo_erc"]), "would gate": ("ratio_outside_frac", ["dapo"]),
            "clipped": ("ppo_clipfrac", ["dapo", "dapo_erc", "gppo", "gppo_erc", "dapo_kl"])},
            smooth=3, logy=("clipped",)),
        "study_bars": plots_study.fig_study_bars({"x": summary, "y": summary, "z": summary}),
        "token_entropy": plots_study.fig_token_entropy(tokens, ["dapo", "dapo_erc", "gppo"]),
        "forest": plots_study.fig_forest(tests),
    }


def test_llm_and_study_figures_follow_the_book_style():
    """Chapters 7 and 8's figures: the book's width and dpi, text >= 9 pt at the book's width, only palette colours,
    no exponent tick labels, panels in rows of at most two, ERC / base in the colours of chapters 2, 5 and 6."""
    import re

    from matplotlib.colors import to_hex
    from matplotlib.text import Text

    from erc_core.book import plots_study, style

    allowed = {to_hex(c) for c in style.palette_colors()} | {"#ffffff", "#000000"}
    for name, fig in _llm_and_study_figures().items():
        assert fig.get_figwidth() == pytest.approx(style.FIG_WIDTH) and fig.dpi == style.DPI, name
        width = _png_width(fig)
        assert width <= style.FIG_WIDTH * style.DPI * 1.05, (name, width)  # nothing sticks out of the figure
        small = {(t.get_text(), t.get_fontsize()) for t in fig.findobj(Text) if t.get_visible()
                 and t.get_text().strip() and style.display_points(t.get_fontsize(), width, fig.dpi) < 9}
        assert not small, (name, sorted(small)[:5])
        assert {to_hex(c) for c in _figure_colors(fig)} <= allowed, name
        fig.canvas.draw()
        for ax in fig.axes:
            cols = ax.get_subplotspec().get_gridspec().ncols if ax.get_subplotspec() else 1
            assert cols <= 2, (name, cols)
            for axis in (ax.xaxis, ax.yaxis):
                labels = [t.get_text() for t in axis.get_ticklabels() if t.get_visible() and t.get_text()]
                assert not [s for s in labels if re.search(r"\\times|\^|e[+-]|10\$", s)], (name, labels)
    looks = plots_study.variant_styles(["dapo", "dapo_erc", "gppo", "gppo_erc", "dapo_kl"])
    assert looks["dapo_erc"]["color"] == looks["gppo_erc"]["color"] == style.PALETTE["erc"]
    assert looks["dapo"]["color"] == looks["gppo"]["color"] == style.PALETTE["base"]
    assert looks["dapo_kl"]["color"] not in (style.PALETTE["erc"], style.PALETTE["base"])
    assert looks["dapo"]["ls"] == looks["dapo_erc"]["ls"] != looks["gppo"]["ls"]
