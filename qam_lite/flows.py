"""Flow matching on the linear (rectified) path, and Euler sampling.

A *velocity* is any callable ``velocity(x, t) -> v`` with ``x`` of shape ``(..., d)`` and ``t``
broadcastable as ``(..., 1)``. State conditioning is done by closure, e.g.
``functools.partial(policy_apply, params, obs)``.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Velocity = Callable[[jax.Array, jax.Array], jax.Array]


def time_grid(x: jax.Array, num_steps: int) -> jax.Array:
    """Euler times ``t_i = i / num_steps`` broadcast to ``(num_steps, ..., 1)`` matching ``x``."""
    ts = jnp.arange(num_steps, dtype=x.dtype) / num_steps
    return jnp.broadcast_to(ts.reshape((num_steps,) + (1,) * x.ndim), (num_steps, *x.shape[:-1], 1))


def linear_path(x0: jax.Array, x1: jax.Array, t: jax.Array) -> jax.Array:
    """The interpolant ``x_t = (1 - t) x0 + t x1``; its velocity is ``x1 - x0`` for every ``t``."""
    return (1.0 - t) * x0 + t * x1


def euler_trajectory(velocity: Velocity, x0: jax.Array, num_steps: int) -> jax.Array:
    """Euler ODE path ``x_{i+1} = x_i + h v(x_i, t_i)``, ``h = 1 / num_steps``.

    Args:
      velocity: ``velocity(x, t)`` as above.
      x0: noise of shape ``(..., d)``.
      num_steps: number of Euler steps ``T`` (static).

    Returns:
      ``(num_steps + 1, ..., d)``: ``x_0 .. x_T``.
    """
    h = 1.0 / num_steps

    def step(x, t):
        x_next = x + h * velocity(x, t)
        return x_next, x_next

    _, xs = jax.lax.scan(step, x0, time_grid(x0, num_steps))
    return jnp.concatenate([x0[None], xs], axis=0)


def euler_sample(velocity: Velocity, x0: jax.Array, num_steps: int) -> jax.Array:
    """Final point ``x_T`` of :func:`euler_trajectory`, shape ``(..., d)``."""
    h = 1.0 / num_steps

    def step(x, t):
        return x + h * velocity(x, t), None

    x1, _ = jax.lax.scan(step, x0, time_grid(x0, num_steps))
    return x1


def flow_matching_loss(
    velocity: Velocity,
    x1: jax.Array,
    key: jax.Array,
    weights: jax.Array | None = None,
) -> jax.Array:
    """Conditional flow-matching loss on the linear path.

    ``x0 ~ N(0, I)``, ``t ~ U[0, 1]`` per sample, target velocity ``x1 - x0``; the squared error is
    averaged over every element (batch and dimensions), weighted by ``weights`` when given.

    Args:
      velocity: ``velocity(x, t)``.
      x1: data of shape ``(..., d)``.
      key: PRNG key.
      weights: optional, broadcastable to ``x1`` (e.g. the per-dimension ``valid`` mask of an
        action chunk).

    Returns:
      scalar loss.
    """
    k0, kt = jax.random.split(key)
    x0 = jax.random.normal(k0, x1.shape, x1.dtype)
    t = jax.random.uniform(kt, (*x1.shape[:-1], 1), x1.dtype)
    err = (velocity(linear_path(x0, x1, t), t) - (x1 - x0)) ** 2
    if weights is None:
        return jnp.mean(err)
    return jnp.mean(err * weights)
