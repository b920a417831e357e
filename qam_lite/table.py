"""``qam-lite table``: our run folders collected into the paper's layout, beside its numbers.

Run folders (``config.json``, ``provenance.json``, ``eval.csv``, as ``qam-lite train`` and
``qam-lite sweep`` write them) are grouped by (task, agent); a seed that appears in several
folders counts once. For each chosen step the table gives the success rate x 100 per task (mean
and 95 % confidence interval over seeds), then per domain (mean of its tasks; with a CI over
seeds where every task has the same seeds), then ``all`` (mean of the domains), the paper's
released number for the same method at the same step beside each (package data,
``qam_lite/data/paper``), and marks on cells whose data are not comparable with the paper's:

- ``g``: trained on locally generated data (the paper used OGBench's official datasets);
- ``s``: standard-size data where the paper used 100M transitions (cube-quadruple, puzzle-4x4);
- ``n``: other data not of the paper's kind and size (``provenance.json``'s
  ``data.paper_comparable`` is false, e.g. fewer generated episodes; its reason is stored there);
- ``r``: reduced networks or batch (the paper: 4 x 512 MLPs, batch 256, K = 10, T = 10);
- ``e``: fewer than 50 evaluation episodes;
- ``p``: a domain or ``all`` row averaged over fewer tasks/domains than the paper's.

The confidence interval is Student's t: ``mean +- t(0.975, n - 1) * sd / sqrt(n)`` over seeds
(none for one seed). Outputs: Markdown, CSV, LaTeX, and a learning-curve figure per task with
the paper's mean and CI band.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import io
import json
import math
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

#: Our agent names -> the paper's method names (agents without one have no paper column).
PAPER_METHODS = {"qam": "QAM", "fql": "FQL", "bam": "BAM", "qam-e": "QAM-E", "qam-f": "QAM-F"}
PAPER_FILES = {
    "main": "qam_paper_main.csv.gz",
    "data_quality": "qam_paper_data_quality.csv.gz",
    "sensitivity": "qam_paper_sensitivity.csv.gz",
}
PAPER_SIZES = {"actor_hidden": [512] * 4, "critic_hidden": [512] * 4, "batch_size": 256}
PAPER_K_T = {"num_critics": 10, "flow_steps": 10}
HUNDRED_M_DOMAINS = ("cube-quadruple-play", "puzzle-4x4-play")
MARKS = {
    "g": "locally generated data (the paper: official datasets)",
    "s": "standard-size data where the paper used 100M transitions",
    "n": "data not of the paper's kind and size (see provenance.json data.paper_comparable_reason)",
    "r": "reduced networks or batch (the paper: 4x512 MLPs, batch 256, K=10, T=10)",
    "e": "fewer than 50 evaluation episodes",
    "p": "averaged over fewer tasks/domains than the paper",
}
FORMATS = ("md", "csv", "tex")

# Student's t quantile t(0.975, df) for df = 1..30 (standard table values); beyond, 1.96.
_T975 = (
    12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228,
    2.201, 2.179, 2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086,
    2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048, 2.045, 2.042,
)  # fmt: skip


class TableError(ValueError):
    """No runs found, an unknown format or step list: the message says what is accepted."""


def ci95(values: Sequence[float]) -> tuple[float, float | None]:
    """``(mean, half-width of the 95 % t interval)``; the half-width is None for one value."""
    n = len(values)
    mean = sum(values) / n
    if n < 2:
        return mean, None
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (n - 1))
    t = _T975[n - 2] if n - 1 <= len(_T975) else 1.96
    return mean, t * sd / math.sqrt(n)


# --------------------------------------------------------------------------------------------
# The paper's numbers


@lru_cache(maxsize=4)
def paper_rows(study: str = "main") -> dict[tuple[str, str, int], list[float]]:
    """``{(key, method, step): per-seed success in %}`` from the packaged CSV of ``study``."""
    if study not in PAPER_FILES:
        raise TableError(f"unknown study {study!r}; accepted: {', '.join(PAPER_FILES)}")
    blob = resources.files("qam_lite").joinpath("data", "paper", PAPER_FILES[study]).read_bytes()
    out = {}
    with io.TextIOWrapper(gzip.GzipFile(fileobj=io.BytesIO(blob)), encoding="utf-8") as f:
        for row in csv.DictReader(f):
            seeds = [
                float(row[k]) for k in row if k.startswith("seed") and row[k] not in ("", None)
            ]
            out[row["key"], row["method"], int(row["step"])] = seeds
    return out


def paper_cell(key: str, agent: str, step: int) -> tuple[float, float | None, int] | None:
    """The paper's ``(mean, ci, n)`` for our ``agent`` on ``key`` at ``step``, if it has one."""
    method = PAPER_METHODS.get(agent)
    seeds = paper_rows().get((key, method, step)) if method else None
    if not seeds:
        return None
    return (*ci95(seeds), len(seeds))


