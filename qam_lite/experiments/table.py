"""``qam-lite table``: our runs beside the paper's numbers, as files and figures.

:func:`run_cli` reads run folders (:func:`~qam_lite.experiments.ours.find_runs`), builds the
cells (:func:`~qam_lite.experiments.ours.build`), writes them in each asked format
(:mod:`~qam_lite.experiments.formats`: Markdown long or ``wide``, CSV, LaTeX, the ranking against
``--vs AGENT``) and draws a learning-curve figure per task with the paper's mean and CI band
(:func:`plot_task`). ``--paper STEP ...`` writes the paper's own table at those steps
(:func:`~qam_lite.experiments.paper.paper_table_markdown`).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from qam_lite.atomic import write_bytes
from qam_lite.experiments.formats import (
    ranking_markdown,
    to_csv,
    to_latex,
    to_markdown,
    to_wide_markdown,
)
from qam_lite.experiments.ours import Run, build, collect, find_runs
from qam_lite.experiments.paper import (
    PAPER_METHODS,
    TableError,
    paper_curve,
    paper_table_markdown,
)
from qam_lite.experiments.stats import ci95, step_text

FORMATS = ("md", "csv", "tex", "wide")
FILENAMES = {"md": "table.md", "csv": "table.csv", "tex": "table.tex", "wide": "table-wide.md"}


# --------------------------------------------------------------------------------------------
# The paper's numbers


# --------------------------------------------------------------------------------------------
# Our runs


# --------------------------------------------------------------------------------------------
# The table


# --------------------------------------------------------------------------------------------
# Output


def plot_task(
    ax,
    runs: Sequence[Run],
    task: str,
    agents: Sequence[str] | None = None,
    logx: bool = False,
    paper_until: int | None = None,
) -> None:
    """Draw one task's curves on ``ax``: our mean per agent with its 95 % CI band over seeds
    (solid), and the paper's mean and CI band for the same method (dashed) up to ``paper_until``
    (None: all its steps, offline and online). ``logx``: a log step axis, so that a short run's
    first evaluations and the paper's 50K..1.5M fit on one axis."""
    import matplotlib.pyplot as plt

    grouped = collect(runs)
    agents = sorted(a for t, a in grouped if t == task) if agents is None else list(agents)
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, agent in enumerate(agents):
        if (task, agent) not in grouped:
            continue
        color = colors[i % len(colors)]
        data, marks = grouped[task, agent]
        xs = sorted(data)
        stats = [ci95(list(data[s].values())) for s in xs]
        ys = [m for m, _ in stats]
        tag = f" [{''.join(sorted(marks))}]" if marks else ""
        ax.plot(xs, ys, "o-", color=color, label=f"{agent} (ours){tag}")
        if all(ci is not None for _, ci in stats):
            lo = [m - ci for m, ci in stats]
            hi = [m + ci for m, ci in stats]
            ax.fill_between(xs, lo, hi, color=color, alpha=0.2)
        method = PAPER_METHODS.get(agent)
        if method is None:
            continue
        px, pm, ph = paper_curve(task, method)
        keep = [k for k, s in enumerate(px) if paper_until is None or s <= paper_until]
        if keep:
            px, pm, ph = ([v[k] for k in keep] for v in (px, pm, ph))
            ax.plot(px, pm, "--", color=color, label=f"{method} (paper)")
            lo = [m - h for m, h in zip(pm, ph, strict=True)]
            hi = [m + h for m, h in zip(pm, ph, strict=True)]
            ax.fill_between(px, lo, hi, color=color, alpha=0.1)
    ax.set_xlabel("step (gradient / environment steps)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-2, 102)
    ax.set_title(task, fontsize=9)
    if logx:
        from qam_lite.plotting import log_axis

        log_axis(ax, "x")
    from matplotlib.ticker import FuncFormatter

    def tick(v, _):  # "7.5K" rather than "7500": long tick labels run into each other
        return f"{v / 1e6:g}M" if v >= 1e6 else (f"{v / 1e3:g}K" if v >= 1e3 else f"{v:g}")

    ax.xaxis.set_major_formatter(FuncFormatter(tick))
    ax.legend(fontsize=7)


def plot_curves(
    runs: Sequence[Run], out_dir: Path, logx: bool = False, paper_until: int | None = None
) -> list[Path]:
    """One figure per task (:func:`plot_task`) written to ``out_dir``. Returns the files."""
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # keep a notebook's (inline) backend
        matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from qam_lite.plotting import subplots

    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for task in sorted({r.task for r in runs}):
        fig, ax = subplots(width=5.0, height=3.2)
        plot_task(ax, runs, task, logx=logx, paper_until=paper_until)
        path = out_dir / f"{task}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qam-lite table`` options (the CLI calls this)."""
    p.add_argument("runs", nargs="*", help="run folders, or folders above them (e.g. a sweep's)")
    p.add_argument(
        "--steps",
        nargs="+",
        default=["common"],
        help="'common' (default: steps where both sides have a number), 'ours', or step numbers",
    )
    p.add_argument(
        "--format",
        nargs="+",
        default=["md"],
        help=f"any of {', '.join(FORMATS)} (wide: one column per agent, then the paper's)",
    )
    p.add_argument(
        "--paper-steps",
        nargs="+",
        type=_step_arg,
        help="the paper's steps shown beside ours in the wide format (default: the table's steps "
        "that the paper reports)",
    )
    p.add_argument(
        "--paper",
        nargs="+",
        type=_step_arg,
        metavar="STEP",
        help="also the paper's own table at STEP (1e6: end of offline, 1.5e6: end of online): "
        "its 17 methods x 10 domains and all, from the packaged data; no runs needed",
    )
    p.add_argument(
        "--vs",
        metavar="AGENT",
        help="also rank AGENT against every other agent: the difference of mean success per "
        "row with its 95 %% Welch interval, and whether it excludes 0 (e.g. --vs qam)",
    )
    p.add_argument("--out", help="folder for table.md/.csv/.tex and curves/ (default: print)")
    p.add_argument("--figures", action="store_true", help="learning curves per task (needs --out)")
    p.add_argument("--logx", action="store_true", help="figures: log step axis")


def _step_arg(text: str) -> int:
    try:
        return int(float(text))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a step; accepted: a number like 1000000 or 1e6"
        ) from None


