"""Evaluation in the real OGBench environments: N episodes stepped in lockstep, chunks open loop.

One batched ``agent.act`` call per action chunk serves all ``N`` environments; its ``H * A`` outputs
are executed open loop for ``H`` steps (as in training and in the paper). Success is the
environment's ``info['success']`` at the episode's last step (single-task OGBench envs end an
episode when the task is solved, or at the time limit).

Determinism: episode ``i`` of an evaluation with seed ``s`` resets with seed ``s * 1_000_003 + i``
(NumPy's global generator is seeded too: OGBench's maze envs draw reset noise from it), and the
policy's noise key is derived from ``s``; the same call gives the same numbers.
"""

from __future__ import annotations

import functools
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of ``episode`` in an evaluation (or online phase) with ``seed``."""
    return (int(seed) * 1_000_003 + int(episode)) % (2**31 - 1)


def reset_env(env, seed: int):
    """Reset ``env`` reproducibly: seeds both the env's generator and NumPy's global one."""
    np.random.seed(seed)  # maze envs use the global generator for start noise
    obs, info = env.reset(seed=seed)
    return np.asarray(obs, dtype=np.float32), info


def make_envs(task, num_envs: int) -> list:
    """``num_envs`` single-task OGBench environments for ``task`` (a name or a ``Task``)."""
    import ogbench

    name = getattr(task, "name", task)
    with warnings.catch_warnings():
        # gymnasium notes that OGBench's float64 action bounds are cast to float32: harmless.
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        return [ogbench.make_env_and_datasets(name, env_only=True) for _ in range(num_envs)]


@functools.lru_cache(maxsize=16)
def _jit_act(act: Callable) -> Callable:
    return jax.jit(act)


def evaluate(
    agent,
    state: Any,
    task,
    num_episodes: int,
    seed: int,
    *,
    envs: list | None = None,
    max_steps: int | None = None,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes of ``agent`` (one seed's ``state``) in lockstep.

    Args:
        agent: an ``Agent`` whose ``act(state, obs (B, obs_dim), key) -> (B, H * A)`` in [-1, 1].
        state: that agent's state (a single seed, not a vmapped stack).
        task: task name or ``Task``; ignored when ``envs`` is given.
        num_episodes: number of episodes ``N`` (= environments stepped together).
        seed: evaluation seed (env resets and policy noise).
        envs: optional pre-built environments (at least ``N``) to reuse between evaluations.
        max_steps: optional cap on episode length (else the env's own time limit).

    Returns:
        dict with ``success_rate`` (fraction in [0, 1]), ``episode_return``, ``episode_length``
        (means), ``episodes``, ``successes`` (list of 0/1), ``returns`` (list), ``seconds``.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes={num_episodes} is invalid; accepted: an integer >= 1")
    start = time.perf_counter()
    envs = list(envs) if envs is not None else make_envs(task, num_episodes)
    if len(envs) < num_episodes:
        raise ValueError(f"{len(envs)} environments given for {num_episodes} episodes")
    envs = envs[:num_episodes]
    act = _jit_act(agent.act)
    action_dim = int(np.prod(envs[0].action_space.shape))

    obs = np.stack([reset_env(env, episode_seed(seed, i))[0] for i, env in enumerate(envs)])
    active = np.ones(num_episodes, dtype=bool)
    success = np.zeros(num_episodes)
    returns = np.zeros(num_episodes)
    lengths = np.zeros(num_episodes, dtype=int)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)
    chunk = 0
    while active.any():
        # The full batch is always passed (finished envs keep their last observation) so that
        # `act` compiles once for a fixed shape.
        actions = np.asarray(act(state, jnp.asarray(obs), jax.random.fold_in(key, chunk)))
        chunk += 1
        horizon = actions.shape[-1] // action_dim
        actions = actions.reshape(num_episodes, horizon, action_dim)
        for j in range(horizon):
            for i in np.flatnonzero(active):
                ob, reward, terminated, truncated, info = envs[i].step(actions[i, j])
                obs[i] = ob
                returns[i] += float(reward)
                lengths[i] += 1
                done = (
                    terminated or truncated or (max_steps is not None and lengths[i] >= max_steps)
                )
                if done:
                    success[i] = float(info.get("success", 0.0))
                    active[i] = False
            if not active.any():
                break
    return {
        "success_rate": float(success.mean()),
        "episode_return": float(returns.mean()),
        "episode_length": float(lengths.mean()),
        "episodes": int(num_episodes),
        "successes": success.astype(int).tolist(),
        "returns": returns.tolist(),
        "seconds": time.perf_counter() - start,
    }


def evaluate_run(run_dir: str | Path, *, num_episodes: int | None = None, seed: int = 10_000):
    """Evaluate every seed of a saved run's latest checkpoint; returns a list of per-seed dicts.

    ``seed`` defaults to a value the training loop's periodic evaluations never use, so the
    numbers are a fresh held-out estimate.
    """
    from qam_lite.train import load_run

    run = load_run(run_dir)
    n = num_episodes or run.config.eval_episodes
    envs = make_envs(run.config.task, n)
    results = []
    for s in range(run.config.num_seeds):
        state = run.seed_state(s)
        res = evaluate(run.agent, state, run.config.task, n, seed + s, envs=envs)
        res.update(seed=run.config.seed + s, step=run.step)
        results.append(res)
    return results
