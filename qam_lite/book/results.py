"""What the Part II chapters (8-10) share: the committed results they read, and quiet MuJoCo.

A chapter calls :func:`results_folder` once and :func:`require` for each file it reads, so a
missing result stops the chapter with the command that makes it (no number is ever made up),
and :func:`quiet_headless_warnings` once before it evaluates or renders.
"""

from __future__ import annotations

import os
import subprocess
import sys
import warnings
from pathlib import Path

from qam_lite.book.chapters import BRANCH, REPOSITORY

#: Environment variable pointing the chapters at another results folder (e.g. your own runs).
RESULTS_ENV = "QAM_LITE_RESULTS"

#: Where Colab gets the committed results: a shallow clone of the repository.
COLAB_CLONE = Path("/content/qam-lite")


def results_folder() -> Path:
    """The results the chapters read: ``$QAM_LITE_RESULTS`` if set, else the repository's
    ``results/`` (a source checkout, from ``book/`` or the root), else in Colab a shallow clone of
    the repository (the only network use, and only there: an installed package has no results).
    """
    if os.environ.get(RESULTS_ENV):
        return Path(os.environ[RESULTS_ENV]).expanduser()
    here = Path.cwd()
    for root in (here.parent if here.name == "book" else here, Path(__file__).resolve().parents[2]):
        if (root / "results").is_dir():
            return root / "results"
    if "google.colab" in sys.modules:
        if not (COLAB_CLONE / "results").is_dir():
            url = f"https://github.com/{REPOSITORY}"
            cmd = ["git", "clone", "-q", "--depth", "1", "--branch", BRANCH, url, str(COLAB_CLONE)]
            subprocess.run(cmd, check=True)
        return COLAB_CLONE / "results"
    raise FileNotFoundError(
        "no results folder: run the chapter from a clone of the repository (its results/ "
        f"holds the committed runs), or set {RESULTS_ENV} to a folder of your own runs"
    )


def require(path: str | Path, made_by: str) -> Path:
    """``path`` if it exists; otherwise stop with the command that makes it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(
            f"{path} is missing: this chapter reads committed results. Make it with:\n{made_by}"
        )
    return path


def quiet_headless_warnings() -> None:
    """Silence the two harmless warnings of MuJoCo on a machine without a display.

    MuJoCo's GLFW binding warns that there is no ``DISPLAY`` and gymnasium that OGBench's
    float64 action bounds are cast to float32. ``PYTHONWARNINGS`` carries the filter to the
    evaluation's worker processes, which start with Python's default filters.
    """
    warnings.filterwarnings("ignore", module="glfw")
    warnings.filterwarnings("ignore", message=".*precision lowered")
    os.environ["PYTHONWARNINGS"] = "ignore"


__all__ = ["RESULTS_ENV", "quiet_headless_warnings", "require", "results_folder"]
