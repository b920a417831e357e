"""Shipped policies: the acting parameters out of a run and back, exactly; what each agent acts
with; the recorded success repeated from the file; every committed policy loads and acts."""

from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite.agents import make_agent
from qam_lite.training import checkpoint as ckpt
from qam_lite.training.logs import read_rows
from qam_lite.training.policy import (
    acting_groups,
    binomial_interval,
    export_policy,
    load_policy,
)
from qam_lite.training.rundir import load_run
from qam_lite.training.settings import make_config
from qam_lite.training.train import train

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = sorted((ROOT / "results" / "policies").glob("*.npz"))
TASK = "cube-single-play-singletask-task1-v0"
TINY = dict(actor_hidden=(16, 16), critic_hidden=(16, 16), num_critics=2, flow_steps=3)


@pytest.mark.parametrize(
    ("agent", "overrides", "groups"),
    [
        ("qam", {}, ["actor"]),  # f_theta
        ("qam", {"tau": 0.0}, ["bc_flow"]),  # tau = 0 acts with the behaviour flow f_beta
        ("fql", {}, ["actor"]),  # the one-step policy
        ("bc", {}, ["bc_flow"]),
        ("bam", {}, ["actor"]),
    ],
)
def test_acting_groups_are_what_act_reads(agent, overrides, groups):
    config = make_config(TASK, agent, **TINY, **overrides)
    built = make_agent(config, 8, 3)
    state = built.init(jax.random.PRNGKey(0))
    assert acting_groups(built, state) == groups
    assert "critic" not in groups and set(groups) <= set(state.params)  # critics never ship


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    from qam_lite.data.generate import generate

    data = tmp_path_factory.mktemp("data")
    generate("cube-single-play-v0", 3, data, seed=0, workers=1, episode_length=101, progress=False)
    settings = dict(
        batch_size=16,
        offline_steps=60,
        eval_interval=60,
        eval_episodes=3,
        updates_per_call=30,
        log_interval=30,
        checkpoint_interval=60,
        num_seeds=2,
        dataset_dir=str(data),
    )
    out = tmp_path_factory.mktemp("run")
    train(make_config(TASK, "qam", **TINY, **settings), out, progress=False)
    return out


def test_export_then_load_acts_exactly_as_the_run(run_dir, tmp_path):
    path = export_policy(run_dir, tmp_path / "qam.npz", seed_index=1)
    policy = load_policy(path)
    run = load_run(run_dir)
    obs = jax.random.normal(jax.random.PRNGKey(3), (4, run.agent.obs_dim))
    key = jax.random.PRNGKey(7)
    np.testing.assert_array_equal(
        np.asarray(policy.act(obs, key)), np.asarray(run.agent.act(run.seed_state(1), obs, key))
    )
    assert policy.state.opt_state is None and set(policy.state.params) == {"actor"}
    assert path.stat().st_size < (run_dir / "checkpoint.npz").stat().st_size / 5
    assert policy.config.num_seeds == 1 and policy.config.seed == 1
    assert policy.config.dataset_dir is None  # the file does not depend on this machine
    row = [r for r in read_rows(run_dir / "eval.csv") if r["seed"] == "1"][-1]
    assert policy.meta["recorded"]["success_rate"] == float(row["success_rate"])
    assert policy.meta["step"] == 60 and policy.meta["recorded"]["episodes"] == 3


def test_the_recorded_evaluation_repeats_from_the_file(run_dir, tmp_path):
    policy = load_policy(export_policy(run_dir, tmp_path / "qam.npz", seed_index=0))
    again = policy.evaluate(workers=1)
    row = [r for r in read_rows(run_dir / "eval.csv") if r["seed"] == "0"][-1]
    assert again["success_rate"] == float(row["success_rate"])
    assert again["episode_return"] == pytest.approx(float(row["episode_return"]), rel=1e-5)
    assert again["episode_length"] == pytest.approx(float(row["episode_length"]))


def test_bad_input_is_named(run_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="accepted: a policy file"):
        load_policy(tmp_path / "missing.npz")
    with pytest.raises(ckpt.CheckpointError, match="not a qam-lite policy file"):
        load_policy(run_dir / "checkpoint.npz")
    with pytest.raises(ValueError, match="seed_index=2 is invalid .* accepted: 0 .. 1"):
        export_policy(run_dir, tmp_path / "x.npz", seed_index=2)


def test_binomial_interval():
    lo, hi = binomial_interval(0.5, 50)
    assert lo == pytest.approx(0.366, abs=1e-3) and hi == pytest.approx(0.634, abs=1e-3)
    assert binomial_interval(0.0, 50)[0] == 0.0 and binomial_interval(1.0, 50)[1] == 1.0


@pytest.mark.skipif(not SHIPPED, reason="no policies committed in results/policies")
@pytest.mark.parametrize("path", SHIPPED, ids=[p.stem for p in SHIPPED])
def test_every_shipped_policy_loads_and_steps_an_episode(path):
    from qam_lite.training.envpool import make_env, reset_env

    policy = load_policy(path)
    assert path.stat().st_size < 2_000_000
    env = make_env(policy.config.task)
    obs, _ = reset_env(env, 0)
    key = jax.random.PRNGKey(0)
    steps, done = 0, False
    while not done:
        key, sub = jax.random.split(key)
        chunk = np.asarray(policy.act(jnp.asarray(obs[None]), sub))[0]
        assert chunk.shape == (policy.agent.chunk_dim,) and np.all(np.abs(chunk) <= 1)
        for a in chunk.reshape(-1, policy.agent.action_dim):
            obs, _, terminated, truncated, _ = env.step(a)
            steps += 1
            if terminated or truncated:
                done = True
                break
    assert 0 < steps <= 1000


def test_cli_re_evaluates_a_policy_file_beside_its_recorded_rate(run_dir, tmp_path, capsys):
    from qam_lite.cli import main

    path = export_policy(run_dir, tmp_path / "qam.npz")
    assert main(["evaluate", str(path)]) == 0
    out = capsys.readouterr().out
    assert "recorded: success" in out and "inside the recorded interval" in out
    assert main(["evaluate", str(run_dir / "checkpoint.npz")]) == 2  # a run's, not a policy
    assert "not a qam-lite policy file" in capsys.readouterr().err
