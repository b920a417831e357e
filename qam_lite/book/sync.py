"""Keeping the chapters' Colab cells and their paired notebooks in step with the sources.

``qam-lite book --sync`` rewrites every chapter's Colab badge and install line from
:data:`~qam_lite.book.chapters.REPOSITORY`, recomputes the line markers of its ``literalinclude``
blocks from the library's current source, re-pairs each ``.md`` with its ``.ipynb`` and
regenerates the API reference page ``book/api.md`` from the library's docstrings
(:mod:`qam_lite.book.api`).

The pairing goes one way: ``book/NN_*.md`` is the source, and ``book/NN_*.ipynb`` is what
:func:`paired_notebook` makes of it, for Colab and for anyone who opens a notebook file. Neither
file declares jupytext ``formats``, so jupytext (``jupytext --sync``, JupyterLab's jupytext)
never writes one from the other: saving a chapter in JupyterLab writes only the file that was
open. The notebook differs from a plain jupytext conversion in three ways:

- every ``literalinclude`` (a MyST directive, which Jupyter, Colab and nbconvert show as raw text)
  is expanded into the library lines it selects, as a fenced ``python`` block after an HTML comment
  that holds the directive (:func:`expand_includes`); :func:`collapse_includes` turns that back
  into the directive, so an ``.md`` converted from the notebook is restored by the next sync;
- every ``{eval}`` role (which Jupyter and Colab show as raw text) shows the value recorded at
  the chapter's last full-mode execution (``book/values.json``; a run-time box's from
  ``book/runtimes.json``) after an HTML comment holding the role (:func:`expand_evals`;
  :func:`collapse_evals` is its inverse); a role with no recorded value stays as it is;
- its metadata is what JupyterLab writes when it opens the notebook with the ``python3`` kernel
  (:data:`KERNELSPEC`, :data:`LANGUAGE_INFO`; JupyterLab adds only the kernel's Python version),
  its cell ids are fixed (from each cell's content) and it ends with a newline, as Jupyter saves.

A notebook saved from JupyterLab (outputs, execution counts, its Python version) or edited by hand
differs from :func:`paired_notebook`: :func:`pair_drift` says how, and ``qam-lite book --sync``
rewrites it.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from qam_lite.book import chapters

_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\([^)]*\)")


_INSTALL = re.compile(r"\"qam-lite @ git\+https://github\.com/[^\"]*\"")


def colab_badge(chapter: str) -> str:
    """Markdown badge (local image) opening ``book/<chapter>.ipynb`` in Colab."""
    repo = f"https://colab.research.google.com/github/{chapters.REPOSITORY}/blob/{chapters.BRANCH}"
    return f"[![Open In Colab]({chapters.BADGE_IMAGE})]({repo}/book/{chapter}.ipynb)"


def colab_install() -> str:
    """The quoted pip requirement a chapter's first cell installs when it finds itself in Colab."""
    return f'"qam-lite @ git+https://github.com/{chapters.REPOSITORY}@{chapters.BRANCH}"'


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
    start, end = object_markers((chapters.BOOK_DIR / match["path"]).read_text(), names[0])
    kept = [o for o in opts if not o.startswith((":pyobject:", ":start-at:", ":end-before:"))]
    markers = [f":start-at: {start}"] + ([f":end-before: {end}"] if end else [])
    return f"```{{literalinclude}} {match['path']}\n" + "".join(f"{o}\n" for o in markers + kept)


def sync_chapter_text(text: str, chapter: str) -> str:
    """Rewrite one chapter's Colab badge and install line from :data:`REPOSITORY`, and the line
    markers of its ``literalinclude`` blocks from the library's current source.

    Expanded includes (a chapter converted back from its notebook) become directives again
    (:func:`collapse_includes`)."""
    text = collapse_evals(collapse_includes(text))
    text = _BADGE.sub(lambda _: colab_badge(chapter), text)
    text = _INSTALL.sub(lambda _: colab_install(), text)
    return _INCLUDE.sub(_sync_include, text)


