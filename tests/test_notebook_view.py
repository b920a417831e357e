"""The book as people open it, without a browser: the paired notebooks show the library code
that the chapters ``literalinclude`` and carry what Jupyter writes (so opening one changes little
and a drift is named), JupyterLab opens the ``.md`` chapters as notebooks, and the built site
carries its own stylesheets (offline, KaTeX's missing stylesheet shows every formula twice)."""

from __future__ import annotations

import ast
import base64
import hashlib
import json
import re
import shutil

import jupytext
import nbformat
import pytest

from qam_lite import cli
from qam_lite.book import chapters, site, sync

CHAPTERS = chapters.chapters()
WITH_INCLUDES = [md for md in CHAPTERS if "{literalinclude}" in md.read_text()]


def _selected(path: str, start_at: str | None, end_before: str | None) -> str:
    """MyST's selection, written out again: the line holding ``start_at`` (the first line when
    none) up to the one holding ``end_before``, trailing blank lines dropped."""
    lines = (chapters.BOOK_DIR / path).read_text().splitlines()
    first = next((i for i, line in enumerate(lines) if start_at in line), 0) if start_at else 0
    rest = range(first + 1, len(lines))
    last = next((i for i in rest if end_before and end_before in lines[i]), len(lines))
    return "\n".join(lines[first:last]).rstrip()


@pytest.mark.parametrize("md", WITH_INCLUDES, ids=lambda p: p.stem)
def test_the_notebook_shows_the_included_code(md):
    # Jupyter, Colab and nbconvert show a MyST directive as raw text; the committed notebook
    # must hold the lines the site shows, as they are in the library now.
    text = md.read_text()
    markdown = "\n".join(
        c.source
        for c in nbformat.read(md.with_suffix(".ipynb"), 4).cells
        if c.cell_type == "markdown"
    )
    blocks = list(sync._INCLUDE.finditer(text))
    assert blocks
    for match in blocks:
        opts = dict(o[1:].split(": ", 1) for o in match["opts"].splitlines())
        code = _selected(match["path"], opts.get("start-at"), opts.get("end-before"))
        name = opts["start-at"].split()[1].split("(")[0] if "start-at" in opts else "text"
        if "start-at" in opts:
            assert len(ast.parse(code).body) == 1, f"{name}: the selection is not one object"
        assert f"```python\n{code}\n```" in markdown, (
            f"{md.stem}.ipynb does not show the current {name} of {match['path']}: "
            "run `qam-lite book --sync`"
        )
        assert "```{literalinclude}" not in markdown  # no raw directive left for a notebook


def test_expansion_takes_the_current_source_and_collapses_back(tmp_path, monkeypatch):
    monkeypatch.setattr(chapters, "BOOK_DIR", tmp_path / "book")
    (tmp_path / "book").mkdir()
    lib = tmp_path / "lib.py"
    lib.write_text("X = 1\n\n\ndef f(a):\n    return '```' + a\n\n\ndef g():\n    pass\n")
    cell = (
        "Before.\n\n```{literalinclude} ../lib.py\n:start-at: def f(\n:end-before: def g(\n```\n"
        "\nAfter.\n\n```{literalinclude} ../lib.py\n:start-at: def g(\n```\n"
    )
    expanded = sync.expand_includes(cell)
    # A fence longer than any backtick run in the code; the directive kept in a comment.
    assert "````python\ndef f(a):\n    return '```' + a\n````" in expanded
    assert "```python\ndef g():\n    pass\n```" in expanded
    assert expanded.count("<!-- {literalinclude} ../lib.py\n") == 2
    assert "```{literalinclude}" not in expanded
    assert sync.collapse_includes(expanded) == cell
    # The library changed: the next expansion shows the new lines.
    lib.write_text(lib.read_text().replace("return '```' + a", "return a * 2"))
    assert "def f(a):\n    return a * 2\n```" in sync.expand_includes(cell)
    with pytest.raises(ValueError, match="not expanded by sync"):
        sync.expand_includes("```{literalinclude} ../lib.py\n:lines: 1-2\n```\n")
    with pytest.raises(ValueError, match="no line holds"):
        sync.expand_includes("```{literalinclude} ../lib.py\n:start-at: def h(\n```\n")


