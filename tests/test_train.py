"""End-to-end training on a tiny locally generated dataset: logs, checkpoints, exact resume."""

import json

import numpy as np
import pytest

from qam_lite import checkpoint as ckpt
from qam_lite import logs
from qam_lite.config import make_config
from qam_lite.train import (
    CHECKPOINT,
    RunMismatch,
    TrainingDiverged,
    call_size,
    check_resumable,
    load_run,
    make_buffer,
    summary_line,
    train,
)

TASK = "cube-single-play-singletask-task1-v0"  # 200-step episodes: online episodes are short


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from qam_lite.generate import generate

    root = tmp_path_factory.mktemp("data")
    generate("cube-single-play-v0", 4, root, seed=0, workers=1, episode_length=101, progress=False)
    return root


def tiny(data_dir, **overrides):
    settings = dict(
        actor_hidden=(16, 16),
        critic_hidden=(16, 16),
        num_critics=2,
        flow_steps=3,
        batch_size=16,
        offline_steps=200,
        online_steps=400,
        eval_interval=200,
        eval_episodes=1,
        updates_per_call=50,
        log_interval=50,
        checkpoint_interval=100,
        online_buffer_size=400,
        dataset_dir=str(data_dir),
    )
    return make_config(TASK, "qam", **{**settings, **overrides})


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
    """One uninterrupted run: 200 offline updates, then 400 online steps (two episodes)."""
    out = tmp_path_factory.mktemp("full")
    return tiny(data_dir), out, train(tiny(data_dir), out, progress=False)


def test_run_folder_contents(full_run):
    config, out, summary = full_run
    assert summary["step"] == 600 and not summary["interrupted"]
    assert summary["eval_step"] == 600 and 0.0 <= summary["success_rate"] <= 1.0
    for name in ("metrics.csv", "eval.csv", "curve.png", "config.json", "provenance.json"):
        assert (out / name).stat().st_size > 0, name
    evals = logs.read_rows(out / "eval.csv")
    assert [int(r["step"]) for r in evals] == [200, 400, 600]
    assert [r["phase"] for r in evals] == ["offline", "online", "online"]
    metrics = logs.read_rows(out / "metrics.csv")
    assert [int(r["step"]) for r in metrics][:4] == [50, 100, 150, 200]
    assert int(metrics[-1]["step"]) == 600
    for row in metrics:
        for key in ("critic_loss", "bc_loss", "am_loss", "q_mean"):
            assert np.isfinite(float(row[key])), (key, row)
    prov = json.loads((out / "provenance.json").read_text())
    assert prov["seeds"] == [0] and prov["data"]["generator"] == "qam_lite.generate"
    assert {"command", "git_commit", "device", "jax_version", "date"} <= set(prov)
    meta = ckpt.read_meta(out / CHECKPOINT)
    assert meta["step"] == 600 and meta["phase"] == "done"
    assert "success" in summary_line(summary) and "600/600" in summary_line(summary)


def test_interrupted_run_resumes_to_identical_logs(full_run, data_dir, tmp_path, monkeypatch):
    """Stopped offline, interrupted at an offline evaluation, interrupted mid-episode online,
    resumed each time: the logs equal the uninterrupted run's, row for row."""
    import qam_lite.evaluate as ev

    config, full, _ = full_run
    out = tmp_path / "resumed"
    first = train(config, out, progress=False, stop_after=100)
    assert first["interrupted"] and ckpt.read_meta(out / CHECKPOINT)["step"] == 100

    real = ev.evaluate
    evaluated = []

    def interrupt_at(step):
        def fake(agent, state, task, n, seed, **kw):
            evaluated.append(seed)
            if len(evaluated) == step:
                raise KeyboardInterrupt
            return real(agent, state, task, n, seed, **kw)

        return fake

    # 1st evaluation of this call is step 200's: interrupted after the updates, before its logs.
    monkeypatch.setattr(ev, "evaluate", interrupt_at(1))
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=False)
    meta = ckpt.read_meta(out / CHECKPOINT)
    assert meta["step"] == 200 and meta["redo_step"]

    # Resume: redo step 200's evaluation (1st), then interrupt at step 400's (2nd), still inside
    # the first online episode (steps 200..400).
    evaluated.clear()
    monkeypatch.setattr(ev, "evaluate", interrupt_at(2))
    with pytest.raises(KeyboardInterrupt):
        train(config, out, progress=False)
    meta = ckpt.read_meta(out / CHECKPOINT)
    assert meta["step"] == 200 and meta["phase"] == "online"  # the episode's start

    monkeypatch.setattr(ev, "evaluate", real)
    summary = train(config, out, progress=False)
    assert summary["step"] == 600 and not summary["interrupted"]
    for name in ("metrics.csv", "eval.csv"):
        assert (out / name).read_text() == (full / name).read_text(), name
    prov = json.loads((out / "provenance.json").read_text())
    assert [r["from_step"] for r in prov["resumed"]] == [100, 200, 200]