#: One whole ``literalinclude`` block: the directive line, its options, the closing fence.
_INCLUDE_BLOCK = re.compile(
    r"^```\{literalinclude\} (?P<path>\S+)\n(?P<opts>(?::[^\n]*\n)*)```[ \t]*$", re.M
)


#: An expanded block (:func:`expand_includes`): the directive in a comment, then the lines (a
#: fenced block in the directive's ``language``, ``python`` by default).
_EXPANDED = re.compile(
    r"^<!-- \{literalinclude\} (?P<path>\S+)\n(?P<opts>(?::[^\n]*\n)*)-->\n"
    r"(?P<fence>`{3,})[\w+-]*\n.*?\n(?P=fence)[ \t]*$",
    re.M | re.S,
)


#: The options :func:`include_lines` implements (those of MyST's literalinclude the book uses).
_SELECTORS = ("start-at", "start-after", "end-before", "end-at", "language")


def include_lines(path: str, opts: dict[str, str]) -> str:
    """The lines a ``literalinclude`` of ``path`` (relative to ``book/``) shows, as MyST selects
    them: from the first line holding ``start-at`` (or after the one holding ``start-after``) to
    the first line after it holding ``end-before`` (excluded) or ``end-at`` (included); trailing
    blank lines dropped. Raises ``ValueError`` for an option it does not implement, or a marker
    the file does not hold."""
    unknown = sorted(set(opts) - set(_SELECTORS))
    if unknown:
        raise ValueError(f"literalinclude of {path}: option(s) {unknown} not expanded by sync")
    lines = (chapters.BOOK_DIR / path).read_text().splitlines()

    def find(marker: str, start: int) -> int:
        for i in range(start, len(lines)):
            if marker in lines[i]:
                return i
        raise ValueError(f"literalinclude of {path}: no line holds {marker!r}")

    first = 0
    if "start-at" in opts:
        first = find(opts["start-at"], 0)
    elif "start-after" in opts:
        first = find(opts["start-after"], 0) + 1
    last = len(lines)
    if "end-before" in opts:
        last = find(opts["end-before"], first + 1)
    elif "end-at" in opts:
        last = find(opts["end-at"], first + 1) + 1
    return "\n".join(lines[first:last]).rstrip()


def _options(opts: str) -> dict[str, str]:
    return dict(
        line[1:].split(": ", 1) if ": " in line else (line[1:].rstrip(":"), "")
        for line in opts.splitlines()
    )


def expand_includes(text: str) -> str:
    """``text`` (a markdown cell) with every ``literalinclude`` replaced by the lines it shows,
    as a fenced ``python`` block, after an HTML comment that keeps the directive (hidden in
    Jupyter, Colab and nbconvert)."""

    def expand(match: re.Match) -> str:
        opts = _options(match["opts"])
        code = include_lines(match["path"], opts)
        fence = "`" * max(3, 1 + max((len(r) for r in re.findall(r"`+", code)), default=0))
        return (
            f"<!-- {{literalinclude}} {match['path']}\n{match['opts']}-->\n"
            f"{fence}{opts.get('language') or 'python'}\n{code}\n{fence}"
        )

    return _INCLUDE_BLOCK.sub(expand, text)


def collapse_includes(text: str) -> str:
    """The inverse of :func:`expand_includes`: expanded blocks become directives again."""
    return _EXPANDED.sub(lambda m: f"```{{literalinclude}} {m['path']}\n{m['opts']}```", text)


#: A shown value (:func:`expand_evals`): the role in a comment, the value, a closing comment.
_SHOWN = re.compile(r"<!-- (?P<role>\{eval\}(?P<ticks>`+).+?(?P=ticks)) -->.*?<!-- /eval -->", re.S)
_RUN_TIME = re.compile(
    r"run_time\(\s*(['\"])(?P<stem>[\w-]+)\1\s*,\s*(['\"])(?P<mode>quick|full)\3\s*\)"
)


