"""BAM: the back-propagation-through-time ablation of QAM.

Same networks, BC loss, critic and targets as QAM; the actor instead minimises, per state,

    -tau Qbar'(s, x_T) + sum_{i<T-1} (2 h / sigma_i^2) ||f_theta(s,x_i,t_i) - f_beta(s,x_i,t_i)||^2

differentiating through the whole memoryless SDE sample ``x_0 .. x_T`` (``Qbar'`` the target-critic
mean, ``f_beta`` the target behaviour flow, both frozen). The second term is the KL divergence
between the discretised SDE paths of ``f_theta`` and ``f_beta`` (drifts differ by ``2 (f_theta -
f_beta)``, per-step noise variance ``h sigma_i^2``; the last step is the base's ODE step and adds
nothing), so BAM and QAM share the fixed point ``pi_beta exp(tau Q)``. Note: DESIGN.md writes the
weight as ``2 / sigma_i^2`` without the step ``h``; without it the tilt would be ``tau / T``, not
``tau``, and the comparison with QAM would be confounded.

``x_T`` enters Q clipped to the action box, and the clip is differentiated, exactly like QAM's
terminal condition ``a_T = -tau d/dx Qbar'(s, clip(x))`` at ``x = x_T``.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.agents.common import Agent, conditioned
from qam_lite.agents.qam import make_qam
from qam_lite.config import Config
from qam_lite.sde import memoryless_sample, memoryless_sigma


def bptt_terms(networks, params, targets, obs, key, config: Config, chunk_dim: int):
    """The BAM actor loss at ``obs (B, obs_dim)``; gradients flow through the SDE into f_theta."""
    velocity_apply, critic_apply = networks.apply["actor"], networks.apply["critic"]
    k_x0, k_sde = jax.random.split(key)
    base = conditioned(velocity_apply, targets["bc_flow"], obs)
    actor = conditioned(velocity_apply, params["actor"], obs)
    x0 = jax.random.normal(k_x0, (obs.shape[0], chunk_dim), obs.dtype)
    xs, ts = memoryless_sample(actor, base, x0, k_sde, config.flow_steps)
    q = jnp.mean(critic_apply(targets["critic"], obs, jnp.clip(xs[-1], -1.0, 1.0)), axis=0)  # (B,)

    h = 1.0 / config.flow_steps
    x_noisy, t_noisy = xs[:-2], ts[:-1]  # steps i = 0 .. T-2 (the last step is noise free)
    diff = actor(x_noisy, t_noisy) - jax.lax.stop_gradient(base(x_noisy, t_noisy))
    weight = 2.0 * h / memoryless_sigma(t_noisy, h) ** 2
    kl = jnp.sum(weight * diff**2, axis=(0, -1))  # (B,)
    loss = jnp.mean(-config.tau * q + kl)
    return loss, {"bam_loss": loss, "bam_kl": jnp.mean(kl), "bam_q": jnp.mean(q)}


def make_bam(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The BAM :class:`~qam_lite.agents.common.Agent`: QAM with :func:`bptt_terms` as actor loss."""
    return make_qam(config, obs_dim, action_dim, actor_terms=bptt_terms)
