"""``qam-lite book``: execute every chapter once, in a fresh kernel, and keep the result.

:func:`build` runs every chapter (nbclient) and keeps, under ``_build/book``, the executed
notebook of each, with the value of every inline expression (MyST ``{eval}`` role) of its prose
stored beside it (the numbers the prose quotes come from the cells that measure them). A chapter's
files are replaced only once it has run to the end, and a chapter is skipped when its source,
mode and the library match the last finished run, so an interrupted build resumes.
:func:`qam_lite.book.site.build_site` then renders those executed notebooks as the Jupyter Book 2
site, the way to read the book (the per-chapter HTML pages of earlier versions are gone).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import time
from dataclasses import dataclass, field
from pathlib import Path

from qam_lite.book import chapters, sync
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


class ExpressionFailed(Exception):
    """An inline expression (``{eval}`` role) of a markdown cell raised in the chapter's kernel."""


def _expression_result(result: dict) -> dict:
    """A kernel's ``user_expressions`` value as mystmd (and jupyterlab-myst) read it.

    A ``str`` comes back as its repr (``'2.4'``); it is stored as the string itself, so that it
    reads ``2.4`` wherever it is shown (mystmd strips one pair of quotes from a ``text/plain``
    value by default, and would strip a pair that belongs to the string itself, so that is
    turned off for such a string).
    """
    import ast

    data = dict(result.get("data", {}))
    metadata = dict(result.get("metadata", {}))
    plain = data.get("text/plain")
    if isinstance(plain, str):
        try:
            value = ast.literal_eval(plain)
        except (ValueError, SyntaxError, MemoryError, RecursionError):
            value = None
        if isinstance(value, str):
            data["text/plain"] = value
            if re.fullmatch(r"([\"']).*\1", value):
                metadata["strip-quotes"] = False
    return {"status": "ok", "data": data, "metadata": metadata}


def _client(nb, **kwargs):
    """An nbclient ``NotebookClient`` that also evaluates each markdown cell's inline expressions.

    Each markdown cell's ``{eval}`` roles are evaluated when the cell is reached, so after every
    code cell above it, in the same kernel (an ``execute_request`` with no code and the
    expressions as ``user_expressions``, as mystmd does), and stored in the cell's metadata
    ``user_expressions`` as ``[{"expression", "result"}]``, the format mystmd renders. After the
    last cell the kernel reports its device (:func:`qam_lite.book.chapters.machine`) in
    ``client.machine``. An expression that raises stops the run with :class:`ExpressionFailed`.
    """
    from jupyter_core.utils import ensure_async
    from nbclient import NotebookClient

    class Client(NotebookClient):
        machine: dict = {}

        async def evaluate(self, expressions: list[str]) -> dict:
            msg_id = await ensure_async(
                self.kc.execute(
                    "",
                    silent=True,
                    store_history=False,
                    user_expressions={str(i): e for i, e in enumerate(expressions)},
                    allow_stdin=False,
                )
            )
            reply = await self.async_wait_for_reply(msg_id)
            content = reply["content"] if reply else {}
            values = content.get("user_expressions", {})
            return {e: values.get(str(i), content) for i, e in enumerate(expressions)}

        async def async_execute_cell(self, cell, cell_index, *args, **kw):
            if cell.cell_type == "markdown":
                expressions = chapters.inline_expressions(cell.source)
                stored = []
                results = await self.evaluate(expressions) if expressions else {}
                for expr, result in results.items():
                    if result.get("status") != "ok":
                        why = f"{result.get('ename', 'no reply')}: {result.get('evalue', '')}"
                        raise ExpressionFailed(
                            f"inline expression {{eval}}`{expr}` (notebook cell {cell_index + 1}, "
                            f"markdown) failed: {why.strip()}"
                        )
                    stored.append({"expression": expr, "result": _expression_result(result)})
                if stored:
                    cell.metadata["user_expressions"] = stored
                else:
                    cell.metadata.pop("user_expressions", None)
            else:
                cell = await super().async_execute_cell(cell, cell_index, *args, **kw)
            if cell_index == len(self.nb.cells) - 1:
                probe = "__import__('qam_lite.book.chapters', fromlist=['_']).machine()"
                result = (await self.evaluate([probe]))[probe]
                with contextlib.suppress(ValueError, SyntaxError, KeyError, TypeError):
                    import ast

                    self.machine = ast.literal_eval(result["data"]["text/plain"])
            return cell

    return Client(nb, **kwargs)


def _fill_run_times(nb, stem: str) -> None:
    """Re-evaluate, from the record just updated, the run-time box's ``run_time(...)``
    expressions, so that the executed page shows this very run (the kernel read the record as
    it was before the run finished)."""
    call = re.compile(rf"run_time\(\s*(['\"]){stem}\1\s*,\s*(['\"])(?P<mode>quick|full)\2\s*\)")
    for cell in nb.cells:
        for entry in cell.get("metadata", {}).get("user_expressions", []):
            match = call.fullmatch(entry["expression"])
            if match:
                value = chapters.run_time(stem, match["mode"])
                entry["result"] = _expression_result({"data": {"text/plain": repr(value)}})