# --------------------------------------------------------------------------------------------
# Our runs


@dataclasses.dataclass
class Run:
    """One run folder: its task, agent, per-(step, seed) success in % and comparability marks."""

    path: Path
    task: str
    agent: str
    success: dict[int, dict[int, float]]  # step -> seed -> success %
    marks: set[str]


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run folder at or below ``paths`` (a folder with ``config.json`` and ``eval.csv``)."""
    runs = []
    for root in map(Path, paths):
        if not root.exists():
            raise TableError(f"{root} does not exist; accepted: run folders or folders above them")
        for config_path in sorted(root.rglob("config.json")):
            folder = config_path.parent
            if (folder / "eval.csv").exists():
                runs.append(read_run(folder))
    return runs


def read_run(folder: Path) -> Run:
    """Read one run folder (see :class:`Run`)."""
    from qam_lite.tasks import parse_task

    config = json.loads((folder / "config.json").read_text())
    prov_path = folder / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.exists() else {}
    task = parse_task(config["task"])
    success: dict[int, dict[int, float]] = defaultdict(dict)
    with open(folder / "eval.csv", newline="") as f:
        for row in csv.DictReader(f):
            success[int(row["step"])][int(row["seed"])] = 100.0 * float(row["success_rate"])
    return Run(folder, task.name, config["agent"], dict(success), marks_for(config, prov, task))


def marks_for(config: dict, prov: dict, task) -> set[str]:
    """The non-comparability marks of a run (see the module docstring)."""
    marks = set()
    data = prov.get("data") or {}
    if data.get("generator") or data.get("source") == "generated":
        marks.add("g")
    if task.domain in HUNDRED_M_DOMAINS and not _is_100m(prov):
        marks.add("s")
    elif data.get("paper_comparable") is False:
        marks.add("n")
    sizes = {
        k: list(config.get(k, [])) if k != "batch_size" else config.get(k) for k in PAPER_SIZES
    }
    if sizes != PAPER_SIZES or any(config.get(k) != v for k, v in PAPER_K_T.items()):
        marks.add("r")
    if int(config.get("eval_episodes", 50)) < 50:
        marks.add("e")
    return marks


def _is_100m(prov: dict) -> bool:
    """Trained on the 100M-transition data: every shard of a ``*-100m-v0`` folder cycled."""
    data = prov.get("data") or {}
    if data.get("source") == "official-sharded":
        return bool(data.get("shards_cycled")) and "100m" in json.dumps(data).lower()
    return int(prov.get("transitions") or 0) >= 50_000_000


# --------------------------------------------------------------------------------------------
# The table


@dataclasses.dataclass
class Cell:
    """One row of the table: ours and the paper's at one (key, agent, step)."""

    level: str  # 'task' | 'domain' | 'all'
    key: str
    agent: str
    step: int
    mean: float
    ci: float | None
    seeds: int
    marks: set[str]
    paper: tuple[float, float | None, int] | None

    def as_row(self) -> dict:
        p = self.paper
        return {
            "level": self.level,
            "key": self.key,
            "agent": self.agent,
            "paper_method": PAPER_METHODS.get(self.agent, ""),
            "step": self.step,
            "mean": round(self.mean, 2),
            "ci95": "" if self.ci is None else round(self.ci, 2),
            "seeds": self.seeds,
            "paper_mean": "" if p is None else round(p[0], 2),
            "paper_ci95": "" if p is None or p[1] is None else round(p[1], 2),
            "paper_seeds": "" if p is None else p[2],
            "marks": "".join(sorted(self.marks)),
        }


def collect(runs: Sequence[Run]) -> dict[tuple[str, str], tuple[dict, set[str]]]:
    """``{(task, agent): ({step: {seed: %}}, marks)}``; a seed seen twice keeps its first run."""
    out: dict[tuple[str, str], tuple[dict, set[str]]] = {}
    for run in runs:
        steps, marks = out.setdefault((run.task, run.agent), ({}, set()))
        marks |= run.marks
        for step, seeds in run.success.items():
            for seed, value in seeds.items():
                steps.setdefault(step, {}).setdefault(seed, value)
    return out


