"""Trace a training run's CPU time and memory against its step, for cost-vs-result plots.

    python benchmarks/cpu_trace.py PID RUN_DIR [--every 30]

Every ``--every`` seconds, until process ``PID`` exits, appends one row to
``RUN_DIR/cpu_trace.csv``: the UTC time, the CPU seconds (user + system) of ``PID`` and all its
living descendants (the training process and its evaluation workers), their summed resident memory
in MiB, the largest single process's resident memory, and the last step ``RUN_DIR/metrics.csv`` has
logged. A run resumed in a later process appends to the same file, and its CPU seconds restart
from 0: ``qam_lite.experiments.ladder.cpu_hours_at`` adds the segments up. Linux only (reads
``/proc``).

Why a sampler instead of ``/usr/bin/time``: that reports one total at exit, while a ladder figure
needs the cost at every evaluation step; and a process's ``cutime`` counts only children it has
waited for, so the evaluation workers' time is read from the living workers themselves.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import time
from pathlib import Path

FIELDS = ("utc", "pid", "cpu_s", "rss_mib", "max_rss_mib", "step")
_TICK = os.sysconf("SC_CLK_TCK")
_PAGE_MIB = os.sysconf("SC_PAGE_SIZE") / 2**20


def _children() -> dict[int, list[int]]:
    """Parent pid -> child pids of every living process."""
    tree: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:  # ended while we looked
            continue
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        tree.setdefault(ppid, []).append(int(entry))
    return tree


def tree_usage(pid: int) -> tuple[float, float, float] | None:
    """``(cpu_s, rss_mib, max_rss_mib)`` of ``pid`` and its living descendants (None: it ended)."""
    tree, todo, cpu, rss, biggest = _children(), [pid], 0.0, 0.0, 0.0
    seen = False
    while todo:
        p = todo.pop()
        try:
            stat = Path(f"/proc/{p}/stat").read_text()
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except OSError:
            continue
        seen = seen or p == pid
        fields = stat[stat.rindex(")") + 2 :].split()
        cpu += (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime
        rss += pages * _PAGE_MIB
        biggest = max(biggest, pages * _PAGE_MIB)
        todo += tree.get(p, [])
    return (cpu, rss, biggest) if seen else None


def last_step(run_dir: Path) -> int:
    """The step of ``metrics.csv``'s last row (0 before the first)."""
    try:
        lines = (run_dir / "metrics.csv").read_text().splitlines()
    except OSError:
        return 0
    return int(lines[-1].split(",")[0]) if len(lines) > 1 else 0


def trace(pid: int, run_dir: Path, every: float) -> None:
    """Append rows to ``run_dir/cpu_trace.csv`` until ``pid`` exits."""
    path = run_dir / "cpu_trace.csv"
    new = not path.exists()
    with path.open("a", newline="") as f:
        out = csv.writer(f)
        if new:
            out.writerow(FIELDS)
        while (usage := tree_usage(pid)) is not None:
            now = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
            cpu, rss, biggest = usage
            out.writerow(
                [now, pid, f"{cpu:.1f}", f"{rss:.0f}", f"{biggest:.0f}", last_step(run_dir)]
            )
            f.flush()
            time.sleep(every)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pid", type=int)
    p.add_argument("run_dir", type=Path)
    p.add_argument("--every", type=float, default=30.0, help="seconds between samples")
    a = p.parse_args()
    trace(a.pid, a.run_dir, a.every)


if __name__ == "__main__":
    main()
