"""Draw the QAM pipeline figure of book/qam_one_page.md: ``qam_pipeline.svg`` beside this file.

One actor update, left to right: the memoryless SDE forward with f_theta, the critic's action
gradient at clip(x_T), the lean adjoint backward along the target f_beta, the regression of
f_theta. The critic (TD) and f_beta (flow matching) train beside it on the same batch and feed it
through their target copies. Rerun after changing the figure:

    .venv/bin/python book/images/make_qam_pipeline.py

The SVG is written deterministically (fixed hash salt, no date), so rerunning it without changes
leaves the committed file as it is.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
from matplotlib.patches import FancyArrowPatch, FancyBboxPatch  # noqa: E402
from matplotlib.colors import to_rgba  # noqa: E402

from qam_lite.plotting import COLORS  # noqa: E402

OUT = Path(__file__).with_name("qam_pipeline.svg")


def box(ax, x, y, w, h, title, body, color):
    """A rounded box centred at ``(x, y)`` with a bold title line and a formula below it."""
    # Translucent fill, opaque edge: alpha goes into the face colour only.
    ax.add_patch(
        FancyBboxPatch(
            (x - w / 2, y - h / 2),
            w,
            h,
            boxstyle="round,pad=0.02,rounding_size=0.08",
            facecolor=to_rgba(color, 0.18),
            edgecolor="0.25",
            lw=1.0,
        )
    )
    ax.text(x, y + h / 2 - 0.12, title, ha="center", va="top", fontsize=9.5, weight="bold")
    ax.text(x, y - 0.15, body, ha="center", va="center", fontsize=8.5, linespacing=1.6)


def arrow(ax, start, end, label=None, label_xy=None, style="-|>", ls="-", color="0.2"):
    """An arrow from ``start`` to ``end`` with an optional small label at ``label_xy``."""
    ax.add_patch(
        FancyArrowPatch(start, end, arrowstyle=style, mutation_scale=12, lw=1.2, ls=ls, color=color)
    )
    if label:
        ax.text(*label_xy, label, ha="center", va="center", fontsize=7.5, color="0.15")


def main() -> None:
    plt.rcParams.update({"svg.hashsalt": "qam-lite", "font.family": "DejaVu Sans"})
    fig, ax = plt.subplots(figsize=(12.5, 5.0))
    ax.set_xlim(0, 12.5)
    ax.set_ylim(0, 5.0)
    ax.axis("off")

    w, h, y = 2.7, 1.45, 3.55
    xs = [1.45, 4.65, 7.85, 11.05]
    box(
        ax,
        xs[0],
        y,
        w,
        h,
        "1. memoryless SDE forward",
        "$x_0 \\sim \\mathcal{N}(0, I)$\n$x_{i+1} = x_i + h\\,(2 f_\\theta - x_i/(t_i+h))$\n"
        "$\\quad + \\sqrt{h}\\,\\sigma_i \\varepsilon_i$,  last step: ODE, $\\bar f_\\beta$",
        COLORS["policy"],
    )
    box(
        ax,
        xs[1],
        y,
        w,
        h,
        "2. critic gradient at $x_T$",
        "$\\tilde a_T = -\\tau\\, \\nabla_a \\operatorname{mean}_k \\bar Q_k(s, a)$\n"
        "at $a = \\mathrm{clip}(x_T)$",
        COLORS["critic"],
    )
    box(
        ax,
        xs[2],
        y,
        w,
        h,
        "3. lean adjoint backward",
        "$\\tilde a_i = \\tilde a_{i+1} + h\\, J_i^\\top \\tilde a_{i+1}$\n"
        "$J_i = \\partial_x[2\\bar f_\\beta(s, x, t_i{+}h) - x/(t_i{+}h)]$",
        COLORS["behaviour"],
    )
    box(
        ax,
        xs[3],
        y,
        w,
        h,
        "4. regression of $f_\\theta$",
        "$\\sum_i \\,\\| (2/\\sigma_i)\\,(f_\\theta - \\bar f_\\beta)(s, x_i, t_i)$\n"
        "$+ \\sigma_i \\tilde a_i \\|^2$,  gradient to $f_\\theta$ only",
        COLORS["policy"],
    )
    for a, b in zip(xs[:-1], xs[1:], strict=True):
        arrow(ax, (a + w / 2 + 0.02, y), (b - w / 2 - 0.02, y))
    gap = (xs[1] - xs[0]) / 2
    for x, label in zip(xs[:-1], ("$x_T$", "$\\tilde a_T$", "$\\tilde a_i$"), strict=True):
        ax.text(x + gap, y - 0.22, label, fontsize=8.5, ha="center", va="top")
    # The states x_0..x_{T-1} go from the forward pass straight to the regression.
    arrow(
        ax,
        (xs[0], y + h / 2 + 0.03),
        (xs[3], y + h / 2 + 0.03),
        "$x_0, \\dots, x_{T-1}$ (no gradient through the sample)",
        ((xs[0] + xs[3]) / 2, 4.62),
        style="-|>",
        ls="--",
        color="0.45",
    )

    # Beside the actor: the critic and the behaviour flow, trained on the same batch.
    yb, wb, hb = 1.05, 3.9, 1.15
    box(
        ax,
        3.0,
        yb,
        wb,
        hb,
        "critic ensemble $Q_1..Q_K$ (TD)",
        "$y = R_H + \\gamma^H m\\,(\\operatorname{mean}_k \\bar Q_k - \\rho \\operatorname{std}_k \\bar Q_k)"
        "(s', a')$",
        COLORS["critic"],
    )
    box(
        ax,
        9.3,
        yb,
        wb,
        hb,
        "behaviour flow $f_\\beta$ (flow matching)",
        "$\\| f_\\beta(s, x_t, t) - (a - x_0) \\|^2$ on the data",
        COLORS["behaviour"],
    )
    top = yb + hb / 2 + 0.02
    low = y - h / 2 - 0.02
    arrow(ax, (3.6, top), (xs[1], low), "target $\\bar Q$", (4.55, 2.25), color=COLORS["critic"])
    arrow(
        ax,
        (8.6, top),
        (xs[2], low),
        "target $\\bar f_\\beta$",
        (7.55, 2.25),
        color=COLORS["behaviour"],
    )
    arrow(ax, (10.0, top), (xs[3], low), color=COLORS["behaviour"])
    arrow(
        ax,
        (xs[0], low),
        (1.9, top),
        "$a' = \\mathrm{clip}(\\mathrm{ODE}(f_\\theta, s'))$",
        (0.75, 2.25),
        color=COLORS["policy"],
    )
    ax.text(
        6.25,
        0.1,
        "one Adam step on all three losses (global norm clip 1.0), "
        "then Polyak for $\\bar Q$ and $\\bar f_\\beta$: $\\bar\\phi \\leftarrow (1-\\lambda)\\,\\bar\\phi + \\lambda\\,\\phi$",
        ha="center",
        fontsize=8.5,
        color="0.2",
    )
    fig.savefig(OUT, format="svg", bbox_inches="tight", metadata={"Date": None})
    plt.close(fig)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
