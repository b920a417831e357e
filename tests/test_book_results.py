"""The Part II chapters' shared helper: which results folder, and the stop when one is missing."""

import sys
from pathlib import Path

import pytest

from qam_lite.book import require, results_folder
from qam_lite.book import results as book_results

ROOT = Path(__file__).resolve().parents[1]


def test_results_folder_order(tmp_path, monkeypatch):
    monkeypatch.setenv("QAM_LITE_RESULTS", str(tmp_path / "mine"))
    assert results_folder() == tmp_path / "mine"  # the variable first, even if not made yet
    monkeypatch.delenv("QAM_LITE_RESULTS")
    monkeypatch.chdir(ROOT / "book")  # where `qam-lite book` runs a chapter
    assert results_folder() == ROOT / "results"
    monkeypatch.chdir(tmp_path)  # elsewhere: the checkout this package was installed from
    assert results_folder() == ROOT / "results"


def test_no_results_folder_says_what_to_do(tmp_path, monkeypatch):
    monkeypatch.delenv("QAM_LITE_RESULTS", raising=False)
    monkeypatch.chdir(tmp_path)
    fake = tmp_path / "site-packages" / "qam_lite" / "book" / "results.py"
    monkeypatch.setattr(book_results, "__file__", str(fake))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    with pytest.raises(FileNotFoundError, match="set QAM_LITE_RESULTS"):
        results_folder()


def test_require_names_the_command(tmp_path):
    assert require(tmp_path, "never") == tmp_path
    with pytest.raises(FileNotFoundError, match="missing.*Make it with:\nqam-lite sweep x"):
        require(tmp_path / "absent.csv", "qam-lite sweep x")
