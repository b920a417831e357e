"""A ``tau`` slider that works in a live notebook and in the static rendered book.

A reader with a live kernel (Jupyter, Colab) gets an ``ipywidgets`` slider that redraws on every
move. A static page cannot run Python, and a notebook executed in batch (``qam-lite book``, the
site build, the tests: they set ``QAM_LITE_BATCH=1``) has a kernel but nobody watching, so there
:func:`tau_explorer` instead returns a pre-rendered sweep: a matplotlib animation whose JavaScript
player (``to_jshtml``) has a scrub bar with one frame per ``tau`` (interactive without a kernel),
bundled with a PNG of a few frames side by side for viewers that run no JavaScript.

The live slider snaps to the given ``taus`` (``SelectionSlider``): a sweep over trained policies
has a frame for each trained ``tau`` and nothing in between. Works with ipywidgets 7.7 and 8.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation

from qam_lite.modes import batch
from qam_lite.plotting import figure_png, subplots

Draw = Callable[[object, float], None]


def kernel_available() -> bool:
    """True inside a running IPython kernel (where ``ipywidgets`` can talk to a front end)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def interactive() -> bool:
    """True when a reader is at a live kernel: a kernel runs and this is not a batch execution.

    A batch execution has a kernel too, so the kernel alone does not tell; the book's runners set
    ``QAM_LITE_BATCH=1`` (see :func:`qam_lite.book.batch_env`).
    """
    return kernel_available() and not batch()


def _validated_taus(taus: Sequence[float]) -> np.ndarray:
    taus = np.asarray(taus, dtype=float).ravel()
    if taus.size < 2:
        raise ValueError(f"taus must hold at least 2 values to sweep, got {taus.size}")
    if np.any(taus < 0) or not np.all(np.isfinite(taus)):
        raise ValueError(f"taus must be finite and >= 0, got {taus.tolist()}")
    return taus


def _label(tau: float) -> str:
    return f"{tau:g}"


def tau_sweep_html(
    draw: Draw,
    taus: Sequence[float],
    *,
    ncols: int = 1,
    width: float = 4.2,
    height: float = 3.2,
    interval: int = 500,
) -> str:
    """Pre-render ``draw(ax, tau)`` for every ``tau`` into a self-contained HTML animation player.

    ``ax`` is one Axes (``ncols=1``) or an array of ``ncols`` Axes; each frame clears them first.
    Returns the HTML string (frames are embedded PNGs, one per ``tau``, in the given order).
    """
    taus = _validated_taus(taus)
    fig, axes = subplots(1, ncols, width=width, height=height)

    def frame(i: int):
        for ax in np.atleast_1d(axes):
            ax.clear()
        draw(axes, float(taus[i]))
        fig.tight_layout()
        return []

    anim = FuncAnimation(fig, frame, frames=len(taus), interval=interval, blit=False)
    try:
        return anim.to_jshtml(default_mode="once")
    finally:
        plt.close(fig)


def fallback_taus(taus: Sequence[float], k: int = 4) -> np.ndarray:
    """Up to ``k`` of ``taus`` spread over the list, first and last included."""
    taus = _validated_taus(taus)
    if k < 1:
        raise ValueError(f"fallback must show at least 1 tau, got {k}")
    index = np.unique(np.round(np.linspace(0, taus.size - 1, min(k, taus.size))).astype(int))
    return taus[index]


def tau_sweep_png(
    draw: Draw,
    taus: Sequence[float],
    *,
    ncols: int = 1,
    width: float = 4.2,
    height: float = 3.2,
    dpi: int = 80,
) -> bytes:
    """PNG of ``draw`` at each of ``taus`` (side by side for one panel, one row each otherwise)."""
    taus = _validated_taus(taus) if len(taus) > 1 else np.asarray(taus, dtype=float).ravel()
    rows, cols = (1, taus.size) if ncols == 1 else (taus.size, ncols)
    fig, axes = subplots(rows, cols, width=width, height=height, squeeze=False)
    for i, tau in enumerate(taus):
        group = axes[0, i] if ncols == 1 else axes[i]
        draw(group, float(tau))
    fig.tight_layout()
    return figure_png(fig, dpi)


