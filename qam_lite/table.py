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
(none for one seed); :func:`difference` gives Welch's interval for the difference of two agents.
Outputs: Markdown (long, or ``wide``: one column per agent with the paper's beside), CSV, LaTeX,
and a learning-curve figure per task with the paper's mean and CI band.

The paper's own table: :func:`paper_table` / :func:`paper_table_markdown` (its 17 methods x 10
domains and ``all`` at a step: 1M ends the offline phase, 1.5M the online one; ``qam-lite table
--paper 1e6 1.5e6``), :func:`paper_curve` and :func:`plot_paper_curves` (per-domain curves with
95 % CI or SEM bands), all from the released per-seed numbers packaged in ``qam_lite/data/paper``.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import gzip
import io
import json
import math
import sys
from collections import defaultdict
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import resources
from pathlib import Path

#: Our agent names -> the paper's method names (agents without one have no paper column).
PAPER_METHODS = {"qam": "QAM", "qam-e": "QAM-E", "qam-f": "QAM-F", "fql": "FQL", "bam": "BAM"}
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
    "p": "averaged over fewer tasks/domains than the paper (its number beside: the same tasks)",
}
FORMATS = ("md", "csv", "tex", "wide")
FILENAMES = {"md": "table.md", "csv": "table.csv", "tex": "table.tex", "wide": "table-wide.md"}

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
    return mean, _t975(n - 1) * sd / math.sqrt(n)


def _t975(df: float) -> float:
    """t(0.975, df), df rounded down (conservative) to the table's values; 1.96 beyond 30."""
    df = int(math.floor(df))
    if df < 1:
        raise TableError(f"a t interval needs at least 1 degree of freedom, got {df}")
    return _T975[df - 1] if df <= len(_T975) else 1.96


def difference(a: Sequence[float], b: Sequence[float]) -> tuple[float, float | None]:
    """``(mean(a) - mean(b), half-width of its 95 % Welch interval)`` for two independent
    samples (e.g. two agents' per-seed success); the half-width is None when either sample has
    one value. The Welch-Satterthwaite degrees of freedom are rounded down (a wider interval)."""
    na, nb = len(a), len(b)
    ma, mb = sum(a) / na, sum(b) / nb
    if na < 2 or nb < 2:
        return ma - mb, None
    va = sum((x - ma) ** 2 for x in a) / (na - 1) / na
    vb = sum((x - mb) ** 2 for x in b) / (nb - 1) / nb
    if va + vb == 0:
        return ma - mb, 0.0
    df = (va + vb) ** 2 / (va**2 / (na - 1) + vb**2 / (nb - 1))
    return ma - mb, _t975(df) * math.sqrt(va + vb)


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


def paper_over(
    tasks: Sequence[str], agent: str, step: int
) -> tuple[float, float | None, int] | None:
    """The paper's ``(mean, ci, n)`` for ``agent`` over a subset of its tasks, aggregated as its
    table is: the mean of each domain's tasks, then the mean of those domains. The interval
    treats column ``seed i`` of every task as one replicate; the released domain rows pair seeds
    their own way, so over a full domain the mean is the paper's exactly but the interval differs
    a little (QAM, scene-play, 1M: ± 0.70 here, ± 0.93 from its row). None where the paper has
    no number for one of the tasks."""
    from qam_lite.tasks import parse_task

    method = PAPER_METHODS.get(agent)
    if method is None or not tasks:
        return None
    by_domain: dict[str, list[list[float]]] = defaultdict(list)
    for task in tasks:
        seeds = paper_rows().get((task, method, step))
        if not seeds:
            return None
        by_domain[parse_task(task).domain].append(seeds)
    lengths = {len(v) for vs in by_domain.values() for v in vs}
    domain_means = [
        [sum(v[i] for v in vs) / len(vs) for i in range(min(lengths))] for vs in by_domain.values()
    ]
    per_seed = [sum(d[i] for d in domain_means) / len(domain_means) for i in range(min(lengths))]
    if len(lengths) > 1:  # seeds not aligned: the mean of means, no interval
        means = [sum(sum(v) / len(v) for v in vs) / len(vs) for vs in by_domain.values()]
        return sum(means) / len(means), None, min(lengths)
    return (*ci95(per_seed), len(per_seed))


