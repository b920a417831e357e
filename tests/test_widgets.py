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
