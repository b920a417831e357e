"""End-to-end training on a tiny locally generated dataset: run folder, warm-up, seeds online,
exact resume after every kind of stop, and the run folder's refusals."""

import json
import os
import signal

import jax
import numpy as np
import pytest

from qam_lite.training import checkpoint as ckpt
from qam_lite.training import logs, rundir
from qam_lite.training.rundir import CHECKPOINT, RunFolderError, RunMismatch, load_run
from qam_lite.training.session import TrainingDiverged, call_size
from qam_lite.training.settings import make_config
from qam_lite.training.train import summary_line, train

TASK = "cube-single-play-singletask-task1-v0"  # 200-step episodes: online episodes are short
FILES = ("metrics.csv", "eval.csv", "curve.png")


@pytest.fixture(scope="module", autouse=True)
def compile_once(tmp_path_factory):
    """Every ``train`` call builds fresh jitted closures; JAX's persistent compilation cache
    lets the identical programs of this module's many runs compile once (numbers unchanged)."""
    from jax.experimental.compilation_cache import compilation_cache as cc

    before = (
        jax.config.jax_compilation_cache_dir,
        jax.config.jax_persistent_cache_min_compile_time_secs,
    )
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    cc.reset_cache()
    yield
    jax.config.update("jax_compilation_cache_dir", before[0])
    jax.config.update("jax_persistent_cache_min_compile_time_secs", before[1])
    cc.reset_cache()


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from qam_lite.data.generate import generate

    root = tmp_path_factory.mktemp("data")
    generate("cube-single-play-v0", 4, root, seed=0, workers=1, episode_length=101, progress=False)
    return root


SETTINGS = dict(
    actor_hidden=(16, 16),
    critic_hidden=(16, 16),
    num_critics=2,
    flow_steps=3,
    batch_size=16,
    offline_steps=200,
    online_steps=300,
    start_training=30,
    online_buffer_size=120,  # 300 online steps wrap the ring twice
    num_seeds=2,
    eval_interval=200,
    eval_episodes=1,
    updates_per_call=50,
    log_interval=50,
    checkpoint_interval=100,
)


def tiny(data_dir, **overrides):
    return make_config(TASK, "qam", **{**SETTINGS, "dataset_dir": str(data_dir), **overrides})


def short(data_dir, **overrides):
    """Offline only, one call: for the folder-handling tests."""
    settings = dict(offline_steps=50, online_steps=0, eval_interval=50, checkpoint_interval=50)
    return tiny(data_dir, **{**settings, **overrides})


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
    """One uninterrupted run: 200 offline updates, then 300 online steps of two seeds."""
    out = tmp_path_factory.mktemp("full")
    return tiny(data_dir), out, train(tiny(data_dir), out, progress=False)


def test_run_folder_contents(full_run):
    config, out, summary = full_run
    assert summary["step"] == 500 and not summary["interrupted"]
    assert summary["eval_step"] == 500 and len(summary["success_per_seed"]) == 2
    for name in (*FILES, "config.json", "provenance.json", "summary.json"):
        assert (out / name).stat().st_size > 0, name
    evals = logs.read_rows(out / "eval.csv")
    assert [(int(r["step"]), r["seed"]) for r in evals] == [
        (s, seed) for s in (200, 400, 500) for seed in ("0", "1")
    ]
    assert [r["phase"] for r in evals[::2]] == ["offline", "online", "online"]
    metrics = logs.read_rows(out / "metrics.csv")
    steps = sorted({int(r["step"]) for r in metrics})
    # Offline every 50 updates; online from the warm-up's end (env step 30 = step 230) on.
    assert steps == [50, 100, 150, 200, 250, 300, 350, 400, 450, 500]
    assert {r["seed"] for r in metrics if r["step"] == "250"} == {"0", "1"}
    online = [r for r in metrics if r["phase"] == "online"]
    assert online[0]["critic_loss"] != online[1]["critic_loss"]  # the seeds differ online too
    for row in metrics:
        for key in ("critic_loss", "bc_loss", "q_mean"):
            assert np.isfinite(float(row[key])), (key, row)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seeds"] == [0, 1] and prov["data"]["generator"] == "qam_lite.data.generate"
    assert len(prov["data_fingerprint"]["sha256"]) == 64
    meta = ckpt.read_meta(out / CHECKPOINT)
    assert meta["step"] == 500 and meta["phase"] == "done"
    assert meta["online"] == {"env_steps": 300}
    extras = ckpt.load_extras(out / CHECKPOINT)
    assert extras["ring_observations"].shape[:2] == (2, 120)  # full: the ring wrapped
    assert "500/500" in summary_line(summary)
    assert not list(out.glob(".*.tmp"))