def execute_chapter(
    md: Path,
    out_dir: Path,
    *,
    timeout: int = 1800,
    quick_mode: bool | None = None,
    record_run_time: bool = False,
) -> float:
    """Run one chapter in a fresh kernel (cwd ``book/``), save it executed; return seconds.

    The kernel runs in batch mode (:func:`batch_env`; quick mode as ``quick_mode``, default: the
    current :func:`quick`); its own log (not the cells' output) goes to
    ``out_dir/<chapter>.kernel.log``. Every markdown cell's inline expressions (``{eval}`` roles)
    are evaluated after the code cells above it and stored in its metadata (:func:`_client`). With
    ``record_run_time``, the run's seconds and device go to ``book/runtimes.json``
    (:func:`qam_lite.book.chapters.record_run_time`), which the chapter's run-time box shows.
    ``out_dir/<chapter>.ipynb`` is replaced, atomically, only when every cell ran; on an error
    the partial notebook goes to ``<chapter>.failed.ipynb`` and
    ``nbclient.exceptions.CellExecutionError`` (naming the failing cell) or
    :class:`ExpressionFailed` (naming the expression) propagates; Ctrl-C raises
    :class:`Interrupted` and writes nothing.
    """
    import jupytext
    import nbformat
    from nbclient.exceptions import CellExecutionError

    from qam_lite.atomic import write_bytes

    nb = jupytext.read(md, fmt="md:myst")
    nb.metadata["kernelspec"] = {
        "name": "python3",
        "display_name": "Python 3",
        "language": "python",
    }
    quick_mode = quick() if quick_mode is None else quick_mode
    env = batch_env(quick_mode)
    start = time.perf_counter()
    client = _client(
        nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": str(md.parent)}}
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    with open(out_dir / f"{md.stem}.kernel.log", "wb") as log:
        try:
            _execute_interruptibly(client, env=env, stdout=log, stderr=log)
        except (CellExecutionError, ExpressionFailed):
            write_bytes(out_dir / f"{md.stem}.failed.ipynb", nbformat.writes(nb).encode())
            raise
        except Interrupted:
            log.close()
            (out_dir / f"{md.stem}.kernel.log").unlink()
            raise
    seconds = time.perf_counter() - start
    if record_run_time:
        chapters.record_run_time(md.stem, quick_mode, seconds, client.machine)
        _fill_run_times(nb, md.stem)
        if not quick_mode:  # the values the paired notebook shows (qam_lite.book.sync)
            chapters.record_values(md.stem, nb)
        sync.write_pair(md)  # its run-time box (and values) as just recorded
    write_bytes(out_dir / f"{md.stem}.ipynb", nbformat.writes(nb).encode())
    # No per-chapter HTML any more: nbconvert's pages showed raw math, directives and roles; the
    # book is read as the site (qam_lite.book.site) or as these notebooks.
    for leftover in (f"{md.stem}.failed.ipynb", f"{md.stem}.kernel.log", f"{md.stem}.html"):
        with contextlib.suppress(FileNotFoundError):
            (out_dir / leftover).unlink()
    return seconds


@dataclass
class BookRun:
    """What :func:`build` did: chapters run now (with seconds), chapters already up to date."""

    out_dir: Path
    ran: list[tuple[str, float]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    problems: dict[str, list[str]] = field(default_factory=dict)

    def summary(self) -> str:
        """One line, e.g. ``2 chapter(s) executed in 95 s, 4 already up to date (...) -> DIR``."""
        seconds = sum(s for _, s in self.ran)
        parts = [f"{len(self.ran)} chapter(s) executed in {seconds:.0f} s"]
        if self.skipped:
            parts.append(f"{len(self.skipped)} already up to date (--force re-runs them)")
        return ", ".join(parts) + f" -> {self.out_dir}"


def build(
    out_dir: Path,
    *,
    quick_mode: bool = False,
    only: list[str] | None = None,
    force: bool = False,
    timeout: int = 1800,
    record_run_times: bool = True,
) -> BookRun:
    """Execute chapters, save each one's executed notebook under ``out_dir``.

    A chapter whose source, mode and library (:func:`library_hash`) match its last finished run
    is skipped unless ``force``.
    With ``record_run_times`` each run's seconds and device go to ``book/runtimes.json``, which
    the chapters' run-time boxes show (the tests' runs leave it alone).
    A chapter's files (and ``state.json``, which always lists every chapter) are
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
    # The contents page of the per-chapter HTML pages that earlier versions wrote.
    with contextlib.suppress(FileNotFoundError):
        (out_dir / "index.html").unlink()
    for n, md in enumerate(todo):
        if not force and chapters.is_finished(md, out_dir, state, quick_mode, library):
            run.skipped.append(md.stem)
            continue
        print(f"book: executing {md.stem} ({n + 1}/{len(todo)})", flush=True)
        try:
            secs = execute_chapter(
                md,
                out_dir,
                timeout=timeout,
                quick_mode=quick_mode,
                record_run_time=record_run_times,
            )
        except (CellExecutionError, ExpressionFailed) as err:
            raise ChapterFailed(
                f"chapter {md.stem} failed (partial run: "
                f"{out_dir / (md.stem + '.failed.ipynb')}):\n{_short(err)}"
            ) from None
        except KeyboardInterrupt:
            raise _interrupted(md, run) from None
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
