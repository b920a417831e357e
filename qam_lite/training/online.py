"""The online phase: the policy acts in the environment, one update per environment step.

As the authors' ``main.py``: the replay buffer holds the dataset and every online transition
(:mod:`qam_lite.data.replay`: the dataset followed by a ring of ``online_buffer_size`` rows per
seed), no update happens before environment step ``start_training``, then one update per step.
Seeds are vmapped: one environment per seed, stepped in lockstep.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite.chunks import to_device
from qam_lite.config import Config
from qam_lite.data import replay
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import envpool
from qam_lite.training import evaluate as evaluation
from qam_lite.training.session import Context, to_sparse
from qam_lite.training.update import (
    make_multi_update,
    step_keys,
)


def online_episode_seed(config: Config, seed_index: int, episode: int) -> int:
    """Reset seed of online episode ``episode`` of seed ``seed_index``."""
    return evaluation.episode_seed(config.seed + seed_index + 1_000_000, episode)


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

    def __init__(self, ctx: Context, n_data: int):
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


def online_phase(ctx: Context, states, step: int, saved: dict | None, extras: dict):
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