def test_warm_up_makes_no_update(data_dir, tmp_path):
    """Until env step start_training no update runs: the online states equal the offline ones."""
    config = short(data_dir, online_steps=20, start_training=21)
    train(config.replace(online_steps=0), tmp_path / "off", progress=False)
    train(config, tmp_path / "on", progress=False)
    off, on = load_run(tmp_path / "off"), load_run(tmp_path / "on")
    assert on.step == 70 and on.phase == "done"
    for a, b in zip(jax.tree.leaves(off.states), jax.tree.leaves(on.states), strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert not [
        r for r in logs.read_rows(tmp_path / "on" / "metrics.csv") if r["phase"] == "online"
    ]


@pytest.mark.slow
def test_every_kind_of_stop_resumes_to_identical_files(full_run, tmp_path, monkeypatch):
    """A Ctrl-C landing in the first call's device_get (graceful), stop_after offline, a hard
    interrupt at an evaluation, stop_after mid-episode online, a hard interrupt mid-episode
    after the ring wrapped, a torn CSV row and a stale temporary file: the final files equal
    the uninterrupted run's, byte for byte."""
    import qam_lite.data.replay as rp
    import qam_lite.training.evaluate as ev

    config, full, _ = full_run
    out = tmp_path / "resumed"

    # Ctrl-C while the very first call hands its metrics back (the case: after
    # `step += n`, before the logs): the call's rows are written, a checkpoint is saved at its
    # step, train returns.
    real_get = jax.device_get
    calls = []

    def get_with_sigint(x):
        calls.append(1)
        if len(calls) == 1:
            os.kill(os.getpid(), signal.SIGINT)
        return real_get(x)

    monkeypatch.setattr(jax, "device_get", get_with_sigint)
    first = train(config, out, progress=False)
    monkeypatch.setattr(jax, "device_get", real_get)
    assert first["interrupted"] and first["stopped_by"] == "signal" and first["step"] == 50
    assert ckpt.read_meta(out / CHECKPOINT)["step"] == 50
    assert [r["step"] for r in logs.read_rows(out / "metrics.csv")] == ["50", "50"]

    second = train(config, out, progress=False, stop_after=100)
    assert second["interrupted"] and second["stopped_by"] == "stop_after"
    assert ckpt.read_meta(out / CHECKPOINT)["step"] == 100

    # A hard interrupt (a second Ctrl-C) in step 200's evaluation: its metrics rows are already
    # written, no checkpoint follows; the resume cuts them back to step 100.
    real_eval = ev.evaluate

    def eval_interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(ev, "evaluate", eval_interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=False)
    monkeypatch.setattr(ev, "evaluate", real_eval)
    assert ckpt.read_meta(out / CHECKPOINT)["step"] == 100

    third = train(config, out, progress=False, stop_after=260)  # online, mid-episode
    assert third["step"] == 260 and ckpt.read_meta(out / CHECKPOINT)["online"]["env_steps"] == 60

    # A hard interrupt at step 350 (env step 150: the ring of 120 has wrapped, the first
    # episode is running): the resume goes back to step 300 and replays 100 actions per seed.
    real_add = rp.add
    adds = []

    def add_interrupted(*args):
        adds.append(1)
        if len(adds) == 90:
            raise KeyboardInterrupt
        return real_add(*args)

    monkeypatch.setattr(rp, "add", add_interrupted)
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=False)
    monkeypatch.setattr(rp, "add", real_add)
    meta = ckpt.read_meta(out / CHECKPOINT)
    assert meta["step"] == 300 and meta["online"]["env_steps"] == 100
    assert list(ckpt.load_extras(out / CHECKPOINT)["seed_episode_lengths"]) == [100, 100]

    # What a kill can leave: a torn last row and a temporary file of an unfinished write.
    with open(out / "eval.csv", "ab") as f:
        f.write(b"400,0,onl")
    (out / ".checkpoint.npz.abc123.tmp").write_bytes(b"partial")
    assert len(logs.read_rows(out / "eval.csv")) == 2  # the torn row is not read
    logs.plot_curve(out / "eval.csv", tmp_path / "curve.png")  # and does not break the plot

    last = train(config, out, progress=False)
    assert last["step"] == 500 and not last["interrupted"]
    for name in FILES:
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    assert not list(out.glob(".*.tmp"))
    prov = json.loads((out / "provenance.json").read_text())
    assert [r["from_step"] for r in prov["resumed"]] == [50, 100, 100, 260, 300]


