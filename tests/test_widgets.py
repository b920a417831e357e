"""The tau slider: static twin + PNG fallback in batch, a live slider snapping to the given taus.

Runs on ipywidgets 7.7.1 (Colab) and 8.
"""

from __future__ import annotations

import base64
import re

import numpy as np
import pytest

from qam_lite import widgets


def _draw(ax, tau):
    x = np.linspace(-3.0, 3.0, 50)
    ax.plot(x, np.exp(-((x - tau) ** 2)))
    ax.set(xlabel="action a", ylabel="density", title=f"tau = {tau:g}")


TAUS = [0.0, 0.5, 1.0, 2.0, 3.0]


def test_batch_gives_the_static_twin_and_a_png_fallback():
    sweep = widgets.tau_explorer(_draw, TAUS, live=False, width=2.0, height=1.5)
    bundle = sweep._repr_mimebundle_()
    # One player frame per tau, nothing in between.
    frames = re.findall(r"frames\[(\d+)\] = \"data:image/png;base64", bundle["text/html"])
    assert sorted(map(int, frames)) == list(range(len(TAUS)))
    assert 'type="range"' in bundle["text/html"]
    assert base64.b64decode(bundle["image/png"]).startswith(b"\x89PNG")
    assert "0, 0.5, 1, 2, 3" in bundle["text/plain"]
    assert not bundle["text/plain"].startswith(("interactive(", "<IPython"))


def test_a_kernel_alone_is_not_a_reader(monkeypatch):
    monkeypatch.setattr(widgets, "kernel_available", lambda: True)
    monkeypatch.setenv("QAM_LITE_BATCH", "1")
    assert not widgets.interactive()
    monkeypatch.delenv("QAM_LITE_BATCH")
    assert widgets.interactive()
    monkeypatch.setattr(widgets, "kernel_available", lambda: False)
    assert not widgets.interactive()


def test_batch_default_makes_no_widget(monkeypatch):
    monkeypatch.setattr(widgets, "kernel_available", lambda: True)
    monkeypatch.setenv("QAM_LITE_BATCH", "1")
    made = []
    monkeypatch.setattr(widgets, "_live_slider", lambda *a, **k: made.append(1))
    shown = widgets.tau_explorer(_draw, TAUS[:2], width=2.0, height=1.5)
    assert isinstance(shown, widgets.TauSweep)
    assert made == []


def test_live_slider_snaps_to_the_trained_taus():
    traitlets = pytest.importorskip("traitlets")
    slider = widgets.live_slider_widget(np.array(TAUS))
    assert [value for _, value in slider.options] == TAUS
    slider.value = 2.0
    with pytest.raises(traitlets.TraitError):
        slider.value = 0.125  # no value between trained taus
    smooth = widgets.live_slider_widget(np.array([0.0, 20.0]), snap=False)
    assert (smooth.min, smooth.max) == (0.0, 20.0)
    smooth.value = 7.3
    assert smooth.value == pytest.approx(7.3)


def test_fallback_taus_include_both_ends():
    assert widgets.fallback_taus(np.linspace(0, 20, 21), 4).tolist() == [0, 7, 13, 20]
    assert widgets.fallback_taus([0.0, 2.0], 4).tolist() == [0.0, 2.0]


@pytest.mark.parametrize("taus", [[1.0], [0.0, -1.0], [0.0, np.nan]])
def test_bad_taus_are_named(taus):
    with pytest.raises(ValueError, match="taus must"):
        widgets.tau_explorer(_draw, taus, live=False)


