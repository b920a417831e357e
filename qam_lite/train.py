"""The training loop: offline updates, optional online fine-tuning, evaluation, logs, checkpoints.

``train(config, out_dir)`` runs one configuration (all ``num_seeds`` seeds vmapped on one device)
and leaves a run folder::

    config.json        the Config (resuming requires the same one)
    provenance.json    command, commit, device, JAX version, data source, seeds, date
    metrics.csv        step, seed, phase, losses and Q statistics (every ``log_interval`` steps)
    eval.csv           step, seed, phase, success_rate, episode_return, episodes
    curve.png          success rate against step, per seed and the mean
    checkpoint.npz     agent states, step, phase, online progress (written atomically)
    summary.json       the final numbers

**Offline phase.** The dataset lives on the device; each compiled call runs ``n`` updates with
``lax.scan`` (batches sampled inside the call), vmapped over seeds. ``n`` divides every interval,
so evaluations, logs and checkpoints fall on exact steps.

**Online phase** (``online_steps > 0``, one seed). A fixed-capacity replay buffer on the device
holds the dataset followed by the online transitions (the same chunk sampler reads it, given the
filled size). The agent acts once per chunk; the ``H`` actions run open loop; each environment step
adds a transition and adds one pending update, run ``H`` at a time. Episode ``e`` resets with a
seed derived from ``(seed, e)``.

**Determinism and resume.** Every random draw derives from ``(seed, step)`` (``fold_in``), and
environments reset from ``(seed, episode)``, so a run interrupted and resumed from its checkpoint
writes the same rows as one that never stopped. Offline checkpoints fall on call boundaries;
online ones on episode boundaries (an interrupt mid-episode saves the state at that episode's
start: at most one episode is redone, identically). On resume the CSVs are cut back to the
checkpoint's step, so nothing is logged twice.
"""

from __future__ import annotations

import dataclasses
import json
import math
import time
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite import checkpoint as ckpt
from qam_lite import logs
from qam_lite.config import Config, from_dict, to_dict

CHECKPOINT = "checkpoint.npz"
#: Config fields that say where data comes from, not what is trained: a run may resume with
#: them changed (e.g. the dataset folder moved).
WHERE_NOT_WHAT = frozenset({"dataset_dir", "download"})


class TrainingDiverged(RuntimeError):
    """A loss became NaN or infinite; ``step`` is the first logged step where it was seen."""

    def __init__(self, message: str, step: int):
        super().__init__(message)
        self.step = step


class RunMismatch(ValueError):
    """``out_dir`` holds a checkpoint of a different configuration."""


# --------------------------------------------------------------------------------------------
# Small pieces


def seed_keys(config: Config) -> jax.Array:
    """``(num_seeds, 2)`` base keys; seed ``i`` is ``PRNGKey(config.seed + i)``, so seed ``i`` of
    a multi-seed run draws the same numbers as a one-seed run with seed ``config.seed + i``."""
    return jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.num_seeds)])


def step_keys(bases: jax.Array, stream: int, step: int) -> jax.Array:
    """Per-seed keys ``fold_in(fold_in(base, stream), step)``: 0 init, 1 updates, 2 acting."""
    return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, stream), step))(bases)


def init_states(agent, config: Config):
    """Agent states of every seed, stacked on a leading ``num_seeds`` axis."""
    return jax.jit(jax.vmap(agent.init))(step_keys(seed_keys(config), 0, 0))


def call_size(config: Config) -> int:
    """Updates per compiled call: ``updates_per_call`` cut down to divide every interval."""
    n = config.updates_per_call
    for interval in (config.eval_interval, config.checkpoint_interval, config.log_interval):
        n = math.gcd(n, interval)
    return math.gcd(n, config.offline_steps) if config.offline_steps else n


def eval_seed(config: Config, seed_index: int, step: int) -> int:
    """Seed of the evaluation of seed ``seed_index`` at ``step`` (a new one at every step)."""
    return (config.seed + seed_index + 1) * 7919 + step


def take_seed(states, i: int):
    """Seed ``i``'s state out of a stacked (vmapped) one."""
    return jax.tree.map(lambda x: x[i], states)


