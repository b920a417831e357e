"""``qam-lite train <task> --agent qam-e|qam-f`` end to end on a tiny generated dataset."""

import numpy as np
import pytest

from qam_lite.cli import main
from qam_lite.training import logs

TASK = "cube-single-play-singletask-task1-v0"
TINY = [
    "actor_hidden=16,16",
    "critic_hidden=16,16",
    "num_critics=2",
    "flow_steps=3",
    "batch_size=16",
    "offline_steps=50",
    "updates_per_call=25",
    "log_interval=25",
    "eval_interval=50",
    "checkpoint_interval=50",
    "eval_episodes=1",
]
# cube-single takes cube-double's settings, where the authors switch both variants off (then the
# agent is plain QAM): switch them on to exercise the edit and the one-step policies.
VARIANTS = {
    "qam-e": ("edit_scale=0.1", ("edit_q_loss", "edit_entropy", "edit_temp", "am_loss")),
    "qam-f": ("alpha=30", ("distill_loss", "one_step_loss", "am_loss")),
}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    argv = ["generate", "cube-single-play-v0", "--episodes", "2", "--episode-length", "60"]
    assert main([*argv, "--workers", "1", "--dataset-dir", str(root), "--no-progress"]) == 0
    return root


@pytest.mark.parametrize("agent", sorted(VARIANTS))
def test_train_and_evaluate_a_variant(agent, data_dir, tmp_path, capsys):
    switch, columns = VARIANTS[agent]
    out = tmp_path / agent
    argv = ["train", TASK, "--agent", agent, "--dataset-dir", str(data_dir), "--out", str(out)]
    sets = [arg for item in [*TINY, switch] for arg in ("--set", item)]
    assert main([*argv, "--no-progress", *sets]) == 0, capsys.readouterr().err
    assert f"{agent} on {TASK}: success" in capsys.readouterr().out
    rows = logs.read_rows(out / "metrics.csv")
    assert [int(r["step"]) for r in rows] == [25, 50]
    for name in (*columns, "critic_loss", "bc_loss"):
        assert all(np.isfinite(float(r[name])) for r in rows), name
    assert main(["evaluate", str(out), "--episodes", "1"]) == 0
    assert "mean success" in capsys.readouterr().out
