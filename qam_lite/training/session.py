"""A training run's bookkeeping, shared by the offline and the online loop: its fixed parts
(config, agent, data, run folder, evaluation workers), Ctrl-C and SIGTERM handling, logging,
evaluation, checkpoints and the NaN stop.

:class:`Context` is what :func:`qam_lite.training.train.train` builds once and both phases
(:func:`~qam_lite.training.train.offline_phase`, :func:`~qam_lite.training.online.online_phase`)
use; :class:`Interrupts` turns the first signal into a stop at the next step boundary (the
checkpoint saved), a second into ``KeyboardInterrupt``.
"""

from __future__ import annotations

import math
import signal
import sys
import threading
import time

import jax
import numpy as np

from qam_lite import agents
from qam_lite.config import Config, to_dict
from qam_lite.data import datasets
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import evaluate as evaluation
from qam_lite.training import logs
from qam_lite.training.rundir import (
    CHECKPOINT,
)
from qam_lite.training.update import (
    seed_keys,
    take_seed,
)


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; ``step`` is the first logged step where it was seen."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


def call_size(config: Config, shard_interval: int | None = None) -> int:
    """Updates per compiled call: ``updates_per_call`` cut down to divide every interval (and
    ``shard_interval``, the updates per shard of sharded data, if given)."""
    n = config.updates_per_call
    intervals = (config.eval_interval, config.checkpoint_interval, config.log_interval)
    for interval in (*intervals, shard_interval or 0):
        n = math.gcd(n, interval)
    return math.gcd(n, config.offline_steps) if config.offline_steps else n


def eval_seed(config: Config, seed_index: int, step: int) -> int:
    """Seed of the evaluation of seed ``seed_index`` at ``step`` (a new one at every step)."""
    return (config.seed + seed_index + 1) * 7919 + step


def to_sparse(rewards):
    """``r' = -1[r != 0]`` (puzzle and scene domains); idempotent."""
    return -(np.asarray(rewards) != 0).astype(np.float32)


class Interrupts:
    """SIGINT/SIGTERM handler for the duration of a run: the first signal asks the loop to stop
    at its next step boundary (``requested``), a second raises ``KeyboardInterrupt`` at once.
    Outside the main thread (where handlers cannot be installed) Ctrl-C stops at once."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self):
        self.requested = False
        self.previous: dict = {}

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True
        print(
            "\ninterrupted: finishing the current step, then saving a checkpoint "
            "(interrupt again to stop at once and resume from the last checkpoint)",
            file=sys.stderr,
            flush=True,
        )

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self.previous[s] = signal.getsignal(s)
                signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, handler in self.previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class Context:
    """What every part of the loop reads: config, folder, data, agent, keys, and the small
    bookkeeping of logs, evaluations and checkpoints."""

    def __init__(self, config, out, task, dataset, source, fingerprint, stop_after, interrupts):
        self.config, self.out, self.task = config, out, task
        self.dataset, self.source, self.fingerprint = dataset, source, fingerprint
        self.stop_after, self.interrupts = stop_after, interrupts
        self.obs_dim = int(dataset["observations"].shape[-1])
        self.action_dim = int(dataset["actions"].shape[-1])
        self.agent = agents.make_agent(config, self.obs_dim, self.action_dim)
        self.bases = seed_keys(config)
        self.shards: datasets.ShardCycle | None = None  # sharded data: the offline phase cycles
        self.eval_envs = None
        self.bar = None
        self.started = time.perf_counter()
        self.elapsed_before = 0.0
        self.saved_step: int | None = None
        self.stopped_by: str | None = None

    def total_steps(self) -> int:
        return self.config.offline_steps + self.config.online_steps

    def should_stop(self, step: int) -> bool:
        """Whether to stop (resumably) before the work of ``step + 1``."""
        if self.interrupts.requested:
            self.stopped_by = "signal"
        elif self.stop_after is not None and step >= self.stop_after:
            self.stopped_by = "stop_after"
        return self.stopped_by is not None

    def save(self, states, step: int, phase: str, extras=None, online=None) -> None:
        meta = {
            "step": int(step),
            "phase": phase,
            "config": to_dict(self.config),
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
            "key_schedule": "fold_in(fold_in(PRNGKey(seed + i), stream), step)",
            "data_fingerprint": self.fingerprint,
            "data_file": self.source.get("file"),
        }
        if online is not None:
            meta["online"] = online
        ckpt.save(self.out / CHECKPOINT, {"states": states}, meta, extras)
        self.saved_step = int(step)

    def log_metrics(self, step: int, phase: str, metrics: dict, states) -> None:
        """One ``metrics.csv`` row per seed; raises :class:`TrainingDiverged` on NaN/inf."""
        c = self.config
        names = [k for k in metrics if not k.startswith("last/")]
        rows = [
            {"step": step, "seed": c.seed + i, "phase": phase}
            | {k: float(np.asarray(metrics[k])[i]) for k in names}
            for i in range(c.num_seeds)
        ]
        logs.append_rows(self.out / "metrics.csv", rows)
        if nonfinite(metrics):
            raise self.diverged(states, step, phase)

    def evaluate(self, states, step: int, phase: str) -> None:
        """Evaluate every seed; one ``eval.csv`` row per seed; redraw ``curve.png``."""
        c = self.config
        if self.eval_envs is None:
            self.eval_envs = evaluation.make_envs(self.task, evaluation.pool_size(c.eval_episodes))
        rows = []
        for i in range(c.num_seeds):
            res = evaluation.evaluate(
                self.agent,
                take_seed(states, i),
                self.task,
                c.eval_episodes,
                eval_seed(c, i, step),
                envs=self.eval_envs,
            )
            rows.append(
                {"step": step, "seed": c.seed + i, "phase": phase}
                | {k: res[k] for k in ("success_rate", "episode_return", "episode_length")}
                | {"episodes": res["episodes"]}
            )
        logs.append_rows(self.out / "eval.csv", rows)
        title = f"{c.agent.upper()} on {self.task.name}"
        logs.plot_curve(self.out / "eval.csv", self.out / "curve.png", title=title)
        if self.bar is not None:
            mean = np.mean([r["success_rate"] for r in rows])
            self.bar.set_postfix_str(f"success {100 * mean:.0f}% @ {step}")

    def diverged(self, states, step: int, phase: str) -> TrainingDiverged:
        path = self.out / "diverged.npz"
        if not deleted(states):
            ckpt.save(path, {"states": states}, {"step": step, "phase": phase})
        where = (
            f"the last good checkpoint is at step {self.saved_step}"
            if self.saved_step is not None
            else "no checkpoint was reached before it"
        )
        return TrainingDiverged(
            f"a loss became NaN/inf by step {step} ({phase}); training stopped, logs kept in "
            f"{self.out}, the diverged state saved to {path.name}, {where}. Try a lower lr or tau.",
            step,
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
        if self.eval_envs is not None and hasattr(self.eval_envs, "close"):
            self.eval_envs.close()


def deleted(tree) -> bool:
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree_util.tree_leaves(tree))


def nonfinite(metrics: dict) -> bool:
    values = [np.asarray(v, np.float64) for k, v in metrics.items() if k != "nonfinite"]
    flag = np.asarray(metrics.get("nonfinite", 0.0))
    return bool(np.any(flag > 0) or not all(np.all(np.isfinite(v)) for v in values))
