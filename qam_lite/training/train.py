"""The training loop: offline updates, optional online fine-tuning, evaluation, logs, checkpoints.

``train(config, out_dir)`` runs one configuration, all ``num_seeds`` seeds vmapped on one device,
and leaves a run folder (files listed in :mod:`qam_lite.training.rundir`). Read top to bottom:
:func:`train` sets up and resumes, :func:`offline_phase` and :func:`online_phase` are the loops.

**Offline phase.** The dataset lives on the device; each compiled call runs ``n`` updates with
``lax.scan`` (batches sampled inside the call), vmapped over seeds. ``n`` divides every interval,
so evaluations, logs and checkpoints fall on exact steps.

**Sharded data** (a ``<domain>-100m-v0`` shard folder, see
:class:`qam_lite.data.datasets.ShardCycle`): as the authors' loader, training moves to the next
shard every ``datasets.SHARD_INTERVAL`` updates, cycling. One shard is on the device at a time,
swapped between compiled calls: ``n`` also divides the interval, and a call uses the shard of its
first update ``u``, ``(u // interval) % shards``. With ``n > 1`` shard ``k`` thus trains updates ``k
* interval + 1 .. (k + 1) * interval``, where the authors' loop switches one update earlier (``k *
interval .. (k + 1) * interval - 1``; with ``updates_per_call=1`` the two are the same). The shard
is a function of the step, so a resumed run reads the same shards. Shards of unequal size cost one
more compilation per size (results are unaffected). The run counts as cycled (paper-comparable data)
when its offline updates reach every shard. The online phase's replay buffer starts from the first
shard and does not cycle.

**Online phase** (``online_steps > 0``, as the authors' ``main.py``). Each seed has its own
environment; all seeds step in lockstep, one environment step each per loop iteration. A seed
asks its policy for an action chunk when its previous chunk is used up (or its episode ended)
and runs the ``H`` actions open loop. Every transition goes into that seed's replay buffer
(:mod:`qam_lite.data.replay`: the dataset followed by a ring of ``online_buffer_size`` online rows).
From environment step ``start_training`` on (the authors' ``i >= start_training``; 5,000 by
default), every environment step is followed by one update of every seed, on batches from its
own buffer. ``step`` counts offline updates plus environment steps.

**Interrupts.** The first Ctrl-C (SIGINT) or SIGTERM does not stop the program mid-step: the
running compiled call (offline) or environment step (online) is finished and logged, a
checkpoint is saved, and :func:`train` returns with ``summary['interrupted']``. A second one
stops at once (``KeyboardInterrupt``); nothing is saved then, and nothing needs to be.

**Resume.** Every random draw derives from ``(seed, step)`` (``fold_in``) and every environment
reset from ``(seed, episode)``, so the work after a checkpoint is the same whenever it is done.
The CSV rows of a step are written before that step's checkpoint, and a resumed run first cuts
the CSVs back to its checkpoint's step: after a kill at any moment (even mid-save: every write is
atomic) a rerun of the same command writes the same ``metrics.csv`` and ``eval.csv``, byte for
byte, as a run that never stopped. Online, a checkpoint also holds every seed's buffer, action
queue and the actions of its running episode; resuming replays those actions in a freshly reset
environment (MuJoCo is deterministic) and checks the observation it reaches.
"""

from __future__ import annotations

