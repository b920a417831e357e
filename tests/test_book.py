"""The book: every chapter is paired, names the right repository, and executes in quick mode."""

from __future__ import annotations

import re

import jupytext
import pytest

from qam_lite import book

CHAPTERS = book.chapters()


def _sources(nb):
    return [(cell.cell_type, cell.source.strip()) for cell in nb.cells]


def test_there_are_chapters_and_the_toc_lists_each_one():
    toc = (book.ROOT / "myst.yml").read_text()
    assert len(CHAPTERS) >= 6
    for md in CHAPTERS:
        assert f"book/{md.name}" in toc, f"{md.name} missing from myst.yml"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_ipynb_pair_in_sync(md):
    nb_path = md.with_suffix(".ipynb")
    assert nb_path.exists(), f"{nb_path.name} missing: run `qam-lite book --sync`"
    assert _sources(jupytext.read(md)) == _sources(jupytext.read(nb_path)), (
        f"{nb_path.name} differs from {md.name}: run `qam-lite book --sync`"
    )


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opening(md):
    text = md.read_text()
    assert book.sync_chapter_text(text, md.stem) == text, "run `qam-lite book --sync`"
    assert book.colab_badge(md.stem) in text
    assert book.colab_install() in text
    for heading in ("Learning goals", "Prerequisites", "Run time", "Exercises"):
        assert re.search(rf"^#+ .*{heading}", text, re.M | re.I), f"no '{heading}' section"
    assert ":::{dropdown}" in text or "```{dropdown}" in text, "exercise solutions not folded"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_executes_in_quick_mode(md, tmp_path, monkeypatch):
    monkeypatch.setenv("QAM_LITE_QUICK", "1")
    monkeypatch.setenv("MPLBACKEND", "Agg")
    book.execute_chapter(md, tmp_path, timeout=900)
    assert (tmp_path / f"{md.stem}.ipynb").exists()


def _select(lines, start_at, end_before):
    """MyST's literalinclude selection: from the line holding start_at to before end_before."""
    first = next(i for i, line in enumerate(lines) if start_at in line)
    rest = range(first + 1, len(lines))
    last = next((i for i in rest if end_before and end_before in lines[i]), len(lines))
    return "\n".join(lines[first:last])


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_literalincludes_cut_exactly_one_object(md):
    import ast

    for match in book._INCLUDE.finditer(md.read_text()):
        opts = dict(o[1:].split(": ", 1) for o in match["opts"].splitlines())
        assert "pyobject" not in opts, "MyST has no :pyobject:; run `qam-lite book --sync`"
        if "start-at" not in opts:
            continue
        source = (book.BOOK_DIR / match["path"]).read_text().splitlines()
        body = ast.parse(_select(source, opts["start-at"], opts.get("end-before"))).body
        assert len(body) == 1 and isinstance(body[0], ast.FunctionDef | ast.ClassDef)
        assert opts["start-at"].split()[1].startswith(body[0].name)
