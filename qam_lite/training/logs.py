"""Run logs: append-only CSV tables, atomic JSON files, provenance, and the learning-curve figure.

A run folder holds ``metrics.csv`` (training losses and Q statistics), ``eval.csv`` (success rate
per evaluation), ``config.json``, ``provenance.json`` and ``curve.png``. Every write is atomic
(:mod:`qam_lite.atomic`): a CSV row is added by rewriting the table through a temporary file, so
a kill never leaves a torn row (and a torn row left by anything else is skipped when read). On
resume the CSVs are cut back to the checkpoint's step (:func:`truncate_csv`) so no row is ever
written twice.
"""

from __future__ import annotations

import csv
import datetime as _dt
import io
import json
import platform
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from qam_lite.atomic import fsync_dir, write_bytes


def write_json(path: str | Path, data: Mapping[str, Any]) -> None:
    """Write ``data`` as indented JSON, atomically."""
    write_bytes(Path(path), (json.dumps(data, indent=2, sort_keys=False) + "\n").encode())


def _complete_lines(path: Path) -> str:
    """The file's text up to its last complete line (a row torn by a kill is dropped)."""
    if not path.exists():
        return ""
    text = path.read_bytes().decode("utf-8", errors="replace")
    if text and not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return text


def _rows_text(fields: Sequence[str], rows: Sequence[Mapping[str, Any]], header: bool) -> str:
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    if header:
        writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    return buf.getvalue()


def append_rows(path: str | Path, rows: Sequence[Mapping[str, Any]]) -> None:
    """Add ``rows`` to a CSV file (header = the first row's keys if the file is new), atomically.

    The whole file is rewritten through a temporary file and a rename, so a kill mid-write
    leaves the previous table, never a torn row. Columns are fixed by the header: keys a later
    row lacks are left empty, new keys are dropped.
    """
    if not rows:
        return
    path = Path(path)
    text = _complete_lines(path)
    if text:
        fields = next(csv.reader(io.StringIO(text)))
        text += _rows_text(fields, rows, header=False)
    else:
        text = _rows_text(list(rows[0]), rows, header=True)
    write_bytes(path, text.encode())


def _fmt(value: Any) -> Any:
    if isinstance(value, float):
        return f"{value:.6g}"
    return value


def _is_complete(row: Mapping[str, Any], fields: Sequence[str]) -> bool:
    if None in row or any(row.get(k) is None for k in fields):
        return False  # too many or too few fields: a torn or foreign line
    try:
        float(row["step"])
    except (KeyError, ValueError):
        return False
    return True


def read_rows(path: str | Path) -> list[dict[str, str]]:
    """The complete rows of a CSV file as dicts of strings (empty list if there is no file).

    A torn last line (no newline: the writer was killed mid-row, by an older version or another
    tool) and rows with a missing field or an unreadable ``step`` are skipped.
    """
    text = _complete_lines(Path(path))
    if not text:
        return []
    reader = csv.DictReader(io.StringIO(text))
    fields = reader.fieldnames or []
    return [row for row in reader if _is_complete(row, fields)]


def truncate_csv(path: str | Path, step: int) -> int:
    """Keep only complete rows whose ``step`` is ``<= step`` (atomically); return rows kept.

    A file that holds no kept row is deleted, so a rerun starts it afresh with its header.
    """
    path = Path(path)
    if not path.exists():
        return 0
    text = _complete_lines(path)
    fields = next(csv.reader(io.StringIO(text)), []) if text else []
    keep = [r for r in read_rows(path) if int(float(r["step"])) <= step]
    if not keep:
        path.unlink()
        fsync_dir(path.parent)
        return 0
    write_bytes(path, _rows_text(fields, keep, header=True).encode())
    return len(keep)


def git_commit(root: str | Path | None = None) -> str | None:
    """The repository's ``HEAD`` commit (with ``+dirty`` if the tree has changes), or None."""
    root = Path(root) if root else Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
        )
        if commit.returncode != 0:
            return None
        status = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=10,
        )
        dirty = "+dirty" if status.returncode == 0 and status.stdout.strip() else ""
        return commit.stdout.strip() + dirty
    except (OSError, subprocess.SubprocessError):
        return None


def provenance(**extra: Any) -> dict[str, Any]:
    """Where a result came from: command, commit, device, versions, date, plus ``extra``."""
    import jax

    from qam_lite import __version__

    device = jax.devices()[0]
    return {
        "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else None,
        "git_commit": git_commit(),
        "qam_lite_version": __version__,
        "device": f"{device.platform}:{getattr(device, 'device_kind', '')}",
        "device_count": jax.device_count(),
        "jax_version": jax.__version__,
        "python": platform.python_version(),
        "host": platform.node(),
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        **extra,
    }


def plot_curve(eval_csv: str | Path, out_png: str | Path, *, title: str = "") -> Path | None:
    """Success rate (%) against step: a thin line per seed and their mean; None if no rows."""
    rows = read_rows(eval_csv)
    if not rows:
        return None
    import matplotlib

    if "matplotlib.pyplot" not in sys.modules:  # keep a notebook's (inline) backend
        matplotlib.use("Agg", force=False)

    from qam_lite.plotting import COLORS, figure_png, subplots

    per_seed: dict[int, list[tuple[int, float]]] = {}
    for row in rows:
        per_seed.setdefault(int(row["seed"]), []).append(
            (int(row["step"]), 100.0 * float(row["success_rate"]))
        )
    fig, ax = subplots(1, 1, width=5.5, height=3.5)
    colors = list(COLORS.values())
    steps_all: dict[int, list[float]] = {}
    for i, (seed, points) in enumerate(sorted(per_seed.items())):
        points.sort()
        xs, ys = zip(*points, strict=True)
        ax.plot(xs, ys, lw=1, alpha=0.5, color=colors[i % len(colors)], label=f"seed {seed}")
        for x, y in points:
            steps_all.setdefault(x, []).append(y)
    xs = sorted(steps_all)
    mean = [sum(steps_all[x]) / len(steps_all[x]) for x in xs]
    ax.plot(xs, mean, lw=2.5, color="black", marker="o", ms=3, label="mean")
    ax.set_xlabel("step (gradient updates)")
    ax.set_ylabel("success rate (%)")
    ax.set_ylim(-3, 103)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    write_bytes(Path(out_png), figure_png(fig, dpi=120))
    return Path(out_png)
