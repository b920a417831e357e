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

import contextlib
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


def init_seeds(agent: Agent, key: jax.Array, num_seeds: int) -> TrainState:
    """``num_seeds`` independent states stacked on a leading axis; seed ``i`` equals
    ``agent.init(jax.random.split(key, num_seeds)[i])``."""
    return jax.jit(jax.vmap(agent.init))(jax.random.split(key, num_seeds))


def _abstract_batch(config: Config, obs_dim: int, action_dim: int) -> dict:
    b, h = config.batch_size, config.horizon
    f32 = jnp.float32
    return {
        "observations": jax.ShapeDtypeStruct((b, obs_dim), f32),
        "next_observations": jax.ShapeDtypeStruct((b, obs_dim), f32),
        "actions": jax.ShapeDtypeStruct((b, h * action_dim), f32),
        "rewards": jax.ShapeDtypeStruct((b,), f32),
        "masks": jax.ShapeDtypeStruct((b,), f32),
        "valid": jax.ShapeDtypeStruct((b, h), f32),
        "discount": jax.ShapeDtypeStruct((b,), f32),
    }


def flops_per_update(agent: Agent, config: Config, obs_dim: int, action_dim: int) -> float:
    """XLA's FLOP count of one ``agent.update`` at ``config``'s sizes (nothing is run).

    Lowers and compiles ``update`` on abstract inputs and reads ``cost_analysis()['flops']``.
    XLA counts a ``while`` loop's body once, whatever its trip count, so the count is taken on a
    fully unrolled compilation (every ``lax.scan`` unrolled), which is what makes the ``T`` flow
    steps count ``T`` times.
    """
    key = jax.random.key(0)
    state = jax.eval_shape(agent.init, key)
    batch = _abstract_batch(config, obs_dim, action_dim)
    with _unrolled_scans():
        compiled = jax.jit(agent.update).lower(state, batch, key).compile()
    cost = compiled.cost_analysis()
    if isinstance(cost, list | tuple):  # older jax: one dict per computation
        cost = cost[0]
    return float(cost["flops"])


_ORIGINAL_SCAN = jax.lax.scan


@contextlib.contextmanager
def _unrolled_scans():
    """While active, ``jax.lax.scan`` unrolls fully (FLOP counting only: the library's scans look
    ``jax.lax.scan`` up at call time, so they pick the unrolled version up while tracing)."""

    def unrolled(f, init, xs=None, length=None, reverse=False, unroll=1, **kwargs):
        return _ORIGINAL_SCAN(f, init, xs, length=length, reverse=reverse, unroll=True, **kwargs)

    jax.lax.scan = unrolled
    try:
        yield
    finally:
        jax.lax.scan = _ORIGINAL_SCAN
