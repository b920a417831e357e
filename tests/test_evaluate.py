"""Evaluation: chunks run open loop in lockstep, success read from the env's info, determinism."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite.training.evaluate import episode_seed, evaluate, make_envs

H, A = 3, 2


class FakeEnv:
    """Records actions; episode ``i`` ends at step ``end`` with success ``succeed``."""

    def __init__(self, end: int, succeed: bool):
        self.end, self.succeed = end, succeed
        self.action_space = SimpleNamespace(shape=(A,))
        self.actions, self.seeds = [], []

    def reset(self, seed=None):
        self.seeds.append(seed)
        self.t = 0
        return np.full(4, float(seed % 97), np.float32), {}

    def step(self, action):
        self.actions.append(np.asarray(action).copy())
        self.t += 1
        done = self.t == self.end
        terminated = done and self.succeed
        truncated = done and not self.succeed
        info = {"success": float(terminated)}
        return np.full(4, float(self.t), np.float32), -1.0, terminated, truncated, info


def chunk_agent(calls: list):
    """``act`` returns the chunk ``[c*10 + j]`` for chunk ``c`` (counted by a host callback)."""

    def act(state, obs, key):
        # One host call per batched policy call (evaluate vmaps `act` over episodes: with
        # "expand_dims" the callback sees the whole batch at once).
        out = jax.ShapeDtypeStruct(obs.shape[:1], jnp.float32)
        c = jax.pure_callback(lambda o: _tick(calls, o), out, obs, vmap_method="expand_dims")
        steps = jnp.arange(H, dtype=jnp.float32)
        return (c[:, None] * 10 + jnp.repeat(steps, A)[None]) / 100.0  # (B, H * A)

    return SimpleNamespace(act=act)


def _tick(calls, obs):
    calls.append(1)
    return np.full(obs.shape[:-1], len(calls) - 1, np.float32)


def test_chunks_open_loop_lockstep_and_success():
    calls = []
    agent = chunk_agent(calls)
    # Env 0 succeeds at step 4, env 1 times out at step 7, env 2 succeeds at step 7.
    envs = [FakeEnv(4, True), FakeEnv(7, False), FakeEnv(7, True)]
    res = evaluate(agent, None, None, 3, seed=5, envs=envs)
    assert res["success_rate"] == pytest.approx(2 / 3)
    assert res["successes"] == [1, 0, 1]
    assert res["episode_length"] == pytest.approx(6.0)
    assert res["episode_return"] == pytest.approx(-6.0)
    # 7 steps at H = 3 need 3 chunks, one batched act call each, for all envs together.
    assert sum(calls) == 3
    expected = [(c * 10 + j) / 100 for c in range(3) for j in range(H)]
    got = [a[0] for a in envs[1].actions]
    np.testing.assert_allclose(got, expected[:7], rtol=1e-6)
    np.testing.assert_allclose([a[0] for a in envs[0].actions], expected[:4], rtol=1e-6)
    assert [e.seeds[0] for e in envs] == [episode_seed(5, i) for i in range(3)]


def test_max_steps_and_bad_sizes():
    agent = chunk_agent([])
    res = evaluate(
        agent, None, None, 2, seed=0, envs=[FakeEnv(9, True), FakeEnv(9, True)], max_steps=5
    )
    assert res["episode_length"] == 5 and res["success_rate"] == 0.0
    with pytest.raises(ValueError, match="num_episodes=0"):
        evaluate(agent, None, None, 0, seed=0, envs=[])


def noisy_agent(width: int = 5):
    def act(state, obs, key):
        return jnp.tanh(state * jax.random.normal(key, (obs.shape[0], width)))

    return SimpleNamespace(act=act)


def test_same_seed_same_numbers_whatever_the_workers():
    """Episodes of seed-dependent length and action-dependent success: the per-episode results
    are identical with 1 (in-process), 2 and 3 worker processes, and with 3 or 1 environments
    for 7 episodes (run in waves); another seed differs."""
    from envfakes import SeededEnv

    agent, state = noisy_agent(2), jnp.float32(1.0)
    runs = {}
    for workers in (1, 2, 3):
        with make_envs("cube-single", 7, workers=workers, env_fn=SeededEnv) as envs:
            assert envs.workers == workers
            runs[workers] = [evaluate(agent, state, None, 7, seed=s, envs=envs) for s in (3, 4)]
            # Fewer episodes than environments: only the first ones run.
            assert evaluate(agent, state, None, 2, seed=3, envs=envs)["episodes"] == 2
    # Fewer environments than episodes: waves (7 episodes on 3 envs: 3, 2, 2), same numbers.
    for envs_in_pool in (3, 1):
        with make_envs("cube-single", envs_in_pool, workers=1, env_fn=SeededEnv) as envs:
            runs[f"pool{envs_in_pool}"] = [
                evaluate(agent, state, None, 7, seed=s, envs=envs) for s in (3, 4)
            ]
    for workers in (2, 3, "pool3", "pool1"):
        for a, b in zip(runs[1], runs[workers], strict=True):
            assert a["successes"] == b["successes"] and a["returns"] == b["returns"]
            assert a["success_rate"] == b["success_rate"]
            assert a["episode_length"] == b["episode_length"]
    assert runs[1][0]["returns"] != runs[1][1]["returns"]
    assert 0 < runs[1][0]["success_rate"] < 1  # the check above is not vacuous


def test_worker_failure_is_reported():
    from qam_lite.training.envpool import EnvPool

    with pytest.raises(RuntimeError, match="evaluation worker 0 failed"):
        EnvPool(int.from_bytes, 2, workers=2)  # int.from_bytes() needs arguments: fails


def test_real_env_deterministic_across_workers():
    """Three short cube-single episodes (reward = sum of the observation, so returns fingerprint
    the trajectories): same seed -> same numbers in-process and in 2 workers; another seed
    differs."""
    from envfakes import real_env_fn

    task = "cube-single-play-singletask-task1-v0"
    agent, state = noisy_agent(), jnp.float32(1.0)
    returns = {}
    for workers in (1, 2):
        with make_envs(task, 3, workers=workers, env_fn=real_env_fn(task)) as envs:
            for seed in (1, 2):
                res = evaluate(agent, state, None, 3, seed=seed, envs=envs, max_steps=20)
                assert res["episode_length"] == 20 and res["success_rate"] == 0.0
                returns[workers, seed] = res["returns"]
    assert returns[1, 1] == returns[2, 1] and returns[1, 2] == returns[2, 2]
    assert not np.allclose(returns[1, 1], returns[1, 2])


def test_benchmark_before_and_after_do_the_same_work():
    """benchmarks/eval_throughput.py's previous loop steps exactly the episodes evaluate does."""
    import importlib.util
    from pathlib import Path

    from envfakes import SeededEnv

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "eval_throughput.py"
    spec = importlib.util.spec_from_file_location("eval_throughput", path)
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    agent, state = noisy_agent(2), jnp.float32(1.0)
    steps = bench.lockstep_evaluate(
        jax.jit(agent.act), state, [SeededEnv() for _ in range(6)], 6, 3, None
    )
    res = evaluate(agent, state, None, 6, seed=3, envs=[SeededEnv() for _ in range(6)])
    assert steps == round(res["episode_length"] * 6) > 6


def test_pool_size_caps_live_environments(monkeypatch):
    from qam_lite.training.envpool import DEFAULT_LIVE_ENVS, ENVS_ENV
    from qam_lite.training.evaluate import pool_size, waves

    monkeypatch.delenv(ENVS_ENV, raising=False)
    assert DEFAULT_LIVE_ENVS == 13 and pool_size(50) == 13 and pool_size(10) == 10
    assert [len(w) for w in waves(50, 13)] == [13, 13, 12, 12]
    assert np.concatenate(waves(7, 3)).tolist() == list(range(7))
    monkeypatch.setenv(ENVS_ENV, "25")
    assert pool_size(50) == 25 and pool_size(60) == 20  # 3 even waves rather than 25, 25, 10
    monkeypatch.setenv(ENVS_ENV, "0")
    with pytest.raises(ValueError, match="QAM_LITE_EVAL_ENVS='0' is invalid; accepted: an integer"):
        pool_size(50)
