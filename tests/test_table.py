"""``qam-lite table``: fixture run folders against the packaged paper numbers."""

import csv
import io
import json

import pytest

from qam_lite.cli import main
from qam_lite.experiments import formats, ours, paper, stats

PAPER_NET = {"actor_hidden": [512] * 4, "critic_hidden": [512] * 4, "batch_size": 256}
SMALL_NET = {"actor_hidden": [128] * 2, "critic_hidden": [128] * 2, "batch_size": 128}
OFFICIAL = {"source": "official", "path": "/data/cube-double-play-v0.npz"}
GENERATED = {"generator": "qam_lite.data.generate", "episodes": 300}


def write_run(folder, task, agent, rows, net=PAPER_NET, data=OFFICIAL, episodes=50):
    """A run folder as `qam-lite train` writes it; rows = [(step, seed, success_rate)]."""
    folder.mkdir(parents=True)
    config = {"task": task, "agent": agent, "num_critics": 10, "flow_steps": 10}
    config |= net | {"eval_episodes": episodes}
    (folder / "config.json").write_text(json.dumps(config))
    prov = {"task": task, "agent": agent, "data": data, "transitions": 1_000_000}
    (folder / "provenance.json").write_text(json.dumps(prov))
    lines = ["step,seed,phase,success_rate,episode_return,episode_length,episodes"]
    lines += [f"{s},{seed},offline,{r},-1,100,{episodes}" for s, seed, r in rows]
    (folder / "eval.csv").write_text("\n".join(lines) + "\n")


T1 = "cube-double-play-singletask-task1-v0"
T2 = "cube-double-play-singletask-task2-v0"


@pytest.fixture
def runs_dir(tmp_path):
    root = tmp_path / "runs"
    # QAM task 1: two seeds vmapped in one folder, paper sizes, official data.
    write_run(
        root / T1 / "qam",
        T1,
        "qam",
        [(30000, 0, 0.1), (50000, 0, 0.5), (50000, 1, 0.7), (100000, 0, 0.6), (100000, 1, 0.8)],
    )
    # QAM task 2: one seed per folder, reduced networks, generated data, 10 episodes.
    write_run(root / "t2s0", T2, "qam", [(50000, 0, 0.2)], SMALL_NET, GENERATED, episodes=10)
    write_run(root / "t2s1", T2, "qam", [(50000, 1, 0.4)], SMALL_NET, GENERATED, episodes=10)
    # FQL task 1: the same seed in two folders counts once (the first folder's value).
    write_run(root / "fql-a", T1, "fql", [(50000, 0, 0.3)])
    write_run(root / "fql-b", T1, "fql", [(50000, 0, 0.9)])
    # BC on a task outside the paper; puzzle-4x4 on standard data.
    write_run(root / "bc", "cube-single-play-singletask-task1-v0", "bc", [(50000, 0, 0.5)])
    write_run(root / "p44", "puzzle-4x4-play-singletask-task1-v0", "qam", [(50000, 0, 0.0)])
    # Scene on generated data smaller than the published size (the data record says so).
    small = GENERATED | {"source": "generated", "paper_comparable": False}
    write_run(
        root / "scene", "scene-play-singletask-task1-v0", "fql", [(50000, 0, 0.1)], data=small
    )
    return root


def test_ci95_and_the_packaged_paper_numbers():
    mean, half = stats.ci95([10.0, 20.0])
    assert mean == 15.0 and half == pytest.approx(12.706 * 7.0710678 / 1.4142136, rel=1e-6)
    assert stats.ci95([3.0]) == (3.0, None)
    # The paper's headline: QAM 44.4 after 1M offline steps over all 50 tasks, 12 seeds.
    mean, half, n = paper.paper_cell("all", "qam", 1_000_000)
    assert n == 12 and mean == pytest.approx(44.39, abs=0.01) and 0 < half < 5
    assert paper.paper_cell("all", "bc", 1_000_000) is None  # BC is not in the paper
    assert paper.paper_cell(T1, "qam", 30_000) is None  # the paper reports every 50K
    rows = paper.paper_rows()
    assert len({m for _, m, _ in rows}) == 17 and len({k for k, _, _ in rows}) == 61


