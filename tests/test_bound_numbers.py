"""No measured number is typed into a chapter's prose: it is bound to the cell that measures it.

A number a cell measures appears in the prose as a MyST inline expression {eval}`expr`, which
``qam-lite book`` evaluates in the chapter's kernel (``test_book.py``'s quick-mode execution test
checks that every one has a stored value). This test reads the prose of each chapter, outside
code, math, roles and links, and fails on what looks like a typed measurement: a decimal number,
a percentage, a duration or size (``ms``, ``s``, ``min``, ``MiB``), or a ratio (``2.4x``,
``3 times``). Configuration constants and numbers quoted from the paper are allowed only through
the explicit list below, each with its reason.
"""

from __future__ import annotations

import re

import jupytext
import pytest

from qam_lite.book import chapters

CHECKED = chapters.chapters()

_NETS = "a network size (hidden layers x width) of a configuration, ours or the paper's"
_LEVEL = "the confidence level of an interval, not a measurement"
# (chapter stem, the exact text matched) -> why it is not a measurement.
ALLOWED: dict[tuple[str, str], str] = {
    **{("08_qam_ogbench", t): _NETS for t in ("2 x", "4 x")},
    **{("09_baselines_online", t): _NETS for t in ("2 x", "4 x")},
    **{("10_benchmark_table", t): _NETS for t in ("2 x", "4 x")},
    **{
        (c, "95 %"): _LEVEL for c in ("08_qam_ogbench", "09_baselines_online", "10_benchmark_table")
    },
    ("08_qam_ogbench", "100 %"): "the upper end of a success rate's range",
    ("09_baselines_online", "1.0"): "the global gradient-norm clip, a configuration constant",
    ("09_baselines_online", "10 times"): "the tau multipliers of our runs (0, 1 and 10 times it)",
    ("09_baselines_online", "0.1"): "a tau multiplier of the paper's sensitivity study",
    ("09_baselines_online", "0.3"): "a tau multiplier of the paper's sensitivity study",
    ("10_benchmark_table", "50 %"): "the success rate at which an interval's width is quoted",
    ("10_benchmark_table", "4.30"): "Student's t quantile t(0.975, 2), a constant",
    ("10_benchmark_table", "1.96"): "the normal quantile z(0.975), a constant",
}

_REMOVE = [
    re.compile(r"^(?P<f>`{3,}|~{3,}).*?^(?P=f)[ \t]*$", re.M | re.S),  # code blocks, directives
    re.compile(r"\$\$.*?\$\$", re.S),  # display math
    re.compile(r"(?<!\\)\$[^$\n]+?(?<!\\)\$"),  # inline math
    re.compile(r"(\{[\w:-]+\})?(`+).+?\2", re.S),  # inline code and roles ({eval}, {cite})
    re.compile(r"\]\([^)]*\)"),  # link targets
    re.compile(r"<!--.*?-->", re.S),  # comments
    re.compile(r"^\([\w:-]+\)=\s*$", re.M),  # MyST labels
]

_NUMBER = r"\d[\d,]*(?:\.\d+)?"
_MEASUREMENT = re.compile(
    rf"""
      \b\d+\.\d+\b                                          # any decimal: 0.417, 2.4
    | \b{_NUMBER}\s*(?:%|percent\b)                         # 74 %, 20-74 %
    | \b{_NUMBER}\s*(?:ms|s|sec|seconds?|min|minutes?|hours?|h|MiB|GiB|KiB|MB|GB)\b  # 113 s
    | \b{_NUMBER}\s*(?:x|×)(?![\w])                         # 2.4x, 3 x
    | \b{_NUMBER}\s+times\b                                 # 1.7 times wider
    """,
    re.X,
)


def prose(markdown: str) -> str:
    """A markdown cell's prose: code, math, roles (bound values included), links removed."""
    for pattern in _REMOVE:
        markdown = pattern.sub(" ", markdown)
    return markdown


def typed_numbers(md) -> list[str]:
    """Every match of :data:`_MEASUREMENT` in the prose of chapter ``md``, with its context."""
    found = []
    for cell in jupytext.read(md).cells:
        if cell.cell_type != "markdown":
            continue
        text = prose(cell.source)
        for match in _MEASUREMENT.finditer(text):
            if (md.stem, match[0]) in ALLOWED:
                continue
            context = " ".join(text[max(0, match.start() - 40) : match.end() + 20].split())
            found.append(f"{match[0]!r} in '...{context}...'")
    return found


def test_the_scanner_finds_typed_measurements_and_ignores_bound_ones():
    typed = "BPTT took 1.3x the time (169 s against 132 s), W1 0.422, 20-74 % apart, 3 times"
    assert [m[0] for m in _MEASUREMENT.finditer(prose(typed))] == [
        "1.3x",
        "169 s",
        "132 s",
        "0.422",
        "74 %",
        "3 times",
    ]
    bound = (
        "BPTT took {eval}`f'{ratio:.1f}'`x the time ({eval}`t_bp` s), at $T = 10$, "
        "$\\sigma = 0.5$, `x = 0.3`, see [the paper](https://arxiv.org/abs/2409.08861v2), "
        "3 seeds, chapter 5, T = 10 steps, batch 256.\n```python\nprint(0.5)\n```\n"
        "$$\nW_1 = 0.4\n$$"
    )
    assert _MEASUREMENT.findall(prose(bound)) == []


@pytest.mark.parametrize("md", CHECKED, ids=lambda p: p.stem)
def test_no_measured_number_is_typed_into_the_prose(md):
    found = typed_numbers(md)
    assert not found, (
        f"{md.name}: numbers typed into the prose; bind each to the cell that measures it "
        '({eval}`f"{value:.2f}"` in a markdown cell after that cell), or, for a configuration '
        "constant or a number quoted from the paper, add it to ALLOWED with its reason:\n  "
        + "\n  ".join(found)
    )


def test_two_books_recording_run_times_at_once_keep_both_entries(tmp_path, monkeypatch):
    # Each record is a read-modify-write of book/runtimes.json; two `qam-lite book --only`
    # runs at once must not lose one chapter's entry. The read is slowed so that, without the
    # lock, both threads read the file before either writes it.
    import threading
    import time

    monkeypatch.setattr(chapters, "BOOK_DIR", tmp_path)
    read = chapters.read_run_times

    def slow_read():
        times = read()
        time.sleep(0.3)
        return times

    monkeypatch.setattr(chapters, "read_run_times", slow_read)
    cpu = {"device": "cpu", "machine": "2-core CPU", "load": 1.0}
    threads = [
        threading.Thread(target=chapters.record_run_time, args=(stem, True, 12.3, cpu))
        for stem in ("01_flow_matching_1d", "02_memoryless_sde")
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    times = read()
    assert set(times) == {"01_flow_matching_1d", "02_memoryless_sde"}
    assert times["02_memoryless_sde"]["quick"]["cpu"] == {
        "seconds": 12,
        "machine": "2-core CPU",
        "load": 1.0,
    }