def parse_steps(items: Sequence[str]) -> list[int] | str:
    """``--steps``: ``common`` / ``ours`` as they are, else a list of steps (``50K``, ``1e6``)."""
    if len(items) == 1 and items[0] in ("common", "ours"):
        return items[0]
    try:
        return [int(float(x)) for x in items]
    except ValueError:
        raise TableError(
            f"--steps {' '.join(items)}: accepted: 'common', 'ours', or step numbers like 50000"
        ) from None


def _emit(out: Path | None, name: str, text: str) -> None:
    if out is None:
        print(text)
        return
    out.mkdir(parents=True, exist_ok=True)
    write_bytes(out / name, text.encode())  # old or new file, never a torn one (disk full)
    print(f"wrote {out / name}")


def run_cli(args: argparse.Namespace) -> None:
    """``qam-lite table ARGS``: read the runs, write each asked format and the figures."""
    bad = [f for f in args.format if f not in FORMATS]
    if bad:
        raise TableError(f"unknown format(s) {', '.join(bad)}; accepted: {', '.join(FORMATS)}")
    if args.figures and not args.out:
        raise TableError("--figures needs --out FOLDER (figures are written there)")
    if not args.runs and not args.paper:
        raise TableError(
            "give run folders (or folders above them), or --paper STEP for the paper's own table"
        )
    out = Path(args.out) if args.out else None
    for step in args.paper or ():
        _emit(out, f"paper-{step_text(step)}.md", paper_table_markdown(step, ci=True))
    if not args.runs:
        return
    runs = find_runs(args.runs)
    if not runs:
        raise TableError(
            f"no run folders (config.json + eval.csv) under {', '.join(args.runs)}; accepted: "
            "folders written by `qam-lite train` or `qam-lite sweep`"
        )
    steps = parse_steps(args.steps)
    cells = build(runs, steps)
    if not cells:
        have = ", ".join(map(str, sorted({s for r in runs for s in r.success})))
        if steps == "common":
            print(
                f"no step in common with the paper's (it reports every 50K steps); ours: {have}. "
                "Use --steps ours, or --steps with chosen steps."
            )
        else:
            print(
                f"no cell at the chosen steps ({' '.join(args.steps)}); steps in the runs: {have}"
            )
        return
    paper_steps = args.paper_steps
    if paper_steps is None:
        paper_steps = sorted({c.step for c in cells if c.paper is not None})
    writers = {
        "md": to_markdown,
        "csv": to_csv,
        "tex": to_latex,
        "wide": lambda cs: to_wide_markdown(cs, paper_steps=paper_steps),
    }
    for name in args.format:
        _emit(out, FILENAMES[name], writers[name](cells))
    if args.vs:
        agents = sorted({c.agent for c in cells})
        if args.vs not in agents:
            raise TableError(
                f"--vs {args.vs}: no runs of that agent; accepted: {', '.join(agents)}"
            )
        _emit(out, "ranking.md", ranking_markdown(cells, args.vs))
    if args.figures:
        files = plot_curves(runs, out / "curves", logx=args.logx)
        print(f"wrote {len(files)} figure(s) in {out / 'curves'}")
