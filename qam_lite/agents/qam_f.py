"""QAM-F: QAM plus a one-step policy distilled from the QAM flow, FQL-style (the paper's variant).

Everything of QAM (``agents.qam``) is kept and trained as before. On top, a one-step policy
``mu(s, z)`` (FQL's, ``agents.fql``) is trained with the QAM flow ``f_theta`` as its teacher:

    alpha mean ||mu(s, z) - clip(EulerODE(f_theta, s, z))||^2 - mean_B mean_k Q_k(s, clip(mu(s, z)))

(online critic and ``f_theta`` held fixed), and it is ``mu`` that acts: ``clip(mu(s, z))``, also
for the critic's next actions. Unlike FQL, the optimiser keeps QAM's gradient-norm clip, as the
published code does. ``alpha`` is per domain (:data:`qam_lite.settings.DOMAINS`); with ``alpha = 0``
the published code builds no one-step policy, and ``qam-f`` is exactly ``qam`` (cube-double and
puzzle-3x3).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.agents.common import Agent, flow_from_noise, noise_like
from qam_lite.agents.fql import distill_terms, one_step, one_step_builder
from qam_lite.agents.qam import Head, make_qam
from qam_lite.config import Config


def one_step_policy(networks, params, obs, key, config: Config, chunk_dim: int):
    """QAM-F's policy: ``clip(mu(s, z))``, ``z = normal(key, (B, D))``."""
    noise = noise_like(obs, key, chunk_dim)
    return jnp.clip(one_step(networks.apply["one_step"], params["one_step"], obs, noise), -1, 1)


def one_step_terms(networks, params, obs, key, config: Config, chunk_dim: int):
    """The one-step policy's FQL loss, the QAM flow ``f_theta`` its teacher; ``z`` from ``key``."""
    z = noise_like(obs, key, chunk_dim)
    frozen_actor = jax.lax.stop_gradient(params["actor"])
    teacher = flow_from_noise(networks.apply["actor"], frozen_actor, obs, z, config.flow_steps)
    loss, metrics = distill_terms(
        networks.apply["one_step"],
        params["one_step"],
        networks.apply["critic"],
        params["critic"],
        obs,
        teacher,
        z,
        config.alpha,
    )
    return loss, {**metrics, "one_step_loss": loss}


def one_step_head(config: Config, obs_dim: int, chunk_dim: int) -> Head:
    """The one-step policy (``params['one_step']``), its loss, and its acting."""
    return Head(
        builders={"one_step": one_step_builder(config, obs_dim, chunk_dim)},
        act=one_step_policy,
        terms=one_step_terms,
    )


def make_qam_f(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The QAM-F :class:`~qam_lite.agents.common.Agent` (plain QAM when ``alpha == 0``)."""
    if config.alpha == 0:
        return make_qam(config, obs_dim, action_dim)
    head = one_step_head(config, obs_dim, config.horizon * action_dim)
    return make_qam(config, obs_dim, action_dim, head=head)
