"""The command line: one-line errors with exit code 2 for every bad input, and a tiny real run."""

import numpy as np
import pytest

from qam_lite.cli import main

TASK = "cube-single-play-singletask-task1-v0"
TINY = [
    "actor_hidden=16,16",
    "critic_hidden=16,16",
    "num_critics=2",
    "flow_steps=3",
    "batch_size=16",
    "offline_steps=100",
    "updates_per_call=50",
    "log_interval=50",
    "eval_interval=100",
    "checkpoint_interval=50",
    "eval_episodes=1",
]


def sets(items):
    return [arg for item in items for arg in ("--set", item)]


def run_error(capsys, argv):
    """Run ``qam-lite argv``; assert exit code 2 and a one-line error; return the message."""
    code = main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("qam-lite")]
    assert len(lines) == 1, err
    return lines[0]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """A tiny cube-single dataset made through the ``generate`` verb."""
    root = tmp_path_factory.mktemp("data")
    argv = [
        "generate",
        "cube-single-play-v0",
        "--episodes",
        "2",
        "--episode-length",
        "60",
        "--workers",
        "1",
        "--dataset-dir",
        str(root),
        "--no-progress",
    ]
    assert main(argv) == 0
    return root


def test_generate_wrote_files(data_dir):
    # Hidden files (generate's folder lock) aside, exactly the two dataset files.
    names = sorted(p.name for p in data_dir.iterdir() if not p.name.startswith("."))
    assert names == ["cube-single-play-v0-val.npz", "cube-single-play-v0.npz"]


def test_unknown_task_suggests_close_match(capsys):
    msg = run_error(capsys, ["train", "cube-dubble-play-singletask-task2-v0"])
    assert "unknown task" in msg and "cube-double-play-singletask-task2-v0" in msg


def test_negative_tau_names_accepted_range(capsys):
    msg = run_error(capsys, ["train", TASK, *sets(["tau=-1"])])
    assert "tau=-1.0 is invalid" in msg and ">= 0" in msg


def test_unknown_setting_and_bad_value(capsys):
    assert "did you mean 'tau'" in run_error(capsys, ["train", TASK, *sets(["tua=1"])])
    assert "gamma" in run_error(capsys, ["train", TASK, *sets(["gamma=1.5"])])
    assert "batch_size" in run_error(capsys, ["train", TASK, *sets(["batch_size=big"])])


def test_missing_dataset_says_how_to_generate(capsys, tmp_path):
    msg = run_error(capsys, ["train", TASK, "--dataset-dir", str(tmp_path)])
    assert "not found" in msg and "qam-lite generate cube-single-play-v0" in msg
    assert "--download" in msg


def test_corrupt_dataset_file(capsys, tmp_path):
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        (tmp_path / name).write_bytes(b"this is not a zip archive")
    msg = run_error(capsys, ["train", TASK, "--dataset-dir", str(tmp_path)])
    assert "cube-single-play-v0.npz" in msg and "readable" in msg


def test_wrong_shaped_dataset_file(capsys, tmp_path):
    n = 20
    arrays = dict(
        observations=np.zeros(n, np.float32),  # should be (n, 28)
        actions=np.zeros((n, 5), np.float32),
        terminals=np.zeros(n, np.float32),
        qpos=np.zeros((n, 16), np.float32),
        qvel=np.zeros((n, 15), np.float32),
    )
    for name in ("cube-single-play-v0.npz", "cube-single-play-v0-val.npz"):
        np.savez(tmp_path / name, **arrays)
    msg = run_error(capsys, ["train", TASK, "--dataset-dir", str(tmp_path)])
    assert "observations" in msg and "cube-single-play-v0.npz" in msg


def test_nan_loss_reports_step(capsys, data_dir, tmp_path, monkeypatch):
    import jax.numpy as jnp

    import qam_lite.agents as agents

    real = agents.make_agent

    def poisoned(config, obs_dim, action_dim):
        agent = real(config, obs_dim, action_dim)

        def update(state, batch, key):
            state, metrics = agent.update(state, batch, key)
            return state, {**metrics, "am_loss": jnp.where(state.step > 60, jnp.inf, 0.0)}

        return agent._replace(update=update)

    monkeypatch.setattr(agents, "make_agent", poisoned)
    argv = ["train", TASK, "--dataset-dir", str(data_dir), "--out", str(tmp_path), "--no-progress"]
    msg = run_error(capsys, [*argv, *sets(TINY)])
    assert "NaN/inf by step 100" in msg and "last good checkpoint is at step 50" in msg


def test_train_evaluate_and_refuse_other_config(capsys, data_dir, tmp_path):
    out = tmp_path / "run"
    argv = ["train", TASK, "--dataset-dir", str(data_dir), "--out", str(out)]
    assert main([*argv, *sets(TINY), "--stop-after", "50"]) == 0  # with a progress bar
    captured = capsys.readouterr()
    assert "50/100 steps" in captured.out and "resume with the same command" in captured.out
    assert "step/s" in captured.err or "it/s" in captured.err or "%" in captured.err  # tqdm
    argv.append("--no-progress")
    assert main([*argv, *sets(TINY)]) == 0  # same command: resumes
    stdout = capsys.readouterr().out
    assert f"resuming {out} from step 50" in stdout
    assert "qam on cube-single-play-singletask-task1-v0: success" in stdout
    assert "100/100 steps" in stdout
    assert (out / "curve.png").exists() and (out / "eval.csv").exists()

    assert main(["evaluate", str(out), "--episodes", "1"]) == 0
    assert "mean success" in capsys.readouterr().out

    msg = run_error(capsys, [*argv, *sets([*TINY, "tau=2"])])
    assert "different configuration" in msg and "tau" in msg


