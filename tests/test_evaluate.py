"""Evaluation: chunks run open loop in lockstep, success read from the env's info, determinism."""

from types import SimpleNamespace

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite.evaluate import episode_seed, evaluate

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
        c = jax.pure_callback(lambda: _tick(calls), jax.ShapeDtypeStruct((), jnp.float32))
        steps = jnp.arange(H, dtype=jnp.float32)
        chunk = jnp.repeat(c * 10 + steps, A)  # (H * A,)
        return jnp.broadcast_to(chunk, (obs.shape[0], H * A)) / 100.0

    return SimpleNamespace(act=act)


def _tick(calls):
    calls.append(1)
    return np.float32(len(calls) - 1)


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
    with pytest.raises(ValueError, match="1 environments given for 2"):
        evaluate(agent, None, None, 2, seed=0, envs=[FakeEnv(3, True)])


def noisy_agent():
    def act(state, obs, key):
        return jnp.tanh(state * jax.random.normal(key, (obs.shape[0], 5)))

    return SimpleNamespace(act=act)


class Recorder:
    """Passes through to a real env, recording every observation."""

    def __init__(self, env):
        self.env, self.action_space, self.seen = env, env.action_space, []

    def reset(self, seed=None):
        return self.env.reset(seed=seed)

    def step(self, action):
        out = self.env.step(action)
        self.seen.append(np.asarray(out[0]).copy())
        return out


def test_real_env_deterministic_given_seed():
    """Two short cube-single episodes: same seed -> same trajectories; another seed differs."""
    from qam_lite.evaluate import make_envs

    envs = [Recorder(e) for e in make_envs("cube-single-play-singletask-task1-v0", 2)]
    agent, state = noisy_agent(), jnp.float32(1.0)
    runs = []
    for seed in (1, 1, 2):
        for e in envs:
            e.seen = []
        res = evaluate(agent, state, None, 2, seed=seed, envs=envs, max_steps=30)
        runs.append(np.stack(envs[0].seen + envs[1].seen))
        assert res["episode_length"] == 30 and res["success_rate"] == 0.0
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.allclose(runs[0], runs[2])
