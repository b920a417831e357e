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
    """``output_problems`` of every code cell of an executed notebook, prefixed by cell number."""
    found = []
    code_cells = [c for c in nb.cells if c.cell_type == "code"]
    for i, cell in enumerate(code_cells, 1):
        for output in cell.get("outputs", []):
            found += [f"code cell {i}: {p}" for p in output_problems(output)]
    return found


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