def test_finished_run_is_not_retrained_and_other_config_refused(full_run):
    config, out, summary = full_run
    before = (out / "metrics.csv").read_text()
    again = train(config, out, progress=False)
    assert again["step"] == 600 and (out / "metrics.csv").read_text() == before
    with pytest.raises(RunMismatch, match=r"tau: saved 1.0 vs now 2.0"):
        train(config.replace(tau=2.0), out, progress=False)
    # Where the data lives is not part of what is trained: changing it still resumes.
    assert check_resumable(config.replace(download=True), out)["step"] == 600
    run = load_run(out)
    assert run.step == 600 and run.config == config


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
    config = tiny(data_dir, online_steps=0, offline_steps=200, eval_interval=200)
    with pytest.raises(TrainingDiverged, match="NaN/inf by step 150") as err:
        train(config, tmp_path, progress=False)
    assert err.value.step == 150
    assert "last good checkpoint is at step 100" in str(err.value)
    assert ckpt.read_meta(tmp_path / CHECKPOINT)["step"] == 100
    assert (tmp_path / "diverged.npz").exists()


def test_seeds_vmapped_differ(data_dir, tmp_path):
    config = tiny(data_dir, online_steps=0, offline_steps=50, eval_interval=50, num_seeds=2)
    summary = train(config, tmp_path, progress=False)
    assert len(summary["success_per_seed"]) == 2
    rows = logs.read_rows(tmp_path / "metrics.csv")
    assert [r["seed"] for r in rows] == ["0", "1"]
    assert rows[0]["critic_loss"] != rows[1]["critic_loss"]
    # Seed 1 of the vmapped pair draws what a one-seed run with seed=1 draws.
    single = config.replace(num_seeds=1, seed=1)
    train(single, tmp_path / "single", progress=False)
    alone = logs.read_rows(tmp_path / "single" / "metrics.csv")[0]
    for key in ("critic_loss", "bc_loss", "am_loss", "q_mean"):
        assert float(alone[key]) == pytest.approx(float(rows[1][key]), rel=1e-3, abs=1e-4), key
    with pytest.raises(RunMismatch, match="num_seeds=1 when online_steps > 0"):
        train(config.replace(online_steps=10), tmp_path / "x", progress=False)


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


def test_buffer_chunks_cross_the_dataset_online_boundary():
    """Online rows follow the dataset; a running episode ends at the filled size."""
    from qam_lite.chunks import chunks_at

    n = 6
    train_data = {
        "observations": np.arange(n, dtype=np.float32)[:, None],
        "actions": np.arange(n, dtype=np.float32)[:, None],
        "rewards": np.zeros(n, np.float32),
        "masks": np.ones(n, np.float32),
        "terminals": np.array([0, 0, 1, 0, 0, 0], np.float32),  # last episode unterminated
        "next_observations": np.arange(1, n + 1, dtype=np.float32)[:, None],
    }
    online = {k: v[:2] + 100 for k, v in train_data.items()}
    online["terminals"] = np.zeros(2, np.float32)
    buffer, size = make_buffer(train_data, online, capacity=4)
    assert size == 8 and buffer["observations"].shape == (12, 1)
    batch = chunks_at(buffer, np.array([4, 6, 7]), 3, 0.9, size=size)
    # Row 5 ends the dataset's episode; the online episode (rows 6, 7) runs to size - 1 = 7.
    np.testing.assert_array_equal(batch["valid"], [[1, 1, 0], [1, 1, 0], [1, 0, 0]])