import contextlib
import math
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite import agents
from qam_lite.chunks import to_device
from qam_lite.config import Config, to_dict
from qam_lite.data import datasets, replay
from qam_lite.data.tasks import parse_task
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import envpool, logs, rundir
from qam_lite.training import evaluate as evaluation
from qam_lite.training.rundir import (
    CHECKPOINT,
    Run,
    RunFolderError,
    RunMismatch,
    load_run,
)
from qam_lite.training.update import (
    init_states,
    make_multi_update,
    seed_keys,
    step_keys,
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


def online_episode_seed(config: Config, seed_index: int, episode: int) -> int:
    """Reset seed of online episode ``episode`` of seed ``seed_index``."""
    return evaluation.episode_seed(config.seed + seed_index + 1_000_000, episode)


def to_sparse(rewards):
    """``r' = -1[r != 0]`` (puzzle and scene domains); idempotent."""
    return -(np.asarray(rewards) != 0).astype(np.float32)


# --------------------------------------------------------------------------------------------
# The run's fixed parts and its bookkeeping


class _Interrupts:
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


class _Context:
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
            "data_path": self.source.get("path"),
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
        if _nonfinite(metrics):
            raise self.diverged(states, step, phase)

    def evaluate(self, states, step: int, phase: str) -> None:
        """Evaluate every seed; one ``eval.csv`` row per seed; redraw ``curve.png``."""
        c = self.config
        if self.eval_envs is None:
            self.eval_envs = evaluation.make_envs(self.task, c.eval_episodes)
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
        if not _deleted(states):
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


def _deleted(tree) -> bool:
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree_util.tree_leaves(tree))


def _nonfinite(metrics: dict) -> bool:
    values = [np.asarray(v, np.float64) for k, v in metrics.items() if k != "nonfinite"]
    flag = np.asarray(metrics.get("nonfinite", 0.0))
    return bool(np.any(flag > 0) or not all(np.all(np.isfinite(v)) for v in values))


# --------------------------------------------------------------------------------------------
# Entry point


