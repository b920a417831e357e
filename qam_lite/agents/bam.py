"""BAM: back-propagation through the SDE sample instead of the lean adjoint (the paper's ablation).

Same networks, BC loss, critic and targets as QAM; the actor instead minimises, as the published
code does,

    -tau_BAM mean_B[mean_k Q_k(s, x_T) - rho std_k Q_k(s, x_T)]
        + mean_B sum_{i=0}^{T-2} (2 / sigma_i^2) ||f_theta(s, x_i, t_i) - f_beta'(s, x_i, t_i)||^2

over one memoryless SDE sample ``x_0 .. x_T`` drawn with ``f_theta`` (last step: the target
``f_beta'``'s ODE step), differentiated end to end: the gradient reaches ``f_theta`` through every
``x_i``, also through ``f_beta'`` evaluated at ``x_i`` and through the last ODE step. ``Q`` is the
*online* critic with its parameters held fixed, evaluated at the *unclipped* ``x_T``; ``f_beta'``
is the target behaviour flow.

Temperature. The penalty is the KL divergence between the discretised SDE paths of ``f_theta``
and ``f_beta`` *divided by the step* ``h`` (the drifts differ by ``2 (f_theta - f_beta)``, the
per-step noise variance is ``h sigma_i^2``, so the exact path KL has weight ``2 h / sigma_i^2``).
With the published weight the effective tilt is ``pi_beta exp(tau_BAM h Q)``, which is why BAM's
own per-domain temperatures (10 or 30) are larger than QAM's. ``config.bam_path_kl = True``
(a departure from the published agent) uses the exact path KL, whose tilt is ``tau`` itself.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.agents.common import Agent, conditioned
from qam_lite.agents.qam import make_qam
from qam_lite.config import Config
from qam_lite.flows import time_grid
from qam_lite.sde import memoryless_drift, memoryless_sigma


def bptt_terms(networks, params, targets, obs, key, config: Config, chunk_dim: int):
    """The BAM actor loss at ``obs (B, obs_dim)``; gradients flow through the SDE into f_theta.

    Noise as :func:`~qam_lite.agents.qam.adjoint_terms` draws it: ``k_x0, k_sde = split(key)``,
    ``x_0 = normal(k_x0, (B, D))``, increments ``normal(k_sde, (T - 1, B, D))``.
    """
    velocity_apply, critic_apply = networks.apply["actor"], networks.apply["critic"]
    num_steps, h = config.flow_steps, 1.0 / config.flow_steps
    k_x0, k_sde = jax.random.split(key)
    base = conditioned(velocity_apply, targets["bc_flow"], obs)
    actor = conditioned(velocity_apply, params["actor"], obs)
    x0 = jax.random.normal(k_x0, (obs.shape[0], chunk_dim), obs.dtype)
    noise = jax.random.normal(k_sde, (num_steps - 1, *x0.shape), x0.dtype)
    ts = time_grid(x0, num_steps)

    def sde_step(x, inputs):
        t, eps = inputs
        v = actor(x, t)
        sigma = memoryless_sigma(t, h)
        weight = 2.0 / sigma**2 * (h if config.bam_path_kl else 1.0)
        penalty = jnp.sum(weight * (v - base(x, t)) ** 2, axis=-1)  # (B,)
        x_next = x + h * memoryless_drift(v, x, t, h) + jnp.sqrt(h) * sigma * eps
        return x_next, penalty

    x_last, penalties = jax.lax.scan(sde_step, x0, (ts[:-1], noise))
    x_final = x_last + h * base(x_last, ts[-1])
    qs = critic_apply(jax.lax.stop_gradient(params["critic"]), obs, x_final)  # (K, B)
    q = jnp.mean(jnp.mean(qs, axis=0) - config.rho * jnp.std(qs, axis=0))
    penalty = jnp.mean(jnp.sum(penalties, axis=0))
    loss = -config.tau * q + penalty
    return loss, {"bam_loss": loss, "bam_penalty": penalty, "bam_q": q}


def make_bam(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The BAM :class:`~qam_lite.agents.common.Agent`: QAM with :func:`bptt_terms` as actor loss."""
    return make_qam(config, obs_dim, action_dim, actor_terms=bptt_terms)
