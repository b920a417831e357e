"""The CPU ladder: success against the CPU time it cost, rung by rung, beside the paper's 50K.

A *rung* is a folder ``<ladder>/<rung>/<agent>`` holding one ``qam-lite train`` run plus the
``cpu_trace.csv`` that ``benchmarks/cpu_trace.py`` sampled beside it (the UTC time, the CPU
seconds of the training process and its evaluation workers, their memory, the step reached). A
rung's name says what it changes (e.g. ``d1000-2x256-b256``: 1000 generated episodes, 2 x 256
networks, batch 256). :func:`rungs` reads them; :func:`plot_ladder` draws success against
CPU-hours, one line per rung and agent, with the paper's success at 50K updates (its first
evaluation) as horizontal reference lines.

Imports no JAX (``qam-lite table``'s side of the library).
"""

from __future__ import annotations

import csv
import dataclasses
from pathlib import Path

from qam_lite.experiments.ours import read_run
from qam_lite.experiments.paper import paper_cell


@dataclasses.dataclass
class Rung:
    """One rung's run: its name, agent, task, evaluation steps, success (% per seed at each step),
    the CPU-hours each step cost, and the largest resident memory a process of it reached."""

    name: str
    agent: str
    task: str
    steps: list[int]
    success: list[list[float]]  # per step: % per seed
    cpu_hours: list[float]
    max_rss_gib: float


def cpu_hours_at(path: str | Path, steps: list[int]) -> list[float]:
    """CPU-hours spent when each of ``steps`` was reached, from a ``cpu_trace.csv``.

    Each process (``pid`` column) is one segment whose CPU clock starts at 0 (a resumed run is a
    new process); a step's cost is the segments before it plus the first sample of its own
    segment at or after the step (the training reached it; its evaluation may still be running).
    """
    with Path(path).open(newline="") as f:
        rows = list(csv.DictReader(f))
    segments: list[list[dict]] = []
    for row in rows:
        if not segments or segments[-1][0]["pid"] != row["pid"]:
            segments.append([])
        segments[-1].append(row)
    hours = []
    for step in steps:
        before = 0.0
        for seg in segments:
            reached = [r for r in seg if int(r["step"]) >= step]
            if reached:
                hours.append((before + float(reached[0]["cpu_s"])) / 3600)
                break
            before += float(seg[-1]["cpu_s"])
        else:
            last = rows[-1]["step"] if rows else "none"
            raise ValueError(f"step {step} is not in {path} (last step {last})")
    return hours


def rungs(ladder: str | Path) -> list[Rung]:
    """Every rung under ``ladder`` (folders ``<rung>/<agent>`` with ``eval.csv`` and
    ``cpu_trace.csv``), sorted by rung then agent."""
    found = []
    for trace in sorted(Path(ladder).glob("*/*/cpu_trace.csv")):
        run = read_run(trace.parent)
        steps = sorted(run.success)
        with trace.open(newline="") as f:
            rss = max(float(r["max_rss_mib"]) for r in csv.DictReader(f))
        found.append(
            Rung(
                name=trace.parent.parent.name,
                agent=run.agent,
                task=run.task,
                steps=steps,
                success=[[run.success[s][k] for k in sorted(run.success[s])] for s in steps],
                cpu_hours=cpu_hours_at(trace, steps),
                max_rss_gib=rss / 1024,
            )
        )
    return found


def plot_ladder(found: list[Rung], ax=None):
    """Success (%) against CPU-hours, a line per rung and agent; the paper's mean success at 50K
    updates for each agent on the rungs' task as a dashed line. Returns the axes."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(5.5, 3.4))
    colors = {"qam": "tab:blue", "fql": "tab:orange", "bc": "tab:green", "bam": "tab:red"}
    styles = ["-o", "-s", "-^", "-D"]
    names = sorted({r.name for r in found})
    for rung in found:
        mean = [sum(v) / len(v) for v in rung.success]
        style = styles[names.index(rung.name) % len(styles)]
        color = colors.get(rung.agent, "tab:gray")
        ax.plot(rung.cpu_hours, mean, style, color=color, label=f"{rung.agent} {rung.name}")
    for agent in sorted({r.agent for r in found}):
        tasks = {r.task for r in found if r.agent == agent}
        for task in tasks:
            cell = paper_cell(task, agent, 50_000)
            if cell is not None:
                ax.axhline(cell[0], ls="--", lw=1, color=colors.get(agent, "tab:gray"))
                ax.annotate(
                    f"paper {agent.upper()}, 50K",
                    (0, cell[0]),
                    xycoords=("axes fraction", "data"),
                    xytext=(4, 3),
                    textcoords="offset points",
                    fontsize=8,
                    color=colors.get(agent, "tab:gray"),
                )
    ax.set_xlabel("CPU-hours (user + system, this 2-core machine)")
    ax.set_ylabel("success (%)")
    ax.set_ylim(-3, 103)
    ax.legend(fontsize=8, loc="center right")
    return ax
