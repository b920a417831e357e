"""Many gradient steps in one compiled call, seeds in parallel (PureJaxRL style).

The dataset lives on the device; every step samples its own batch of action chunks inside the
compiled ``lax.scan`` (``qam_lite.chunks.sample_chunks``), so ``num_updates`` steps cost one
dispatch and no host round trip. The state buffers are donated: the caller must use the returned
state and never the one passed in.

Key schedule (what a hand-written loop must do to reproduce a call exactly)::

    for k in jax.random.split(key, num_updates):
        k_batch, k_update = jax.random.split(k)
        state, metrics = agent.update(state, sample(data, k_batch), k_update)
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

from qam_lite.agents.common import Agent, Batch, Metrics, TrainState
from qam_lite.chunks import sample_chunks
from qam_lite.config import Config

Sampler = Callable[[dict, jax.Array, jax.Array | None], Batch]


def chunk_sampler(config: Config) -> Sampler:
    """``sample(data, key, size) -> batch`` of ``config.batch_size`` chunks of ``config.horizon``.

    ``size`` is the number of filled rows (a growing replay buffer) or ``None`` for all of them.
    """

    def sample(data: dict, key: jax.Array, size: jax.Array | None = None) -> Batch:
        return sample_chunks(data, key, config.batch_size, config.horizon, config.gamma, size=size)

    return sample


def summarise(metrics: Metrics) -> Metrics:
    """Per-call summary of stacked ``(num_updates,)`` metrics: means, the last step's values
    (``last/<name>``) and ``nonfinite`` (1.0 if any metric of any step was NaN or inf)."""
    out = {name: jnp.mean(values) for name, values in metrics.items()}
    out.update({f"last/{name}": values[-1] for name, values in metrics.items()})
    bad = jnp.stack([jnp.any(~jnp.isfinite(v)) for v in metrics.values()])
    out["nonfinite"] = jnp.any(bad).astype(jnp.float32)
    return out


def make_multi_update(
    agent: Agent,
    config: Config,
    num_updates: int,
    *,
    seeds: bool = False,
    sampler: Sampler | None = None,
    donate: bool = True,
) -> Callable:
    """A jitted ``fn(state, data, key, size=None) -> (state, metrics)`` doing ``num_updates`` steps.

    Args:
      agent: from ``qam_lite.agents.make_agent``.
      config: supplies the batch size, horizon and gamma of the sampler.
      num_updates: gradient steps per call (static; one ``lax.scan``).
      seeds: vectorise over independent seeds: ``state`` from :func:`init_seeds` and ``key`` of
        shape ``(num_seeds,)`` (one key per seed, e.g. ``jax.random.split(key, num_seeds)``);
        every seed samples its own batches from the same ``data``.
      sampler: ``sample(data, key, size) -> batch``; default :func:`chunk_sampler`.
      donate: donate the state's buffers to the call (on CPU XLA may decline with a warning).

    Returns:
      ``fn``; ``metrics`` is :func:`summarise` of the steps (leading ``(num_seeds,)`` axis when
      ``seeds``). ``size`` is the filled length of a growing replay buffer (``None``: all rows).
    """
    if isinstance(num_updates, bool) or not isinstance(num_updates, int) or num_updates < 1:
        raise ValueError(f"num_updates={num_updates!r} is invalid; accepted: an integer >= 1")
    sample = sampler if sampler is not None else chunk_sampler(config)

    def multi(state: TrainState, data: dict, key: jax.Array, size=None):
        def step(state, k):
            k_batch, k_update = jax.random.split(k)
            return agent.update(state, sample(data, k_batch, size), k_update)

        state, metrics = jax.lax.scan(step, state, jax.random.split(key, num_updates))
        return state, summarise(metrics)

    if seeds:
        single = multi

        def multi(states: TrainState, data: dict, keys: jax.Array, size=None):
            return jax.vmap(lambda s, k: single(s, data, k, size))(states, keys)

    return jax.jit(multi, donate_argnums=(0,) if donate else ())


# --------------------------------------------------------------------------------------------
# The key schedule of a run (train, gradstats and the benchmarks draw their keys here)


def seed_keys(config: Config) -> jax.Array:
    """``(num_seeds, 2)`` base keys; seed ``i`` is ``PRNGKey(config.seed + i)``, so seed ``i`` of
    a multi-seed run draws the same numbers as a one-seed run with seed ``config.seed + i``."""
    return jnp.stack([jax.random.PRNGKey(config.seed + i) for i in range(config.num_seeds)])


def step_keys(bases: jax.Array, stream: int, step: int) -> jax.Array:
    """Per-seed keys ``fold_in(fold_in(base, stream), step)``: 0 init, 1 updates, 2 acting."""
    return _step_keys(bases, jnp.uint32(stream), jnp.uint32(step))


@jax.jit
def _step_keys(bases, stream, step):
    # Compiled once (stream and step are traced): called at every online environment step.
    return jax.vmap(lambda k: jax.random.fold_in(jax.random.fold_in(k, stream), step))(bases)


def init_states(agent, config: Config):
    """Agent states of every seed, stacked on a leading ``num_seeds`` axis."""
    return jax.jit(jax.vmap(agent.init))(step_keys(seed_keys(config), 0, 0))


def take_seed(states, i: int):
    """Seed ``i``'s state out of a stacked (vmapped) one."""
    return jax.tree.map(lambda x: x[i], states)
