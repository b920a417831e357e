"""Keeping the chapters' Colab cells and their paired notebooks in step with the sources.

``qam-lite book --sync`` rewrites every chapter's Colab badge and install line from
:data:`~qam_lite.book.chapters.REPOSITORY`, recomputes the line markers of its ``literalinclude``
blocks from the library's current source, re-pairs each ``.md`` with its ``.ipynb`` (jupytext)
and regenerates the API reference page ``book/api.md`` from the library's docstrings
(:mod:`qam_lite.book.api`).
"""

from __future__ import annotations

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
    markers of its ``literalinclude`` blocks from the library's current source."""
    text = _BADGE.sub(lambda _: colab_badge(chapter), text)
    text = _INSTALL.sub(lambda _: colab_install(), text)
    return _INCLUDE.sub(_sync_include, text)


def sync(paths: list[Path] | None = None) -> list[Path]:
    """Rewrite badges/install cells, re-pair each ``.md`` with its ``.ipynb`` and regenerate the
    API reference page (``book/api.md``, :func:`~qam_lite.book.api.api_markdown`); return the
    changed chapters and pages."""
    import jupytext

    from qam_lite.book.api import API_PAGE, api_markdown

    changed = []
    for md in paths or chapters.chapters():
        text = md.read_text()
        new = sync_chapter_text(text, md.stem)
        nb_path = md.with_suffix(".ipynb")
        stale = not nb_path.exists() or nb_path.stat().st_mtime < md.stat().st_mtime
        if new != text:
            chapters.write_text(md, new)
        if new != text or stale:
            nb = jupytext.reads(new, fmt="md:myst")
            chapters.write_text(nb_path, jupytext.writes(nb, fmt="ipynb"))
            changed.append(md)
    page = api_markdown()
    if not API_PAGE.exists() or API_PAGE.read_text() != page:
        chapters.write_text(API_PAGE, page)
        changed.append(API_PAGE)
    return changed