def _cells(nb):
    return [(c.cell_type, c.source.strip()) for c in nb.cells]


@pytest.mark.parametrize("md", WITH_INCLUDES[:1] + WITH_INCLUDES[-1:], ids=lambda p: p.stem)
def test_round_trip_through_jupytext_restores_the_md(md):
    # Neither file declares jupytext pairing, so jupytext never writes the notebook's expanded
    # code into the .md; and an .md converted from the notebook by hand is restored by sync.
    text = md.read_text()
    assert "formats" not in nbformat.read(md.with_suffix(".ipynb"), 4).metadata.get("jupytext", {})
    nb = sync.paired_notebook(md)
    assert "formats" not in jupytext.reads(text, fmt="md:myst").metadata.get("jupytext", {})
    assert not (chapters.ROOT / "jupytext.toml").exists()
    back = jupytext.writes(nb, fmt="md:myst")
    assert "<!-- {literalinclude}" in back  # what a plain conversion would put in the .md
    restored = sync.sync_chapter_text(back, md.stem)
    assert _cells(jupytext.reads(restored, fmt="md:myst")) == _cells(
        jupytext.reads(text, fmt="md:myst")
    )


def _saved_by_jupyterlab(path, python="3.11.9"):
    """What JupyterLab does to a paired notebook when a reader opens and runs it: the kernel's
    language_info (its Python version), execution counts and outputs."""
    nb = nbformat.read(path, 4)
    nb.metadata.language_info["version"] = python
    code = next(c for c in nb.cells if c.cell_type == "code")
    code.execution_count = 1
    code.outputs = [nbformat.v4.new_output("stream", name="stdout", text="hello\n")]
    nbformat.write(nb, path)


def test_a_notebook_saved_from_jupyterlab_is_named_and_resynced(tmp_path, monkeypatch, capsys):
    book = tmp_path / "book"
    shutil.copytree(chapters.BOOK_DIR, book, ignore=shutil.ignore_patterns("*.ipynb"))
    shutil.copytree(chapters.ROOT / "qam_lite", tmp_path / "qam_lite")
    md = book / CHAPTERS[2].name
    monkeypatch.setattr(chapters, "ROOT", tmp_path)
    monkeypatch.setattr(chapters, "BOOK_DIR", book)
    monkeypatch.setattr(chapters, "chapters", lambda: [md])
    monkeypatch.setattr("qam_lite.book.api.api_markdown", lambda: "")
    monkeypatch.setattr("qam_lite.book.api.API_PAGE", book / "api.md")
    (book / "api.md").write_text("")
    nb_path = md.with_suffix(".ipynb")
    assert sync.pair_drift(md) == ["missing"]
    assert sync.sync() == [md]
    assert sync.pair_drift(md) == [] and sync.check() == []
    assert cli.main(["book", "--sync", "--check"]) == 0
    assert sync.sync() == []  # stable: a second sync writes nothing
    first = nb_path.read_bytes()
    # What sync writes is what Jupyter writes: nbformat's layout, Jupyter's kernel metadata.
    assert first == (nbformat.writes(nbformat.read(nb_path, 4)) + "\n").encode()
    nb = json.loads(first)
    assert nb["metadata"]["kernelspec"]["display_name"] == "Python 3 (ipykernel)"
    assert nb["metadata"]["language_info"]["name"] == "python"
    assert all(not c.get("outputs") for c in nb["cells"])
    assert len({c["id"] for c in nb["cells"]}) == len(nb["cells"])

    _saved_by_jupyterlab(nb_path)
    drift = sync.pair_drift(md)
    assert "outputs saved in code cell(s) 1" in drift
    assert "execution counts saved" in drift
    assert "notebook metadata language_info" in drift
    (line,) = sync.check()
    assert line.startswith(f"book/{nb_path.name}: ") and "run `qam-lite book --sync`" in line
    # The CLI's --sync --check says the same, exits 2 and writes nothing.
    before = nb_path.read_bytes()
    assert cli.main(["book", "--sync", "--check"]) == 2
    assert line in capsys.readouterr().err
    assert nb_path.read_bytes() == before
    assert sync.sync() == [md]  # a notebook newer than its .md is rewritten all the same
    assert nb_path.read_bytes() == first

    # An edited cell is named by its number.
    nb = nbformat.read(nb_path, 4)
    nb.cells[3].source += "\nan edit"
    nbformat.write(nb, nb_path)
    assert sync.pair_drift(md) == ["cell(s) 4 differ from the .md"]


