"""Evaluation environments stepped in worker processes, one action chunk per message.

``N`` environments are split into ``W`` contiguous blocks; each block lives in one worker process
(or in this process when ``W = 1``). The parent sends every worker its block's action chunks
``(k, H, A)``; the worker runs each chunk open loop in each of its still-running environments and
answers with the block's observations, rewards, lengths and successes. So one evaluation costs one
round trip per worker per *chunk* (not per step), and the policy call stays batched over all ``N``.

Why not gymnasium's ``AsyncVectorEnv``: it runs one process per environment (50 processes for 50
episodes, whatever the machine's core count), steps every environment at every step (finished
episodes would be auto-reset and stepped on), and does one pipe round trip per step; the block
layout here gives a chosen number of workers, stops finished episodes, and batches ``H`` steps.

Determinism: environment ``i`` is reset with its own seed (NumPy's global generator is seeded
right before, for OGBench's maze envs) and stepped only with its own actions, so which worker
holds it does not change a number. This module does not import JAX: workers start quickly and
never inherit JAX's threads (they are started with ``spawn``).
"""

from __future__ import annotations

import functools
import multiprocessing as mp
import os
import signal
import traceback
import warnings
import weakref
from collections.abc import Callable, Sequence

import numpy as np

from qam_lite.data.datasets import quiet_env_warnings

#: Environment variable capping the default number of evaluation workers (a sweep sets it so
#: concurrent jobs share the machine's cores).
WORKERS_ENV = "QAM_LITE_EVAL_WORKERS"


def make_env(task_name: str):
    """One single-task OGBench environment for ``task_name`` (canonical name)."""
    import ogbench

    with warnings.catch_warnings():
        # gymnasium notes that OGBench's float64 action bounds are cast to float32: harmless.
        warnings.filterwarnings("ignore", message=".*precision lowered.*")
        return ogbench.make_env_and_datasets(task_name, env_only=True)


def reset_env(env, seed: int) -> tuple[np.ndarray, dict]:
    """Reset ``env`` reproducibly: seeds both the env's generator and NumPy's global one."""
    np.random.seed(seed)  # maze envs use the global generator for start noise
    obs, info = env.reset(seed=seed)
    return np.asarray(obs, dtype=np.float32), info