def build(runs: Sequence[Run], steps: Sequence[int] | str = "common") -> list[Cell]:
    """The table's cells in the paper's order: per domain its tasks then the domain; then all.

    ``steps``: ``'common'`` (every step where both we and the paper have a number for the cell),
    ``'ours'`` (every step we have), or a list of steps.
    """
    from qam_lite.tasks import DOMAINS, NUM_TASKS, parse_task

    if isinstance(steps, str) and steps not in ("common", "ours"):
        raise TableError(f"steps={steps!r}; accepted: 'common', 'ours' or a list of integers")
    grouped = collect(runs)
    agents = sorted({a for _, a in grouped}, key=lambda a: (a not in PAPER_METHODS, a))
    cells: list[Cell] = []
    for agent in agents:
        by_domain: dict[str, list[str]] = defaultdict(list)
        for task, a in grouped:
            if a == agent:
                by_domain[parse_task(task).domain].append(task)
        domain_cells: dict[int, list[Cell]] = defaultdict(list)
        for domain in sorted(by_domain, key=lambda d: list(DOMAINS).index(d)):
            tasks = sorted(by_domain[domain])
            task_cells: dict[int, list[tuple[Cell, dict]]] = defaultdict(list)
            for task in tasks:
                data, marks = grouped[task, agent]
                for step in _steps(data, task, agent, steps):
                    seeds = data[step]
                    mean, ci = ci95(list(seeds.values()))
                    cell = Cell(
                        "task", task, agent, step, mean, ci, len(seeds), set(marks),
                        paper_cell(task, agent, step),
                    )  # fmt: skip
                    cells.append(cell)
                    task_cells[step].append((cell, seeds))
            for step, members in sorted(task_cells.items()):
                cell = _aggregate("domain", domain, agent, step, members, NUM_TASKS)
                cells.append(cell)
                domain_cells[step].append((cell, cell._per_seed))
        for step, members in sorted(domain_cells.items()):
            cells.append(_aggregate("all", "all", agent, step, members, 10))
    return cells


def _steps(data: dict, key: str, agent: str, steps) -> list[int]:
    if steps == "ours":
        return sorted(data)
    if steps == "common":
        return [s for s in sorted(data) if paper_cell(key, agent, s) is not None]
    return [s for s in steps if s in data]


def _aggregate(level, key, agent, step, members, expected: int) -> Cell:
    """Mean of member cells; a CI over seeds where every member has the same seeds."""
    marks = set().union(*(c.marks for c, _ in members))
    if len(members) < expected or any("p" in c.marks for c, _ in members):
        marks.add("p")
    mean = sum(c.mean for c, _ in members) / len(members)
    common = set.intersection(*(set(s) for _, s in members))
    per_seed = {s: sum(seeds[s] for _, seeds in members) / len(members) for s in sorted(common)}
    ci = ci95(list(per_seed.values()))[1] if len(per_seed) >= 2 else None
    n = len(per_seed) if per_seed else min(c.seeds for c, _ in members)
    cell = Cell(level, key, agent, step, mean, ci, n, marks, paper_cell(key, agent, step))
    cell._per_seed = per_seed  # for the next level up
    return cell


# --------------------------------------------------------------------------------------------
# Output


def _fmt(mean: float, ci: float | None) -> str:
    return f"{mean:.1f}" if ci is None else f"{mean:.1f} ± {ci:.1f}"


def _step_text(step: int) -> str:
    return f"{step // 1000}K" if step % 1000 == 0 else str(step)


