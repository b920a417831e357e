"""Book plumbing: quick and batch modes, Colab cells, executing chapters, and building the site.

``QAM_LITE_QUICK=1`` shrinks every chapter's work so the whole book runs on a 2-core CPU in CI;
chapters read it through :func:`quick` / :func:`pick`. ``QAM_LITE_BATCH=1`` says nobody is
watching (``qam-lite book``, the site build, tests): :mod:`qam_lite.widgets` then leaves no live
widget in the saved outputs, and ``TQDM_DISABLE=1`` (set with it) leaves no frozen progress bar.

:data:`REPOSITORY` is the one place that names the project's public repository: ``qam-lite book
--sync`` rewrites every chapter's Colab badge and install cell from it (a test keeps them in sync).

``qam-lite book`` does two things:

1. :func:`build` runs every chapter in a fresh kernel (nbclient) and keeps, under ``_build/book``,
   the executed notebook and a standalone HTML page of each (readable offline, no theme needed).
   A chapter's files are replaced only once it has run to the end, and a chapter is skipped when
   its source, mode and the library match the last finished run, so an interrupted build resumes.
2. :func:`qam_lite.site.build_site` (also reachable as ``book.build_site``) renders those executed
   notebooks, with their stored outputs, as the Jupyter Book 2 site in ``_build/html`` (``jupyter
   book build --html``, nothing executed a second time) and checks that every chapter page really
   holds outputs.
"""

from __future__ import annotations

import contextlib
import hashlib
import html
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

#: The project's public repository (GitHub ``owner/name``) and branch; change here, then run
#: ``qam-lite book --sync``.
REPOSITORY = "qam-lite/qam-lite"
BRANCH = "main"

ROOT = Path(__file__).resolve().parent.parent
BOOK_DIR = ROOT / "book"
#: The Colab badge, a local image (a remote one breaks offline builds), relative to ``book/``.
BADGE_IMAGE = "images/colab-badge.svg"

_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")
_INSTALL = re.compile(r"\"qam-lite @ git\+https://github\.com/[^\"]*\"")


