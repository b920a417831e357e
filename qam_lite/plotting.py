"""One figure style for the whole book."""

from __future__ import annotations

import io

import matplotlib as mpl
import matplotlib.pyplot as plt

#: Colours used consistently across chapters: data/behaviour, learned policy, exact answer, critic.
COLORS = {
    "data": "#8c8c8c",
    "behaviour": "#4c72b0",
    "policy": "#dd8452",
    "exact": "#222222",
    "critic": "#55a868",
    "alt": "#c44e52",
}


def use_style() -> None:
    """Set the book's matplotlib defaults (sizes, grid, no top/right spines)."""
    mpl.rcParams.update(
        {
            "figure.figsize": (6.4, 3.6),
            "figure.dpi": 110,
            "axes.grid": True,
            "grid.alpha": 0.25,
            "axes.spines.top": False,
            "axes.spines.right": False,
            "axes.titlesize": 11,
            "axes.labelsize": 10,
            "legend.frameon": False,
            "legend.fontsize": 9,
            "savefig.bbox": "tight",
        }
    )


def subplots(nrows: int = 1, ncols: int = 1, *, width: float = 3.4, height: float = 3.0, **kw):
    """``plt.subplots`` sized per panel (``width`` x ``height`` inches each), book style applied."""
    use_style()
    return plt.subplots(nrows, ncols, figsize=(width * ncols, height * nrows), **kw)


def log_axis(ax, which: str = "x", ticks=None) -> None:
    """Put ``ax``'s ``which`` axis ("x" or "y") on a log scale with plain, non-overlapping labels.

    Over less than a decade matplotlib labels minor ticks too (``6x10^0``, ``2x10^1``, ...), and the
    labels collide, or labels none at all. Here the labelled ticks are ``ticks`` if given, else 1, 2
    and 5 times powers of ten when the axis spans under two decades (powers of ten otherwise),
    written as plain numbers. Call it after plotting, so the data limits are known.
    """
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    if which not in ("x", "y"):
        raise ValueError(f"which must be 'x' or 'y', got {which!r}")
    axis = ax.xaxis if which == "x" else ax.yaxis
    (ax.set_xscale if which == "x" else ax.set_yscale)("log")
    if ticks is not None:
        (ax.set_xticks if which == "x" else ax.set_yticks)(list(ticks))
    else:
        lo, hi = sorted(ax.get_xlim() if which == "x" else ax.get_ylim())
        narrow = hi / max(lo, 1e-300) < 100.0
        axis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0) if narrow else (1.0,)))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def figure_png(fig, dpi: float = 100) -> bytes:
    """The PNG bytes of ``fig``; the figure is closed (also when saving fails)."""
    buffer = io.BytesIO()
    try:
        fig.savefig(buffer, format="png", dpi=dpi)
    finally:
        plt.close(fig)
    return buffer.getvalue()
