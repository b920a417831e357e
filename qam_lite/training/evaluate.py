"""Evaluation in the real OGBench environments: N episodes, one batched policy call per chunk.

One batched ``agent.act`` call per action chunk serves all ``N`` episodes; its ``H * A`` outputs are
executed open loop for ``H`` steps (as in training and in the paper). The environments are stepped
in worker processes (:mod:`qam_lite.training.envpool`): each worker runs its share of the chunks, so
evaluation scales with the machine's cores while the policy stays one batched call. Success is the
environment's ``info['success']`` at the episode's last step (single-task OGBench envs end an
episode when the task is solved, or at the time limit).

Memory: a MuJoCo scene environment takes about 170 MB, so 50 live environments would take 8.5
GB. The episodes therefore run in *waves* of at most as many as the pool holds (:func:`pool_size`:
``$QAM_LITE_EVAL_ENVS``, default 13, so 50 episodes are 4 waves of 13, 13, 12 and 12); the wave is
one batched policy call per chunk.

Determinism: episode ``i`` of an evaluation with seed ``s`` resets with seed ``s * 1_000_003 + i``
(NumPy's global generator is seeded too: OGBench's maze envs draw reset noise from it), and its
policy noise at chunk ``c`` comes from its own key ``fold_in(fold_in(k_s, i), c)`` (the policy is
vmapped over episodes), so an episode's numbers depend only on ``(s, i)``: the same whatever the
number of worker processes, the pool's size or the other episodes of the call.
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

from qam_lite.training.envpool import EnvPool, make_pool, pool_size, reset_env

__all__ = [
    "EnvPool",
    "episode_actions",
    "episode_seed",
    "evaluate",
    "evaluate_run",
    "make_envs",
    "pool_size",
    "reset_env",
    "waves",
]


def episode_seed(seed: int, episode: int) -> int:
    """The reset seed of ``episode`` in an evaluation (or online phase) with ``seed``."""
    return (int(seed) * 1_000_003 + int(episode)) % (2**31 - 1)


def make_envs(task, num_envs: int, workers: int | None = None, env_fn=None) -> EnvPool:
    """``num_envs`` single-task OGBench environments for ``task`` (a name or a ``Task``).

    Args:
        task: task name or ``Task``.
        num_envs: environments (= the largest wave of an :func:`evaluate` call; more episodes
            run in several waves). ``pool_size(num_episodes)`` is the default's choice.
        workers: processes stepping them; ``None``: ``$QAM_LITE_EVAL_WORKERS`` or the available
            CPUs (at most ``num_envs``); ``1``: all in this process.
        env_fn: optional picklable zero-argument callable building one environment (tests).

    Returns:
        an :class:`~qam_lite.training.envpool.EnvPool`; reuse it between evaluations,
        ``close()`` it after.
    """
    from qam_lite.data.tasks import parse_task

    return make_pool(parse_task(task).name, num_envs, workers, env_fn)


def waves(num_episodes: int, num_envs: int) -> list[np.ndarray]:
    """The episode indices of each wave when ``num_episodes`` share ``num_envs`` environments:
    as few waves as the pool allows, their sizes differing by at most one (largest first)."""
    count = -(-num_episodes // num_envs)
    return np.array_split(np.arange(num_episodes), count)


def policy_key(seed: int) -> jax.Array:
    """The root key of an evaluation's policy noise (episode ``i``, chunk ``c``: fold in both)."""
    return jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)


@functools.lru_cache(maxsize=16)
def episode_actions(act: Callable) -> Callable:
    """``act`` compiled per episode: ``(state, obs (B, obs_dim), episodes (B,) int, key, chunk)
    -> (B, H * A)``, row ``b`` drawn with ``fold_in(fold_in(key, episodes[b]), chunk)``.

    Each row is one ``act`` call on a batch of one (vmapped), so an episode's action depends on
    its own observation and key only, not on which other episodes share the call.
    """

    def run(state, obs, episodes, key, chunk):
        def one(o, i):
            k = jax.random.fold_in(jax.random.fold_in(key, i), chunk)
            return act(state, o[None], k)[0]

        return jax.vmap(one)(obs, episodes)

    return jax.jit(run)


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
        num_episodes: number of episodes ``N``.
        seed: evaluation seed (env resets and policy noise).
        envs: an :class:`EnvPool` from :func:`make_envs` to reuse between evaluations, or a list
            of environment objects (stepped in this process); with ``M`` envs the episodes run in
            ``ceil(N / M)`` waves. ``None``: a pool of :func:`pool_size` ``(N)`` envs.
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
        pool, own = make_envs(task, pool_size(num_episodes), workers), True
    try:
        out = _run(agent, state, pool, num_episodes, seed, max_steps)
    finally:
        if own:
            pool.close()
    out["seconds"] = time.perf_counter() - start
    return out


def _run(agent, state, pool: EnvPool, n: int, seed: int, max_steps: int | None) -> dict:
    act = episode_actions(agent.act)
    key = policy_key(seed)
    groups = waves(n, pool.num_envs)
    size = len(groups[0])
    success, returns, lengths = [], [], []
    for episodes in groups:
        k = len(episodes)
        obs = pool.reset([episode_seed(seed, int(i)) for i in episodes])
        # Every call gets `size` rows (a short wave is padded, its extra rows ignored) so that
        # `act` compiles once per evaluation size.
        rows = np.resize(episodes, size)
        batch = np.zeros((size, obs.shape[-1]), np.float32)
        chunk, active = 0, np.ones(k, dtype=bool)
        while active.any():
            batch[:k] = obs  # finished episodes keep their last observation, unused
            actions = np.asarray(act(state, jnp.asarray(batch), jnp.asarray(rows), key, chunk))
            chunk += 1
            out = pool.step(actions[:k].reshape(k, -1, pool.action_dim), max_steps)
            obs, active = out["obs"], out["active"]
        success.append(out["success"])
        returns.append(out["returns"])
        lengths.append(out["lengths"])
    success, returns = np.concatenate(success), np.concatenate(returns)
    return {
        "success_rate": float(success.mean()),
        "episode_return": float(returns.mean()),
        "episode_length": float(np.concatenate(lengths).mean()),
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
    with make_envs(run.config.task, pool_size(n), workers) as envs:
        for s in range(run.config.num_seeds):
            state = run.seed_state(s)
            res = evaluate(run.agent, state, run.config.task, n, seed + s, envs=envs)
            res.update(seed=run.config.seed + s, step=run.step)
            results.append(res)
    return results
