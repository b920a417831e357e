"""Lean adjoint transport and the adjoint-matching loss.

The lean adjoint carries the reward gradient at the sample ``x_T`` backwards along the memoryless
SDE's drift of the *base* field only. Nothing here differentiates through the sampler or through
any parameters: the adjoints are regression targets for :func:`adjoint_matching_loss`.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.flows import Velocity
from qam_lite.sde import memoryless_drift, memoryless_sigma


def lean_adjoint(
    base_velocity: Velocity,
    xs: jax.Array,
    ts: jax.Array,
    grad_reward: jax.Array,
) -> jax.Array:
    """Backward recursion ``a_i = a_{i+1} + h J_i^T a_{i+1}`` from ``a_T = -grad_reward``.

    ``J_i`` is the Jacobian in ``x`` of ``2 f_base(x, t_i + h) - x / (t_i + h)`` at ``x = x_i``
    (evaluated as a vector-Jacobian product).

    Args:
      base_velocity: ``f_base(x, t)``.
      xs: ``(T + 1, ..., d)`` SDE states ``x_0 .. x_T`` (from :func:`memoryless_sample`).
      ts: ``(T, ..., 1)`` times ``t_0 .. t_{T-1}``.
      grad_reward: ``(..., d)`` gradient of the reward at ``x_T`` (for QAM, ``tau * dQ/da``).

    Returns:
      ``(T, ..., d)`` adjoints ``a_0 .. a_{T-1}``.
    """
    num_steps = ts.shape[0]
    h = 1.0 / num_steps
    xs = jax.lax.stop_gradient(xs[:-1])
    a_final = -jax.lax.stop_gradient(grad_reward)

    def back_step(a_next, inputs):
        x, t = inputs
        s = t + h
        # The field is read at t_i + h; memoryless_drift adds h to its time itself, so it gets
        # t_i: the drift is 2 f(x, t_i + h) - x / (t_i + h), as in the published code.
        _, vjp = jax.vjp(lambda y: memoryless_drift(base_velocity(y, s), y, t, h), x)
        a = a_next + h * vjp(a_next)[0]
        return a, a

    _, adjoints = jax.lax.scan(back_step, a_final, (xs, ts), reverse=True)
    return jax.lax.stop_gradient(adjoints)


def adjoint_matching_loss(
    velocity: Velocity,
    base_velocity: Velocity,
    xs: jax.Array,
    ts: jax.Array,
    adjoints: jax.Array,
) -> jax.Array:
    """``E_batch sum_i || (2 / sigma_i) (f(x_i, t_i) - f_base(x_i, t_i)) + sigma_i a_i ||^2``.

    Gradients flow only through ``velocity``; ``xs``, ``adjoints`` and the base are held fixed.

    Args:
      velocity: the field being trained, ``f_theta(x, t)``.
      base_velocity: ``f_base(x, t)``.
      xs: ``(T + 1, ..., d)``; only ``x_0 .. x_{T-1}`` are used.
      ts: ``(T, ..., 1)``.
      adjoints: ``(T, ..., d)`` from :func:`lean_adjoint`.

    Returns:
      scalar: summed over the ``T`` steps and the ``d`` dimensions, averaged over every other axis.
    """
    h = 1.0 / ts.shape[0]
    x = jax.lax.stop_gradient(xs[:-1])
    sigma = memoryless_sigma(ts, h)
    base = jax.lax.stop_gradient(base_velocity(x, ts))
    residual = (2.0 / sigma) * (velocity(x, ts) - base) + sigma * jax.lax.stop_gradient(adjoints)
    per_sample = jnp.sum(residual**2, axis=(0, -1))
    return jnp.mean(per_sample)