def to_sparse(rewards):
    """``r' = -1[r != 0]`` (puzzle and scene domains); idempotent."""
    return -(np.asarray(rewards) != 0).astype(np.float32)


def _deleted(tree) -> bool:
    return any(getattr(x, "is_deleted", lambda: False)() for x in jax.tree_util.tree_leaves(tree))


def _metric_rows(step: int, phase: str, config: Config, metrics: dict) -> list[dict]:
    """One CSV row per seed from seed-stacked per-call metrics (``last/*`` values dropped)."""
    names = [k for k in metrics if not k.startswith("last/")]
    return [
        {"step": step, "seed": config.seed + i, "phase": phase}
        | {k: float(np.asarray(metrics[k])[i]) for k in names}
        for i in range(config.num_seeds)
    ]


def _nonfinite(metrics: dict) -> bool:
    values = [np.asarray(v, np.float64) for k, v in metrics.items() if k != "nonfinite"]
    flag = np.asarray(metrics.get("nonfinite", 0.0))
    return bool(np.any(flag > 0) or not all(np.all(np.isfinite(v)) for v in values))


# --------------------------------------------------------------------------------------------
# Replay buffer (online phase): the dataset followed by online rows, fixed capacity, on device

_ROW_KEYS = ("observations", "actions", "rewards", "masks", "terminals", "next_observations")


def make_buffer(train: dict, online_rows: dict | None, capacity: int) -> tuple[dict, int]:
    """``(buffer, size)``: dataset, completed online episodes, then ``capacity`` spare rows.

    ``episode_end`` is computed over the whole array: spare rows point at the array's end, which
    ``chunks_at`` caps at the filled ``size - 1`` (the running episode ends where the data ends).
    """
    from qam_lite.chunks import episode_ends

    parts = {k: [np.asarray(train[k], np.float32)] for k in _ROW_KEYS}
    parts["terminals"][0] = parts["terminals"][0].copy()
    parts["terminals"][0][-1] = 1.0  # the dataset's last episode ends with the dataset
    for k in _ROW_KEYS:
        if online_rows is not None and len(online_rows[k]):
            parts[k].append(np.asarray(online_rows[k], np.float32))
    size = sum(len(p) for p in parts["observations"])
    buffer = {}
    for k in _ROW_KEYS:
        x = np.concatenate(parts[k])
        buffer[k] = jnp.asarray(np.concatenate([x, np.zeros((capacity, *x.shape[1:]), np.float32)]))
    buffer["episode_end"] = episode_ends(buffer["terminals"])
    return buffer, size


def _add_row(buffer: dict, index, row: dict, episode_start) -> dict:
    out = dict(buffer)
    for k, v in row.items():
        out[k] = jax.lax.dynamic_update_index_in_dim(buffer[k], v.astype(jnp.float32), index, 0)
    # When the row ends its episode, every row of that episode now ends here.
    idx = jnp.arange(buffer["episode_end"].shape[0])
    in_episode = (idx >= episode_start) & (idx <= index) & (row["terminals"] > 0)
    out["episode_end"] = jnp.where(in_episode, index, buffer["episode_end"]).astype(jnp.int32)
    return out


add_row = jax.jit(_add_row, donate_argnums=(0,))


# --------------------------------------------------------------------------------------------
# A run folder


@dataclasses.dataclass
class Run:
    """A saved run: its config, agent and latest checkpointed states (for ``evaluate``)."""

    config: Config
    agent: Any
    states: Any
    step: int
    phase: str
    meta: dict

    def seed_state(self, i: int):
        return take_seed(self.states, i)


def load_run(run_dir: str | Path) -> Run:
    """Load ``run_dir/checkpoint.npz`` with its config (raises ``CheckpointError`` if absent)."""
    from qam_lite.agents import make_agent

    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise ckpt.CheckpointError(
            f"{run_dir} has no {CHECKPOINT}; accepted: a run folder written by `qam-lite train`"
        )
    meta = ckpt.read_meta(path)
    config = from_dict(meta["config"])
    agent = make_agent(config, meta["obs_dim"], meta["action_dim"])
    states, meta = ckpt.load(path, {"states": init_states(agent, config)})
    return Run(config, agent, states["states"], meta["step"], meta["phase"], meta)


