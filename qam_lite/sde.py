"""The memoryless SDE of the linear flow path (the sampler adjoint matching trains on).

With ``sigma(t)^2 = 2 (1 - t) / t`` the SDE ``dx = (2 v(x, t) - x / t) dt + sigma(t) dW`` has
the same marginals as the flow ODE and makes ``x_1`` independent of ``x_0``; that independence is
what turns the fine-tuning problem into an exact tilt ``pi_beta exp(tau Q)``. Times are shifted by
``h`` so that ``t = 0`` stays finite, as in the published implementation.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.flows import Velocity, time_grid


def memoryless_sigma(t: jax.Array, h: float) -> jax.Array:
    """Noise scale ``sqrt(2 (1 - t + h) / (t + h))`` at time ``t`` for step size ``h``."""
    return jnp.sqrt(2.0 * (1.0 - t + h) / (t + h))


def memoryless_drift(v: jax.Array, x: jax.Array, t: jax.Array, h: float) -> jax.Array:
    """Drift ``2 v - x / (t + h)`` of the memoryless SDE, given the velocity ``v = f(x, t)``."""
    return 2.0 * v - x / (t + h)


def memoryless_sample(
    velocity: Velocity,
    base_velocity: Velocity,
    x0: jax.Array,
    key: jax.Array,
    num_steps: int,
) -> tuple[jax.Array, jax.Array]:
    """Euler-Maruyama on the memoryless SDE, last step a noise-free ODE step with the base.

    For ``i = 0 .. T-2``::

        x_{i+1} = x_i + h (2 f(x_i, t_i) - x_i / (t_i + h)) + sqrt(h) sigma_i eps_i

    and ``x_T = x_{T-1} + h f_base(x_{T-1}, t_{T-1})``.

    Args:
      velocity: the field being sampled (``f_theta``), ``velocity(x, t)``.
      base_velocity: the base field (``f_beta``) used for the final ODE step.
      x0: noise of shape ``(..., d)``.
      key: PRNG key for the Brownian increments.
      num_steps: ``T >= 1`` (static).

    Returns:
      ``xs`` of shape ``(T + 1, ..., d)`` holding ``x_0 .. x_T`` and ``ts`` of shape
      ``(T, ..., 1)`` holding ``t_0 .. t_{T-1}``.
    """
    h = 1.0 / num_steps
    ts = time_grid(x0, num_steps)
    noise = jax.random.normal(key, (num_steps - 1, *x0.shape), x0.dtype)

    def sde_step(x, inputs):
        t, eps = inputs
        drift = memoryless_drift(velocity(x, t), x, t, h)
        x_next = x + h * drift + jnp.sqrt(h) * memoryless_sigma(t, h) * eps
        return x_next, x_next

    x_last, xs = jax.lax.scan(sde_step, x0, (ts[:-1], noise))
    x_final = x_last + h * base_velocity(x_last, ts[-1])
    xs = jnp.concatenate([x0[None], xs, x_final[None]], axis=0)
    return xs, ts
