"""The tau probe: samples at fixed states from run folders, success from eval.csv, the 2-D PCA."""

from __future__ import annotations

import json

import jax
import numpy as np
import pytest

from qam_lite import cli
from qam_lite.config import to_dict
from qam_lite.experiments import probe
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import logs
from qam_lite.training.rundir import CHECKPOINT, load_run
from qam_lite.training.settings import make_config
from qam_lite.training.update import init_states

TASK = "scene-play-singletask-task1-v0"
OBS, ACT = 40, 5


def fake_run(folder, tau, *, agent="qam", success=(0.5, 0.2), seeds=2):
    """A run folder with freshly initialised states (no training) and an eval.csv."""
    from qam_lite.agents import make_agent

    cfg = make_config(
        TASK,
        agent,
        tau=tau,
        actor_hidden=(16,),
        critic_hidden=(16,),
        num_critics=2,
        flow_steps=2,
        num_seeds=seeds,
        seed=3,
    )
    folder.mkdir(parents=True)
    states = init_states(make_agent(cfg, OBS, ACT), cfg)
    meta = {
        "step": 40,
        "phase": "offline",
        "config": to_dict(cfg),
        "obs_dim": OBS,
        "action_dim": ACT,
    }
    ckpt.save(folder / CHECKPOINT, {"states": states}, meta)
    rows = [
        {"step": step, "seed": cfg.seed + s, "phase": "offline", "success_rate": rate * step / 40}
        for step in (20, 40)
        for s, rate in enumerate(success[:seeds])
    ]
    logs.append_rows(folder / "eval.csv", rows)
    return folder


def test_final_success_reads_the_last_evaluation(tmp_path):
    fake = tmp_path / "eval.csv"
    logs.append_rows(
        fake,
        [
            {"step": 5, "seed": 0, "success_rate": 0.1},
            {"step": 10, "seed": 0, "success_rate": 0.3},
            {"step": 10, "seed": 1, "success_rate": 0.7},
        ],
    )
    assert probe.final_success(fake) == (10, {0: 0.3, 1: 0.7})
    with pytest.raises(FileNotFoundError, match="eval.csv"):
        probe.final_success(tmp_path / "none" / "eval.csv")


def test_pca_recovers_a_plane():
    rng = np.random.default_rng(0)
    basis = np.linalg.qr(rng.normal(size=(25, 2)))[0].T  # an orthonormal plane in 25-D
    coords = rng.normal(size=(4000, 2)) * np.array([3.0, 1.0])
    points = 0.5 + coords @ basis + 0.01 * rng.normal(size=(4000, 25))
    mean, comps, explained = probe.pca_2d(points)
    assert np.allclose(mean, 0.5, atol=0.1)
    # The components span the plane, the first one along the wider direction.
    assert abs(comps[0] @ basis[0]) == pytest.approx(1.0, abs=1e-2)
    assert abs(comps[1] @ basis[1]) == pytest.approx(1.0, abs=1e-2)
    assert explained[0] == pytest.approx(0.9, abs=0.02)  # 9 / (9 + 1), noise negligible
    flipped = probe.pca_2d(-points)[1]
    assert np.allclose(flipped, comps, atol=1e-2) or np.allclose(
        np.abs(flipped), np.abs(comps), atol=1e-2
    )
    for c in comps:  # sign convention: the largest entry is positive
        assert c[np.argmax(np.abs(c))] > 0
    with pytest.raises(ValueError, match="n >= 2"):
        probe.pca_2d(np.zeros((1, 3)))


def test_load_probe_missing_names_the_command(tmp_path):
    with pytest.raises(probe.ProbeMissing, match="qam-lite probe a b"):
        probe.load_probe(tmp_path / "p.npz", "qam-lite probe a b")