def test_layout_aggregates_marks_and_common_steps(runs_dir):
    runs = ours.find_runs([runs_dir])
    assert len(runs) == 8
    cells = ours.build(runs)  # default: steps both sides have
    by = {(c.level, c.key, c.agent, c.step): c for c in cells}
    assert (("task", T1, "qam", 30000)) not in by  # the paper has no 30K
    t1 = by["task", T1, "qam", 50000]
    assert t1.mean == pytest.approx(60.0) and t1.seeds == 2 and t1.marks == set()
    assert t1.ci == pytest.approx(12.706 * 14.142136 / 1.4142136, rel=1e-5)
    assert t1.paper[2] == 12
    t2 = by["task", T2, "qam", 50000]
    assert t2.mean == pytest.approx(30.0) and t2.seeds == 2 and t2.marks == {"g", "r", "e"}
    # The domain: mean of its tasks, CI over the seeds both tasks have, marked partial (2 of 5).
    dom = by["domain", "cube-double-play", "qam", 50000]
    assert dom.mean == pytest.approx(45.0) and dom.seeds == 2
    assert dom.ci == pytest.approx(stats.ci95([(50 + 20) / 2, (70 + 40) / 2])[1])
    assert dom.marks == {"g", "r", "e", "p"}
    assert by["all", "all", "qam", 50000].marks >= {"p", "s"}  # puzzle-4x4 on standard data
    assert by["task", "puzzle-4x4-play-singletask-task1-v0", "qam", 50000].marks == {"s"}
    assert by["task", "scene-play-singletask-task1-v0", "fql", 50000].marks == {"g", "n"}
    # Only QAM task 1 has 100K: the domain row there averages one task.
    assert by["domain", "cube-double-play", "qam", 100000].mean == pytest.approx(70.0)
    fql = by["task", T1, "fql", 50000]
    assert fql.mean == pytest.approx(30.0) and fql.seeds == 1 and fql.ci is None
    # Paper numbers sit beside ours at the same step, from the packaged data.
    assert fql.paper[0] == pytest.approx(stats.ci95(paper.paper_rows()[T1, "FQL", 50000])[0])
    # BC on cube-single: no paper number, so no common step.
    assert not any(c.agent == "bc" for c in cells)
    own_steps = ours.build(runs, "ours")
    assert any(c.agent == "bc" and c.paper is None for c in own_steps)
    assert {c.step for c in own_steps if c.key == T1 and c.agent == "qam"} == {30000, 50000, 100000}
    assert {c.step for c in ours.build(runs, [100000])} == {100000}


def test_markdown_csv_latex_outputs(runs_dir):
    cells = ours.build(ours.find_runs([runs_dir]))
    md = formats.to_markdown(cells)
    assert "| task | cube-double-play-singletask-task1-v0 | qam | 50K | 60.0 ± 127.1 | 2 |" in md
    assert "g = locally generated data" in md and "s = standard-size data" in md
    rows = list(csv.DictReader(io.StringIO(formats.to_csv(cells))))
    row = next(r for r in rows if r["key"] == T2 and r["step"] == "50000")
    assert row["mean"] == "30.0" and row["marks"] == "egr" and row["paper_method"] == "QAM"
    assert row["paper_seeds"] == "12"
    tex = formats.to_latex(cells)
    assert tex.startswith(r"\begin{tabular}") and r"\end{tabular}" in tex
    assert r"30.0 $\pm$ 127.1$^{egr}$" in tex and r"\textbf{cube-double-play}" in tex


def test_cli_writes_files_and_figures(runs_dir, tmp_path, capsys):
    out = tmp_path / "table"
    argv = ["table", str(runs_dir), "--format", "md", "csv", "tex", "--out", str(out)]
    assert main([*argv, "--figures", "--logx"]) == 0
    for name in ("table.md", "table.csv", "table.tex"):
        assert (out / name).stat().st_size > 0
    figures = sorted(p.name for p in (out / "curves").glob("*.png"))
    assert figures == sorted(
        [f"{T1}.png", f"{T2}.png", "cube-single-play-singletask-task1-v0.png"]
        + ["puzzle-4x4-play-singletask-task1-v0.png", "scene-play-singletask-task1-v0.png"]
    )
    assert main(["table", str(runs_dir), "--steps", "30000"]) == 0
    assert "| 30K | 10.0 |" in capsys.readouterr().out


