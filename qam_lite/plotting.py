"""One figure style for the whole book."""

from __future__ import annotations

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
