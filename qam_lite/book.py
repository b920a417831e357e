"""Book plumbing: quick mode, the repository address, Colab cells, and executing every chapter.

``QAM_LITE_QUICK=1`` shrinks every chapter's work so the whole book runs on a 2-core CPU in CI;
chapters read it through :func:`quick` / :func:`pick`. :data:`REPOSITORY` is the one place that
names the project's public repository: ``qam-lite book --sync`` rewrites every chapter's Colab badge
and install cell from it (a test keeps them in sync).
"""

from __future__ import annotations

import os
import re
import time
from pathlib import Path

#: The project's public repository (GitHub ``owner/name``) and branch; change here, then run
#: ``qam-lite book --sync``.
REPOSITORY = "qam-lite/qam-lite"
BRANCH = "main"

ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = ROOT / "book"

_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
_INSTALL = re.compile(r"\"qam-lite @ git\+https://github\.com/[^\"]*\"")


def quick() -> bool:
    """True when ``QAM_LITE_QUICK`` is set to a true value (1/true/yes)."""
    return os.environ.get("QAM_LITE_QUICK", "").strip().lower() in {"1", "true", "yes"}


def pick(full, fast):
    """``fast`` in quick mode, ``full`` otherwise (e.g. ``steps = pick(3000, 200)``)."""
    return fast if quick() else full


def colab_badge(chapter: str) -> str:
    """Markdown badge opening ``book/<chapter>.ipynb`` in Colab."""
    url = (
        f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/book/{chapter}.ipynb"
    )
    return f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]({url})"


def colab_install() -> str:
    """The quoted pip requirement a chapter's first cell installs when it finds itself in Colab."""
    return f'"qam-lite @ git+https://github.com/{REPOSITORY}@{BRANCH}"'


def chapters() -> list[Path]:
    """Chapter sources ``book/NN_*.md`` in reading order."""
    return sorted(BOOK_DIR.glob("[0-9][0-9]_*.md"))


def object_markers(source: str, name: str) -> tuple[str, str | None]:
    """``(start_at, end_before)`` line markers that cut top-level ``name`` out of ``source``.

    MyST's ``literalinclude`` has no Sphinx-style ``:pyobject:``; it selects lines between a
    ``:start-at:`` and an ``:end-before:`` text. The end marker is the first line of the next
    top-level statement (``None`` when ``name`` is the file's last one).
    """
    import ast

    body = ast.parse(source).body
    lines = source.splitlines()
    for i, node in enumerate(body):
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            start = lines[node.lineno - 1].strip()
            if i + 1 == len(body):
                return start, None
            following = body[i + 1]
            first = min(
                [following.lineno] + [d.lineno for d in getattr(following, "decorator_list", [])]
            )
            return start, lines[first - 1].strip()
    raise ValueError(f"no top-level function or class {name!r}")


_INCLUDE = re.compile(r"```\{literalinclude\} (?P<path>\S+)\n(?P<opts>(?::[^\n]*\n)*)")
_OBJECT = re.compile(r"^:(?:pyobject: (?P<name>\w+)|start-at: (?:def|class) (?P<start>\w+)\b.*)$")


def _sync_include(match: re.Match) -> str:
    """One ``literalinclude`` of a named object, its markers recomputed from the current source."""
    opts = match["opts"].splitlines()
    names = [m["name"] or m["start"] for m in map(_OBJECT.match, opts) if m]
    if not names:
        return match[0]
    start, end = object_markers((BOOK_DIR / match["path"]).read_text(), names[0])
    kept = [o for o in opts if not o.startswith((":pyobject:", ":start-at:", ":end-before:"))]
    markers = [f":start-at: {start}"] + ([f":end-before: {end}"] if end else [])
    return f"```{{literalinclude}} {match['path']}\n" + "".join(f"{o}\n" for o in markers + kept)


def sync_chapter_text(text: str, chapter: str) -> str:
    """Rewrite one chapter's Colab badge and install line from :data:`REPOSITORY`, and the line
    markers of its ``literalinclude`` blocks from the library's current source."""
    text = _BADGE.sub(lambda _: colab_badge(chapter), text)
    text = _INSTALL.sub(lambda _: colab_install(), text)
    return _INCLUDE.sub(_sync_include, text)


def sync(paths: list[Path] | None = None) -> list[Path]:
    """Rewrite badges/install cells and re-pair each ``.md`` with its ``.ipynb``; return changed."""
    import jupytext

    changed = []
    for md in paths or chapters():
        text = md.read_text()
        new = sync_chapter_text(text, md.stem)
        nb_path = md.with_suffix(".ipynb")
        stale = not nb_path.exists() or nb_path.stat().st_mtime < md.stat().st_mtime
        if new != text:
            md.write_text(new)
        if new != text or stale:
            nb = jupytext.reads(new, fmt="md:myst")
            jupytext.write(nb, nb_path, fmt="ipynb")
            changed.append(md)
    return changed


