"""The book's tooling, and all that a chapter imports from it.

A chapter needs these from here: :func:`pick` / :func:`quick` (``QAM_LITE_QUICK=1`` shrinks
its work for a 2-core CPU), :data:`REPOSITORY` / :data:`BRANCH` (its Colab badge),
:func:`run_time` (its run-time box, as an ``{eval}`` role calling it), and in Part II
:func:`results_folder`, :func:`require` and :func:`quiet_headless_warnings` (the committed runs
it reads, see :mod:`qam_lite.book.results`).
The machinery lives in the submodules, which import the library and never the reverse:

``chapters``  the chapter files, their hashes, the state of their last run, output checks
``sync``      Colab badges and install cells, ``literalinclude`` markers, ``.md`` / ``.ipynb`` pairs
``build``     ``qam-lite book``: execute each chapter once, keep it with its outputs
``site``      render those executed notebooks as the Jupyter Book 2 site, and check it
``api``       the API reference page (``book/api.md``), generated from the docstrings
``results``   where chapters 8-10 find the committed results
"""

from __future__ import annotations

from qam_lite.book.chapters import BRANCH, REPOSITORY, run_time
from qam_lite.book.results import quiet_headless_warnings, require, results_folder
from qam_lite.modes import pick, quick

__all__ = [
    "BRANCH",
    "REPOSITORY",
    "pick",
    "quick",
    "quiet_headless_warnings",
    "require",
    "results_folder",
    "run_time",
]