def test_jupyterlab_opens_md_chapters_as_notebooks(monkeypatch):
    # The project's JupyterLab setting (JUPYTER_CONFIG_PATH=jupyter-config) makes jupytext's
    # notebook view the default viewer of markdown files, as JupyterLab reads it.
    settings_utils = pytest.importorskip("jupyterlab_server.settings_utils")
    commands = pytest.importorskip("jupyterlab.commands")
    plugin = "@jupyterlab/docmanager-extension:plugin"
    config = chapters.ROOT / "jupyter-config"
    overrides = json.loads((config / "labconfig" / "default_setting_overrides.json").read_text())
    assert overrides == {plugin: {"defaultViewers": {"markdown": "Jupytext Notebook"}}}
    schemas = commands.get_app_dir() + "/schemas"

    def default_viewers(tmp):
        found, warnings = settings_utils.get_settings(
            str(tmp / "app"), schemas, str(tmp / "user"), schema_name=plugin
        )
        assert warnings == [None]
        return found["schema"]["properties"]["defaultViewers"]["default"]

    import tempfile
    from pathlib import Path

    with tempfile.TemporaryDirectory() as tmp:
        monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(Path(tmp) / "nothing"))
        monkeypatch.setenv("JUPYTER_CONFIG_DIR", str(Path(tmp) / "home"))
        assert default_viewers(Path(tmp)).get("markdown") != "Jupytext Notebook"
        monkeypatch.setenv("JUPYTER_CONFIG_PATH", str(config))
        assert default_viewers(Path(tmp))["markdown"] == "Jupytext Notebook"
    # The name is the factory jupytext's JupyterLab extension registers (where it is installed).
    jupytext_lab = Path(commands.get_app_dir()).parent / "labextensions" / "jupyterlab-jupytext"
    scripts = list((jupytext_lab / "static").glob("*.js"))
    if scripts:
        assert any('FACTORY="Jupytext Notebook"' in p.read_text() for p in scripts)
        assert any('"markdown"' in p.read_text() for p in scripts)


_PAGE = """<html><head>
<link rel="stylesheet" href="{base}/build/_assets/app-X.css"/>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/jupyter-matplotlib@0.11.3/css/mpl_widget.css"/>
<link rel="stylesheet" href="https://cdnjs.cloudflare.com/ajax/libs/font-awesome/4.7.0/css/font-awesome.css"/>
<link rel="stylesheet" href="https://cdn.jsdelivr.net/npm/katex@0.15.2/dist/katex.min.css"
 integrity="{sri}" crossorigin="anonymous"/>
</head></html>"""
_SCRIPT = (
    'var a=[{rel:"stylesheet",href:"https://cdn.jsdelivr.net/npm/jupyter-matplotlib@0.11.3/css/'
    'mpl_widget.css"},{rel:"stylesheet",href:"https://cdnjs.cloudflare.com/ajax/libs/'
    'font-awesome/4.7.0/css/font-awesome.css"}];var k={rel:"stylesheet",href:"https://cdn.'
    'jsdelivr.net/npm/katex@0.15.2/dist/katex.min.css"};var m="https://cdn.plot.ly/";'
)
_PLAYER = (
    '{"html": "<link rel=\\"stylesheet\\"\\nhref=\\"https://maxcdn.bootstrapcdn.com/font-awesome/'
    '4.4.0/css/font-awesome.min.css\\">"}'
)


