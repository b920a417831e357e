"""The book: every chapter is paired, names the right repository, and executes in quick mode."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time

import bookrun
import nbformat
import pytest

from qam_lite.book import build, chapters, site, sync

CHAPTERS = chapters.chapters()


def test_there_are_chapters_and_the_toc_lists_each_one():
    toc = (chapters.ROOT / "myst.yml").read_text()
    assert len(CHAPTERS) >= 6
    for md in CHAPTERS:
        assert f"book/{md.name}" in toc, f"{md.name} missing from myst.yml"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_ipynb_pair_in_sync(md):
    # The .ipynb is exactly what `qam-lite book --sync` writes from the .md (includes expanded,
    # Jupyter's metadata, no outputs); a notebook saved from JupyterLab is named with what changed.
    drift = sync.pair_drift(md)
    assert drift == [], f"{md.stem}.ipynb: {'; '.join(drift)}: run `qam-lite book --sync`"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_opening(md):
    text = md.read_text()
    assert sync.sync_chapter_text(text, md.stem) == text, "run `qam-lite book --sync`"
    assert sync.colab_badge(md.stem) in text
    assert sync.colab_install() in text
    for heading in ("Learning goals", "Prerequisites", "Run time", "Exercises"):
        assert re.search(rf"^#+ .*{heading}", text, re.M | re.I), f"no '{heading}' section"
    assert ":::{dropdown}" in text or "```{dropdown}" in text, "exercise solutions not folded"


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_chapter_executes_in_quick_mode(md, tmp_path_factory):
    # Executed once per session by the book's runner; test_site.py renders these same notebooks.
    nb = nbformat.read(bookrun.execute(md, bookrun.executed_dir(tmp_path_factory)), 4)
    # Batch execution leaves no live widget, frozen progress bar or traceback in the outputs.
    assert chapters.notebook_problems(nb) == []
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert any("image/png" in o.get("data", {}) for o in outputs), "no figure saved"


def _select(lines, start_at, end_before):
    """MyST's literalinclude selection: from the line holding start_at to before end_before."""
    first = next(i for i, line in enumerate(lines) if start_at in line)
    rest = range(first + 1, len(lines))
    last = next((i for i in rest if end_before and end_before in lines[i]), len(lines))
    return "\n".join(lines[first:last])


@pytest.mark.parametrize("md", CHAPTERS, ids=lambda p: p.stem)
def test_literalincludes_cut_exactly_one_object(md):
    import ast

    for match in sync._INCLUDE.finditer(md.read_text()):
        opts = dict(o[1:].split(": ", 1) for o in match["opts"].splitlines())
        assert "pyobject" not in opts, "MyST has no :pyobject:; run `qam-lite book --sync`"
        if "start-at" not in opts:
            continue
        source = (chapters.BOOK_DIR / match["path"]).read_text().splitlines()
        body = ast.parse(_select(source, opts["start-at"], opts.get("end-before"))).body
        assert len(body) == 1 and isinstance(body[0], ast.FunctionDef | ast.ClassDef)
        assert opts["start-at"].split()[1].startswith(body[0].name)


def test_colab_badge_is_a_local_image():
    badge = sync.colab_badge("01_flow_matching")
    image = re.search(r"\[!\[Open In Colab\]\(([^)]*)\)\]", badge)[1]
    assert not image.startswith(("http:", "https:")), "a remote badge breaks offline builds"
    assert (chapters.BOOK_DIR / image).is_file()
    assert "colab.research.google.com/github/" in badge


def test_site_has_a_local_favicon():
    toc = (chapters.ROOT / "myst.yml").read_text()
    favicon = re.search(r"^\s+favicon: (\S+)$", toc, re.M)
    assert favicon and (chapters.ROOT / favicon[1]).is_file()


# --- the runner, on a tiny fake book (seconds, not minutes) ---------------------------------


def _chapter(text: str) -> str:
    return (
        textwrap.dedent(
            """\
        ---
        kernelspec:
          name: python3
          display_name: Python 3
        ---
        # A chapter

        ```{code-cell} ipython3
        %s
        ```
        """
        )
        % text
    )


@pytest.fixture
def fake_book(tmp_path, monkeypatch):
    src = tmp_path / "book"
    src.mkdir()
    (src / "01_one.md").write_text(_chapter("print('one')"))
    (src / "02_two.md").write_text(_chapter("print('two')"))
    monkeypatch.setattr(chapters, "BOOK_DIR", src)
    monkeypatch.setattr(chapters, "chapters", lambda: sorted(src.glob("[0-9][0-9]_*.md")))
    # Fixed, so that edits to qam_lite/ while the tests run do not re-run the fake chapters.
    monkeypatch.setattr(chapters, "library_hash", lambda: "the library")
    return src, tmp_path / "out"


