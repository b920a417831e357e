"""Our run folders collected into table cells in the paper's layout, beside its numbers.

Run folders (``config.json``, ``provenance.json``, ``eval.csv``, as ``qam-lite train`` and
``qam-lite sweep`` write them) are grouped by (task, agent); a seed that appears in several
folders counts once. For each chosen step the table gives the success rate x 100 per task (mean
and 95 % confidence interval over seeds), then per domain (mean of its tasks; with a CI over
seeds where every task has the same seeds), then ``all`` (mean of the domains), the paper's
released number for the same method at the same step beside each (:mod:`.paper`), and marks
on cells whose data are not comparable with the paper's:

- ``g``: trained on locally generated data (the paper used OGBench's official datasets);
- ``s``: standard-size data where the paper used 100M transitions (cube-quadruple, puzzle-4x4);
- ``n``: other data not of the paper's kind and size (``provenance.json``'s
  ``data.paper_comparable`` is false, e.g. fewer generated episodes; its reason is stored there);
- ``r``: reduced networks or batch (the paper: 4 x 512 MLPs, batch 256, K = 10, T = 10);
- ``e``: fewer than 50 evaluation episodes;
- ``p``: a domain or ``all`` row averaged over fewer tasks/domains than the paper's.

The intervals are :mod:`qam_lite.experiments.stats`'; the writers are in
:mod:`qam_lite.experiments.formats`, the paper's own numbers in :mod:`qam_lite.experiments.paper`.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from pathlib import Path

from qam_lite.experiments.paper import (
    PAPER_METHODS,
    TableError,
    paper_cell,
    paper_over,
)
from qam_lite.experiments.stats import ci95

PAPER_SIZES = {"actor_hidden": [512] * 4, "critic_hidden": [512] * 4, "batch_size": 256}


PAPER_K_T = {"num_critics": 10, "flow_steps": 10}


HUNDRED_M_DOMAINS = ("cube-quadruple-play", "puzzle-4x4-play")


MARKS = {
    "g": "locally generated data (the paper: official datasets)",
    "s": "standard-size data where the paper used 100M transitions",
    "n": "data not of the paper's kind and size (see provenance.json data.paper_comparable_reason)",
    "r": "reduced networks or batch (the paper: 4x512 MLPs, batch 256, K=10, T=10)",
    "e": "fewer than 50 evaluation episodes",
    "p": "averaged over fewer tasks/domains than the paper (its number beside: the same tasks)",
}


@dataclasses.dataclass
class Run:
    """One run folder: its task, agent, per-(step, seed) success in % and comparability marks."""

    path: Path
    task: str
    agent: str
    success: dict[int, dict[int, float]]  # step -> seed -> success %
    marks: set[str]
    config: dict = dataclasses.field(default_factory=dict)  # its config.json


def find_runs(paths: Iterable[str | Path]) -> list[Run]:
    """Every run folder at or below ``paths`` (a folder with ``config.json`` and ``eval.csv``).

    A damaged folder (unreadable ``config.json``, an ``eval.csv`` with values that are not
    numbers, an unknown task) is left out with one line on stderr naming it and why: one bad
    folder does not cost the whole table. A row cut by a crash mid-write is skipped.
    """
    runs = []
    for root in map(Path, paths):
        if not root.exists():
            raise TableError(f"{root} does not exist; accepted: run folders or folders above them")
        for config_path in sorted(root.rglob("config.json")):
            folder = config_path.parent
            if (folder / "eval.csv").exists():
                try:
                    runs.append(read_run(folder))
                except TableError as err:
                    print(f"qam-lite table: warning: {err}; left out", file=sys.stderr)
    return runs


def read_run(folder: Path) -> Run:
    """Read one run folder (see :class:`Run`); :class:`TableError` names what is damaged."""
    from qam_lite.data.tasks import TaskError, parse_task
    from qam_lite.training.logs import read_rows

    def read_json(path: Path) -> dict:
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise TableError(f"{path}: not a readable JSON record ({err})") from None
        if not isinstance(data, dict):
            raise TableError(f"{path}: not a JSON object")
        return data

    config = read_json(folder / "config.json")
    prov_path = folder / "provenance.json"
    prov = read_json(prov_path) if prov_path.exists() else {}
    try:
        task = parse_task(config["task"])
        agent = config["agent"]
    except KeyError as err:
        raise TableError(f"{folder / 'config.json'}: no {err.args[0]!r} entry") from None
    except TaskError as err:
        raise TableError(f"{folder / 'config.json'}: {err}") from None
    success: dict[int, dict[int, float]] = defaultdict(dict)
    for row in read_rows(folder / "eval.csv"):  # skips a row torn by a crash mid-write
        try:
            step, seed = int(row["step"]), int(row["seed"])
            success[step][seed] = 100.0 * float(row["success_rate"])
        except (KeyError, TypeError, ValueError):
            raise TableError(
                f"{folder / 'eval.csv'}: a row that is not step/seed/success numbers ({row})"
            ) from None
    return Run(folder, task.name, agent, dict(success), marks_for(config, prov, task), config)


#: Config fields that may differ between runs pooled into one cell: the seeds, where the data
#: lives, and the schedule's length and bookkeeping (a 20K run and a 50K run of the same
#: configuration agree at every step both reach). Any other difference keeps runs apart.
POOLED_FIELDS = frozenset(
    {
        "seed", "num_seeds", "dataset_dir", "download", "offline_steps", "eval_interval",
        "eval_episodes", "log_interval", "checkpoint_interval", "updates_per_call",
    }
)  # fmt: skip


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
    #: per-seed success in % (a domain's / all's: the mean over its members for the seeds that
    #: every member has); what :func:`difference` compares.
    per_seed: dict[int, float] = dataclasses.field(default_factory=dict, repr=False)
    #: the tasks the cell averages (one for a task row)
    tasks: tuple[str, ...] = ()

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
    """``{(task, agent): ({step: {seed: %}}, marks)}``; a seed seen twice keeps its first run.

    Runs of one (task, agent) whose configs differ in anything but :data:`POOLED_FIELDS` (e.g.
    QAM at ``tau`` 1 and at ``tau`` 10) are refused with a :class:`TableError` naming the
    settings: pooling them would make a cell whose value depends on which folders were given.
    """
    out: dict[tuple[str, str], tuple[dict, set[str]]] = {}
    first: dict[tuple[str, str], Run] = {}
    for run in runs:
        key = (run.task, run.agent)
        ref = first.setdefault(key, run)
        differ = sorted(
            k
            for k in (set(ref.config) | set(run.config)) - POOLED_FIELDS
            if ref.config.get(k) != run.config.get(k)
        )
        if differ:
            said = "; ".join(
                f"{k} = {ref.config.get(k)!r} in {ref.path}, {run.config.get(k)!r} in {run.path}"
                for k in differ
            )
            raise TableError(
                f"runs of {run.agent} on {run.task} differ in {said}; accepted: runs of one "
                "configuration per (task, agent): give the others to a separate table"
            )
        steps, marks = out.setdefault(key, ({}, set()))
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
    from qam_lite.data.tasks import DOMAINS, NUM_TASKS, parse_task

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
                        paper_cell(task, agent, step), dict(seeds), (task,),
                    )  # fmt: skip
                    cells.append(cell)
                    task_cells[step].append((cell, seeds))
            for step, members in sorted(task_cells.items()):
                cell = _aggregate("domain", domain, agent, step, members, NUM_TASKS)
                cells.append(cell)
                domain_cells[step].append((cell, cell.per_seed))
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
    tasks = tuple(sorted(set().union(*(c.tasks for c, _ in members))))
    # A partial row is compared with the paper's number over the same tasks, not its full row.
    paper = paper_over(tasks, agent, step) if "p" in marks else paper_cell(key, agent, step)
    return Cell(level, key, agent, step, mean, ci, n, marks, paper, per_seed, tasks)