def _three_panels(axes, tau):
    """Chapter 8's live figure in miniature: two scatter panels (panel 1 with a legend naming
    a large star) and a success curve, each with its own y-label."""
    rng = np.random.default_rng(0)
    for ax in axes[:2]:
        b = rng.normal(size=(200, 2)) * 0.3
        ax.scatter(*b.T, s=5, label="behaviour")
        ax.scatter(*(0.5 * b.T + 0.1 * tau), s=5, label="policy")
        ax.scatter([0.1], [0.2], marker="*", s=120, color="black", label="data's chunk")
        ax.set(xlabel="chunk PC 1", ylabel="chunk PC 2", title=f"state 3, tau = {tau:g}")
    axes[0].legend(loc="upper right", fontsize=7)
    axes[2].plot([0, 1, 2], [0.0, 40.0, 90.0])
    axes[2].set(xlabel="tau", ylabel="success (%)", ylim=(-3, 103))


def _labels_over_left_neighbour(fig) -> list[str]:
    """y-labels and y-tick labels of a panel that reach into the panel on its left."""
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    found = []
    for left, right in zip(fig.axes[:-1], fig.axes[1:], strict=True):
        box = left.get_window_extent(renderer)
        for text in [right.yaxis.label, *right.get_yticklabels()]:
            if text.get_text() and text.get_window_extent(renderer).overlaps(box):
                found.append(text.get_text())
    return found


def test_live_frame_is_laid_out_with_a_framed_legend():
    import matplotlib.pyplot as plt

    from qam_lite.plotting import subplots

    # Drawn without a layout (the live redraw before), the labels run into the left panel.
    fig, axes = subplots(1, 3, width=3.4, height=3.2)
    _three_panels(axes, 1.0)
    assert _labels_over_left_neighbour(fig), "the miniature no longer shows the overlap"
    plt.close(fig)
    fig = widgets.live_frame(_three_panels, 1.0, ncols=3, width=3.4, height=3.2)
    try:
        assert _labels_over_left_neighbour(fig) == []
        legend = fig.axes[0].get_legend()
        assert legend.get_frame_on()
        # The key's markers are one size: the star is not drawn as large as the data's star.
        sizes = {float(h.get_sizes()[0]) for h in legend.legend_handles}
        assert sizes == {widgets.LEGEND_MARKER_SIZE}
    finally:
        plt.close(fig)


def test_every_frame_is_laid_out(monkeypatch):
    calls = []
    original = widgets.lay_out

    def spy(fig, axes):
        calls.append(1)
        original(fig, axes)

    monkeypatch.setattr(widgets, "lay_out", spy)
    widgets.tau_sweep_html(_draw, TAUS[:3], width=2.0, height=1.5)
    assert len(calls) >= 3  # one per player frame
    calls.clear()
    widgets.tau_sweep_png(_draw, TAUS[:2], width=2.0, height=1.5)
    assert len(calls) == 1
    calls.clear()
    pytest.importorskip("ipywidgets")
    shown = widgets._live_slider(_draw, np.array(TAUS), snap=True, ncols=1, width=2.0, height=1.5)
    # ipywidgets 8 draws the first frame at once, 7.7 (Colab) only once a kernel displays the
    # widget, which pytest has none of: count from a known start, then move the slider.
    slider = shown.widget.children[0]
    assert slider.description == widgets.SLIDER_LABEL
    calls.clear()
    slider.value = TAUS[2]
    assert calls == [1]  # the new frame went through live_frame and lay_out


def test_live_slider_is_labelled_and_as_wide_as_the_figure():
    pytest.importorskip("ipywidgets")
    taus = np.linspace(0.0, 20.0, 21)  # chapter 3's slider
    slider = widgets.live_slider_widget(taus, figure_width=6.0)
    assert "inverse temperature" in slider.description
    assert slider.style.description_width == "initial"  # the label is shown in full
    assert slider.layout.width == f"{widgets.slider_width(taus, 6.0)}px"
    assert widgets.slider_width(taus, 6.0) >= 600  # 6 inches at the book's 110 dpi
    # Without a figure width: room for every value, never the 124 px default.
    assert widgets.slider_width(taus) >= 22 * len(taus)
    assert widgets.slider_width(np.array([0.0, 1.0])) == 360
    smooth = widgets.live_slider_widget(np.array([0.0, 20.0]), snap=False, label="tau")
    assert smooth.description == "tau" and smooth.layout.width == "360px"
