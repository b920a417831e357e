"""A ``tau`` slider that works in a live notebook and in the static rendered book.

A reader with a live kernel (Jupyter, Colab) gets an ``ipywidgets`` slider that redraws on every
move. A static page cannot run Python, and a notebook executed in batch (``qam-lite book``, the
site build, the tests: they set ``QAM_LITE_BATCH=1``) has a kernel but nobody watching, so there
:func:`tau_explorer` instead returns a pre-rendered sweep: a matplotlib animation whose JavaScript
player (``to_jshtml``) has a scrub bar with one frame per ``tau`` (interactive without a kernel),
bundled with a PNG of a few frames side by side for viewers that run no JavaScript.

The live slider snaps to the given ``taus`` (``SelectionSlider``): a sweep over trained policies
has a frame for each trained ``tau`` and nothing in between; it is as wide as the figure and says
what ``tau`` is. Every frame, live or pre-rendered, is laid out the same way (:func:`lay_out`).
Works with ipywidgets 7.7 and 8.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Sequence

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import FuncAnimation
from matplotlib.collections import PathCollection

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


#: The size (points^2, as ``scatter``'s ``s``) of every scatter marker in a legend.
LEGEND_MARKER_SIZE = 25.0

#: The live slider's label (ipywidgets' ``description``), shown in full beside it.
SLIDER_LABEL = "tau (inverse temperature)"


def lay_out(fig, axes) -> None:
    """Lay out one frame of a ``tau`` figure after ``draw``: frame each legend and draw its scatter
    markers at one size (a frameless key over a scatter cloud, with a marker as large as the one
    it names, reads as more data), and ``tight_layout`` the figure, so a panel's axis labels do
    not run into its neighbour (its legend, its ticks).

    The live slider's redraw calls it as the pre-rendered player and PNG do: the inline backend
    crops a figure (``savefig.bbox: tight``) but does not lay it out.
    """
    for ax in np.atleast_1d(axes).ravel():
        legend = ax.get_legend()
        if legend is not None:
            for handle in legend.legend_handles:
                if isinstance(handle, PathCollection):
                    handle.set_sizes([LEGEND_MARKER_SIZE])
            legend.set_frame_on(True)
            legend.get_frame().set(facecolor="white", edgecolor="0.75", alpha=0.9, linewidth=0.6)
    fig.tight_layout()


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
        lay_out(fig, axes)
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
    lay_out(fig, axes)
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
    label: str = SLIDER_LABEL,
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
      label: the live slider's label.

    Returns:
      ``None`` when the live slider was displayed; otherwise a :class:`TauSweep` (display it as
      a cell's last expression).
    """
    taus = _validated_taus(taus)
    if live is None:
        live = interactive()
    if live and _live_slider(
        draw, taus, snap=snap, ncols=ncols, width=width, height=height, label=label
    ):
        return None
    html = tau_sweep_html(draw, taus, ncols=ncols, width=width, height=height)
    shown = fallback_taus(taus, fallback)
    png = tau_sweep_png(draw, shown, ncols=ncols, width=width, height=height)
    return TauSweep(html, png, taus)


def slider_width(taus: np.ndarray, figure_width: float | None = None) -> int:
    """The live slider's width in pixels: the figure's (``figure_width`` inches at the book's
    dpi), and at least 22 px per ``tau`` value and 360 px, at most 960 px."""
    from qam_lite.plotting import use_style

    use_style()
    wide = 0.0 if figure_width is None else figure_width * plt.rcParams["figure.dpi"]
    return int(min(960, max(360, 22 * len(taus), wide)))


def live_slider_widget(
    taus: np.ndarray,
    *,
    snap: bool = True,
    label: str = SLIDER_LABEL,
    figure_width: float | None = None,
):
    """The ``tau`` control: a ``SelectionSlider`` over ``taus`` or a ``FloatSlider`` over their
    range (``snap=False``), labelled ``label`` in full and :func:`slider_width` wide
    (``figure_width``: the figure's width in inches). Uses only what ipywidgets 7.7 and 8 share."""
    import ipywidgets

    look = {
        "description": label,
        "style": {"description_width": "initial"},
        "layout": ipywidgets.Layout(width=f"{slider_width(taus, figure_width)}px"),
        "continuous_update": False,
    }
    if snap:
        return ipywidgets.SelectionSlider(
            options=[(_label(t), float(t)) for t in taus], value=float(taus[0]), **look
        )
    return ipywidgets.FloatSlider(
        value=float(taus[0]),
        min=float(taus.min()),
        max=float(taus.max()),
        step=float(np.ptp(taus)) / 100 or 0.01,
        **look,
    )


def live_frame(draw: Draw, tau: float, *, ncols: int = 1, width: float = 4.2, height: float = 3.2):
    """One frame of the live slider: a new figure, ``draw(axes, tau)``, :func:`lay_out`; returns
    the figure (the redraw shows and closes it)."""
    fig, axes = subplots(1, ncols, width=width, height=height)
    draw(axes, float(tau))
    lay_out(fig, axes)
    return fig


def _live_slider(
    draw: Draw, taus: np.ndarray, *, snap: bool, ncols: int, width, height, label=SLIDER_LABEL
):
    """Display ``ipywidgets.interact`` over ``tau``; return it, or ``None`` without ipywidgets."""
    try:
        import ipywidgets
    except ImportError:
        return None

    def redraw(tau: float):
        fig = live_frame(draw, tau, ncols=ncols, width=width, height=height)
        plt.show()
        plt.close(fig)

    control = live_slider_widget(taus, snap=snap, label=label, figure_width=width * ncols)
    return ipywidgets.interact(redraw, tau=control)