def test_a_rerun_skips_finished_chapters_and_says_so(fake_book):
    src, out = fake_book
    first = build.build(out, quick_mode=True)
    assert [name for name, _ in first.ran] == ["01_one", "02_two"]
    again = build.build(out, quick_mode=True)
    assert again.ran == [] and again.skipped == ["01_one", "02_two"]
    assert again.summary().startswith("0 chapter(s) executed in 0 s, 2 already up to date")
    # Another mode, or an edited source, runs the chapter again.
    assert [n for n, _ in build.build(out, quick_mode=False, only=["01"]).ran] == ["01_one"]
    (src / "02_two.md").write_text(_chapter("print('two, edited')"))
    assert [n for n, _ in build.build(out, quick_mode=True).ran] == ["01_one", "02_two"]


def test_only_one_chapter_keeps_the_state_whole_and_writes_no_html(fake_book):
    _, out = fake_book
    build.build(out, quick_mode=True)
    (out / "01_one.html").write_text("an old nbconvert page")  # as earlier versions wrote
    build.build(out, quick_mode=True, only=["01"], force=True)
    assert sorted(json.loads((out / "state.json").read_text())) == ["01_one", "02_two"]
    assert sorted(p.name for p in out.iterdir()) == ["01_one.ipynb", "02_two.ipynb", "state.json"]


_BOUND = """\
---
kernelspec:
  name: python3
  display_name: Python 3
---
# A chapter

```{code-cell} ipython3
from qam_lite.book import run_time
```

Run time: {eval}`run_time("01_one", "quick")`.

```{code-cell} ipython3
ratio = 2.4
```

The ratio is {eval}`f"{ratio:.1f}"`, twice {eval}`ratio * 2`, quoted {eval}`'"q"'`.

```{code-cell} ipython3
ratio = 3.0
```

Later, after the cell above: {eval}`f"{ratio:.1f}"`; a code block is not prose:

```python
{eval}`undefined_name`
```
"""


def _stored(cell):
    return {e["expression"]: e["result"] for e in cell.metadata["user_expressions"]}


def test_inline_expressions_are_bound_after_the_cells_above_them(fake_book):
    src, out = fake_book
    (src / "01_one.md").write_text(_BOUND)
    build.build(out, quick_mode=True, only=["01"])
    nb = nbformat.read(out / "01_one.ipynb", 4)
    first, middle, last = (
        c for c in nb.cells if c.cell_type == "markdown" and "{eval}" in c.source
    )
    # A string is stored as itself (it renders 2.4, not '2.4'), anything else as its repr.
    assert _stored(middle)['f"{ratio:.1f}"'] == {
        "status": "ok",
        "data": {"text/plain": "2.4"},
        "metadata": {},
    }
    assert _stored(middle)["ratio * 2"]["data"]["text/plain"] == "4.8"
    # A string with quotes of its own keeps them: mystmd is told not to strip a pair.
    assert _stored(middle)["'\"q\"'"]["data"]["text/plain"] == '"q"'
    assert _stored(middle)["'\"q\"'"]["metadata"] == {"strip-quotes": False}
    assert list(_stored(last)) == ['f"{ratio:.1f}"']  # the code block's role is not evaluated
    assert _stored(last)['f"{ratio:.1f}"']["data"]["text/plain"] == "3.0"
    assert chapters.notebook_problems(nb) == []
    # The run-time box shows this very run, from the record the build just wrote.
    record = json.loads((src / chapters.RUN_TIMES_FILE).read_text())
    seconds = record["01_one"]["quick"]["cpu"]["seconds"]
    shown = _stored(first)['run_time("01_one", "quick")']["data"]["text/plain"]
    assert shown == chapters.run_time("01_one", "quick") and shown.startswith(f"{seconds} s (")
    assert chapters.run_time("01_one", "full") == "not measured yet"
    # A stored value that goes missing is a notebook problem (the quick-mode chapter test fails).
    middle.metadata["user_expressions"] = middle.metadata["user_expressions"][:1]
    assert chapters.notebook_problems(nb) == [
        "markdown cell 3: no value stored for {eval}`ratio * 2`",
        "markdown cell 3: no value stored for {eval}`'\"q\"'`",
    ]


