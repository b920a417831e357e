"""The ladder's cost axis: benchmarks/cpu_trace.py samples it, experiments.ladder reads it."""

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest

from qam_lite.experiments.ladder import cpu_hours_at

PATH = Path(__file__).resolve().parent.parent / "benchmarks" / "cpu_trace.py"
spec = importlib.util.spec_from_file_location("cpu_trace", PATH)
cpu_trace = importlib.util.module_from_spec(spec)
spec.loader.exec_module(cpu_trace)


def _write(path: Path, rows):
    lines = [",".join(cpu_trace.FIELDS)]
    lines += [f"t,{pid},{cpu},0,0,{step}" for pid, cpu, step in rows]
    path.write_text("\n".join(lines) + "\n")


def test_cost_at_a_step_adds_the_segments_of_a_resumed_run(tmp_path):
    # Process 1 trained to step 1000 in 3600 CPU s; process 2 (resumed) restarts its clock at 0.
    path = tmp_path / "cpu_trace.csv"
    _write(path, [(1, 10, 0), (1, 1800, 500), (1, 3600, 1000), (2, 5, 1000), (2, 1800, 1500)])
    assert cpu_hours_at(path, [500, 1000, 1500]) == [0.5, 1.0, 1.5]
    with pytest.raises(ValueError, match="step 2000 is not in"):
        cpu_hours_at(path, [2000])


def test_tree_usage_counts_a_busy_child(tmp_path):
    child = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        first = cpu_trace.tree_usage(os.getpid())
        subprocess.run([sys.executable, "-c", "import time; time.sleep(1.0)"], check=True)
        second = cpu_trace.tree_usage(os.getpid())
    finally:
        child.kill()
        child.wait()
    assert first is not None and second is not None
    assert second[0] > first[0]  # the child's CPU seconds count
    assert second[1] >= second[2] > 0  # summed memory >= the largest process's
    assert cpu_trace.tree_usage(child.pid) is None  # ended: the tracer stops


def _rung(root: Path, agent: str, eval_rows, trace_rows):
    run = root / "d1000-2x256-b256" / agent
    run.mkdir(parents=True)
    task = "scene-play-singletask-task1-v0"
    (run / "config.json").write_text(f'{{"task": "{task}", "agent": "{agent}"}}')
    lines = ["step,seed,phase,success_rate,episode_return,episode_length,episodes"]
    lines += [f"{step},0,offline,{rate},-1,750,50" for step, rate in eval_rows]
    (run / "eval.csv").write_text("\n".join(lines) + "\n")
    _write(run / "cpu_trace.csv", trace_rows)


def test_a_rung_reads_its_success_and_cost_and_plots_beside_the_paper(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from qam_lite.experiments.ladder import plot_ladder, rungs

    _rung(tmp_path, "qam", [(10, 0.0), (20, 0.5)], [(7, 0, 0), (7, 1800, 10), (7, 7200, 20)])
    _rung(tmp_path, "fql", [(10, 0.1), (20, 0.2)], [(8, 900, 10), (8, 1800, 20)])
    found = rungs(tmp_path)
    assert [(r.agent, r.steps) for r in found] == [("fql", [10, 20]), ("qam", [10, 20])]
    qam = found[1]
    assert qam.success == [[0.0], [50.0]] and qam.cpu_hours == [0.5, 2.0]
    ax = plot_ladder(found)
    assert len(ax.lines) == 2 + 2  # a line per rung and agent, the paper's 50K per agent
    assert [line.get_ydata()[1] for line in ax.lines[:2]] == [20.0, 50.0]