def available_cpus() -> int:
    """CPUs this process may run on (the affinity mask, not the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        return os.cpu_count() or 1


#: Environment variable capping how many environments an evaluation keeps alive at once.
ENVS_ENV = "QAM_LITE_EVAL_ENVS"

#: The default cap: 13 scene environments take about 2.2 GB, and 50 episodes run in 4 waves.
DEFAULT_LIVE_ENVS = 13


def _positive_int(name: str, text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise ValueError(f"{name}={text!r} is invalid; accepted: an integer >= 1")
    return value


def pool_size(num_episodes: int) -> int:
    """Environments to build for evaluations of ``num_episodes``: at most ``$QAM_LITE_EVAL_ENVS``
    (default :data:`DEFAULT_LIVE_ENVS`), sized so the waves are as even as possible."""
    text = os.environ.get(ENVS_ENV)
    cap = _positive_int(ENVS_ENV, text) if text else DEFAULT_LIVE_ENVS
    waves = -(-num_episodes // cap)
    return -(-num_episodes // waves)


def default_workers(num_envs: int) -> int:
    """``$QAM_LITE_EVAL_WORKERS`` if set, else the available CPUs; never more than ``num_envs``."""
    text = os.environ.get(WORKERS_ENV)
    wanted = _positive_int(WORKERS_ENV, text) if text else available_cpus()
    return max(1, min(num_envs, wanted))


class EnvBlock:
    """Environments held by one process, with their running episodes' state.

    Arrays are per environment of the block (length ``k``): ``obs (k, obs_dim)`` float32, and
    ``returns``, ``lengths``, ``success`` and ``active`` (still running).
    """

    def __init__(self, envs: Sequence):
        self.envs = list(envs)
        self.action_dim = int(np.prod(self.envs[0].action_space.shape)) if self.envs else 0
        k = len(self.envs)
        self.obs = None
        self.returns, self.lengths = np.zeros(k), np.zeros(k, dtype=np.int64)
        self.success, self.active = np.zeros(k), np.zeros(k, dtype=bool)

    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Start one episode in each of the first ``len(seeds)`` envs (the rest stay idle)."""
        first = [reset_env(env, s)[0] for env, s in zip(self.envs, seeds, strict=False)]
        dim = first[0].shape[-1] if first else 0
        self.obs = np.zeros((len(self.envs), dim), np.float32)
        if first:
            self.obs[: len(first)] = np.stack(first)
        self.returns[:], self.lengths[:], self.success[:] = 0.0, 0, 0.0
        self.active[:] = False
        self.active[: len(first)] = True
        return self.obs[: len(first)].copy()

    def step(self, actions: np.ndarray, max_steps: int | None) -> dict[str, np.ndarray]:
        """Run each running env's chunk ``actions[i]`` (``(H, A)``) open loop until it ends.

        ``actions`` is ``(n, H, A)`` for the first ``n`` envs (those reset). An episode ends when
        the env says terminated/truncated or at ``max_steps``; its success is ``info['success']``
        at that last step.
        """
        for i in np.flatnonzero(self.active[: len(actions)]):
            env = self.envs[i]
            for a in actions[i]:
                ob, reward, terminated, truncated, info = env.step(a)
                self.obs[i] = ob
                self.returns[i] += float(reward)
                self.lengths[i] += 1
                capped = max_steps is not None and self.lengths[i] >= max_steps
                if terminated or truncated or capped:
                    self.success[i] = float(info.get("success", 0.0))
                    self.active[i] = False
                    break
        n = len(actions)
        return {
            "obs": self.obs[:n].copy(),
            "returns": self.returns[:n].copy(),
            "lengths": self.lengths[:n].copy(),
            "success": self.success[:n].copy(),
            "active": self.active[:n].copy(),
        }

    def close(self) -> None:
        for env in self.envs:
            close = getattr(env, "close", None)
            if close is not None:
                close()