def test_evaluate_needs_a_run_folder(capsys, tmp_path):
    assert "is neither a run folder nor a policy file" in run_error(
        capsys, ["evaluate", str(tmp_path / "nope")]
    )
    assert "no checkpoint.npz" in run_error(capsys, ["evaluate", str(tmp_path)])


def test_generate_refuses_non_generable(capsys, tmp_path):
    argv = ["generate", "antmaze-large-navigate-v0", "--episodes", "1"]
    msg = run_error(capsys, [*argv, "--dataset-dir", str(tmp_path)])
    assert "cannot be generated locally" in msg


def test_settings_that_belong_elsewhere_get_sentences(capsys, tmp_path):
    base = ["train", TASK, "--dataset-dir", str(tmp_path)]
    msg = run_error(capsys, [*base, "--set", "task=cube-double-play-singletask-task1-v0"])
    assert "--set task" in msg and "qam-lite train TASK" in msg
    msg = run_error(capsys, [*base, "--set", "agent=bc"])
    assert "--set agent" in msg and "--agent" in msg
    msg = run_error(capsys, [*base, "--set", "learning_rate=1e-3"])
    assert "did you mean 'lr'" in msg


def test_negative_stop_after_is_rejected(capsys, tmp_path):
    with pytest.raises(SystemExit) as exit_:
        main(["train", TASK, "--stop-after", "-5"])
    assert exit_.value.code == 2
    assert "'-5' is invalid; accepted: an integer >= 0" in capsys.readouterr().err


def test_out_that_is_a_file_or_under_one(capsys, data_dir, tmp_path):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    base = ["train", TASK, "--dataset-dir", str(data_dir), "--no-progress", *sets(TINY)]
    assert "is a file" in run_error(capsys, [*base, "--out", str(a_file)])
    msg = run_error(capsys, [*base, "--out", str(a_file / "run")])
    assert "cannot create run folder" in msg


def test_disk_full_while_saving_is_a_sentence(capsys, data_dir, tmp_path, monkeypatch):
    import errno

    real = np.savez

    def full(f, **arrays):
        real(f, **arrays)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", full)
    argv = ["train", TASK, "--dataset-dir", str(data_dir), "--out", str(tmp_path), "--no-progress"]
    msg = run_error(capsys, [*argv, *sets(TINY)])
    assert "checkpoint.npz: no space left on the device" in msg
    assert "run the same command again" in msg
    assert not list(tmp_path.glob(".*.tmp")) and not (tmp_path / "checkpoint.npz").exists()


@pytest.mark.parametrize("verb", ["render", "probe", "gradstats"])
def test_analysis_verbs_have_help(capsys, verb):
    with pytest.raises(SystemExit) as exit_:
        main([verb, "--help"])
    assert exit_.value.code == 0
    assert f"usage: qam-lite {verb}" in capsys.readouterr().out


def test_analysis_verbs_report_bad_input_in_one_line(capsys, tmp_path):
    msg = run_error(capsys, ["render", str(tmp_path), "--out", str(tmp_path / "frames")])
    assert msg.startswith("qam-lite render: error:") and "no checkpoint.npz" in msg
    msg = run_error(capsys, ["probe", str(tmp_path), "--out", str(tmp_path / "p.npz")])
    assert msg.startswith("qam-lite probe: error:") and "is a folder; accepted: a policy" in msg
    msg = run_error(capsys, ["gradstats", "--task", TASK, "--agents", "fql"])
    assert msg.startswith("qam-lite gradstats: error:") and "accepted: some of qam, bam" in msg
    msg = run_error(capsys, ["gradstats", "--task", TASK, "--set", "tua=1"])
    assert "did you mean 'tau'" in msg
    out = tmp_path / "gradstats"
    argv = ["gradstats", "--task", TASK, "--dataset-dir", str(tmp_path), "--out", str(out)]
    msg = run_error(capsys, argv)
    assert "not found" in msg and "qam-lite generate cube-single-play-v0" in msg
    assert not out.exists()  # the data are checked before anything is written


def test_an_output_folder_that_cannot_be_one_is_said_before_any_work(
    capsys, data_dir, tmp_path, monkeypatch
):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("x")
    said = f"{a_file} is a file, not a folder; accepted: a folder path"
    assert said in run_error(capsys, ["book", "--out", str(a_file / "book"), "--only", "01"])
    spec = ["sweep", "--tasks", TASK, "--agents", "bc", "--out", str(a_file / "runs")]
    spec += ["--dataset-dir", str(data_dir)]
    assert said in run_error(capsys, [*spec, "--set", "offline_steps=10"])
    assert said in run_error(capsys, ["probe", str(tmp_path), "--out", str(a_file / "p.npz")])
    monkeypatch.setenv("MUJOCO_GL", "bogus")
    msg = run_error(capsys, ["render", str(tmp_path), "--out", str(tmp_path / "frames")])
    assert "MUJOCO_GL='bogus' is invalid; accepted: egl, osmesa, glfw" in msg


def test_probe_accepts_the_download_its_messages_suggest():
    from qam_lite.cli import build_parser

    args = build_parser().parse_args(["probe", "run", "--out", "p.npz", "--download"])
    assert args.download is True
