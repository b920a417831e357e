"""``qam-lite book``: execute every chapter once, in a fresh kernel, and keep the result.

:func:`build` runs every chapter (nbclient) and keeps, under ``_build/book``, the executed
notebook and a standalone HTML page of each. A chapter's files are replaced only once it has run
to the end, and a chapter is skipped when its source, mode and the library match the last
finished run, so an interrupted build resumes. :func:`qam_lite.book.site.build_site` then renders
those executed notebooks as the Jupyter Book 2 site.
"""

from __future__ import annotations

import contextlib
import html
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from qam_lite.book import chapters
from qam_lite.modes import quick


def batch_env(quick_mode: bool, base: dict | None = None) -> dict[str, str]:
    """Environment for executing chapters with nobody watching (kernels inherit it).

    Sets ``QAM_LITE_QUICK``, ``QAM_LITE_BATCH=1`` and ``TQDM_DISABLE=1``, and drops
    ``MPLBACKEND`` so the kernel keeps its inline backend (figures saved as outputs).
    """
    env = dict(os.environ if base is None else base)
    env.pop("MPLBACKEND", None)
    env.update(QAM_LITE_QUICK="1" if quick_mode else "0", QAM_LITE_BATCH="1", TQDM_DISABLE="1")
    return env


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
    chapters.write_text(out, body)
    return out


def index_html(state: dict, out_dir: Path) -> str:
    """The executed book's contents page: every chapter, finished or not, with how it ran."""
    items = []
    for md in chapters.chapters():
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

    todo = chapters.select(only)
    out_dir.mkdir(parents=True, exist_ok=True)
    state = chapters.read_state(out_dir)
    library = chapters.library_hash()
    run = BookRun(out_dir)
    chapters.write_text(out_dir / "index.html", index_html(state, out_dir))
    for n, md in enumerate(todo):
        if not force and chapters.is_finished(md, out_dir, state, quick_mode, library):
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
        problems = chapters.notebook_problems(nbformat.read(out_dir / f"{md.stem}.ipynb", 4))
        if problems:
            run.problems[md.stem] = problems
        state[md.stem] = {
            "source_sha256": chapters.source_hash(md),
            "quick": quick_mode,
            "library_sha256": library,
            "seconds": round(secs, 1),
        }
        chapters.write_text(
            out_dir / chapters.STATE_FILE, json.dumps(state, indent=1, sort_keys=True)
        )
        chapters.write_text(out_dir / "index.html", index_html(state, out_dir))
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