def train(
    config: Config,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    data: tuple | None = None,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` (resuming its checkpoint if it has one); return a summary.

    Args:
      config: the run's :class:`~qam_lite.config.Config`.
      out_dir: run folder (created). A checkpoint of the same config there is resumed; a folder
        whose earlier attempt of the same config stopped before its first checkpoint starts
        over; results of another configuration (or dataset) raise :class:`RunMismatch`.
      progress: show a tqdm progress bar (in gradient/environment steps).
      stop_after: stop (as if interrupted) once ``step >= stop_after``: save a checkpoint and
        return with ``summary['interrupted'] = True`` (at the next call boundary offline, the
        next environment step online).
      data: optional ``(env, train)`` to use instead of loading the task's dataset.
      overwrite: discard the folder's run files first and start at step 0.

    Returns:
      dict with ``task, agent, step, seeds, success_rate`` (last evaluation, mean over seeds),
      ``success_per_seed``, ``seconds``, ``interrupted`` (``stopped_by``: ``'signal'`` or
      ``'stop_after'``) and ``out_dir``.

    Raises:
      TrainingDiverged: a NaN/inf loss (logs and the last good checkpoint are kept).
      RunMismatch: ``out_dir`` holds another configuration's or dataset's results.
      RunFolderError: ``out_dir`` is a file, not writable, or in use by another process.
      qam_lite.training.checkpoint.CheckpointError: the checkpoint is damaged.
      qam_lite.atomic.WriteError: a file could not be written (e.g. disk full); the previous
        checkpoint is intact.
      qam_lite.data.datasets.DataError: the dataset is missing or malformed.
    """
    if stop_after is not None and stop_after < 0:
        raise ValueError(f"stop_after={stop_after} is invalid; accepted: an integer >= 0")
    c = config
    out = Path(out_dir)
    with rundir.locked(out):
        meta = rundir.prepare(out, c, overwrite=overwrite)
        dataset, source, shards = _load_data(c, data)
        fingerprint = rundir.data_fingerprint(dataset)
        if shards is not None:
            try:
                fingerprint = rundir.shards_fingerprint(fingerprint, shards.shards, shards.interval)
            except ValueError as err:
                raise datasets.DatasetError(str(err)) from err
        if meta is not None:
            rundir.check_data(out, meta, fingerprint, source)
            rundir.cut_back(out, int(meta["step"]))
        ctx = _Context(
            c, out, parse_task(c.task), dataset, source, fingerprint, stop_after, _Interrupts()
        )
        ctx.shards = shards
        prov = logs.provenance(
            task=ctx.task.name,
            agent=c.agent,
            seeds=[c.seed + i for i in range(c.num_seeds)],
            data=source,
            data_fingerprint=fingerprint,
            transitions=fingerprint["transitions"],
        )
        rundir.write_records(out, c, prov, meta)

        states = init_states(ctx.agent, c)
        step, phase, online_meta, extras = 0, "offline", None, {}
        if meta is not None:
            loaded, meta = ckpt.load(out / CHECKPOINT, {"states": states})
            states, step, phase = loaded["states"], int(meta["step"]), meta["phase"]
            ctx.elapsed_before, ctx.saved_step = float(meta.get("elapsed", 0.0)), step
            if meta.get("online"):
                online_meta, extras = meta["online"], ckpt.load_extras(out / CHECKPOINT)
            print(f"resuming {out} from step {step} ({phase})")
        if progress:
            from tqdm.auto import tqdm

            ctx.bar = tqdm(total=ctx.total_steps(), initial=step, unit="step", desc=c.agent)
        # From here on, Ctrl-C is deferred to the next step boundary (see _Interrupts).
        try:
            with ctx.interrupts:
                stopped = False
                if phase == "offline":
                    states, step, stopped = offline_phase(ctx, states, step)
                    phase = "online" if c.online_steps else "done"
                if not stopped and phase == "online":
                    states, step, stopped = online_phase(ctx, states, step, online_meta, extras)
        finally:
            ctx.close()
        return _summarise(ctx, step, stopped)


def _load_data(c: Config, data: tuple | None) -> tuple[dict, dict, datasets.ShardCycle | None]:
    """``(train, source, shards)``: the dataset as training reads it (with sharded data: the
    first shard), where it came from, and the shard schedule (``None`` without shards)."""
    if data is not None:
        return _as_trained(c, data[1]), {"source": "given in memory"}, None
    folder = datasets.shard_folder(parse_task(c.task), datasets.data_dir(c.dataset_dir))
    if folder is None:
        _, train, _ = datasets.load(c.task, c.dataset_dir, download=c.download)
        try:
            source = datasets.provenance(c.task, c.dataset_dir)
        except datasets.DataError:
            source = {"source": "unknown"}
        source["path"] = str(datasets.dataset_paths(c.task, c.dataset_dir)[0])
        return _as_trained(c, train), source, None
    # Read the module's constant now (not ShardCycle's default, bound at import).
    shards = datasets.ShardCycle(c.task, folder, interval=datasets.SHARD_INTERVAL)
    train, _ = shards.data(1)
    # Shards the offline phase reaches: 0 .. that of the last call's first update (see above).
    count, last = len(shards.shards), c.offline_steps - call_size(c, shards.interval) + 1
    used = min(count, last // shards.interval + 1) if c.offline_steps else 1
    source = datasets.provenance(c.task, c.dataset_dir, shards_cycled=used == count)
    source.update(path=str(folder), shard_interval=shards.interval, shards_used=used)
    if used < count and not source["paper_comparable"]:
        source["paper_comparable_reason"] = (
            f"{c.offline_steps} offline updates reach {used} of the {count} shards "
            f"({shards.interval} updates each); the paper cycles through all of them"
        )
    print(
        f"data: {folder} ({len(shards.shards)} shards, the next one every {shards.interval} "
        f"updates, cycling; {len(train['rewards'])} transitions in the first)"
    )
    return _as_trained(c, train), source, shards


def _as_trained(c: Config, train: dict) -> dict:
    """``train`` as training reads it: sparse rewards where the config asks for them."""
    train = dict(train)
    if c.sparse_reward:
        train["rewards"] = to_sparse(train["rewards"])
    return train


# --------------------------------------------------------------------------------------------
# Offline phase


def offline_phase(ctx: _Context, states, step: int):
    """Offline updates from ``step`` to ``offline_steps``; returns ``(states, step, stopped)``."""
    c = ctx.config
    shards = ctx.shards
    n = call_size(c, shards.interval if shards is not None else None)
    data = to_device(ctx.dataset) if shards is None else None
    shard = None  # index of the shard now on the device
    multi = make_multi_update(ctx.agent, c, n, seeds=True)
    phase_after = "online" if c.online_steps else "done"
    while step < c.offline_steps:
        if ctx.should_stop(step):
            if ctx.saved_step != step:
                ctx.save(states, step, "offline")
            return states, step, True
        # Sharded data: this call's updates step+1..step+n all use the shard of update step+1.
        if shards is not None and shards.index(step + 1) != shard:
            shard, data = shards.index(step + 1), None  # free the device copy before the next
            data = to_device(_as_trained(c, shards.data(step + 1)[0]))
        states, metrics = multi(states, data, step_keys(ctx.bases, 1, step), None)
        step += n
        metrics = jax.device_get(metrics)
        # A step's rows are written before its checkpoint: resuming cuts them back to it.
        last = step == c.offline_steps
        if step % c.log_interval == 0 or last or _nonfinite(metrics):
            ctx.log_metrics(step, "offline", metrics, states)
        if step % c.eval_interval == 0 or last:
            ctx.evaluate(states, step, "offline")
        if step % c.checkpoint_interval == 0 or last:
            ctx.save(states, step, phase_after if last else "offline")
        if ctx.bar is not None:
            ctx.bar.update(n)
    return states, step, False


# --------------------------------------------------------------------------------------------
# Online phase


def make_online_update(agent, config: Config):
    """Jitted ``fn(states, dataset, rings, keys, filled) -> (states, metrics)``: one update of
    every seed on chunks from its own buffer (``dataset`` joined with its ring)."""
    c = config

    def sampler(data, key, filled):
        return replay.sample(
            data["dataset"], data["ring"], key, c.batch_size, c.horizon, c.gamma, filled
        )

    single = make_multi_update(agent, c, 1, sampler=sampler, donate=False)

    def update(states, dataset, rings, keys, filled):
        def one(state, ring, key):
            return single(state, {"dataset": dataset, "ring": ring}, key, filled)

        return jax.vmap(one)(states, rings, keys)

    return jax.jit(update, donate_argnums=(0,))


class _Seeds:
    """Host side of the online phase: one environment per seed, its observation, episode
    counter, action queue (the rest of its current chunk) and the actions of its running episode
    (what a resume replays)."""

    def __init__(self, ctx: _Context, n_data: int):
        c = ctx.config
        s, h, a = c.num_seeds, c.horizon, ctx.action_dim
        self.ctx = ctx
        self.envs = [envpool.make_env(ctx.task.name) for _ in range(s)]
        self.obs = np.zeros((s, ctx.obs_dim), np.float32)
        self.episode = np.zeros(s, np.int64)
        self.queue = np.zeros((s, h, a), np.float32)
        self.used = np.full(s, h, np.int64)  # actions of the queue already taken (h: empty)
        self.actions: list[list[np.ndarray]] = [[] for _ in range(s)]
        self.segment = np.full(s, n_data, np.int64)  # absolute row where the episode part starts

    def reset(self, i: int) -> None:
        seed = online_episode_seed(self.ctx.config, i, int(self.episode[i]))
        self.obs[i] = envpool.reset_env(self.envs[i], seed)[0]
        self.used[i] = self.queue.shape[1]
        self.actions[i] = []

    def state(self) -> dict:
        lengths = np.array([len(a) for a in self.actions], np.int64)
        flat = [x for acts in self.actions for x in acts]
        taken = np.stack(flat) if flat else np.zeros((0, self.queue.shape[2]), np.float32)
        return {
            "seed_obs": self.obs.copy(),
            "seed_episode": self.episode.copy(),
            "seed_queue": self.queue.copy(),
            "seed_used": self.used.copy(),
            "seed_segment": self.segment.copy(),
            "seed_episode_lengths": lengths,
            "seed_episode_actions": taken.astype(np.float32),
        }

    def restore(self, extras: dict) -> None:
        """Reset each seed's environment to its running episode and replay its actions."""
        self.episode[:] = extras["seed_episode"]
        self.queue[:] = extras["seed_queue"]
        self.used[:] = extras["seed_used"]
        self.segment[:] = extras["seed_segment"]
        taken = np.split(extras["seed_episode_actions"], np.cumsum(extras["seed_episode_lengths"]))
        for i, env in enumerate(self.envs):
            seed = online_episode_seed(self.ctx.config, i, int(self.episode[i]))
            obs = envpool.reset_env(env, seed)[0]
            for a in taken[i]:
                obs = np.asarray(env.step(a)[0], np.float32)
            if not np.array_equal(obs, extras["seed_obs"][i]):
                raise ckpt.CheckpointError(
                    f"resuming the online phase of {self.ctx.out}: replaying seed {i}'s episode "
                    f"{int(self.episode[i])} ({len(taken[i])} actions) did not reach the saved "
                    "observation (a different OGBench/MuJoCo version?); rerun with --overwrite "
                    "to start over"
                )
            self.obs[i] = obs
            self.actions[i] = list(taken[i])


def online_phase(ctx: _Context, states, step: int, saved: dict | None, extras: dict):
    """Online fine-tuning from ``step`` (``saved``: the checkpoint's online progress, if any)."""
    c = ctx.config
    s_idx = np.arange(c.num_seeds)
    # A ring longer than the whole online phase would never wrap: allocate only what is used.
    capacity = min(c.online_buffer_size, c.online_steps)
    n_data = len(ctx.dataset["observations"])
    dataset = to_device(ctx.dataset)
    seeds = _Seeds(ctx, n_data)
    if saved:
        env_steps = int(saved["env_steps"])
        rings = replay.rings_from_host(
            {k[len("ring_") :]: v for k, v in extras.items() if k.startswith("ring_")}, capacity
        )
        seeds.restore(extras)
    else:
        env_steps = 0
        rings = replay.empty_rings(c.num_seeds, capacity, ctx.obs_dim, ctx.action_dim)
        for i in s_idx:
            seeds.reset(i)
    agent = ctx.agent
    act = jax.jit(jax.vmap(lambda s, o, k: agent.act(s, o[None], k)[0]))
    update = make_online_update(agent, c)

    def save(phase: str) -> None:
        host = replay.to_host(rings, min(env_steps, capacity))
        extras = {f"ring_{k}": v for k, v in host.items()} | seeds.state()
        ctx.save(states, step, phase, extras=extras, online={"env_steps": env_steps})

    try:
        while env_steps < c.online_steps:
            if ctx.should_stop(step):
                if ctx.saved_step != step:
                    save("online")
                return states, step, True
            # 1. Seeds whose chunk is used up get a new one (one vmapped call for all seeds).
            need = seeds.used >= c.horizon
            if need.any():
                keys = step_keys(ctx.bases, 2, step)
                chunks = np.asarray(act(states, jnp.asarray(seeds.obs), keys))
                seeds.queue[need] = chunks.reshape(seeds.queue.shape)[need]
                seeds.used[need] = 0
            actions = seeds.queue[s_idx, seeds.used].copy()
            seeds.used += 1
            # 2. Every seed's environment takes its action; the transitions go into the rings.
            rows = {k: [] for k in replay.ROW_KEYS}
            done = np.zeros(c.num_seeds, bool)
            for i, env in enumerate(seeds.envs):
                nxt, reward, terminated, truncated, _ = env.step(actions[i])
                nxt = np.asarray(nxt, np.float32)
                done[i] = bool(terminated or truncated)
                reward = float(to_sparse(reward)) if c.sparse_reward else float(reward)
                rows["observations"].append(seeds.obs[i].copy())
                rows["actions"].append(actions[i])
                rows["rewards"].append(reward)
                rows["masks"].append(1.0 - float(terminated))
                rows["terminals"].append(float(done[i]))
                rows["next_observations"].append(nxt)
                seeds.obs[i] = nxt
                seeds.actions[i].append(actions[i])
            position = env_steps % capacity
            if position == 0:  # the ring starts (or wraps): running episodes restart here
                seeds.segment[:] = n_data
            rows = {k: jnp.asarray(np.stack(v), jnp.float32) for k, v in rows.items()}
            index = n_data + position
            rings = replay.add(rings, rows, position, index, jnp.asarray(seeds.segment))
            env_steps += 1
            step += 1
            for i in np.flatnonzero(done):
                seeds.episode[i] += 1
                seeds.reset(i)
                seeds.segment[i] = index + 1
            # 3. One update of every seed per environment step, after the warm-up.
            last = env_steps == c.online_steps
            if env_steps >= c.start_training:
                filled = n_data + min(env_steps, capacity)
                keys = step_keys(ctx.bases, 1, step)
                states, metrics = update(states, dataset, rings, keys, jnp.int32(filled))
                if step % c.log_interval == 0 or last:
                    ctx.log_metrics(step, "online", jax.device_get(metrics), states)
            if step % c.eval_interval == 0 or last:
                ctx.evaluate(states, step, "online")
            if step % c.checkpoint_interval == 0 or last:
                save("done" if last else "online")
            if ctx.bar is not None:
                ctx.bar.update(1)
    finally:
        for env in seeds.envs:
            with contextlib.suppress(Exception):
                env.close()
    return states, step, False


# --------------------------------------------------------------------------------------------
# Summary


def _summarise(ctx: _Context, step: int, stopped: bool) -> dict[str, Any]:
    c = ctx.config
    rows = logs.read_rows(ctx.out / "eval.csv")
    last = max((int(r["step"]) for r in rows), default=None)
    per_seed = [float(r["success_rate"]) for r in rows if int(r["step"]) == last]
    seconds = ctx.elapsed_before + time.perf_counter() - ctx.started
    summary = {
        "task": ctx.task.name,
        "agent": c.agent,
        "step": int(step),
        "total_steps": ctx.total_steps(),
        "seeds": c.num_seeds,
        "eval_step": last,
        "success_rate": float(np.mean(per_seed)) if per_seed else None,
        "success_per_seed": per_seed,
        "eval_episodes": c.eval_episodes,
        "seconds": round(seconds, 1),
        "interrupted": stopped,
        "stopped_by": ctx.stopped_by if stopped else None,
        "out_dir": str(ctx.out),
        "data": ctx.source,
    }
    logs.write_json(ctx.out / "summary.json", summary)
    return summary


def summary_line(summary: dict[str, Any]) -> str:
    """The one-line result a CLI run ends with."""
    s = summary
    rate = "n/a" if s["success_rate"] is None else f"{100 * s['success_rate']:.1f}%"
    state = "stopped early, resume with the same command" if s["interrupted"] else "done"
    return (
        f"{s['agent']} on {s['task']}: success {rate} (mean of {s['seeds']} seed(s) x "
        f"{s['eval_episodes']} episodes at step {s['eval_step']}); {s['step']}/{s['total_steps']} "
        f"steps in {s['seconds']:.0f} s ({state}) -> {s['out_dir']}"
    )


__all__ = [
    "CHECKPOINT",
    "Run",
    "RunFolderError",
    "RunMismatch",
    "TrainingDiverged",
    "call_size",
    "init_states",
    "load_run",
    "make_online_update",
    "offline_phase",
    "online_phase",
    "step_keys",
    "summary_line",
    "train",
]