@pytest.mark.slow
def test_probe_runs_sorted_by_tau(tmp_path):
    runs = [fake_run(tmp_path / f"tau{t:g}", t) for t in (10.0, 0.0)]
    out = tmp_path / "results" / "probe.npz"
    record = probe.probe_runs(
        [str(r) for r in runs],
        out,
        state_source="eval",
        num_states=2,
        num_samples=8,
        command="test",
    )
    arrays, saved = probe.load_probe(out)
    assert saved == json.loads(json.dumps(record)) and saved["command"] == "test"
    assert arrays["taus"].tolist() == [0.0, 10.0]
    assert [r["tau"] for r in saved["runs"]] == [0.0, 10.0]
    d = 5 * ACT  # H * A
    assert arrays["actor"].shape == (2, 2, 2, 8, d) and arrays["actor"].dtype == np.float16
    assert arrays["behaviour"].shape == (2, 2, 2, 8, d)
    assert arrays["q_actor"].shape == (2, 2, 2, 8)
    assert np.all(np.abs(arrays["actor"].astype(float)) <= 1.0)
    assert arrays["states"].shape == (2, OBS) and np.isnan(arrays["data_chunks"]).all()
    assert arrays["seeds"].tolist() == [[3, 4]] * 2
    assert (
        arrays["success"].tolist() == [[0.5, 0.2]] * 2
        and arrays["success_step"].tolist() == [40] * 2
    )
    # The actor samples are those of the agent's own act on the same states and noise.
    run = load_run(runs[1])  # tau 0 sorts first: runs[1] is tau 0
    obs = np.repeat(arrays["states"], 8, axis=0)
    k_actor, _ = jax.random.split(jax.random.PRNGKey(0))
    mine = np.asarray(run.agent.act(run.seed_state(1), obs, k_actor)).reshape(2, 8, d)
    assert np.allclose(arrays["actor"][0, 1].astype(float), mine, atol=2e-3)
    # Fresh actor and behaviour flows have different weights: different samples.
    assert not np.allclose(arrays["actor"][0, 0], arrays["behaviour"][0, 0])


def header_run(folder, tau, *, agent="qam", seeds=2):
    """A run folder whose checkpoint holds only the header (enough for the input checks)."""
    cfg = make_config(TASK, agent, tau=tau, num_seeds=seeds)
    folder.mkdir(parents=True)
    meta = {
        "step": 0,
        "phase": "offline",
        "config": to_dict(cfg),
        "obs_dim": OBS,
        "action_dim": ACT,
    }
    ckpt.save(folder / CHECKPOINT, {}, meta)
    return folder


def test_probe_refuses_bad_inputs(tmp_path):
    a = header_run(tmp_path / "a", 1.0)
    b = header_run(tmp_path / "b", 1.0)
    with pytest.raises(ValueError, match="same tau"):
        probe.probe_runs([a, b], tmp_path / "p.npz", state_source="eval", num_states=1)
    with pytest.raises(ValueError, match="accepted: data, eval"):
        probe.probe_runs([a], tmp_path / "p.npz", state_source="grid")
    with pytest.raises(ValueError, match="ending in .npz"):
        probe.probe_runs([a], tmp_path / "p.json", state_source="eval")
    c = header_run(tmp_path / "c", 3.0, agent="bc")
    with pytest.raises(ValueError, match="accepted agents: qam"):
        probe.probe_runs([a, c], tmp_path / "p.npz", state_source="eval", num_states=1)
    d = header_run(tmp_path / "d", 3.0, seeds=1)
    with pytest.raises(ValueError, match="one number of seeds"):
        probe.probe_runs([a, d], tmp_path / "p.npz", state_source="eval", num_states=1)
    with pytest.raises(ckpt.CheckpointError, match="no checkpoint.npz"):
        probe.probe_runs([tmp_path], tmp_path / "p.npz", state_source="eval")


def test_cli_verb_records_its_command(monkeypatch, capsys, tmp_path):
    """``qam-lite probe``: the command recorded as qam-lite
    spells it; a bad input is one line with exit code 2."""
    seen = {}

    def fake_probe_runs(run_dirs, out, **kw):
        seen.update(kw, run_dirs=run_dirs)
        return {"runs": [{"tau": 1.0, "success": [0.5, 0.25]}], "seconds": 2.0}

    monkeypatch.setattr(probe, "probe_runs", fake_probe_runs)
    assert cli.main(["probe", "a", "b", "--out", "p.npz", "--states", "eval"]) == 0
    assert seen["command"] == "qam-lite probe a b --out p.npz --states eval"
    assert seen["run_dirs"] == ["a", "b"] and seen["state_source"] == "eval"
    assert "tau 1: 38 %" in capsys.readouterr().out
    a = header_run(tmp_path / "a", 1.0)
    monkeypatch.undo()
    assert cli.main(["probe", str(a), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qam-lite probe: error:") and "ending in .npz" in err
