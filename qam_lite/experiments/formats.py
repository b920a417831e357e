"""Table cells written out: markdown, CSV, LaTeX, the wide table (our agents beside the paper's
columns), and the ranking of every agent against one (``qam-lite table --vs qam``).

Every writer takes the :class:`~qam_lite.experiments.table.Cell` list that
:func:`qam_lite.experiments.table.build` made and returns text; nothing here reads a run.
"""

from __future__ import annotations

import csv
import io
from collections import defaultdict
from collections.abc import Sequence

from qam_lite.experiments.ours import MARKS, Cell
from qam_lite.experiments.paper import (
    PAPER_METHODS,
    paper_cell,
    paper_over,
)
from qam_lite.experiments.stats import difference, fmt, step_text


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
    """The line under a table: what the numbers are and what each mark used means."""
    used = sorted(set().union(*(c.marks for c in cells))) if cells else []
    text = "Success rate x 100, mean ± 95 % CI (Student's t over seeds); paper: its released data."
    if used:
        text += " Marks: " + "; ".join(f"{m} = {MARKS[m]}" for m in used) + "."
    return text + "\n"


def to_csv(cells: Sequence[Cell]) -> str:
    """One CSV row per cell (:meth:`~qam_lite.experiments.ours.Cell.as_row`), with a header."""
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
    from qam_lite.data.tasks import DOMAINS, parse_task

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
