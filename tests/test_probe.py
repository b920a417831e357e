"""The tau probe: shipped policy files sampled at fixed states, their recorded success, the PCA."""

from __future__ import annotations

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite import cli
from qam_lite.config import to_dict
from qam_lite.experiments import probe
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import logs
from qam_lite.training.policy import export_policy, load_policy
from qam_lite.training.rundir import CHECKPOINT
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
        {
            "step": step,
            "seed": cfg.seed + s,
            "phase": "offline",
            "success_rate": rate * step / 40,
            "episodes": 50,
        }
        for step in (20, 40)
        for s, rate in enumerate(success[:seeds])
    ]
    logs.append_rows(folder / "eval.csv", rows)
    return folder


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


def policy_file(tmp_path, name, tau, *, agent="qam", success=(0.5, 0.2)):
    """A policy file exported from a fake run (seed index 0: seed 3, recorded 50 %)."""
    run = fake_run(tmp_path / "runs" / name, tau, agent=agent, success=success)
    return export_policy(run, tmp_path / "policies" / f"{name}.npz")


def test_sample_gives_every_policy_the_same_noise(tmp_path):
    paths = [policy_file(tmp_path, "tau0", 0.0), policy_file(tmp_path, "tau10", 10.0)]
    policies = [load_policy(p) for p in paths]
    states = np.random.default_rng(0).normal(size=(3, OBS)).astype(np.float32)
    actions = probe.sample(policies + policies[:1], states, 8, seed=5)
    assert actions.shape == (3, 3, 8, 5 * ACT) and actions.dtype == np.float32
    assert np.all(np.abs(actions) <= 1.0)
    # Each policy's samples are its own act on the states, each repeated N times, with one key.
    obs = jnp.repeat(jnp.asarray(states), 8, axis=0)
    mine = np.asarray(policies[1].act(obs, jax.random.PRNGKey(5))).reshape(3, 8, -1)
    assert np.allclose(actions[1], mine, atol=1e-6)
    # The same policy twice: the same noise, the same samples; tau 0 (f_beta) and tau 10
    # (a fresh f_theta, other weights) differ.
    assert np.array_equal(actions[0], actions[2]) and not np.allclose(actions[0], actions[1])
    with pytest.raises(ValueError, match="obs_dim"):
        probe.sample(policies, states[:, :-1], 8)
    with pytest.raises(ValueError, match="num_samples >= 2"):
        probe.sample(policies, states, 1)
    with pytest.raises(ValueError, match="one or more"):
        probe.sample([], states, 8)


@pytest.mark.slow
def test_probe_policies_writes_samples_and_recorded_success(tmp_path):
    paths = [
        policy_file(tmp_path, "tau10", 10.0),
        policy_file(tmp_path, "bc", 1.0, agent="bc", success=(0.1, 0.0)),
    ]
    out = tmp_path / "results" / "probe.npz"
    record = probe.probe_policies(paths, out, num_states=2, num_samples=8, command="test")
    arrays, saved = probe.load_probe(out)
    assert saved == json.loads(json.dumps(record)) and saved["command"] == "test"
    assert [p["file"] for p in saved["policies"]] == ["tau10.npz", "bc.npz"]
    assert [p["agent"] for p in saved["policies"]] == ["qam", "bc"]
    assert arrays["taus"][0] == 10.0 and np.isnan(arrays["taus"][1])  # BC has no tau
    assert arrays["actions"].shape == (2, 2, 8, 5 * ACT) and arrays["actions"].dtype == np.float16
    assert arrays["states"].shape == (2, OBS) and np.isnan(arrays["data_chunks"]).all()
    assert arrays["state_indices"].tolist() == [-1, -1]
    assert arrays["success"].tolist() == [0.5, 0.1] and arrays["success_step"].tolist() == [40] * 2
    # The same samples as probe.sample on the stored states.
    again = probe.sample([load_policy(p) for p in paths], arrays["states"], 8)
    assert np.allclose(arrays["actions"].astype(np.float32), again, atol=1e-3)


def test_probe_refuses_bad_inputs(tmp_path):
    a = policy_file(tmp_path, "a", 1.0)
    with pytest.raises(ValueError, match="accepted: eval, data"):
        probe.probe_policies([a], tmp_path / "p.npz", state_source="grid")
    with pytest.raises(ValueError, match="ending in .npz"):
        probe.probe_policies([a], tmp_path / "p.json")
    with pytest.raises(ValueError, match="one or more"):
        probe.probe_policies([], tmp_path / "p.npz")
    with pytest.raises(ValueError, match="num_samples >= 2"):
        probe.probe_policies([a], tmp_path / "p.npz", num_samples=1)
    with pytest.raises(FileNotFoundError, match="accepted: a policy file"):
        probe.probe_policies([tmp_path / "none.npz"], tmp_path / "p.npz")
    with pytest.raises(ckpt.CheckpointError, match="not a qam-lite policy file"):
        probe.probe_policies([tmp_path / "runs" / "a" / CHECKPOINT], tmp_path / "p.npz")


def test_cli_verb_records_its_command(monkeypatch, capsys, tmp_path):
    """``qam-lite probe``: the command recorded as qam-lite
    spells it; a bad input is one line with exit code 2."""
    seen = {}

    def fake_probe_policies(paths, out, **kw):
        seen.update(kw, paths=paths)
        record = {"file": "a.npz", "recorded": {"success_rate": 0.375}}
        return {"policies": [record], "seconds": 2.0}

    monkeypatch.setattr(probe, "probe_policies", fake_probe_policies)
    assert cli.main(["probe", "a", "b", "--out", "p.npz", "--states", "data"]) == 0
    assert seen["command"] == "qam-lite probe a b --out p.npz --states data"
    assert seen["paths"] == ["a", "b"] and seen["state_source"] == "data"
    assert "a.npz: 38 %" in capsys.readouterr().out
    a = policy_file(tmp_path, "a", 1.0)
    monkeypatch.undo()
    assert cli.main(["probe", str(a), "--out", str(tmp_path / "p.json")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("qam-lite probe: error:") and "ending in .npz" in err