@pytest.mark.parametrize("base", ["", "/qam-lite"])
def test_the_site_ships_its_stylesheets(tmp_path, base):
    katex = site.VENDOR_DIR / "katex" / "katex.min.css"
    sri = "sha384-" + base64.b64encode(hashlib.sha384(katex.read_bytes()).digest()).decode()
    # The copy is the file the theme names by hash (the CDN's, byte for byte).
    assert sri == "sha384-MlJdn/WNKDGXveldHDdyRP1R4CTHr3FeuDNfhsLPYrq2t0UBkUdK2jyTnXPEK1NQ"
    (tmp_path / "build").mkdir()
    (tmp_path / "index.html").write_text(_PAGE.format(base=base, sri=sri))
    (tmp_path / "build" / "root.js").write_text(_SCRIPT)
    (tmp_path / "page.json").write_text(_PLAYER)
    assert len(site.outside_stylesheets(tmp_path)) == 7
    assert len(site.vendor_stylesheets(tmp_path)) == 3
    assert site.outside_stylesheets(tmp_path) == []
    page = (tmp_path / "index.html").read_text()
    assert f'href="{base}/vendor/katex/katex.min.css"\n integrity="{sri}"' in page
    assert f'href="{base}/vendor/font-awesome/css/font-awesome.min.css"' in page
    assert "mpl_widget" not in page and "mpl_widget" not in (tmp_path / "build/root.js").read_text()
    assert "https://cdn.plot.ly/" in (tmp_path / "build/root.js").read_text()  # not a stylesheet
    assert (
        f"{base}/vendor/font-awesome/css/font-awesome.min.css"
        in (tmp_path / "page.json").read_text()
    )
    # Every file a vendored stylesheet points at is there (fonts, relative to the stylesheet).
    for css in (tmp_path / "vendor").rglob("*.css"):
        for url in re.findall(r"url\(['\"]?([^'\")?#]+)", css.read_text()):
            if url.endswith(".woff2"):
                assert (css.parent / url).is_file(), url
    assert (tmp_path / "vendor" / "katex" / "LICENSE").is_file()
    # A stylesheet the site does not carry is reported by the site check.
    (tmp_path / "other.html").write_text('<link rel="stylesheet" href="https://x.org/a.css">')
    assert site.check_site(tmp_path)[0] == (
        "stylesheet from outside the site (not vendored): other.html: https://x.org/a.css"
    )


def test_eval_roles_show_their_recorded_values_and_collapse_back(tmp_path, monkeypatch):
    import json

    from nbformat.v4 import new_markdown_cell, new_notebook

    monkeypatch.setattr(chapters, "BOOK_DIR", tmp_path)
    cell = (
        'Ratio {eval}`f"{r:.2f}"` and {eval}``x[`a`]``, '
        'run time {eval}`run_time("07_x", "quick")`, unknown {eval}`y`.\n\n'
        '```python\n{eval}`f"{r:.2f}"` stays in code\n```\n'
    )
    values = {'f"{r:.2f}"': "1.09", "x[`a`]": "3"}
    expanded = sync.expand_evals(cell, "07_x", values)
    assert '<!-- {eval}`f"{r:.2f}"` -->1.09<!-- /eval -->' in expanded
    assert "<!-- {eval}``x[`a`]`` -->3<!-- /eval -->" in expanded
    assert "not measured yet<!-- /eval -->" in expanded  # run_time from runtimes.json (none)
    assert "unknown {eval}`y`." in expanded  # no recorded value: the role stays
    assert '{eval}`f"{r:.2f}"` stays in code' in expanded  # code blocks are left alone
    assert sync.collapse_evals(expanded) == cell

    # A full-mode run records the values (run_time expressions excluded) for the pairing.
    source = 'a {eval}`r` b {eval}`run_time("07_x", "full")`'
    nb = new_notebook(cells=[new_markdown_cell(source)])
    ok = {"status": "ok", "data": {"text/plain": "0.5"}}
    nb.cells[0].metadata["user_expressions"] = [
        {"expression": "r", "result": ok},
        {"expression": 'run_time("07_x", "full")', "result": ok},
    ]
    chapters.record_values("07_x", nb)
    assert json.loads((tmp_path / "values.json").read_text()) == {"07_x": {"r": "0.5"}}
    assert chapters.read_values()["07_x"] == {"r": "0.5"}