def _worker(conn, env_fn: Callable, count: int) -> None:
    """A worker process's loop: build ``count`` envs, then answer ``(method, args)`` messages."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle
    quiet_env_warnings()  # a spawned process starts with Python's default filters
    try:
        block = EnvBlock([env_fn() for _ in range(count)])
        conn.send(("ok", block.action_dim))
    except BaseException:
        conn.send(("error", traceback.format_exc()))
        return
    while True:
        try:
            method, args = conn.recv()
        except EOFError:  # the parent is gone
            break
        if method == "close":
            block.close()
            conn.send(("ok", None))
            break
        try:
            conn.send(("ok", getattr(block, method)(*args)))
        except BaseException:
            conn.send(("error", traceback.format_exc()))


def _stop(processes, conns) -> None:
    """Ask workers to exit, then make sure they have (finalizer: also runs at interpreter exit)."""
    for conn in conns:
        try:
            conn.send(("close", None))
        except (OSError, BrokenPipeError):
            pass
    for proc in processes:
        proc.join(timeout=5)
        if proc.is_alive():
            proc.terminate()
            proc.join(timeout=5)
    for conn in conns:
        conn.close()


class EnvPool:
    """``num_envs`` environments in ``workers`` processes (``workers = 1``: in this process).

    Methods mirror :class:`EnvBlock` over all environments: :meth:`reset` ``(seeds) -> obs
    (n, obs_dim)`` and :meth:`step` ``(actions (n, H, A), max_steps) -> dict of (n,) arrays``.
    Use as a context manager or call :meth:`close`; worker processes are daemons and are also
    stopped by a finalizer.
    """

    def __init__(self, env_fn: Callable | None, num_envs: int, workers: int = 1, envs=None):
        if envs is not None:  # already-built environments, kept in this process
            envs = list(envs)
            num_envs, workers = len(envs), 1
        if num_envs < 1:
            raise ValueError(f"num_envs={num_envs} is invalid; accepted: an integer >= 1")
        if workers < 1:
            raise ValueError(f"workers={workers} is invalid; accepted: an integer >= 1")
        self.num_envs = num_envs
        self.workers = min(workers, num_envs)
        self._blocks = np.array_split(np.arange(num_envs), self.workers)
        self._local = None
        self._conns, self._procs = [], []
        if self.workers == 1:
            self._local = EnvBlock(
                envs if envs is not None else [env_fn() for _ in range(num_envs)]
            )
            self.action_dim = self._local.action_dim
            self._finalizer = None
            return
        ctx = mp.get_context("spawn")
        for block in self._blocks:
            parent, child = ctx.Pipe()
            proc = ctx.Process(target=_worker, args=(child, env_fn, len(block)), daemon=True)
            proc.start()
            child.close()
            self._conns.append(parent)
            self._procs.append(proc)
        self._finalizer = weakref.finalize(self, _stop, self._procs, self._conns)
        dims = self._gather()
        self.action_dim = int(dims[0])

    # -- messages ------------------------------------------------------------------------------
    def _gather(self) -> list:
        out = []
        for i, conn in enumerate(self._conns):
            try:
                status, value = conn.recv()
            except EOFError:
                self.close()
                raise RuntimeError(f"evaluation worker {i} exited unexpectedly") from None
            if status != "ok":
                self.close()
                raise RuntimeError(f"evaluation worker {i} failed:\n{value}")
            out.append(value)
        return out

    def _call(self, method: str, per_block_args: list) -> list:
        if self._local is not None:
            return [getattr(self._local, method)(*per_block_args[0])]
        for conn, args in zip(self._conns, per_block_args, strict=True):
            conn.send((method, args))
        return self._gather()

    # -- the API -------------------------------------------------------------------------------
    def reset(self, seeds: Sequence[int]) -> np.ndarray:
        """Start episodes in envs ``0 .. len(seeds) - 1`` with those seeds; returns their obs."""
        n = len(seeds)
        if n > self.num_envs:
            raise ValueError(f"{self.num_envs} environments given for {n} episodes")
        seeds = list(seeds)
        args = [([seeds[i] for i in block if i < n],) for block in self._blocks]
        parts = self._call("reset", args)
        return np.concatenate([p for p in parts if len(p)], axis=0)

    def step(self, actions: np.ndarray, max_steps: int | None = None) -> dict[str, np.ndarray]:
        """Run chunk ``actions[i]`` ``(H, A)`` in running env ``i`` (``i < n``); see EnvBlock."""
        n = len(actions)
        args = [(actions[block[block < n]], max_steps) for block in self._blocks]
        parts = [p for p in self._call("step", args) if len(p["obs"])]
        return {k: np.concatenate([p[k] for p in parts], axis=0) for k in parts[0]}

    def close(self) -> None:
        """Stop the worker processes (idempotent)."""
        if self._finalizer is not None:
            self._finalizer()
        elif self._local is not None:
            self._local.close()

    def __enter__(self) -> EnvPool:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def make_pool(task_name: str, num_envs: int, workers: int | None = None, env_fn=None) -> EnvPool:
    """An :class:`EnvPool` of ``num_envs`` envs of ``task_name`` in ``workers`` processes.

    ``workers=None`` means :func:`default_workers`; ``env_fn`` (a picklable zero-argument
    callable) replaces OGBench's environment, e.g. for tests.
    """
    if workers is None:
        workers = default_workers(num_envs)
    env_fn = env_fn or functools.partial(make_env, task_name)
    return EnvPool(env_fn, num_envs, max(1, workers))