def execute_chapter(md: Path, out_dir: Path, *, timeout: int = 1800) -> float:
    """Run one chapter in a fresh kernel (cwd ``book/``), save it executed; return seconds.

    Raises ``nbclient.exceptions.CellExecutionError`` naming the failing cell on any error.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient

    nb = jupytext.read(md, fmt="md:myst")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    start = time.perf_counter()
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(md.parent)}}
    )
    try:
        client.execute()
    finally:
        out_dir.mkdir(parents=True, exist_ok=True)
        tmp = out_dir / f".{md.stem}.ipynb.tmp"
        nbformat.write(nb, tmp)
        tmp.replace(out_dir / f"{md.stem}.ipynb")
    return time.perf_counter() - start


def export_html(notebook: Path) -> Path:
    """Static HTML of an executed notebook, readable offline (no theme download)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="classic").from_notebook_node(nbformat.read(notebook, 4))
    out = notebook.with_suffix(".html")
    out.write_text(body)
    return out


def _index_html(rows: list[tuple[str, float]], quick_mode: bool) -> str:
    items = "\n".join(
        f'<li><a href="{name}.html">{name}</a> <small>({secs:.0f} s)</small></li>'
        for name, secs in rows
    )
    mode = "quick (QAM_LITE_QUICK=1)" if quick_mode else "full"
    return (
        "<!doctype html><meta charset='utf-8'><title>qam-lite book</title>"
        f"<h1>qam-lite: the executed book</h1><p>Mode: {mode}.</p><ol>{items}</ol>"
    )


def build(
    out_dir: Path,
    *,
    quick_mode: bool = False,
    only: list[str] | None = None,
    force: bool = False,
    site: bool = True,
) -> list[tuple[str, float]]:
    """Execute every chapter, save notebooks + offline HTML under ``out_dir``; optionally the site.

    Finished chapters (executed notebook newer than its source, same mode) are skipped unless
    ``force``, so an interrupted build resumes where it stopped.

    Returns ``[(chapter, seconds), ...]`` (0 for skipped chapters).
    """
    import json

    from tqdm.auto import tqdm

    os.environ["QAM_LITE_QUICK"] = "1" if quick_mode else "0"
    out_dir.mkdir(parents=True, exist_ok=True)
    stamp_file = out_dir / "mode.json"
    stamps = json.loads(stamp_file.read_text()) if stamp_file.exists() else {}
    todo = [md for md in chapters() if not only or any(key in md.stem for key in only)]
    if only and not todo:
        names = ", ".join(md.stem for md in chapters())
        raise ValueError(f"no chapter matches {only}; chapters are: {names}")
    rows = []
    for md in tqdm(todo, desc="chapters", unit="chapter"):
        done = out_dir / f"{md.stem}.ipynb"
        fresh = done.exists() and done.stat().st_mtime > md.stat().st_mtime
        if fresh and not force and stamps.get(md.stem) == quick_mode:
            rows.append((md.stem, 0.0))
            continue
        secs = execute_chapter(md, out_dir)
        export_html(done)
        stamps[md.stem] = quick_mode
        stamp_file.write_text(json.dumps(stamps, indent=1))
        rows.append((md.stem, secs))
    (out_dir / "index.html").write_text(_index_html(rows, quick_mode))
    if site:
        _build_site()
    return rows


def _build_site() -> None:
    """Try the Jupyter Book 2 HTML site; its theme is downloaded, so offline this only reports."""
    import shutil
    import subprocess
    import sys

    # The venv's own jupyter, found beside this Python even when the venv is not activated.
    beside = Path(sys.executable).with_name("jupyter")
    jupyter = str(beside) if beside.exists() else shutil.which("jupyter") or "jupyter"
    try:
        proc = subprocess.run(
            [jupyter, "book", "build", "--html", "--ci"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
    except (OSError, subprocess.TimeoutExpired) as err:
        print(f"Jupyter Book site not built ({err}); the executed notebooks above are complete.")
        return
    if proc.returncode == 0:
        print(f"Jupyter Book site: {ROOT / '_build' / 'html' / 'index.html'}")
    else:
        lines = (proc.stderr + proc.stdout).strip().splitlines() or ["(no output)"]
        # The line that says why (e.g. the failed theme request), not myst's closing hints.
        why = next((line for line in lines if "fail" in line.lower()), lines[-1])
        print(
            "Jupyter Book site not built (it downloads its HTML theme; offline that fails): "
            f"{why.strip()}\nThe executed chapters are complete without it."
        )