def expression_value(stem: str, expr: str, values: dict) -> str | None:
    """What the notebook of chapter ``stem`` shows for ``{eval}`expr```: a run-time box's
    ``run_time(...)`` from ``runtimes.json``, any other expression from ``values`` (the chapter's
    entry of ``values.json``); None when no value is recorded."""
    match = _RUN_TIME.fullmatch(expr)
    if match:
        return chapters.run_time(match["stem"], match["mode"])
    return values.get(expr)


def expand_evals(text: str, stem: str, values: dict) -> str:
    """``text`` (a markdown cell of chapter ``stem``) with each ``{eval}`` role outside code
    blocks replaced by its recorded value after an HTML comment holding the role (hidden in
    Jupyter and Colab, which do not evaluate roles); roles without a value stay as they are."""

    def shown(match: re.Match) -> str:
        value = expression_value(stem, match["expr"], values)
        return match[0] if value is None else f"<!-- {match[0]} -->{value}<!-- /eval -->"

    out, last = [], 0
    for fence in chapters._FENCE.finditer(text):
        out += [chapters._EVAL.sub(shown, text[last : fence.start()]), fence[0]]
        last = fence.end()
    return "".join(out) + chapters._EVAL.sub(shown, text[last:])


def collapse_evals(text: str) -> str:
    """The inverse of :func:`expand_evals`: shown values become ``{eval}`` roles again."""
    return _SHOWN.sub(lambda m: m["role"], text)


#: The kernel metadata JupyterLab 4 writes for the ``python3`` (ipykernel) kernel; it adds the
#: kernel's Python version to ``language_info``, which depends on the reader's machine.
KERNELSPEC = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
#: The ``language_info`` JupyterLab 4 writes for that kernel, less the Python version.
LANGUAGE_INFO = {
    "codemirror_mode": {"name": "ipython", "version": 3},
    "file_extension": ".py",
    "mimetype": "text/x-python",
    "name": "python",
    "nbconvert_exporter": "python",
    "pygments_lexer": "ipython3",
}