def to_markdown(cells: Sequence[Cell]) -> str:
    """A Markdown table (success x 100, mean ± 95 % CI) with the marks' legend."""
    lines = [
        "| level | task / domain | agent | step | ours | seeds | paper | paper seeds | marks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        p = "—" if c.paper is None else _fmt(c.paper[0], c.paper[1])
        key = c.key if c.level == "task" else f"**{c.key}**"
        lines.append(
            f"| {c.level} | {key} | {c.agent} | {_step_text(c.step)} | {_fmt(c.mean, c.ci)} | "
            f"{c.seeds} | {p} | {'' if c.paper is None else c.paper[2]} | "
            f"{''.join(sorted(c.marks))} |"
        )
    return "\n".join(lines) + "\n\n" + legend(cells)


def legend(cells: Sequence[Cell]) -> str:
    used = sorted(set().union(*(c.marks for c in cells))) if cells else []
    text = "Success rate x 100, mean ± 95 % CI (Student's t over seeds); paper: its released data."
    if used:
        text += " Marks: " + "; ".join(f"{m} = {MARKS[m]}" for m in used) + "."
    return text + "\n"


def to_csv(cells: Sequence[Cell]) -> str:
    buf = io.StringIO()
    rows = [c.as_row() for c in cells]
    fields = list(Cell("task", "", "", 0, 0.0, None, 0, set(), None).as_row())
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _tex_escape(text: str) -> str:
    return text.replace("_", r"\_").replace("%", r"\%")


def to_latex(cells: Sequence[Cell]) -> str:
    """A LaTeX ``tabular`` (booktabs) with marks as superscripts."""
    lines = [
        r"\begin{tabular}{llrrr}",
        r"\toprule",
        r"task / domain & agent & step & ours & paper \\",
        r"\midrule",
    ]
    for c in cells:
        ours = _fmt(c.mean, c.ci).replace("±", r"$\pm$")
        if c.marks:
            ours += f"$^{{{''.join(sorted(c.marks))}}}$"
        paper = "--" if c.paper is None else _fmt(c.paper[0], c.paper[1]).replace("±", r"$\pm$")
        key = _tex_escape(c.key) if c.level == "task" else rf"\textbf{{{_tex_escape(c.key)}}}"
        lines.append(f"{key} & {c.agent} & {_step_text(c.step)} & {ours} & {paper} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}", "% " + legend(cells).strip()]
    return "\n".join(lines) + "\n"


def plot_curves(runs: Sequence[Run], out_dir: Path) -> list[Path]:
    """One figure per task: our mean (and 95 % CI band over seeds) per agent, and the paper's
    mean and CI band for the same method over all its steps. Returns the files written."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    from qam_lite.plotting import subplots

    grouped = collect(runs)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for task in sorted({t for t, _ in grouped}):
        fig, ax = subplots(width=5.0, height=3.2)
        agents = sorted(a for t, a in grouped if t == task)
        for i, agent in enumerate(agents):
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
            paper = sorted(
                (s, v) for (k, m, s), v in paper_rows().items() if k == task and m == method
            )
            if paper:
                px = [s for s, _ in paper]
                pstats = [ci95(v) for _, v in paper]
                ax.plot(px, [m for m, _ in pstats], "--", color=color, label=f"{method} (paper)")
                ax.fill_between(
                    px,
                    [m - (c or 0) for m, c in pstats],
                    [m + (c or 0) for m, c in pstats],
                    color=color,
                    alpha=0.1,
                )
        ax.set_xlabel("step (gradient / environment steps)")
        ax.set_ylabel("success rate (%)")
        ax.set_ylim(-2, 102)
        ax.set_title(task, fontsize=9)
        ax.legend(fontsize=7)
        path = out_dir / f"{task}.png"
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qam-lite table`` options (the CLI calls this)."""
    p.add_argument("runs", nargs="+", help="run folders, or folders above them (e.g. a sweep's)")
    p.add_argument(
        "--steps",
        nargs="+",
        default=["common"],
        help="'common' (default: steps where both sides have a number), 'ours', or step numbers",
    )
    p.add_argument("--format", nargs="+", default=["md"], help=f"any of {', '.join(FORMATS)}")
    p.add_argument("--out", help="folder for table.md/.csv/.tex and curves/ (default: print)")
    p.add_argument("--figures", action="store_true", help="learning curves per task (needs --out)")


def parse_steps(items: Sequence[str]) -> list[int] | str:
    if len(items) == 1 and items[0] in ("common", "ours"):
        return items[0]
    try:
        return [int(float(x)) for x in items]
    except ValueError:
        raise TableError(
            f"--steps {' '.join(items)}: accepted: 'common', 'ours', or step numbers like 50000"
        ) from None


def run_cli(args: argparse.Namespace) -> None:
    bad = [f for f in args.format if f not in FORMATS]
    if bad:
        raise TableError(f"unknown format(s) {', '.join(bad)}; accepted: {', '.join(FORMATS)}")
    if args.figures and not args.out:
        raise TableError("--figures needs --out FOLDER (figures are written there)")
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
    writers = {"md": to_markdown, "csv": to_csv, "tex": to_latex}
    if not args.out:
        for fmt in args.format:
            print(writers[fmt](cells))
        return
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for fmt in args.format:
        (out / f"table.{fmt}").write_text(writers[fmt](cells))
        print(f"wrote {out / f'table.{fmt}'}")
    if args.figures:
        files = plot_curves(runs, out / "curves")
        print(f"wrote {len(files)} figure(s) in {out / 'curves'}")