def test_bad_input(tmp_path, runs_dir, capsys):
    assert main(["table", str(tmp_path / "none")]) == 2
    assert "does not exist" in capsys.readouterr().err
    (tmp_path / "empty").mkdir()
    assert main(["table", str(tmp_path / "empty")]) == 2
    assert "no run folders" in capsys.readouterr().err
    assert main(["table", str(runs_dir), "--format", "html"]) == 2
    assert "accepted: md, csv, tex" in capsys.readouterr().err
    assert main(["table", str(runs_dir), "--steps", "late"]) == 2
    assert "accepted: 'common', 'ours'" in capsys.readouterr().err
    assert main(["table", str(runs_dir), "--steps", "12345"]) == 0
    assert "no cell at the chosen steps (12345)" in capsys.readouterr().out


def test_the_papers_own_table_and_curves():
    t = paper.paper_table(1_000_000)
    assert list(t)[-1] == "all" and len(t) == 11  # 10 domains, then all
    assert t["all"]["QAM"][0] == pytest.approx(44.39, abs=0.01) and "RLPD" not in t["all"]
    assert len(paper.paper_table(1_500_000)["all"]) == 17  # RLPD is online only
    md = paper.paper_table_markdown(1_000_000)
    assert "| RLPD |" not in md and "No number at this step: RLPD." in md
    assert "| QAM | " in md and "**45.7**" in md and "| puzzle-3x3 |" in md
    with pytest.raises(paper.TableError, match="no step 1234"):
        paper.paper_table(1234)
    with pytest.raises(paper.TableError, match="unknown method"):
        paper.paper_table(methods=["QAM", "SAC"])
    steps, means, ci = paper.paper_curve("scene-play", "QAM")
    assert steps[0] == 50_000 and steps[-1] == 1_500_000 and len(steps) == 30
    _, _, sem = paper.paper_curve("scene-play", "QAM", band="sem")
    assert all(0 <= e <= c for e, c in zip(sem, ci, strict=True))
    # The paper over a subset of tasks: over a whole domain, its mean is the released row's.
    scene = [f"scene-play-singletask-task{i}-v0" for i in range(1, 6)]
    assert paper.paper_over(scene, "qam", 1_000_000)[0] == pytest.approx(
        paper.paper_cell("scene-play", "qam", 1_000_000)[0]
    )
    assert paper.paper_over(scene[:1], "bc", 1_000_000) is None
    fig = paper.plot_paper_curves(["scene-play", "all"], ["QAM", "FQL"], ncols=2)
    assert sum(ax.get_visible() for ax in fig.axes) == 2


def test_difference_and_wide_table(runs_dir, capsys):
    diff, half = stats.difference([1.0, 2.0, 3.0], [2.0, 4.0, 6.0, 8.0])
    # Welch's df = 4.14 -> 4 (rounded down): t = 2.776, se = sqrt(1/3 + 20/12)
    assert diff == -3.0 and half == pytest.approx(2.776 * (1 / 3 + 20 / 12) ** 0.5)
    assert stats.difference([1.0], [2.0, 3.0]) == (-1.5, None)
    cells = ours.build(ours.find_runs([runs_dir]), "ours")
    t1 = next(c for c in cells if c.key == T1 and c.agent == "qam" and c.step == 50000)
    assert t1.per_seed == {0: 50.0, 1: 70.0} and t1.tasks == (T1,)
    dom = next(c for c in cells if c.level == "domain" and c.agent == "qam" and c.step == 50000)
    # A partial domain row is compared with the paper over the same tasks (2 of 5).
    assert dom.paper == paper.paper_over([T1, T2], "qam", 50000)
    assert dom.paper[0] != pytest.approx(paper.paper_cell("cube-double-play", "qam", 50000)[0])
    wide = formats.to_wide_markdown(cells, step=50000, paper_steps=[1_000_000])
    head = wide.splitlines()[0]
    assert head.startswith("| task / domain | qam (ours, 50K) | fql (ours, 50K, 1 seed) |")
    assert "QAM (paper, 1M)" in head and "FQL (paper, 1M)" in head
    assert f"| {T1} | 60.0 ± 127.1 (n=2) |" in wide
    assert main(["table", "--paper", "1.5e6"]) == 0
    assert "| RLPD |" in capsys.readouterr().out
    assert main(["table", str(runs_dir), "--steps", "ours", "--format", "wide"]) == 0
    assert "(paper, 50K)" in capsys.readouterr().out
    assert main(["table"]) == 2
    assert "--paper STEP" in capsys.readouterr().err


