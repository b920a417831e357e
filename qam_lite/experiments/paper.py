"""The paper's released per-seed numbers (package data, ``qam_lite/experiments/paper_data``).

:func:`paper_rows` reads one study (``main``: 17 methods x 50 tasks every 50K steps;
``data_quality``; ``sensitivity``); :func:`paper_cell` and :func:`paper_over` give a task's,
domain's or task subset's mean with its 95 % interval over seeds; :func:`paper_table` /
:func:`paper_table_markdown` the table of every method and domain at a step (1M ends the offline
phase, 1.5M the online one; ``qam-lite table --paper 1e6 1.5e6``); :func:`paper_curve` and
:func:`plot_paper_curves` the per-domain curves with 95 % CI or SEM bands.
"""

from __future__ import annotations

import csv
import gzip
import io
from collections import defaultdict
from collections.abc import Sequence
from functools import lru_cache
from importlib import resources

from qam_lite.experiments.stats import ci95, fmt, step_text, t975

#: Our agent names -> the paper's method names (agents without one have no paper column).
PAPER_METHODS = {"qam": "QAM", "qam-e": "QAM-E", "qam-f": "QAM-F", "fql": "FQL", "bam": "BAM"}


PAPER_FILES = {
    "main": "qam_paper_main.csv.gz",
    "data_quality": "qam_paper_data_quality.csv.gz",
    "sensitivity": "qam_paper_sensitivity.csv.gz",
}


class TableError(ValueError):
    """No runs found, an unknown format or step list: the message says what is accepted."""


@lru_cache(maxsize=4)
def paper_rows(study: str = "main") -> dict[tuple[str, str, int], list[float]]:
    """``{(key, method, step): per-seed success in %}`` from the packaged CSV of ``study``."""
    if study not in PAPER_FILES:
        raise TableError(f"unknown study {study!r}; accepted: {', '.join(PAPER_FILES)}")
    blob = resources.files(__package__).joinpath("paper_data", PAPER_FILES[study])
    blob = blob.read_bytes()
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
    from qam_lite.data.tasks import parse_task

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
    from qam_lite.data.tasks import PAPER_DOMAINS, all_task_names

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
            half = None if half is None else half / t975(len(seeds) - 1)
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
