"""The book's chapters as files: where they are, which repository they name, their hashes and
the state of their last execution, and what a saved output must not hold.

:data:`REPOSITORY` is the one place that names the project's public repository: ``qam-lite book
--sync`` rewrites every chapter's Colab badge and install cell from it (a test keeps them in sync).
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

#: The project's public repository (GitHub ``owner/name``) and branch; change here, then run
#: ``qam-lite book --sync``.
REPOSITORY = "qam-lite/qam-lite"


BRANCH = "main"


ROOT = Path(__file__).resolve().parents[2]


BOOK_DIR = ROOT / "book"


#: The Colab badge, a local image (a remote one breaks offline builds), relative to ``book/``.
BADGE_IMAGE = "images/colab-badge.svg"


def chapters() -> list[Path]:
    """Chapter sources ``book/NN_*.md`` in reading order."""
    return sorted(BOOK_DIR.glob("[0-9][0-9]_*.md"))


def write_text(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically (old or new file, never a torn one)."""
    from qam_lite.atomic import write_bytes

    write_bytes(path, text.encode())


_PROGRESS_BAR = re.compile(r"\d+%\|")


def output_problems(output: dict) -> list[str]:
    """What is wrong with one saved notebook output, as short phrases (empty when fine).

    Flags tracebacks, live-widget reprs (which a static page shows as "a Jupyter kernel connection
    is required") and frozen progress bars.
    """
    kind = output.get("output_type")
    if kind == "error":
        return [f"error output ({output.get('ename')}: {output.get('evalue', '')[:80]})"]
    data = output.get("data", {})
    text = output.get("text", "") if kind == "stream" else _plain(data.get("text/plain", ""))
    text = "".join(text) if isinstance(text, list) else text
    problems = []
    if "application/vnd.jupyter.widget-view+json" in data or text.startswith("interactive("):
        problems.append("live widget output")
    if "Traceback (most recent call last)" in text:
        problems.append("traceback text")
    if _PROGRESS_BAR.search(text):
        problems.append("progress bar text")
    return problems


def _plain(value) -> str:
    """``text/plain`` as nbformat stores it, or as mystmd's page JSON does (a dict)."""
    if isinstance(value, dict):
        return value.get("content", "")
    return "".join(value) if isinstance(value, list) else value


def notebook_problems(nb) -> list[str]:
    """``output_problems`` of every code cell of an executed notebook, prefixed by cell number,
    and every inline expression of a markdown cell without a stored value
    (:func:`expression_problems`)."""
    found = []
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code_cells, 1):
        for output in cell.get("outputs", []):
            found += [f"code cell {i}: {p}" for p in output_problems(output)]
    return found + expression_problems(nb)


# A fenced block (``` or ~~~, any directive included): MyST parses no role inside it.
_FENCE = re.compile(r"^(?P<f>`{3,}|~{3,}).*?^(?P=f)[ \t]*$", re.M | re.S)
# A MyST inline expression: the eval role, its expression in backticks (doubled for an expression
# holding one).
_EVAL = re.compile(r"\{eval\}(?P<ticks>`+)(?P<expr>.+?)(?P=ticks)(?!`)")


def inline_expressions(markdown: str) -> list[str]:
    """The expressions of the MyST ``{eval}`` roles of one markdown cell, in order of first
    appearance, without repeats (code blocks skipped).

    mystmd matches a role to its stored value by this exact text (``expression`` in the cell's
    ``user_expressions`` metadata).
    """
    found: list[str] = []
    for match in _EVAL.finditer(_FENCE.sub("", markdown)):
        if match["expr"] not in found:
            found.append(match["expr"])
    return found


def expression_problems(nb) -> list[str]:
    """Inline expressions of an executed notebook's markdown cells without an ``ok`` value in the
    cell's ``user_expressions`` metadata (which :func:`qam_lite.book.build.execute_chapter`
    writes), as short phrases naming the markdown cell (1-based among markdown cells)."""
    found = []
    markdown_cells = [c for c in nb.cells if c.cell_type == "markdown"]
    for i, cell in enumerate(markdown_cells, 1):
        stored = {
            entry.get("expression"): entry.get("result", {})
            for entry in cell.get("metadata", {}).get("user_expressions", [])
        }
        for expr in inline_expressions(cell.source):
            result = stored.get(expr)
            if result is None or result.get("status") != "ok" or not result.get("data"):
                found.append(f"markdown cell {i}: no value stored for {{eval}}`{expr}`")
    return found


#: The measured run time of each chapter, per mode and device, as ``qam-lite book`` last
#: recorded it (:func:`record_run_time`), in ``BOOK_DIR``; committed, read by :func:`run_time`.
RUN_TIMES_FILE = "runtimes.json"


