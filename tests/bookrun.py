"""One execution of each chapter per test session, shared by test_book.py and test_site.py.

Each chapter is executed in quick mode by the book's own runner (:func:`qam_lite.book.build`) into
one folder of the session's temporary directory; the chapter test checks its notebook and the site
test renders the same notebooks (nothing is executed twice). A chapter that failed is not run
again in the same session: the failure is recorded beside the notebooks and reported again.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from qam_lite.book import build

TIMEOUT = 900  # seconds per cell


def executed_dir(tmp_path_factory) -> Path:
    """The session's folder of executed chapters (``qam-lite book --quick --out`` layout)."""
    return tmp_path_factory.getbasetemp() / "executed-book"


def execute(md: Path, out: Path) -> Path:
    """Execute chapter ``md`` in quick mode into ``out`` unless this session already did; return
    its executed notebook. Fails the calling test with the chapter's error when it raised (now or
    earlier in the session)."""
    notebook, failure = out / f"{md.stem}.ipynb", out / f"{md.stem}.error.txt"
    if failure.exists():
        pytest.fail(f"{md.stem} failed earlier in this session:\n{failure.read_text()}")
    if notebook.exists():  # executed earlier in this session (the folder is the session's own)
        return notebook
    try:
        # The tests' runs do not replace the committed run times (book/runtimes.json).
        build.build(out, quick_mode=True, only=[md.stem], timeout=TIMEOUT, record_run_times=False)
    except Exception as err:
        out.mkdir(parents=True, exist_ok=True)
        failure.write_text(f"{type(err).__name__}: {err}")
        raise
    return notebook