def test_a_failing_inline_expression_fails_the_chapter_by_name(fake_book):
    src, out = fake_book
    (src / "01_one.md").write_text(_chapter("x = 1") + "\nThe value {eval}`x / 0` here.\n")
    with pytest.raises(build.ChapterFailed, match=r"(?s)chapter 01_one failed.*`x / 0`.*Zero"):
        build.build(out, quick_mode=True, only=["01"], record_run_times=False)
    assert not (out / "01_one.ipynb").exists() and (out / "01_one.failed.ipynb").exists()
    assert not (src / chapters.RUN_TIMES_FILE).exists()


def test_only_with_no_match_or_no_value_is_refused(fake_book):
    from qam_lite import cli

    _, out = fake_book
    with pytest.raises(ValueError, match="no chapter matches"):
        build.build(out, only=["99"])
    with pytest.raises(SystemExit) as exit_:
        cli.build_parser().parse_args(["book", "--only"])
    assert exit_.value.code == 2


def test_a_library_change_reruns_every_chapter(fake_book, monkeypatch):
    _, out = fake_book
    build.build(out, quick_mode=True)
    monkeypatch.setattr(chapters, "library_hash", lambda: "another library")
    assert [n for n, _ in build.build(out, quick_mode=True).ran] == ["01_one", "02_two"]


_MYST_YML = """\
version: 1
project:
  title: A book
  exclude: [_build/**, "**/*.ipynb"]
  toc:
    - file: book/index.md
    - title: Part
      children:
        - file: book/01_one.md
        - file: book/02_two.md
site:
  template: book-theme
  options:
    favicon: book/images/icon.svg
"""


def test_the_site_project_renders_the_executed_notebooks(fake_book):
    import yaml

    src, out = fake_book
    root = src.parent
    (root / "myst.yml").write_text(_MYST_YML)
    (src / "index.md").write_text("# Book\n[one](01_one.md), [two](02_two.md#part), 01_one.mdx\n")
    (src / "01_one.ipynb").write_text("{}")  # the paired, unexecuted notebook: not copied
    (src / "images").mkdir()
    (src / "images" / "icon.svg").write_text("<svg/>")
    (root / "qam_lite").mkdir()
    (root / "qam_lite" / "flows.py").write_text("def f():\n    pass\n")
    build.build(out, quick_mode=True, only=["01"], record_run_times=False)
    assert site.stale_chapters(out, quick_mode=True) == ["02_two"]
    assert site.stale_chapters(out, quick_mode=False) == ["01_one", "02_two"]
    with pytest.raises(site.SiteError, match=r"not executed in quick mode.*: 02_two"):
        site.build_site(out, quick_mode=True, root=root, build_dir=root / "_build")

    project = root / "_build" / "myst"
    assert site.site_project(out, project, root) == ["02_two"]
    config = yaml.safe_load((project / "myst.yml").read_text())
    assert config["project"]["toc"] == [
        {"file": "book/index.md"},
        {"title": "Part", "children": [{"file": "book/01_one.ipynb"}]},
    ]
    assert config["project"]["exclude"] == ["_build/**"]
    assert config["site"] == yaml.safe_load(_MYST_YML)["site"]
    assert sorted(p.name for p in (project / "book").iterdir()) == [
        "01_one.ipynb",
        "images",
        "index.md",
    ]
    nb = nbformat.read(project / "book" / "01_one.ipynb", 4)
    assert nb.cells[-1].outputs[0]["text"] == "one\n"  # the stored outputs, not re-executed
    assert "jupytext" not in nb.metadata
    assert (project / "book" / "index.md").read_text() == (
        "# Book\n[one](01_one.ipynb), [two](02_two.ipynb#part), 01_one.mdx\n"
    )
    assert (project / "book" / "images" / "icon.svg").is_file()
    assert (project / "qam_lite" / "flows.py").is_file()
    # Regenerated from scratch: a chapter executed since is added, nothing stale is kept.
    (project / "_build" / "html").mkdir(parents=True)
    build.build(out, quick_mode=True, record_run_times=False)
    assert site.site_project(out, project, root) == []
    assert (project / "book" / "02_two.ipynb").is_file()
    assert not (project / "_build" / "html").exists()


def test_a_failed_rerun_keeps_the_finished_chapter(fake_book):
    src, out = fake_book
    build.build(out, quick_mode=True, only=["01"])
    good = (out / "01_one.ipynb").read_bytes()
    state = (out / "state.json").read_text()
    (src / "01_one.md").write_text(_chapter("raise RuntimeError('boom')"))
    with pytest.raises(build.ChapterFailed, match="boom"):
        build.build(out, quick_mode=True, only=["01"], force=True)
    assert (out / "01_one.ipynb").read_bytes() == good
    assert (out / "state.json").read_text() == state
    assert "boom" in (out / "01_one.failed.ipynb").read_text()
    # The next run does not take the failed chapter for finished.
    with pytest.raises(build.ChapterFailed):
        build.build(out, quick_mode=True, only=["01"])