def _flag(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in {"1", "true", "yes"}


def quick() -> bool:
    """True when ``QAM_LITE_QUICK`` is set to a true value (1/true/yes)."""
    return _flag("QAM_LITE_QUICK")


def batch() -> bool:
    """True when ``QAM_LITE_BATCH`` is set: the notebook is executed with nobody watching."""
    return _flag("QAM_LITE_BATCH")


def pick(full, fast):
    """``fast`` in quick mode, ``full`` otherwise (e.g. ``steps = pick(3000, 200)``)."""
    return fast if quick() else full


def batch_env(quick_mode: bool, base: dict | None = None) -> dict[str, str]:
    """Environment for executing chapters with nobody watching (kernels inherit it).

    Sets ``QAM_LITE_QUICK``, ``QAM_LITE_BATCH=1`` and ``TQDM_DISABLE=1``, and drops
    ``MPLBACKEND`` so the kernel keeps its inline backend (figures saved as outputs).
    """
    env = dict(os.environ if base is None else base)
    env.pop("MPLBACKEND", None)
    env.update(QAM_LITE_QUICK="1" if quick_mode else "0", QAM_LITE_BATCH="1", TQDM_DISABLE="1")
    return env


def colab_badge(chapter: str) -> str:
    """Markdown badge (local image) opening ``book/<chapter>.ipynb`` in Colab."""
    url = (
        f"https://colab.research.google.com/github/{REPOSITORY}/blob/{BRANCH}/book/{chapter}.ipynb"
    )
    return f"[![Open In Colab]({BADGE_IMAGE})]({url})"


def colab_install() -> str:
    """The quoted pip requirement a chapter's first cell installs when it finds itself in Colab."""
    return f'"qam-lite @ git+https://github.com/{REPOSITORY}@{BRANCH}"'


def chapters() -> list[Path]:
    """Chapter sources ``book/NN_*.md`` in reading order."""
    return sorted(BOOK_DIR.glob("[0-9][0-9]_*.md"))


def _write_text(path: Path, text: str) -> None:
    from qam_lite.atomic import write_bytes

    write_bytes(path, text.encode())


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
            _write_text(md, new)
        if new != text or stale:
            nb = jupytext.reads(new, fmt="md:myst")
            _write_text(nb_path, jupytext.writes(nb, fmt="ipynb"))
            changed.append(md)
    return changed


# --------------------------------------------------------------------------------------------
# What a saved output must not hold


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


# --------------------------------------------------------------------------------------------
# Executing chapters


class Interrupted(KeyboardInterrupt):
    """Ctrl-C (SIGINT) stopped the book; finished chapters are kept and a rerun resumes."""


class ChapterFailed(Exception):
    """A chapter raised; its last finished version (if any) is kept, the partial run is saved
    beside it as ``<chapter>.failed.ipynb``."""


def _execute_interruptibly(client, **kwargs) -> None:
    """``client.async_execute(**kwargs)`` in a worker thread, so that Ctrl-C stays ours.

    In the main thread nbclient replaces the SIGINT handler with its own, which kills the kernel
    and then fails in its own cleanup (``AssertionError``). In a worker thread it installs none:
    Ctrl-C raises ``KeyboardInterrupt`` here, which interrupts the kernel (a second Ctrl-C, or
    10 s without an answer, shuts it down) and then raises :class:`Interrupted`.
    """
    import asyncio
    import threading

    loop = asyncio.new_event_loop()
    failure: list[BaseException] = []
    # An Event, not Thread.join: a join interrupted by Ctrl-C can mark the thread as finished.
    done = threading.Event()

    def work():
        asyncio.set_event_loop(loop)
        try:
            loop.run_until_complete(client.async_execute(**kwargs))
        except BaseException as err:  # handed to the main thread
            failure.append(err)
        finally:
            done.set()

    def send(action: str, **kw):
        km = client.km
        if km is not None and not loop.is_closed():
            asyncio.run_coroutine_threadsafe(getattr(km, action)(**kw), loop)

    worker = threading.Thread(target=work, name="book-chapter", daemon=True)
    worker.start()
    interrupts, deadline = 0, None
    while not done.is_set():
        try:
            done.wait(0.2)
        except KeyboardInterrupt:
            interrupts += 1
            deadline = time.monotonic() + 10
            if interrupts == 1:
                send("interrupt_kernel")
            else:
                send("shutdown_kernel", now=True)
        if deadline is not None and time.monotonic() > deadline:
            send("shutdown_kernel", now=True)
            deadline = time.monotonic() + 3600
    loop.close()
    if interrupts:
        raise Interrupted("interrupted")
    if failure:
        raise failure[0]


def execute_chapter(
    md: Path, out_dir: Path, *, timeout: int = 1800, quick_mode: bool | None = None
) -> float:
    """Run one chapter in a fresh kernel (cwd ``book/``), save it executed; return seconds.

    The kernel runs in batch mode (:func:`batch_env`; quick mode as ``quick_mode``, default: the
    current :func:`quick`); its own log (not the cells' output) goes to
    ``out_dir/<chapter>.kernel.log``. ``out_dir/<chapter>.ipynb`` is replaced, atomically, only
    when every cell ran; on an error the partial notebook goes to ``<chapter>.failed.ipynb`` and
    ``nbclient.exceptions.CellExecutionError`` (naming the failing cell) propagates; Ctrl-C
    raises :class:`Interrupted` and writes nothing.
    """
    import jupytext
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    from qam_lite.atomic import write_bytes

    nb = jupytext.read(md, fmt="md:myst")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    env = batch_env(quick() if quick_mode is None else quick_mode)
    start = time.perf_counter()
    client = NotebookClient(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(md.parent)}}
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{md.stem}.kernel.log", "wb") as log:
        try:
            _execute_interruptibly(client, env=env, stdout=log, stderr=log)
        except CellExecutionError:
            write_bytes(out_dir / f"{md.stem}.failed.ipynb", nbformat.writes(nb).encode())
            raise
        except Interrupted:
            log.close()
            (out_dir / f"{md.stem}.kernel.log").unlink()
            raise
    seconds = time.perf_counter() - start
    write_bytes(out_dir / f"{md.stem}.ipynb", nbformat.writes(nb).encode())
    for leftover in (f"{md.stem}.failed.ipynb", f"{md.stem}.kernel.log"):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / leftover).unlink()
    return seconds


def export_html(notebook: Path) -> Path:
    """Static HTML of an executed notebook, readable offline (no theme download)."""
    import nbformat
    from nbconvert import HTMLExporter

    body, _ = HTMLExporter(template_name="classic").from_notebook_node(nbformat.read(notebook, 4))
    out = notebook.with_suffix(".html")
    _write_text(out, body)
    return out


def source_hash(md: Path) -> str:
    """SHA-256 of a chapter's source: a finished run is reused only for the same text."""
    return hashlib.sha256(md.read_bytes()).hexdigest()


STATE_FILE = "state.json"


def _read_state(out_dir: Path) -> dict:
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