def test_ranking_compares_agents_at_a_shared_step(tmp_path, capsys):
    root = tmp_path / "runs"
    # QAM has a later evaluation than BC: the ranking uses the last step both have (20K).
    qam = [(20000, s, v) for s, v in enumerate((0.6, 0.7, 0.8))] + [(30000, 0, 0.0)]
    write_run(root / "qam", T1, "qam", qam)
    write_run(root / "bc", T1, "bc", [(20000, s, v) for s, v in enumerate((0.1, 0.2, 0.3))])
    write_run(root / "fql", T1, "fql", [(20000, s, v) for s, v in enumerate((0.5, 0.9, 0.7))])
    write_run(root / "one", T2, "qam", [(20000, 0, 0.5)])
    write_run(root / "one-bc", T2, "bc", [(20000, 0, 0.1)])
    cells = ours.build(ours.find_runs([root]), "ours")
    ranks = formats.ranking(cells, "qam")
    # Equal spread on both sides: Welch's df = 4, t = 2.776, se = sqrt(2 * 100 / 3) points.
    d, h, v = ranks["task", T1]["bc"]
    assert d == pytest.approx(50.0) and h == pytest.approx(2.776 * (200 / 3) ** 0.5)
    assert v == "above"
    assert ranks["task", T1]["fql"][2] == "not separated"
    assert ranks["task", T2]["bc"] == (pytest.approx(40.0), None, "one seed")
    assert formats.verdict(-5.0, 1.0) == "below"
    assert formats.ranking(cells, "qam", step=10000) == {}
    md = formats.ranking_markdown(cells, "qam", ["fql", "bc"])
    assert md.splitlines()[0] == "| task / domain | qam - fql | qam - bc |"
    assert f"| {T1} | +0.0 ± " in md and "(above)" in md
    assert main(["table", str(root), "--steps", "ours", "--vs", "qam"]) == 0
    assert "| task / domain | qam - bc | qam - fql |" in capsys.readouterr().out
    assert main(["table", str(root), "--steps", "ours", "--vs", "bam"]) == 2
    assert "--vs bam: no runs of that agent; accepted: bc, fql, qam" in capsys.readouterr().err


def test_a_damaged_folder_is_left_out_with_a_line_and_torn_rows_are_skipped(runs_dir, capsys):
    (runs_dir / "bc" / "config.json").write_text('{"task": "cube-single')  # cut mid-write
    write_run(runs_dir / "junk", T2, "fql", [(50000, 0, "lots")])  # a value that is no number
    write_run(runs_dir / "nowhere", "cube-sextuple-play-singletask-task1-v0", "qam", [])
    torn = runs_dir / T1 / "qam" / "eval.csv"
    torn.write_text(torn.read_text() + "150000,0,off")  # a row cut by a crash
    runs = ours.find_runs([runs_dir])
    err = capsys.readouterr().err
    assert {r.path.name for r in runs} == {"qam", "t2s0", "t2s1", "fql-a", "fql-b", "p44", "scene"}
    assert f"{runs_dir / 'bc' / 'config.json'}: not a readable JSON record" in err
    assert f"{runs_dir / 'junk' / 'eval.csv'}: a row that is not" in err
    assert f"{runs_dir / 'nowhere' / 'config.json'}: " in err and "unknown" in err
    assert max(next(r for r in runs if r.path.name == "qam").success) == 100000
    assert main(["table", str(runs_dir)]) == 0  # the table of the rest


def test_runs_of_two_configurations_are_not_pooled(tmp_path, capsys):
    write_run(tmp_path / "tau1", T1, "qam", [(50000, 0, 0.5)])
    write_run(tmp_path / "tau10", T1, "qam", [(50000, 1, 0.1)])
    config = json.loads((tmp_path / "tau10" / "config.json").read_text())
    (tmp_path / "tau10" / "config.json").write_text(json.dumps(config | {"tau": 10.0}))
    with pytest.raises(paper.TableError, match=r"runs of qam on .* differ in tau = None in"):
        ours.build(ours.find_runs([tmp_path]))
    assert main(["table", str(tmp_path)]) == 2
    assert "differ in tau" in capsys.readouterr().err
    # Seeds and the schedule's length may differ: those runs pool.
    config = json.loads((tmp_path / "tau1" / "config.json").read_text())
    (tmp_path / "tau10" / "config.json").write_text(json.dumps(config | {"offline_steps": 9}))
    assert len(ours.build(ours.find_runs([tmp_path]))) > 0
