"""How the running chapter was asked to run: quick or full, watched or in batch.

``QAM_LITE_QUICK=1`` shrinks every chapter's work so the whole book runs on a 2-core CPU in CI;
chapters read it through :func:`quick` / :func:`pick`. ``QAM_LITE_BATCH=1`` says nobody is
watching (``qam-lite book``, the site build, tests): :mod:`qam_lite.widgets` then leaves no live
widget in the saved outputs. The book tooling (:mod:`qam_lite.book`) sets both; the library's
modules read them here, so that nothing below the book tooling imports it.
"""

from __future__ import annotations

import os


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