def read_run_times() -> dict:
    """``book/runtimes.json`` (``{}`` when missing or unreadable):
    ``{chapter: {"quick" | "full": {device: {"seconds", "machine", "load"}}}}``."""
    try:
        times = json.loads((BOOK_DIR / RUN_TIMES_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return times if isinstance(times, dict) else {}


def record_run_time(stem: str, quick_mode: bool, seconds: float, machine: dict) -> None:
    """Record one finished execution of chapter ``stem`` in ``book/runtimes.json``, replacing
    the earlier one of the same mode and device (``machine``: what :func:`machine` returned in
    the chapter's kernel). Two books built at once (``--only`` in two terminals) both keep their
    entries: the read-modify-write holds an OS lock on ``book/.runtimes.json.lock``."""
    import filelock

    mode = "quick" if quick_mode else "full"
    entry = {"seconds": round(seconds), "machine": machine.get("machine", "unknown machine")}
    if machine.get("load") is not None:
        entry["load"] = machine["load"]
    with filelock.FileLock(BOOK_DIR / f".{RUN_TIMES_FILE}.lock"):
        times = read_run_times()
        times.setdefault(stem, {}).setdefault(mode, {})[machine.get("device", "cpu")] = entry
        write_text(BOOK_DIR / RUN_TIMES_FILE, json.dumps(times, indent=1, sort_keys=True) + "\n")


#: The value of every inline expression of each chapter at its last full-mode execution, as
#: ``{chapter: {expression: text}}``; committed, so that :mod:`qam_lite.book.sync` can show the
#: values in the paired notebooks (Colab and plain Jupyter do not evaluate ``{eval}`` roles).
VALUES_FILE = "values.json"

#: ``run_time(...)`` expressions are not recorded: the notebook shows them from ``runtimes.json``.
_RUN_TIME_CALL = re.compile(r"run_time\(")


def read_values() -> dict:
    """``book/values.json`` (``{}`` when missing or unreadable)."""
    try:
        values = json.loads((BOOK_DIR / VALUES_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return values if isinstance(values, dict) else {}


def expression_text(result: dict) -> str | None:
    """What an ``ok`` inline-expression result shows as text (its ``text/plain``), else None."""
    if result.get("status") != "ok":
        return None
    plain = result.get("data", {}).get("text/plain")
    return plain if isinstance(plain, str) else None


def record_values(stem: str, nb) -> None:
    """Record the inline-expression values of chapter ``stem``'s executed notebook ``nb`` (a
    full-mode run) in ``book/values.json``, replacing the chapter's earlier entry (under the
    same OS lock as the run times)."""
    import filelock

    values = {}
    for cell in nb.cells:
        for entry in cell.get("metadata", {}).get("user_expressions", []):
            text = expression_text(entry.get("result", {}))
            if text is not None and not _RUN_TIME_CALL.match(entry["expression"]):
                values[entry["expression"]] = text
    with filelock.FileLock(BOOK_DIR / f".{RUN_TIMES_FILE}.lock"):
        recorded = read_values()
        recorded[stem] = dict(sorted(values.items()))
        text = json.dumps(dict(sorted(recorded.items())), indent=1, ensure_ascii=False) + "\n"
        write_text(BOOK_DIR / VALUES_FILE, text)


def machine() -> dict:
    """Where this process runs its JAX code: ``{"device": "cpu" | "gpu" | ..., "machine": a
    name such as "2-core CPU" or "NVIDIA H200 GPU", "load": the 1-minute load average}``.

    Run in a chapter's kernel once it has finished (JAX is imported by then); the load average
    says how busy a CPU was (the book's CPU runs share their machine with other jobs).
    """
    import os
    import sys

    jax = sys.modules.get("jax")
    device = jax.default_backend() if jax is not None else "cpu"
    if device == "cpu":
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
        name = f"{cores}-core CPU"
    else:
        name = f"{jax.devices()[0].device_kind} {device.upper()}"
    load = round(os.getloadavg()[0], 1) if hasattr(os, "getloadavg") else None
    return {"device": device, "machine": name, "load": load}


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def run_time(stem: str, mode: str) -> str:
    """One reader-facing phrase for a chapter's run-time box: its last recorded execution in
    ``mode`` ("quick" or "full") on each device, e.g. ``"5.0 min (2-core CPU, load average
    7.1)"``, or ``"not measured yet"``. Chapters show it with an ``{eval}`` role calling
    ``run_time(stem, "quick")``."""
    if mode not in ("quick", "full"):
        raise ValueError(f"mode must be 'quick' or 'full', not {mode!r}")
    runs = read_run_times().get(stem, {}).get(mode, {})
    phrases = []
    for device in sorted(runs):
        run = runs[device]
        where = run["machine"]
        if device == "cpu" and run.get("load") is not None:
            where += f", load average {run['load']:.1f}"
        phrases.append(f"{_duration(run['seconds'])} ({where})")
    return "; ".join(phrases) or "not measured yet"


def source_hash(md: Path) -> str:
    """SHA-256 of a chapter's source: a finished run is reused only for the same text."""
    return hashlib.sha256(md.read_bytes()).hexdigest()


STATE_FILE = "state.json"


def read_state(out_dir: Path) -> dict:
    """``state.json`` of an executed book folder (``{}`` when missing or unreadable)."""
    try:
        state = json.loads((out_dir / STATE_FILE).read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return {}
    return state if isinstance(state, dict) else {}


def library_hash() -> str:
    """SHA-256 of the library's sources (``qam_lite/**/*.py``), on which chapter outputs depend."""
    library = hashlib.sha256()
    for path in sorted((ROOT / "qam_lite").rglob("*.py")):
        library.update(path.relative_to(ROOT).as_posix().encode() + path.read_bytes())
    return library.hexdigest()


def is_finished(
    md: Path, out_dir: Path, state: dict, quick_mode: bool, library: str | None = None
) -> bool:
    """Whether ``out_dir`` holds a finished run of ``md`` for its current source, the current
    library (``library``: :func:`library_hash`, computed when not given) and this mode."""
    entry = state.get(md.stem, {})
    return (
        (out_dir / f"{md.stem}.ipynb").exists()
        and entry.get("source_sha256") == source_hash(md)
        and entry.get("quick") == quick_mode
        and entry.get("library_sha256") == (library or library_hash())
    )


def select(only: list[str] | None) -> list[Path]:
    """Chapters whose name contains any of ``only`` (all when ``only`` is None)."""
    every = chapters()
    if only is None:
        return every
    keys = [k for k in only if k.strip()]
    todo = [md for md in every if any(key in md.stem for key in keys)]
    if not todo:
        names = ", ".join(md.stem for md in every)
        raise ValueError(f"no chapter matches {only}; chapters are: {names}")
    return todo
