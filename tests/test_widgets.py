"""erc_core.book.widgets.figure_slider and the two figure sliders of chapters 2 and 4: every slider position is
a precomputed figure, the slider is linked to the stack holding them, and bad input is refused by name."""

from __future__ import annotations

import base64
import re

import ipywidgets as w
import pytest
import torch
from ipywidgets.embed import embed_data
from matplotlib.figure import Figure

from conftest import assert_sliders_precomputed
from erc_core.book import plots, toy, widgets


def _line(v: float) -> Figure:
    fig = Figure(figsize=(2.0, 1.0), dpi=50)
    fig.subplots().plot([0, 1], [0, v])
    return fig


def _pngs(box: w.VBox) -> list[bytes]:
    """The PNG of every page of a ``figure_slider``."""
    out = []
    for page in box.children[1].children:
        (data,) = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', page.value)
        png = base64.b64decode(data)
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        out.append(png)
    return out


def _links(box: w.VBox) -> list[dict]:
    """The saved ``LinkModel`` states whose source is this box's slider (as the static HTML book embeds them)."""
    state = embed_data(views=[box])["manager_state"]["state"]
    key = f"IPY_MODEL_{box.children[0].model_id}"
    return [m["state"] for m in state.values() if m["model_name"] == "LinkModel" and m["state"]["source"][0] == key]


def test_figure_slider_precomputes_one_distinct_figure_per_position():
    values = [0.5, 1.0, 2.0, 4.0]
    box = widgets.figure_slider(_line, values, "slope")
    slider, stack = box.children
    assert isinstance(slider, w.SelectionSlider) and isinstance(stack, w.Stack)
    assert list(slider.options) == ["0.5", "1", "2", "4"]
    assert len(stack.children) == len(values) and all(isinstance(p, w.HTML) for p in stack.children)
    assert slider.index == stack.selected_index == 2
    pngs = _pngs(box)
    assert len(set(pngs)) == len(values)  # each position shows its own drawing
    assert [ln["target"] for ln in _links(box)] == [[f"IPY_MODEL_{stack.model_id}", "selected_index"]]
    assert _links(box)[0]["source"][1] == "index"
    state = embed_data(views=[box])["manager_state"]
    assert_sliders_precomputed(type("Nb", (), {"metadata": {"widgets": {
        "application/vnd.jupyter.widget-state+json": state}}})())


def test_figure_slider_labels_initial_and_draws_each_value_once():
    seen = []

    def draw(v):
        seen.append(v)
        return _line(v)

    box = widgets.figure_slider(draw, [1, 2, 3], "k", labels=["one", "two", "three"], initial=0)
    assert seen == [1, 2, 3]
    assert list(box.children[0].options) == ["one", "two", "three"]
    assert box.children[0].index == box.children[1].selected_index == 0
    assert 'alt="k = 3"' in box.children[1].children[2].value


@pytest.mark.parametrize("kwargs, name", [
    (dict(values=[]), "values"),
    (dict(values=[1, 2], labels=["a"]), "labels"),
    (dict(values=[1, 2], labels=["a", "a"]), "labels"),
    (dict(values=[1, 2], initial=2), "initial"),
    (dict(values=[1, 2], initial=-1), "initial"),
    (dict(values=[1], dpi=0), "dpi"),
])
def test_figure_slider_rejects_bad_input_by_name(kwargs, name):
    with pytest.raises(ValueError, match=name):
        widgets.figure_slider(_line, description="x", **kwargs)


def test_figure_slider_needs_figures():
    with pytest.raises(TypeError, match="Figure"):
        widgets.figure_slider(lambda v: None, [1], "x")


# ---------------------------------------------------------------------------------------------- chapter 2
@pytest.fixture(scope="module")
def traces():
    b = toy.token_batch(2, 6, 5, drift_scale=0.0, generator=torch.Generator().manual_seed(1))
    return toy.offpolicy_updates(b, 6, 0.1), toy.offpolicy_updates(b, 6, 0.1, erc_bounds=(0.95, 1.05))


def test_update_trace_first_is_a_prefix(traces):
    ppo, _ = traces
    part = ppo.first(2)
    assert part.probs.shape[0] == part.ratio.shape[0] == part.rho.shape[0] == 3 and len(part.stats) == 2
    assert torch.equal(part.rho, ppo.rho[:3]) and torch.equal(part.sampled_ratio_range(), ppo.sampled_ratio_range()[:3])
    assert ppo.first(6).rho.shape == ppo.rho.shape
    for bad in (-1, 7):
        with pytest.raises(ValueError, match="n_updates"):
            ppo.first(bad)


def test_drift_upto_keeps_the_full_runs_axes(traces):
    ppo, erc = traces
    full = plots.fig_offpolicy_drift(ppo, erc)
    part = plots.fig_offpolicy_drift_upto(ppo, erc, 2)
    assert len(part.axes) == len(full.axes) == 4
    for ax, ref in zip(part.axes, full.axes):
        assert ax.get_xlim() == ref.get_xlim() and ax.get_ylim() == ref.get_ylim()
    # the lines of the first panel end at update 2
    assert max(line.get_xdata()[-1] for line in part.axes[0].lines if len(line.get_xdata()) > 2) == 2
    for bad in (0, 7):
        with pytest.raises(ValueError, match="n_shown"):
            plots.fig_offpolicy_drift_upto(ppo, erc, bad)


def test_drift_slider_frames_differ(traces):
    ppo, erc = traces
    box = widgets.figure_slider(lambda k: plots.fig_offpolicy_drift_upto(ppo, erc, k), [1, 3, 6], "updates", dpi=40)
    assert len(set(_pngs(box))) == 3 and len(_links(box)) == 1


# ---------------------------------------------------------------------------------------------- chapter 4
def _clip_figure(eps_high: float) -> Figure:
    r = torch.logspace(-0.6, 1.4, 200)
    settings = {"PPO (0.2, 0.2)": 0.2, f"DAPO (0.2, {eps_high:g})": eps_high}
    curves = {(n, a): toy.per_token_loss_curve(r, a, clip_low=0.2, clip_high=hi, clip_c=10.0)
              for n, hi in settings.items() for a in (1, -1)}
    return plots.fig_clip_higher(r, curves, 10.0, {n: (0.8, 1 + hi) for n, hi in settings.items()}, grad_wrt="ratio")


def test_clip_higher_gradient_wrt_ratio():
    fig = _clip_figure(0.28)
    assert fig.axes[2].get_ylabel() == "d loss / d r"
    # A = +1, DAPO: d loss / d r = -1 below 1.28, 0 above
    curves = [ln.get_data() for ln in fig.axes[2].lines if len(ln.get_xdata()) > 2]
    assert len(curves) == 2  # PPO, then DAPO
    x, y = curves[1]
    assert set(y[(x > 0.85) & (x < 1.27)]) == {-1.0} and set(y[x > 1.29]) == {0.0}
    with pytest.raises(ValueError, match="grad_wrt"):
        plots.fig_clip_higher(torch.ones(3), {}, 10.0, {}, grad_wrt="theta")


def test_eps_high_slider_frames_differ():
    box = widgets.figure_slider(_clip_figure, [0.2, 0.28, 0.4], "eps_high", dpi=40)
    assert list(box.children[0].options) == ["0.2", "0.28", "0.4"]
    assert len(set(_pngs(box))) == 3 and len(_links(box)) == 1