def test_fresh_start_never_appends_and_foreign_results_are_refused(data_dir, tmp_path):
    config = short(data_dir)
    out = tmp_path / "run"
    reference = train(config, tmp_path / "ref", progress=False)
    assert reference["step"] == 50

    # Killed before its first checkpoint: rows and records of the same config, no checkpoint.
    out.mkdir()
    for name in ("metrics.csv", "eval.csv", "config.json", "provenance.json"):
        (out / name).write_bytes((tmp_path / "ref" / name).read_bytes())
    train(config, out, progress=False)
    for name in ("metrics.csv", "eval.csv"):
        assert (out / name).read_bytes() == (tmp_path / "ref" / name).read_bytes(), name

    # Another configuration's results (with or without a checkpoint) are refused ...
    with pytest.raises(RunMismatch, match=r"tau: saved 1.0 vs now 2.0.*--overwrite"):
        train(config.replace(tau=2.0), out, progress=False)
    (out / CHECKPOINT).unlink()
    with pytest.raises(RunMismatch, match=r"different configuration.*no checkpoint.*--overwrite"):
        train(config.replace(tau=2.0), out, progress=False)
    assert json.loads((out / "config.json").read_text())["tau"] == 1.0  # not overwritten
    # ... unless --overwrite: the old rows are gone, the new run's written.
    train(config.replace(tau=2.0), out, progress=False, overwrite=True)
    assert json.loads((out / "config.json").read_text())["tau"] == 2.0
    rows = logs.read_rows(out / "metrics.csv")
    assert [r["step"] for r in rows] == ["50", "50"]

    # Results without a config (e.g. a CSV left by something else) are refused too.
    other = tmp_path / "other"
    other.mkdir()
    (other / "eval.csv").write_text("step,seed\n1,0\n")
    with pytest.raises(RunMismatch, match="unknown run"):
        train(config, other, progress=False)


def test_resume_with_another_dataset_is_refused(data_dir, tmp_path):
    from qam_lite.data import datasets

    config = short(data_dir, offline_steps=100, checkpoint_interval=50, eval_interval=100)
    train(config, tmp_path, progress=False, stop_after=50)
    env, data, _ = datasets.load(TASK, data_dir, verbose=False)
    other = dict(data, rewards=data["rewards"] + 1.0)
    with pytest.raises(RunMismatch, match="another dataset.*--overwrite"):
        train(config, tmp_path, progress=False, data=(env, other))
    assert ckpt.read_meta(tmp_path / CHECKPOINT)["step"] == 50


def test_locked_folder_names_its_holder(data_dir, tmp_path):
    import platform

    with rundir.locked(tmp_path):
        with pytest.raises(RunFolderError, match=rf"in use by pid {os.getpid()} on host"):
            train(short(data_dir), tmp_path, progress=False)
        assert platform.node() in (tmp_path / rundir.LOCK_OWNER).read_text()
    assert not (tmp_path / rundir.LOCK_OWNER).exists()