def paper_methods(study: str = "main") -> list[str]:
    """The study's methods: QAM and its variants first, then the others alphabetically."""
    names = {m for _, m, _ in paper_rows(study)}
    first = [m for m in ("QAM", "QAM-E", "QAM-F") if m in names]
    return first + sorted(names - set(first), key=str.lower)


def paper_keys(level: str = "domain") -> list[str]:
    """The main study's rows of one ``level``: ``'domain'`` (its 10 domains in the paper's order,
    then ``all``) or ``'task'`` (its 50 tasks)."""
    from qam_lite.tasks import PAPER_DOMAINS, all_task_names

    if level == "domain":
        return [*PAPER_DOMAINS, "all"]
    if level == "task":
        return all_task_names(list(PAPER_DOMAINS))
    raise TableError(f"level={level!r}; accepted: 'domain', 'task'")


def paper_table(
    step: int = 1_000_000,
    keys: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    study: str = "main",
) -> dict[str, dict[str, tuple[float, float | None, int]]]:
    """The paper's ``{key: {method: (mean, ci95, seeds)}}`` at ``step`` (1M: the end of the
    offline phase; 1.5M: the end of the online phase), from its released per-seed numbers.

    ``keys``: task/domain names or ``all`` (default: the 10 domains and ``all``); ``methods``:
    the paper's method names (default: all 17). A method without a number there (RLPD is
    online only) is left out of that key's dict.
    """
    rows = paper_rows(study)
    steps = sorted({s for _, _, s in rows})
    if step not in steps:
        raise TableError(
            f"the paper has no step {step}; accepted: {steps[0]} .. {steps[-1]} every "
            f"{steps[1] - steps[0]} (1000000 = end of offline, 1500000 = end of online)"
        )
    keys = paper_keys() if keys is None else list(keys)
    methods = paper_methods(study) if methods is None else list(methods)
    unknown = [m for m in methods if m not in paper_methods(study)]
    if unknown:
        raise TableError(
            f"unknown method(s) {', '.join(unknown)}; accepted: {', '.join(paper_methods(study))}"
        )
    out: dict[str, dict[str, tuple[float, float | None, int]]] = {}
    for key in keys:
        out[key] = {}
        for method in methods:
            seeds = rows.get((key, method, step))
            if seeds:
                out[key][method] = (*ci95(seeds), len(seeds))
    return out


def short_domain(key: str) -> str:
    """``cube-double-play`` -> ``cube-double`` (a column header)."""
    return key.removesuffix("-play").removesuffix("-navigate")


def paper_table_markdown(
    step: int = 1_000_000,
    keys: Sequence[str] | None = None,
    methods: Sequence[str] | None = None,
    study: str = "main",
    ci: bool = False,
) -> str:
    """The paper's table at ``step`` as Markdown: one row per method, one column per domain (and
    ``all``); success rate x 100, mean over seeds (``ci=True``: ± 95 % CI). The best mean of each
    column is bold, and so is every mean whose 95 % CI reaches it."""
    table = paper_table(step, keys, methods, study)
    keys = list(table)
    methods = paper_methods(study) if methods is None else list(methods)
    absent = [m for m in methods if not any(m in cells for cells in table.values())]
    methods = [m for m in methods if m not in absent]
    best = {}
    for key, cells in table.items():
        if cells:
            top = max(cells.values(), key=lambda c: c[0])[0]
            best[key] = {m for m, (mean, half, _) in cells.items() if mean + (half or 0) >= top}
    head = "| method | " + " | ".join(short_domain(k) for k in keys) + " |"
    lines = [head, "|---|" + "---:|" * len(keys)]
    for method in methods:
        row = []
        for key in keys:
            cell = table[key].get(method)
            if cell is None:
                row.append("—")
                continue
            text = fmt(cell[0], cell[1]) if ci else f"{cell[0]:.1f}"
            row.append(f"**{text}**" if method in best.get(key, ()) else text)
        lines.append(f"| {method} | " + " | ".join(row) + " |")
    phase = "offline" if step <= 1_000_000 else "online"
    n = {c[2] for cells in table.values() for c in cells.values()}
    lines.append(
        f"\nThe paper's released data ({study} study) at step {step_text(step)} ({phase} phase): "
        f"success rate x 100, mean over {'/'.join(map(str, sorted(n)))} seeds"
        + (" ± 95 % CI (Student's t)" if ci else "")
        + "; a domain is the mean of its 5 tasks, `all` the mean of the 10 domains. Bold: the "
        "column's best mean and every mean whose 95 % CI reaches it."
        + (f" No number at this step: {', '.join(absent)}." if absent else "")
    )
    return "\n".join(lines) + "\n"