def _is_finished(
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


def index_html(state: dict, out_dir: Path) -> str:
    """The executed book's contents page: every chapter, finished or not, with how it ran."""
    items = []
    for md in chapters():
        entry = state.get(md.stem)
        name = html.escape(md.stem)
        if entry and (out_dir / f"{md.stem}.html").exists():
            mode = "quick" if entry.get("quick") else "full"
            items.append(
                f'<li><a href="{name}.html">{name}</a> '
                f"<small>({mode} mode, {entry.get('seconds', 0):.0f} s)</small></li>"
            )
        else:
            items.append(f"<li>{name} <small>(not executed yet)</small></li>")
    return (
        "<!doctype html><meta charset='utf-8'><title>qam-lite book</title>"
        "<h1>qam-lite: the executed book</h1>"
        "<p>Each chapter as executed by <code>qam-lite book</code> "
        "(quick mode: <code>QAM_LITE_QUICK=1</code>).</p>"
        f"<ol>{''.join(items)}</ol>"
    )


@dataclass
class BookRun:
    """What :func:`build` did: chapters run now (with seconds), chapters already up to date."""

    out_dir: Path
    ran: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)

    @property
    def index(self) -> Path:
        return self.out_dir / "index.html"

    def summary(self) -> str:
        """One line, e.g. ``2 chapter(s) executed in 95 s, 4 already up to date (...)``."""
        seconds = sum(s for _, s in self.ran)
        parts = [f"{len(self.ran)} chapter(s) executed in {seconds:.0f} s"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already up to date (--force re-runs them)")
        return ", ".join(parts) + f" -> {self.index}"


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


def build(
    out_dir: Path,
    *,
    quick_mode: bool = False,
    only: list[str] | None = None,
    force: bool = False,
    timeout: int = 1800,
) -> BookRun:
    """Execute chapters, save each one's notebook + offline HTML under ``out_dir``.

    A chapter whose source, mode and library (:func:`library_hash`) match its last finished run
    is skipped unless ``force``.
    A chapter's files (and ``state.json``, ``index.html``, which always list every chapter) are
    written atomically and only once it has run to the end, so an interrupted or failed run never
    replaces a good chapter with a partial one, and a rerun resumes where it stopped.

    Raises :class:`Interrupted` on Ctrl-C, :class:`ChapterFailed` when a chapter raises.
    """
    import nbformat
    from nbclient.exceptions import CellExecutionError

    todo = select(only)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = _read_state(out_dir)
    library = library_hash()
    run = BookRun(out_dir)
    _write_text(out_dir / "index.html", index_html(state, out_dir))
    for n, md in enumerate(todo):
        if not force and _is_finished(md, out_dir, state, quick_mode, library):
            run.skipped.append(md.stem)
            continue
        print(f"book: executing {md.stem} ({n + 1}/{len(todo)})", flush=True)
        try:
            secs = execute_chapter(md, out_dir, timeout=timeout, quick_mode=quick_mode)
        except CellExecutionError as err:
            raise ChapterFailed(
                f"chapter {md.stem} failed (partial run: "
                f"{out_dir / (md.stem + '.failed.ipynb')}):\n{_short(err)}"
            ) from None
        except KeyboardInterrupt:
            raise _interrupted(md, run) from None
        export_html(out_dir / f"{md.stem}.ipynb")
        problems = notebook_problems(nbformat.read(out_dir / f"{md.stem}.ipynb", 4))
        if problems:
            run.problems[md.stem] = problems
        state[md.stem] = {
            "source_sha256": source_hash(md),
            "quick": quick_mode,
            "library_sha256": library,
            "seconds": round(secs, 1),
        }
        _write_text(out_dir / STATE_FILE, json.dumps(state, indent=1, sort_keys=True))
        _write_text(out_dir / "index.html", index_html(state, out_dir))
        run.ran.append((md.stem, secs))
    return run


def _interrupted(md: Path, run: BookRun) -> Interrupted:
    kept = len(run.ran) + len(run.skipped)
    return Interrupted(
        f"interrupted while executing {md.stem}; its previous version (if any) and the "
        f"{kept} chapter(s) finished in this run are kept in {run.out_dir}"
    )


def _short(err: Exception, lines: int = 12) -> str:
    """The last lines of a cell error (nbclient's message repeats the whole cell first)."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(err)).strip().splitlines()
    return "\n".join(text[-lines:])


# --------------------------------------------------------------------------------------------
# The Jupyter Book 2 site: qam_lite.site (its names stay reachable here, e.g. book.build_site)

_SITE_NAMES = {
    "SiteError",
    "THEME_DIR",
    "install_theme",
    "site_command",
    "site_project",
    "stale_chapters",
    "build_site",
    "check_site",
}


def __getattr__(name: str):
    # Imported on first use: qam_lite.site imports this module.
    if name in _SITE_NAMES:
        from qam_lite import site

        return getattr(site, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