def test_unusable_folders_and_checkpoints_get_sentences(data_dir, tmp_path, monkeypatch):
    config = short(data_dir)
    a_file = tmp_path / "file"
    a_file.write_text("x")
    with pytest.raises(RunFolderError, match="is a file"):
        train(config, a_file, progress=False)
    monkeypatch.setattr(rundir.os, "access", lambda *a: False)
    with pytest.raises(RunFolderError, match="not writable"):
        train(config, tmp_path / "ro", progress=False)
    monkeypatch.undo()

    out = tmp_path / "run"
    train(config, out, progress=False)
    data = (out / CHECKPOINT).read_bytes()
    (out / CHECKPOINT).write_bytes(data[: len(data) // 2])  # truncated
    with pytest.raises(ckpt.CheckpointError, match="truncated") as err:
        train(config, out, progress=False)
    assert "pickle" not in str(err.value) and "--overwrite" in str(err.value)


def test_nan_loss_stops_and_reports_step(data_dir, tmp_path, monkeypatch):
    import jax.numpy as jnp

    import qam_lite.agents as agents

    real = agents.make_agent

    def poisoned(config, obs_dim, action_dim):
        agent = real(config, obs_dim, action_dim)

        def update(state, batch, key):
            state, metrics = agent.update(state, batch, key)
            bad = state.step > 120  # the 121st update's critic loss is NaN
            return state, {**metrics, "critic_loss": jnp.where(bad, jnp.nan, 0.0)}

        return agent._replace(update=update)

    monkeypatch.setattr(agents, "make_agent", poisoned)
    config = short(data_dir, offline_steps=200, eval_interval=200, checkpoint_interval=100)
    with pytest.raises(TrainingDiverged, match="NaN/inf by step 150") as err:
        train(config.replace(num_seeds=1), tmp_path, progress=False)
    assert err.value.step == 150
    assert "last good checkpoint is at step 100" in str(err.value)
    assert ckpt.read_meta(tmp_path / CHECKPOINT)["step"] == 100
    assert (tmp_path / "diverged.npz").exists()


def test_seed_i_of_a_vmapped_run_is_a_one_seed_run(data_dir, tmp_path):
    config = short(data_dir)
    train(config, tmp_path / "pair", progress=False)
    rows = logs.read_rows(tmp_path / "pair" / "metrics.csv")
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert rows[0]["critic_loss"] != rows[1]["critic_loss"]
    train(config.replace(num_seeds=1, seed=1), tmp_path / "single", progress=False)
    alone = logs.read_rows(tmp_path / "single" / "metrics.csv")[0]
    for key in ("critic_loss", "bc_loss", "q_mean"):
        assert float(alone[key]) == pytest.approx(float(rows[1][key]), rel=1e-3, abs=1e-4), key


def test_call_size_divides_every_interval():
    c = make_config(
        TASK,
        updates_per_call=1000,
        eval_interval=2500,
        log_interval=5000,
        checkpoint_interval=10_000,
        offline_steps=1_000_000,
    )
    assert call_size(c) == 500
    assert call_size(c.replace(offline_steps=0, online_steps=10)) == 500


def _cli(config_settings, data_dir, out):
    import sys

    argv = [sys.executable, "-m", "qam_lite", "train", TASK, "--agent", "qam"]
    for key, value in config_settings.items():
        value = ",".join(map(str, value)) if isinstance(value, tuple) else value
        argv += ["--set", f"{key}={value}"]
    return [*argv, "--dataset-dir", str(data_dir), "--out", str(out), "--no-progress"]


def _wait_for(predicate, process, seconds=600.0):
    import time

    deadline = time.monotonic() + seconds
    while not predicate():
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.mark.slow
def test_real_sigint_and_sigkill_then_rerun_gives_identical_files(full_run, data_dir, tmp_path):
    """`qam-lite train` in a subprocess: Ctrl-C once rows appear (exit 130, checkpoint saved),
    rerun and SIGKILL it once an online checkpoint exists, rerun to the end: the files equal the
    uninterrupted run's, byte for byte."""
    import subprocess

    config, full, _ = full_run
    out = tmp_path / "cli"
    argv = _cli(SETTINGS, data_dir, out)
    env = dict(os.environ, JAX_COMPILATION_CACHE_DIR=jax.config.jax_compilation_cache_dir or "")
    env["JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS"] = "0"
    run = dict(env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

    p = subprocess.Popen(argv, **run)
    _wait_for(lambda: len(logs.read_rows(out / "metrics.csv")) > 0, p)
    p.send_signal(signal.SIGINT)
    stdout, stderr = p.communicate(timeout=600)
    assert p.returncode == 130, stderr
    assert "run the same command again to resume" in stdout
    assert "Traceback" not in stderr
    stopped = ckpt.read_meta(out / CHECKPOINT)["step"]

    def online_checkpoint():
        try:
            return ckpt.read_meta(out / CHECKPOINT)["step"] >= 300
        except ckpt.CheckpointError:
            return False

    p = subprocess.Popen(argv, **run)
    _wait_for(online_checkpoint, p)
    p.kill()
    p.communicate(timeout=60)
    assert ckpt.read_meta(out / CHECKPOINT)["step"] >= max(300, stopped)

    done = subprocess.run(argv, **run, timeout=600)
    assert done.returncode == 0, done.stderr
    for name in FILES:
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