_INTERRUPTIBLE = """
import sys
from pathlib import Path
from qam_lite import cli
from qam_lite.book import chapters
src = Path(sys.argv[1])
chapters.BOOK_DIR = src
chapters.chapters = lambda: sorted(src.glob("[0-9][0-9]_*.md"))
sys.exit(cli.main(["book", "--no-site", "--out", sys.argv[2]]))
"""


def test_ctrl_c_gives_the_resume_message_and_keeps_finished_chapters(fake_book, tmp_path):
    src, out = fake_book
    marker = tmp_path / "started"
    (src / "02_two.md").write_text(
        _chapter(f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)")
    )
    proc = subprocess.Popen(
        [sys.executable, "-c", _INTERRUPTIBLE, str(src), str(out)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a terminal's Ctrl-C would hit
    )
    deadline = time.monotonic() + 120
    while not marker.exists() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.2)
    assert marker.exists(), proc.communicate()[0] if proc.poll() is not None else "no start"
    os.killpg(proc.pid, signal.SIGINT)
    output, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, output
    assert "Traceback" not in output
    assert "interrupted while executing 02_two" in output
    assert "run the same command again to resume" in output
    assert (out / "01_one.ipynb").exists() and not (out / "02_two.ipynb").exists()
    assert list(json.loads((out / "state.json").read_text())) == ["01_one"]


def test_site_check_finds_missing_outputs_tracebacks_and_widgets(tmp_path, monkeypatch):
    md = tmp_path / "book" / "01_one.md"
    monkeypatch.setattr(chapters, "chapters", lambda: [md, md.with_name("02_two.md")])
    code = {"type": "code", "executable": True, "value": "x"}

    def page(name, outputs):
        mdast = {
            "type": "root",
            "children": [code] + [{"type": "output", "jupyter_data": o} for o in outputs],
        }
        (tmp_path / f"{name}.json").write_text(
            json.dumps({"location": f"/book/{name}.md", "mdast": mdast})
        )

    widget = {"application/vnd.jupyter.widget-view+json": {"content": "{}"}}
    page("01_one", [{"output_type": "display_data", "data": widget}])
    page("02_two", [])
    problems = site.check_site(tmp_path)
    assert any("01_one" in p and "live widget" in p for p in problems)
    assert any("02_two" in p and "no outputs" in p for p in problems)
    page("01_one", [{"output_type": "error", "ename": "ValueError", "evalue": "x"}])
    page("02_two", [{"output_type": "stream", "name": "stderr", "text": " 0%|   | 0/1500"}])
    problems = site.check_site(tmp_path)
    assert any("02_two" in p and "no figure" in p for p in problems)
    assert any("01_one" in p and "error output (ValueError" in p for p in problems)
    assert any("02_two" in p and "progress bar" in p for p in problems)
    png = {"image/png": {"path": "/build/x.png", "content_type": "image/png"}}
    page("01_one", [{"output_type": "display_data", "data": png}])
    page("02_two", [{"output_type": "display_data", "data": png}])
    assert site.check_site(tmp_path) == [
        f"book/{name}.md: output file /build/x.png missing" for name in ("01_one", "02_two")
    ]
    (tmp_path / "build").mkdir()
    (tmp_path / "build" / "x.png").write_bytes(b"png")
    assert site.check_site(tmp_path) == []


def test_theme_copy_is_writable_and_checked(tmp_path):
    theme = tmp_path / "theme"
    (theme / "build").mkdir(parents=True)
    (theme / "template.yml").write_text("jtex: v1\n")
    (theme / "build" / "index.js").write_text("//\n")
    for path in (theme / "build" / "index.js", theme / "build", theme / "template.yml", theme):
        path.chmod(0o555 if path.is_dir() else 0o444)  # as CI's read-only shared/
    copy = site.install_theme(theme, tmp_path / "project")
    assert copy == tmp_path / "project" / site.THEME_DIR
    assert (copy / "build" / "index.js").read_text() == "//\n"
    assert all(os.stat(p).st_mode & 0o200 for p in [copy, *copy.rglob("*")])
    with pytest.raises(site.SiteError, match="no template.yml"):
        site.install_theme(tmp_path / "project", tmp_path / "other")
