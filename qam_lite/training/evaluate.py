"""Evaluation in the real OGBench environments: N episodes, one batched policy call per chunk.

One batched ``agent.act`` call per action chunk serves all ``N`` episodes; its ``H * A`` outputs are
executed open loop for ``H`` steps (as in training and in the paper). The environments are stepped
in worker processes (:mod:`qam_lite.training.envpool`): each worker runs its share of the chunks, so
evaluation scales with the machine's cores while the policy stays one batched call. Success is the
environment's ``info['success']`` at the episode's last step (single-task OGBench envs end an
episode when the task is solved, or at the time limit).

Determinism: episode ``i`` of an evaluation with seed ``s`` resets with seed ``s * 1_000_003 + i``
(NumPy's global generator is seeded too: OGBench's maze envs draw reset noise from it), and the
policy's noise key is derived from ``s``; the same call gives the same numbers, whatever the
number of worker processes.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite.training.envpool import EnvPool, make_pool, reset_env

__all__ = ["EnvPool", "episode_seed", "evaluate", "evaluate_run", "make_envs", "reset_env"]


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of ``episode`` in an evaluation (or online phase) with ``seed``."""
    return (int(seed) * 1_000_003 + int(episode)) % (2**31 - 1)


def make_envs(task, num_envs: int, workers: int | None = None, env_fn=None) -> EnvPool:
    """``num_envs`` single-task OGBench environments for ``task`` (a name or a ``Task``).

    Args:
        task: task name or ``Task``.
        num_envs: environments (= the most episodes one :func:`evaluate` call can run).
        workers: processes stepping them; ``None``: ``$QAM_LITE_EVAL_WORKERS`` or the available
            CPUs (at most ``num_envs``); ``1``: all in this process.
        env_fn: optional picklable zero-argument callable building one environment (tests).

    Returns:
        an :class:`~qam_lite.training.envpool.EnvPool`; reuse it between evaluations,
        ``close()`` it after.
    """
    from qam_lite.data.tasks import parse_task

    return make_pool(parse_task(task).name, num_envs, workers, env_fn)


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
    envs: EnvPool | list | None = None,
    max_steps: int | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Run ``num_episodes`` episodes of ``agent`` (one seed's ``state``) together.

    Args:
        agent: an ``Agent`` whose ``act(state, obs (B, obs_dim), key) -> (B, H * A)`` in [-1, 1].
        state: that agent's state (a single seed, not a vmapped stack).
        task: task name or ``Task``; ignored when ``envs`` is given.
        num_episodes: number of episodes ``N`` (= environments stepped together).
        seed: evaluation seed (env resets and policy noise).
        envs: an :class:`EnvPool` from :func:`make_envs` (at least ``N`` envs) to reuse between
            evaluations, or a list of environment objects (stepped in this process).
        max_steps: optional cap on episode length (else the env's own time limit).
        workers: worker processes when ``envs`` is not given (see :func:`make_envs`).

    Returns:
        dict with ``success_rate`` (fraction in [0, 1]), ``episode_return``, ``episode_length``
        (means), ``episodes``, ``successes`` (list of 0/1), ``returns`` (list), ``seconds``.
    """
    if num_episodes < 1:
        raise ValueError(f"num_episodes={num_episodes} is invalid; accepted: an integer >= 1")
    start = time.perf_counter()
    if isinstance(envs, EnvPool):
        pool, own = envs, False
    elif envs is not None:
        pool, own = EnvPool(None, 0, envs=envs), False
    else:
        pool, own = make_envs(task, num_episodes, workers), True
    try:
        if pool.num_envs < num_episodes:
            raise ValueError(f"{pool.num_envs} environments given for {num_episodes} episodes")
        out = _run(agent, state, pool, num_episodes, seed, max_steps)
    finally:
        if own:
            pool.close()
    out["seconds"] = time.perf_counter() - start
    return out


def _run(agent, state, pool: EnvPool, n: int, seed: int, max_steps: int | None) -> dict:
    act = _jit_act(agent.act)
    obs = pool.reset([episode_seed(seed, i) for i in range(n)])
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)
    chunk, active = 0, np.ones(n, dtype=bool)
    while active.any():
        # The full batch is always passed (finished episodes keep their last observation) so
        # that `act` compiles once for a fixed shape and episode i always gets row i's noise.
        actions = np.asarray(act(state, jnp.asarray(obs), jax.random.fold_in(key, chunk)))
        chunk += 1
        out = pool.step(actions.reshape(n, -1, pool.action_dim), max_steps)
        obs, active = out["obs"], out["active"]
    success, returns = out["success"], out["returns"]
    return {
        "success_rate": float(success.mean()),
        "episode_return": float(returns.mean()),
        "episode_length": float(out["lengths"].mean()),
        "episodes": int(n),
        "successes": success.astype(int).tolist(),
        "returns": returns.tolist(),
    }


def evaluate_run(
    run_dir: str | Path,
    *,
    num_episodes: int | None = None,
    seed: int = 10_000,
    workers: int | None = None,
):
    """Evaluate every seed of a saved run's latest checkpoint; returns a list of per-seed dicts.

    ``seed`` defaults to a value the training loop's periodic evaluations never use, so the
    numbers are a fresh held-out estimate.
    """
    from qam_lite.training.rundir import load_run

    run = load_run(run_dir)
    n = num_episodes or run.config.eval_episodes
    results = []
    with make_envs(run.config.task, n, workers) as envs:
        for s in range(run.config.num_seeds):
            state = run.seed_state(s)
            res = evaluate(run.agent, state, run.config.task, n, seed + s, envs=envs)
            res.update(seed=run.config.seed + s, step=run.step)
            results.append(res)
    return results
