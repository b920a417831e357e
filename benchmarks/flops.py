"""XLA's FLOP count of one agent update, for the throughput benchmark (nothing is run).

Kept with the benchmarks, not in the library: counting needs every ``lax.scan`` unrolled, which
this module does by swapping ``jax.lax.scan`` while it traces, a trick no training code should
be able to reach.
"""

from __future__ import annotations

import contextlib

import jax
import jax.numpy as jnp

from qam_lite.agents.common import Agent
from qam_lite.config import Config


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