def paper_curve(
    key: str, method: str, study: str = "main", band: str = "ci"
) -> tuple[list[int], list[float], list[float]]:
    """``(steps, means, half-widths)`` of the paper's curve for ``method`` on ``key``;
    ``band``: ``'ci'`` (95 % t interval over seeds) or ``'sem'`` (standard error)."""
    if band not in ("ci", "sem"):
        raise TableError(f"band={band!r}; accepted: 'ci', 'sem'")
    points = sorted(
        (s, v) for (k, m, s), v in paper_rows(study).items() if k == key and m == method
    )
    steps, means, halves = [], [], []
    for step, seeds in points:
        mean, half = ci95(seeds)
        if band == "sem":
            half = None if half is None else half / _t975(len(seeds) - 1)
        steps.append(step)
        means.append(mean)
        halves.append(half or 0.0)
    return steps, means, halves


def plot_paper_curves(
    keys: Sequence[str] | None = None,
    methods: Sequence[str] = ("QAM", "QAM-E", "QAM-F", "FQL", "BAM", "QSM", "ReBRAC"),
    study: str = "main",
    band: str = "ci",
    ncols: int = 4,
):
    """One panel per key (default: the 10 domains and ``all``): each method's mean success over
    the paper's steps with a shaded band (``band``: 95 % CI or SEM over seeds), and a line at
    1M where the online phase starts. Returns the figure."""
    from qam_lite.plotting import subplots

    keys = paper_keys() if keys is None else list(keys)
    nrows = -(-len(keys) // ncols)
    fig, axes = subplots(nrows, ncols, width=3.0, height=2.3, sharex=True, sharey=True,
                         layout="constrained", squeeze=False)  # fmt: skip
    colors = _method_colors(methods)
    for ax, key in zip(axes.flat, keys, strict=False):
        for method in methods:
            steps, means, halves = paper_curve(key, method, study, band)
            if not steps:
                continue
            xs = [s / 1e6 for s in steps]
            ax.plot(xs, means, color=colors[method], lw=1.2, label=method)
            lo = [m - h for m, h in zip(means, halves, strict=True)]
            hi = [m + h for m, h in zip(means, halves, strict=True)]
            ax.fill_between(xs, lo, hi, color=colors[method], alpha=0.2, lw=0)
        ax.axvline(1.0, color="0.5", lw=0.8, ls=":")
        ax.set_title(short_domain(key), fontsize=9)
        ax.set_ylim(-2, 102)
    for ax in axes.flat[len(keys) :]:
        ax.set_visible(False)
    for ax in axes[:, 0]:
        ax.set_ylabel("success (%)")
    for col in range(ncols):  # x labels under the lowest panel of each column
        shown = [ax for ax in axes[:, col] if ax.get_visible()]
        if shown:
            shown[-1].set_xlabel("steps (millions)")
            shown[-1].xaxis.set_tick_params(labelbottom=True)
    handles, labels = axes.flat[0].get_legend_handles_labels()
    band_text = "95 % CI" if band == "ci" else "SEM"
    fig.legend(handles, labels, loc="outside lower center", ncols=min(len(labels), 8),
               title=f"the paper's released curves (band: {band_text} over seeds; "
                     "dotted: offline -> online at 1M)", title_fontsize=8, fontsize=8)  # fmt: skip
    return fig


def _method_colors(methods: Sequence[str]) -> dict[str, str]:
    import matplotlib.pyplot as plt

    cycle = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    return {m: cycle[i % len(cycle)] for i, m in enumerate(methods)}


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


# --------------------------------------------------------------------------------------------
# Output


def fmt(mean: float, ci: float | None) -> str:
    """``"mean ± ci"`` with one decimal (``"mean"`` when there is no interval)."""
    return f"{mean:.1f}" if ci is None else f"{mean:.1f} ± {ci:.1f}"


def step_text(step: int) -> str:
    """50000 -> "50K", 1500000 -> "1.5M"."""
    if step >= 1_000_000 and step % 100_000 == 0:
        return f"{step / 1e6:g}M"
    return f"{step // 1000}K" if step % 1000 == 0 else str(step)


def to_markdown(cells: Sequence[Cell]) -> str:
    """A Markdown table (success x 100, mean ± 95 % CI) with the marks' legend."""
    lines = [
        "| level | task / domain | agent | step | ours | seeds | paper | paper seeds | marks |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        p = "—" if c.paper is None else fmt(c.paper[0], c.paper[1])
        key = c.key if c.level == "task" else f"**{c.key}**"
        lines.append(
            f"| {c.level} | {key} | {c.agent} | {step_text(c.step)} | {fmt(c.mean, c.ci)} | "
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
        ours = fmt(c.mean, c.ci).replace("±", r"$\pm$")
        if c.marks:
            ours += f"$^{{{''.join(sorted(c.marks))}}}$"
        paper = "--" if c.paper is None else fmt(c.paper[0], c.paper[1]).replace("±", r"$\pm$")
        key = _tex_escape(c.key) if c.level == "task" else rf"\textbf{{{_tex_escape(c.key)}}}"
        lines.append(f"{key} & {c.agent} & {step_text(c.step)} & {ours} & {paper} \\\\")
    lines += [r"\bottomrule", r"\end{tabular}", "% " + legend(cells).strip()]
    return "\n".join(lines) + "\n"


def pivot(cells: Sequence[Cell], step: int | None = None) -> dict[tuple[str, str], dict]:
    """``{(level, key): {agent: Cell}}`` at ``step`` (None: each row's last step for each
    agent), rows in the table's order: per domain its tasks then the domain, then ``all``."""
    from qam_lite.tasks import DOMAINS, parse_task

    picked: dict[tuple[str, str], dict[str, Cell]] = {}
    for c in cells:
        if step is not None and c.step != step:
            continue
        row = picked.setdefault((c.level, c.key), {})
        if c.agent not in row or c.step > row[c.agent].step:
            row[c.agent] = c

    def order(item):
        level, key = item
        if level == "all":
            return (len(DOMAINS), 2, key)
        domain = key if level == "domain" else parse_task(key).domain
        return (list(DOMAINS).index(domain), 0 if level == "task" else 1, key)

    return {k: picked[k] for k in sorted(picked, key=order)}


def verdict(diff: float, half: float | None) -> str:
    """What a difference ``reference - other`` with its 95 % half-width says: ``'above'`` or
    ``'below'`` when the interval excludes 0, ``'not separated'`` when it does not, ``'one seed'``
    when there is no interval (either side has a single seed)."""
    if half is None:
        return "one seed"
    return "above" if diff - half > 0 else ("below" if diff + half < 0 else "not separated")


def ranking(
    cells: Sequence[Cell],
    reference: str = "qam",
    others: Sequence[str] | None = None,
    step: int | None = None,
) -> dict[tuple[str, str], dict[str, tuple[float, float | None, str]]]:
    """The reference agent against each other agent, row by row: ``{(level, key): {other:
    (mean difference, 95 % Welch half-width or None, verdict)}}`` from the per-seed success of
    the two cells (:func:`difference`, :func:`verdict`) at ``step`` (None: the last step the two
    agents share in that row, so that both had the same budget). Rows without the reference, or
    without an ``other`` at a shared step, have no entry for it; ``others`` defaults to every
    other agent in ``cells``."""
    at: dict[tuple[str, str, str], dict[int, Cell]] = defaultdict(dict)
    for c in cells:
        at[c.level, c.key, c.agent][c.step] = c
    rows = pivot(cells)  # for the table's row order
    if others is None:
        others = sorted({a for r in rows.values() for a in r} - {reference})
    out: dict[tuple[str, str], dict[str, tuple[float, float | None, str]]] = {}
    for level, key in rows:
        ref = at.get((level, key, reference), {})
        found = {}
        for other in others:
            theirs = at.get((level, key, other), {})
            shared = set(ref) & set(theirs) if step is None else set(ref) & set(theirs) & {step}
            if not shared:
                continue
            s = max(shared)
            d, h = difference(list(ref[s].per_seed.values()), list(theirs[s].per_seed.values()))
            found[other] = (d, h, verdict(d, h))
        if found:
            out[level, key] = found
    return out


def ranking_markdown(
    cells: Sequence[Cell],
    reference: str = "qam",
    others: Sequence[str] | None = None,
    step: int | None = None,
) -> str:
    """:func:`ranking` as a table: one row per task / domain / ``all``, one column per other
    agent, ``difference ± half-width (verdict)`` in success points (x 100)."""
    ranks = ranking(cells, reference, others, step)
    if others is None:
        others = sorted({o for r in ranks.values() for o in r})
    head = ["task / domain", *(f"{reference} - {o}" for o in others)]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---|" * len(others)]
    for (level, key), found in ranks.items():
        row = [key if level == "task" else f"**{key}**"]
        for o in others:
            if o not in found:
                row.append("—")
                continue
            d, h, v = found[o]
            row.append(f"{d:+.1f}" + ("" if h is None else f" ± {h:.1f}") + f" ({v})")
        lines.append("| " + " | ".join(row) + " |")
    note = (
        f"Difference of mean success (x 100) with its 95 % Welch interval over the seeds of the "
        f"two agents; 'above'/'below': the interval excludes 0 ({reference} above / below)."
    )
    return "\n".join(lines) + "\n\n" + note + "\n"


def to_wide_markdown(
    cells: Sequence[Cell], step: int | None = None, paper_steps: Sequence[int] = ()
) -> str:
    """One row per task / domain / ``all``, one column per agent (mean ± 95 % CI over seeds at
    ``step``, None: the last step, with the cell's marks in brackets), then the paper's number
    for the same methods at each of ``paper_steps`` (mean ± 95 % CI over its seeds; on a
    partial domain or ``all`` row, over the same tasks as ours: :func:`paper_over`)."""
    rows = pivot(cells, step)
    order = list(PAPER_METHODS)
    agents = sorted(
        dict.fromkeys(c.agent for r in rows.values() for c in r.values()),
        key=lambda a: (a not in PAPER_METHODS, order.index(a) if a in PAPER_METHODS else 0, a),
    )
    head = ["task / domain"]
    for a in agents:
        mine = [r[a] for r in rows.values() if a in r]
        steps = "/".join(step_text(s) for s in sorted({c.step for c in mine}))
        seeds = {c.seeds for c in mine}
        k = seeds.pop() if len(seeds) == 1 else None
        n = "" if k is None else f", {k} seed{'' if k == 1 else 's'}"
        head.append(f"{a} (ours, {steps}{n})")
    uniform = {a: " seed" in h for a, h in zip(agents, head[1:], strict=True)}
    paper_cols = [(a, s) for s in paper_steps for a in agents if a in PAPER_METHODS]
    head += [f"{PAPER_METHODS[a]} (paper, {step_text(s)})" for a, s in paper_cols]
    lines = ["| " + " | ".join(head) + " |", "|---|" + "---:|" * (len(head) - 1)]
    paper_n: set[int] = set()
    for (level, key), by_agent in rows.items():
        row = [key if level == "task" else f"**{key}**"]
        for a in agents:
            c = by_agent.get(a)
            if c is None:
                row.append("—")
                continue
            n = "" if uniform[a] else f" (n={c.seeds})"
            marks = f" [{''.join(sorted(c.marks))}]" if c.marks else ""
            row.append(f"{fmt(c.mean, c.ci)}{n}{marks}")
        row_tasks = tuple(sorted(set().union(*(c.tasks for c in by_agent.values()))))
        partial = any("p" in c.marks for c in by_agent.values())
        for a, s in paper_cols:
            c = by_agent.get(a)
            if c is not None and "p" in c.marks:
                p = paper_over(c.tasks, a, s)  # the tasks of our cell
            elif partial:
                p = paper_over(row_tasks, a, s)  # the row's tasks
            else:
                p = paper_cell(key, a, s)
            if p is not None:
                paper_n.add(p[2])
            row.append("—" if p is None else fmt(p[0], p[1]))
        lines.append("| " + " | ".join(row) + " |")
    note = ""
    if paper_cols:
        note = (
            f" The paper's columns: its released per-seed numbers "
            f"({'/'.join(map(str, sorted(paper_n)))} seeds); on a partial domain or `all` row "
            "(mark p) over the same tasks as our cell (where we have none: as the row's)."
        )
    return "\n".join(lines) + "\n\n" + legend(cells).rstrip("\n") + note + "\n"


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
    (out / name).write_text(text)
    print(f"wrote {out / name}")


def run_cli(args: argparse.Namespace) -> None:
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
    for fmt in args.format:
        _emit(out, FILENAMES[fmt], writers[fmt](cells))
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