class TauSweep:
    """A pre-rendered ``tau`` sweep, displayed as a JS scrub player (HTML) with a PNG fallback.

    Front ends pick the richest type they can show: Jupyter, Colab and the rendered book show the
    player; viewers without JavaScript (or exports to PDF) show the PNG.
    """

    def __init__(self, html: str, png: bytes, taus: np.ndarray):
        self.html, self.png, self.taus = html, png, taus

    def _repr_mimebundle_(self, include=None, exclude=None):
        values = ", ".join(_label(t) for t in self.taus)
        return {
            "text/html": self.html,
            "image/png": base64.b64encode(self.png).decode("ascii"),
            "text/plain": f"tau sweep over {values} (scrub the player to change tau)",
        }


def tau_explorer(
    draw: Draw,
    taus: Sequence[float],
    *,
    live: bool | None = None,
    snap: bool = True,
    ncols: int = 1,
    width: float = 4.2,
    height: float = 3.2,
    fallback: int = 4,
) -> TauSweep | None:
    """A ``tau`` slider: live when a reader is at a kernel, a pre-rendered sweep otherwise.

    Args:
      draw: ``draw(ax, tau)`` draws one frame (``ax`` an Axes, or an array when ``ncols > 1``);
        it should label its axes and show ``tau`` (e.g. in the title).
      taus: the ``tau`` values (>= 2, each >= 0): one frame each in the static player; the live
        slider snaps to exactly these values.
      live: force the live slider (True) or the static sweep (False); default :func:`interactive`.
      snap: ``False`` makes the live slider a continuous ``FloatSlider`` over
        ``[min(taus), max(taus)]`` (only for draws that can draw any ``tau``, e.g. closed forms).
      ncols, width, height: panel layout (inches per panel).
      fallback: how many ``taus`` the static PNG fallback shows (see :func:`fallback_taus`).

    Returns:
      ``None`` when the live slider was displayed; otherwise a :class:`TauSweep` (display it as
      a cell's last expression).
    """
    taus = _validated_taus(taus)
    if live is None:
        live = interactive()
    if live and _live_slider(draw, taus, snap=snap, ncols=ncols, width=width, height=height):
        return None
    html = tau_sweep_html(draw, taus, ncols=ncols, width=width, height=height)
    shown = fallback_taus(taus, fallback)
    png = tau_sweep_png(draw, shown, ncols=ncols, width=width, height=height)
    return TauSweep(html, png, taus)


def live_slider_widget(taus: np.ndarray, *, snap: bool = True):
    """The ``tau`` control: a ``SelectionSlider`` over ``taus`` or a ``FloatSlider`` over their
    range (``snap=False``). Uses only what ipywidgets 7.7 and 8 share."""
    import ipywidgets

    if snap:
        return ipywidgets.SelectionSlider(
            options=[(_label(t), float(t)) for t in taus],
            value=float(taus[0]),
            description="tau",
            continuous_update=False,
        )
    return ipywidgets.FloatSlider(
        value=float(taus[0]),
        min=float(taus.min()),
        max=float(taus.max()),
        step=float(np.ptp(taus)) / 100 or 0.01,
        description="tau",
        continuous_update=False,
    )


def _live_slider(draw: Draw, taus: np.ndarray, *, snap: bool, ncols: int, width, height):
    """Display ``ipywidgets.interact`` over ``tau``; return it, or ``None`` without ipywidgets."""
    try:
        import ipywidgets
    except ImportError:
        return None

    def redraw(tau: float):
        fig, axes = subplots(1, ncols, width=width, height=height)
        draw(axes, float(tau))
        plt.show()
        plt.close(fig)

    return ipywidgets.interact(redraw, tau=live_slider_widget(taus, snap=snap))