def check_resumable(config: Config, out_dir: Path) -> dict | None:
    """The checkpoint header in ``out_dir`` if there is one for ``config``; None if none.

    Raises :class:`RunMismatch` naming the differing settings if the saved config differs.
    """
    path = out_dir / CHECKPOINT
    if not path.exists():
        return None
    meta = ckpt.read_meta(path)
    saved, wanted = meta.get("config", {}), to_dict(config)
    keys = (set(saved) | set(wanted)) - WHERE_NOT_WHAT
    diff = sorted(k for k in keys if saved.get(k) != wanted.get(k))
    if diff:
        changes = ", ".join(f"{k}: saved {saved.get(k)!r} vs now {wanted.get(k)!r}" for k in diff)
        raise RunMismatch(
            f"{out_dir} holds a run with a different configuration ({changes}); use another --out "
            "folder, or the same settings to resume it"
        )
    return meta


# --------------------------------------------------------------------------------------------
# The loop


class _Trainer:
    """State of one ``train`` call; methods are the loop's steps (see :func:`train`)."""

    def __init__(self, config: Config, out_dir: Path, progress: bool, stop_after: int | None):
        self.config, self.out, self.stop_after = config, out_dir, stop_after
        self.paths = {
            name: out_dir / name
            for name in ("metrics.csv", "eval.csv", "config.json", "provenance.json", "curve.png")
        }
        self.envs = None
        self.bar = None
        self.started = time.perf_counter()
        self.elapsed_before = 0.0

    # -- setup ---------------------------------------------------------------------------------
    def setup(self, data: tuple | None):
        from qam_lite import datasets
        from qam_lite.agents import make_agent
        from qam_lite.tasks import parse_task

        c = self.config
        self.task = parse_task(c.task)
        if c.online_steps and c.num_seeds != 1:
            raise RunMismatch(
                f"num_seeds={c.num_seeds} with online_steps={c.online_steps}: online fine-tuning "
                "runs one seed per process; accepted: num_seeds=1 when online_steps > 0"
            )
        if c.online_steps > c.online_buffer_size:
            raise RunMismatch(
                f"online_steps={c.online_steps} exceeds online_buffer_size={c.online_buffer_size}; "
                "accepted: online_steps <= online_buffer_size (the buffer does not wrap around)"
            )
        self.meta = check_resumable(c, self.out)
        if data is None:
            env, train, _ = datasets.load(self.task, c.dataset_dir, download=c.download)
            try:
                source = datasets.provenance(self.task, c.dataset_dir)
            except datasets.DataError:
                source = {"source": "unknown"}
            source["path"] = str(datasets.dataset_paths(self.task, c.dataset_dir)[0])
        else:
            env, train = data[0], data[1]
            source = {"source": "given in memory"}
        self.env, self.train = env, dict(train)
        if c.sparse_reward:
            self.train["rewards"] = to_sparse(self.train["rewards"])
        self.obs_dim = int(self.train["observations"].shape[-1])
        self.action_dim = int(self.train["actions"].shape[-1])
        self.agent = make_agent(c, self.obs_dim, self.action_dim)
        self.bases = seed_keys(c)
        self.out.mkdir(parents=True, exist_ok=True)
        logs.write_json(self.paths["config.json"], to_dict(c))
        prov = logs.provenance(
            task=self.task.name,
            agent=c.agent,
            seeds=[c.seed + i for i in range(c.num_seeds)],
            data=source,
            transitions=int(len(self.train["observations"])),
        )
        path = self.paths["provenance.json"]
        if self.meta is not None and path.exists():
            # Keep the run's original record; add this session to its resumptions.
            first = json.loads(path.read_text())
            resumes = first.setdefault("resumed", [])
            resumes.append(
                {"from_step": self.meta["step"]}
                | {k: prov[k] for k in ("command", "git_commit", "device", "date")}
            )
            prov = first
        logs.write_json(path, prov)
        self.data_source = source

    def total_steps(self) -> int:
        return self.config.offline_steps + self.config.online_steps

    # -- checkpoints and logs ------------------------------------------------------------------
    def save(self, states, step: int, phase: str, extras=None, **more) -> None:
        meta = {
            "step": int(step),
            "phase": phase,
            "config": to_dict(self.config),
            "obs_dim": self.obs_dim,
            "action_dim": self.action_dim,
            "elapsed": self.elapsed_before + time.perf_counter() - self.started,
            "key_schedule": "fold_in(fold_in(PRNGKey(seed + i), stream), step)",
            **more,
        }
        ckpt.save(self.out / CHECKPOINT, {"states": states}, meta, extras)

    def restore(self, states_template):
        states, meta = ckpt.load(self.out / CHECKPOINT, {"states": states_template})
        extras = ckpt.load_extras(self.out / CHECKPOINT)
        self.elapsed_before = float(meta.get("elapsed", 0.0))
        keep = meta["step"] if not meta.get("redo_step") else meta["step"] - 1
        for name in ("metrics.csv", "eval.csv"):
            logs.truncate_csv(self.paths[name], keep)
        return states["states"], meta, extras

    def evaluate(self, states, step: int, phase: str) -> list[dict]:
        from qam_lite.evaluate import evaluate, make_envs

        c = self.config
        if self.envs is None:
            self.envs = make_envs(self.task, c.eval_episodes)
        rows = []
        for i in range(c.num_seeds):
            res = evaluate(
                self.agent,
                take_seed(states, i),
                self.task,
                c.eval_episodes,
                eval_seed(c, i, step),
                envs=self.envs,
            )
            rows.append(
                {
                    "step": step,
                    "seed": c.seed + i,
                    "phase": phase,
                    "success_rate": res["success_rate"],
                    "episode_return": res["episode_return"],
                    "episode_length": res["episode_length"],
                    "episodes": res["episodes"],
                }
            )
        logs.append_rows(self.paths["eval.csv"], rows)
        logs.plot_curve(self.paths["eval.csv"], self.paths["curve.png"], title=self._title())
        if self.bar is not None:
            mean = np.mean([r["success_rate"] for r in rows])
            self.bar.set_postfix_str(f"success {100 * mean:.0f}% @ {step}")
        return rows

    def _title(self) -> str:
        return f"{self.config.agent.upper()} on {self.task.name}"

    def diverged(self, states, step: int, phase: str) -> TrainingDiverged:
        path = self.out / "diverged.npz"
        if not _deleted(states):
            ckpt.save(path, {"states": states}, {"step": step, "phase": phase})
        last = (
            ckpt.read_meta(self.out / CHECKPOINT)["step"]
            if (self.out / CHECKPOINT).exists()
            else None
        )
        where = (
            f"the last good checkpoint is at step {last}"
            if last is not None
            else ("no checkpoint was reached before it")
        )
        return TrainingDiverged(
            f"a loss became NaN/inf by step {step} ({phase}); training stopped, logs kept in "
            f"{self.out}, the diverged state saved to {path.name}, {where}. Try a lower lr or tau.",
            step,
        )

    # -- offline phase -------------------------------------------------------------------------
    def offline(self, states, step: int, pending: dict | None):
        from qam_lite.chunks import to_device
        from qam_lite.update import make_multi_update

        c = self.config
        n = call_size(c)
        data = to_device(self.train)
        multi = make_multi_update(self.agent, c, n, seeds=True)

        def phase_after(step: int) -> str:
            if step < c.offline_steps:
                return "offline"
            return "online" if c.online_steps else "done"

        def after_call(step: int, metrics: dict) -> None:
            # Everything a step boundary owes: logs, evaluation, checkpoint (in this order, so a
            # checkpoint never precedes the rows it implies).
            if step % c.log_interval == 0 or step == c.offline_steps:
                rows = _metric_rows(step, "offline", c, metrics)
                logs.append_rows(self.paths["metrics.csv"], rows)
            if step % c.eval_interval == 0 or step == c.offline_steps:
                self.evaluate(states, step, "offline")
            if step % c.checkpoint_interval == 0 or step == c.offline_steps:
                self.save(states, step, phase_after(step))

        self._last_metrics = pending
        done_step = step if pending is None else None
        try:
            if pending is not None:  # resumed from an interrupt that fell between call and logs
                after_call(step, pending)
                done_step = step
            while step < c.offline_steps:
                if self.stop_after is not None and step >= self.stop_after:
                    self.save(states, step, phase_after(step))
                    return states, step, True
                keys = step_keys(self.bases, 1, step)
                states, metrics = multi(states, data, keys, None)
                step += n
                done_step = None
                metrics = jax.device_get(metrics)
                if _nonfinite(metrics):
                    logs.append_rows(
                        self.paths["metrics.csv"], _metric_rows(step, "offline", c, metrics)
                    )
                    raise self.diverged(states, step, "offline")
                self._last_metrics = metrics
                after_call(step, metrics)
                done_step = step
                if self.bar is not None:
                    self.bar.update(n)
        except KeyboardInterrupt:
            if not _deleted(states):
                last = self._last_metrics
                redo = done_step != step and last is not None
                rows = {k: np.asarray(v).tolist() for k, v in last.items()} if redo else None
                # A pending redo keeps the phase 'offline' so resuming re-enters this loop.
                self.save(
                    states,
                    step,
                    "offline" if redo else phase_after(step),
                    redo_step=redo,
                    pending_metrics=rows,
                )
            raise
        return states, step, False

    # -- online phase --------------------------------------------------------------------------
    def online(self, states, step: int, meta: dict | None, extras: dict):
        from qam_lite.evaluate import episode_seed, reset_env

        c = self.config
        capacity = c.online_steps
        online = meta.get("online", {}) if meta else {}
        rows = {k: extras[k] for k in _ROW_KEYS} if extras else None
        buffer, size = make_buffer(self.train, rows, capacity)
        env_steps = int(online.get("env_steps", step - c.offline_steps))
        episode = int(online.get("episode", 0))
        n_data = len(self.train["observations"])
        update = make_multi_update_one(self.agent, c)
        act = jax.jit(lambda s, o, k: self.agent.act(take_seed(s, 0), o, k))
        sparse = c.sparse_reward or self.task.reward == "sparse"

        def snapshot():
            return {
                "states": jax.tree.map(jnp.copy, states),
                "step": step,
                "env_steps": env_steps,
                "episode": episode,
                "size": size,
            }

        def save_snapshot(snap) -> None:
            host = {k: np.asarray(buffer[k][n_data : snap["size"]]) for k in _ROW_KEYS}
            phase = "online" if snap["env_steps"] < c.online_steps else "done"
            self.save(
                snap["states"],
                snap["step"],
                phase,
                extras=host,
                online={"env_steps": snap["env_steps"], "episode": snap["episode"]},
            )

        snap = snapshot()
        metrics = None
        next_ckpt = (step // c.checkpoint_interval + 1) * c.checkpoint_interval
        try:
            while env_steps < c.online_steps:
                if self.stop_after is not None and step >= self.stop_after:
                    save_snapshot(snap)
                    return states, step, True
                obs, _ = reset_env(self.env, episode_seed(c.seed + 1_000_000, episode))
                episode_start, done = size, False
                while not done and env_steps < c.online_steps:
                    chunk = act(states, jnp.asarray(obs[None]), step_keys(self.bases, 2, step)[0])
                    chunk = np.asarray(chunk).reshape(-1, self.action_dim)
                    for a in chunk:
                        nxt, r, terminated, truncated, _ = self.env.step(a)
                        nxt = np.asarray(nxt, np.float32)
                        done = bool(terminated or truncated)
                        r = float(to_sparse(r)) if sparse else float(r)
                        row = {
                            "observations": obs,
                            "actions": a,
                            "rewards": r,
                            "masks": 1.0 - float(terminated),
                            "terminals": float(done),
                            "next_observations": nxt,
                        }
                        row = {k: jnp.asarray(v, jnp.float32) for k, v in row.items()}
                        buffer = add_row(buffer, size, row, episode_start)
                        size += 1
                        env_steps += 1
                        step += 1
                        obs = nxt
                        # One gradient step per environment step, on the buffer so far.
                        states, metrics = update(
                            states, buffer, step_keys(self.bases, 1, step), jnp.int32(size)
                        )
                        if step % c.log_interval == 0 or env_steps == c.online_steps:
                            m = jax.device_get(metrics)
                            if _nonfinite(m):
                                raise self.diverged(states, step, "online")
                            logs.append_rows(
                                self.paths["metrics.csv"], _metric_rows(step, "online", c, m)
                            )
                        if step % c.eval_interval == 0 or env_steps == c.online_steps:
                            self.evaluate(states, step, "online")
                        if self.bar is not None:
                            self.bar.update(1)
                        if done or env_steps == c.online_steps:
                            break
                episode += 1
                snap = snapshot()
                if step >= next_ckpt or env_steps == c.online_steps:
                    save_snapshot(snap)
                    next_ckpt = (step // c.checkpoint_interval + 1) * c.checkpoint_interval
        except KeyboardInterrupt:
            save_snapshot(snap)
            raise
        return states, step, False


def make_multi_update_one(agent, config: Config):
    """Seed-vmapped single-update call ``fn(states, buffer, keys, size)`` for the online phase."""
    from qam_lite.update import make_multi_update

    return make_multi_update(agent, config, 1, seeds=True)


def train(
    config: Config,
    out_dir: str | Path,
    *,
    progress: bool = True,
    stop_after: int | None = None,
    data: tuple | None = None,
) -> dict[str, Any]:
    """Train ``config`` into ``out_dir`` (resuming its checkpoint if it has one); return a summary.

    Args:
      config: the run's :class:`~qam_lite.config.Config`.
      out_dir: run folder (created). A checkpoint of the same config there is resumed; one of a
        different config raises :class:`RunMismatch`.
      progress: show a tqdm progress bar (in gradient/environment steps).
      stop_after: stop (as if interrupted) once ``step >= stop_after``: save a checkpoint and
        return with ``summary['interrupted'] = True``. Offline it stops at a call boundary, online
        at an episode boundary.
      data: optional ``(env, train)`` to use instead of loading the task's dataset.

    Returns:
      dict with ``task, agent, step, seeds, success_rate`` (last evaluation, mean over seeds),
      ``success_per_seed``, ``seconds``, ``interrupted`` and ``out_dir``.

    Raises:
      TrainingDiverged: a NaN/inf loss (logs and the last good checkpoint are kept).
      RunMismatch: ``out_dir`` holds a different configuration, or invalid online settings.
      qam_lite.datasets.DataError: the dataset is missing or malformed.
    """
    out = Path(out_dir)
    t = _Trainer(config, out, progress, stop_after)
    t.setup(data)
    c = config
    states = init_states(t.agent, c)
    step, phase, meta, extras, pending = 0, "offline", t.meta, {}, None
    if meta is not None:
        states, meta, extras = t.restore(states)
        step, phase = int(meta["step"]), meta["phase"]
        if meta.get("redo_step") and meta.get("pending_metrics"):
            pending = meta["pending_metrics"]
        print(f"resuming {out} from step {step} ({phase})")
    if progress:
        from tqdm.auto import tqdm

        t.bar = tqdm(total=t.total_steps(), initial=step, unit="step", desc=c.agent, leave=True)
    interrupted = False
    try:
        if phase == "offline":
            states, step, interrupted = t.offline(states, step, pending)
            phase = "online"
        if not interrupted and phase == "online" and c.online_steps:
            states, step, interrupted = t.online(states, step, meta, extras)
    finally:
        if t.bar is not None:
            t.bar.close()
    return _summarise(t, step, interrupted)


def _summarise(t: _Trainer, step: int, interrupted: bool) -> dict[str, Any]:
    c = t.config
    rows = logs.read_rows(t.paths["eval.csv"])
    last = max((int(r["step"]) for r in rows), default=None)
    per_seed = [float(r["success_rate"]) for r in rows if int(r["step"]) == last]
    seconds = t.elapsed_before + time.perf_counter() - t.started
    summary = {
        "task": t.task.name,
        "agent": c.agent,
        "step": int(step),
        "total_steps": t.total_steps(),
        "seeds": c.num_seeds,
        "eval_step": last,
        "success_rate": float(np.mean(per_seed)) if per_seed else None,
        "success_per_seed": per_seed,
        "eval_episodes": c.eval_episodes,
        "seconds": round(seconds, 1),
        "interrupted": interrupted,
        "out_dir": str(t.out),
        "data": t.data_source,
    }
    logs.write_json(t.out / "summary.json", summary)
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
    "RunMismatch",
    "TrainingDiverged",
    "call_size",
    "check_resumable",
    "init_states",
    "load_run",
    "summary_line",
    "train",
]