def paired_notebook(md: Path, text: str | None = None):
    """The notebook ``qam-lite book --sync`` pairs with chapter ``md`` (``text``: its source,
    read from ``md`` when not given): jupytext's conversion, includes expanded, Jupyter's
    metadata, cell ids from each cell's content. An ``nbformat`` notebook."""
    import jupytext

    nb = jupytext.reads(md.read_text() if text is None else text, fmt="md:myst")
    # What jupytext keeps of its own metadata in an .ipynb (the .md's format is not the notebook's).
    nb.metadata.get("jupytext", {}).pop("text_representation", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = dict(LANGUAGE_INFO)
    values = chapters.read_values().get(md.stem, {})
    seen: set[str] = set()
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            cell.source = expand_evals(expand_includes(cell.source), md.stem, values)
        digest = hashlib.sha256(f"{cell.cell_type}\n{cell.source}".encode()).hexdigest()
        cell_id = digest[:8]
        while cell_id in seen:  # the same source twice: the next 8 hex digits
            digest = hashlib.sha256(digest.encode()).hexdigest()
            cell_id = digest[:8]
        seen.add(cell_id)
        cell.id = cell_id
    return nb


def notebook_text(nb) -> str:
    """``nb`` as Jupyter saves it (``nbformat.write``: sorted keys, one-space indent, newline)."""
    import nbformat

    return nbformat.writes(nb, version=4) + "\n"


def pair_drift(md: Path, text: str | None = None) -> list[str]:
    """How chapter ``md``'s ``.ipynb`` differs from what ``qam-lite book --sync`` writes, as short
    phrases (empty when it is exactly that); ``text``: the chapter's source, if not ``md``'s."""
    import json

    nb_path = md.with_suffix(".ipynb")
    expected = paired_notebook(md, text)
    if not nb_path.exists():
        return ["missing"]
    actual_text = nb_path.read_text()
    if actual_text == notebook_text(expected):
        return []
    try:
        actual = json.loads(actual_text)
        cells = actual["cells"]
    except (ValueError, KeyError, TypeError):
        return ["not a notebook (unreadable JSON)"]
    found = []
    wanted = [(c.cell_type, c.source) for c in expected.cells]
    have = [(c.get("cell_type"), _joined(c.get("source", ""))) for c in cells]
    if len(have) != len(wanted):
        found.append(f"{len(have)} cells where the .md makes {len(wanted)}")
    differ = [i for i, (a, b) in enumerate(zip(have, wanted, strict=False), 1) if a != b]
    if differ:
        found.append("cell(s) " + ", ".join(map(str, differ[:5])) + " differ from the .md")
    code = [c for c in cells if c.get("cell_type") == "code"]
    saved = [i for i, c in enumerate(code, 1) if c.get("outputs")]
    if saved:
        found.append("outputs saved in code cell(s) " + ", ".join(map(str, saved[:5])))
    if any(c.get("execution_count") is not None for c in code):
        found.append("execution counts saved")
    keys = sorted(
        k
        for k in set(actual.get("metadata", {})) | set(expected.metadata)
        if actual.get("metadata", {}).get(k) != expected.metadata.get(k)
    )
    if keys:
        found.append("notebook metadata " + ", ".join(keys))
    cell_meta = [
        i
        for i, (c, e) in enumerate(zip(cells, expected.cells, strict=False), 1)
        if c.get("metadata", {}) != e.metadata
    ]
    if cell_meta:
        found.append("cell metadata of cell(s) " + ", ".join(map(str, cell_meta[:5])))
    return found or ["cell ids or JSON layout"]


def _joined(source) -> str:
    return "".join(source) if isinstance(source, list) else source


def _shown(path: Path) -> str:
    root = chapters.ROOT
    return path.relative_to(root).as_posix() if path.is_relative_to(root) else str(path)


def check(paths: list[Path] | None = None) -> list[str]:
    """What ``qam-lite book --sync`` would change, one line per file (empty when nothing): the
    chapters' Colab cells and include markers, their notebooks (:func:`pair_drift`), the API page.
    Changes nothing."""
    from qam_lite.book.api import API_PAGE, api_markdown

    fix = "(run `qam-lite book --sync`)"
    found = []
    for md in paths or chapters.chapters():
        text = md.read_text()
        new = sync_chapter_text(text, md.stem)
        if new != text:
            found.append(f"{_shown(md)}: Colab cells or literalinclude markers out of date {fix}")
        drift = pair_drift(md, new)
        if drift:
            found.append(f"{_shown(md.with_suffix('.ipynb'))}: {'; '.join(drift)} {fix}")
    if not API_PAGE.exists() or API_PAGE.read_text() != api_markdown():
        found.append(f"{_shown(API_PAGE)}: out of date with the library's docstrings {fix}")
    return found


def write_pair(md: Path, text: str | None = None) -> bool:
    """Rewrite chapter ``md``'s ``.ipynb`` if it is not :func:`paired_notebook`'s (``text``: the
    chapter's source, if not ``md``'s); True when it was rewritten. ``qam-lite book`` calls it
    after recording a run's time and values, which the notebook shows."""
    nb_path = md.with_suffix(".ipynb")
    paired = notebook_text(paired_notebook(md, text))
    if nb_path.exists() and nb_path.read_text() == paired:
        return False
    chapters.write_text(nb_path, paired)
    return True


def sync(paths: list[Path] | None = None) -> list[Path]:
    """Rewrite badges/install cells, re-pair each ``.md`` with its ``.ipynb`` (a notebook that is
    not exactly :func:`paired_notebook`'s is rewritten: saved outputs and metadata go) and
    regenerate the API reference page (``book/api.md``, :func:`~qam_lite.book.api.api_markdown`);
    return the changed chapters and pages."""
    from qam_lite.book.api import API_PAGE, api_markdown

    changed = []
    for md in paths or chapters.chapters():
        text = md.read_text()
        new = sync_chapter_text(text, md.stem)
        if new != text:
            chapters.write_text(md, new)
        if write_pair(md, new) or new != text:
            changed.append(md)
    page = api_markdown()
    if not API_PAGE.exists() or API_PAGE.read_text() != page:
        chapters.write_text(API_PAGE, page)
        changed.append(API_PAGE)
    return changed
