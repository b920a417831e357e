"""A ``tau`` slider that works both in a live notebook and in the static rendered book.

A live kernel can redraw on every slider move (``ipywidgets``); a static HTML page cannot run
Python, so :func:`tau_explorer` also pre-renders a sweep over ``taus`` as a matplotlib animation
whose JavaScript player (``to_jshtml``) has a scrub bar: the page stays interactive without a
kernel.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation

from qam_lite.plotting import subplots

Draw = Callable[[object, float], None]


def kernel_available() -> bool:
    """True inside a running IPython kernel (where ``ipywidgets`` can talk to the front end)."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and getattr(shell, "kernel", None) is not None


def _validated_taus(taus: Sequence[float]) -> np.ndarray:
    taus = np.asarray(taus, dtype=float).ravel()
    if taus.size < 2:
        raise ValueError(f"taus must hold at least 2 values to sweep, got {taus.size}")
    if np.any(taus < 0) or not np.all(np.isfinite(taus)):
        raise ValueError(f"taus must be finite and >= 0, got {taus.tolist()}")
    return taus


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
    Returns the HTML string (frames are embedded PNGs, one per ``tau``).
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


def tau_explorer(
    draw: Draw,
    taus: Sequence[float],
    *,
    live: bool | None = None,
    ncols: int = 1,
    width: float = 4.2,
    height: float = 3.2,
):
    """A scrubbable ``tau`` sweep for the rendered book, plus a live slider when a kernel runs.

    Args:
      draw: ``draw(ax, tau)`` draws one frame (``ax`` an Axes, or an array when ``ncols > 1``).
      taus: the ``tau`` values of the static sweep (>= 2 values, each >= 0); the live slider spans
        ``[min(taus), max(taus)]``.
      live: also create an ``ipywidgets`` float slider (displayed immediately); default: whenever
        an IPython kernel is running and ``ipywidgets`` is installed.
      ncols, width, height: panel layout (inches per panel).

    Returns:
      ``IPython.display.HTML`` of the pre-rendered sweep (display it as a cell's last expression).
    """
    from IPython.display import HTML

    taus = _validated_taus(taus)
    html = HTML(tau_sweep_html(draw, taus, ncols=ncols, width=width, height=height))
    if live is None:
        live = kernel_available()
    if live:
        _live_slider(draw, taus, ncols=ncols, width=width, height=height)
    return html


def _live_slider(draw: Draw, taus: np.ndarray, *, ncols: int, width: float, height: float):
    """``ipywidgets.interact`` over ``tau``; returns the widget, or ``None`` without ipywidgets."""
    try:
        import ipywidgets
    except ImportError:
        return None

    def redraw(tau: float):
        fig, axes = subplots(1, ncols, width=width, height=height)
        draw(axes, float(tau))
        plt.show()
        plt.close(fig)

    step = float(np.min(np.diff(np.sort(taus)))) / 4 or 0.01
    slider = ipywidgets.FloatSlider(
        value=float(taus[0]),
        min=float(taus.min()),
        max=float(taus.max()),
        step=step,
        description="tau",
        continuous_update=False,
    )
    return ipywidgets.interact(redraw, tau=slider)
