"""QAM-E: QAM plus a small tanh-Gaussian *edit* policy on the flow's action (the paper's variant).

Everything of QAM (``agents.qam``) is kept and trained as before. On top, an edit policy
``e ~ tanh(N(m(s, a), diag(exp(2 l(s, a)))))`` looks at the state and the QAM flow's clipped
action ``a = clip(EulerODE(f_theta, s))`` and acts with

    a_edit = clip(a + edit_scale * e, -1, 1)

(also the critic's next actions). It is trained SAC-style, with the online critic and ``f_theta``
held fixed, as the published code does:

    L_edit = -mean_B mean_k Q_k(s, a_edit) + mean_B[alpha_e * log pi_e(e | s, a)]
             + alpha_e' * (H - H_target),      H = -mean_B log pi_e (held fixed),

where ``alpha_e = exp(log alpha_e)`` is a learned temperature (starting at 1; held fixed in the
second term, trained by the third), and ``H_target = -0.5 * D`` (``D = H * A``, the chunk size).
``edit_scale`` is per domain (:data:`qam_lite.settings.DOMAINS`); with ``edit_scale = 0`` the
published code builds no edit policy, and ``qam-e`` is exactly ``qam`` (cube-double and scene).
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.agents.common import Agent, flow_actions
from qam_lite.agents.qam import Head, make_qam
from qam_lite.config import Config
from qam_lite.networks import XAVIER, LogScalar, TanhGaussian, tanh_gaussian_sample

#: Target entropy of the edit policy per action-chunk dimension (published: ``-0.5 * D``).
TARGET_ENTROPY_PER_DIM = -0.5


def edit_sample(networks, params, obs, key, config: Config, chunk_dim: int):
    """The edited action and the edit's log-density at states ``obs (B, obs_dim)``.

    Keys: ``k_flow, k_edit = split(key)``; the flow's noise from ``k_flow``
    (:func:`~qam_lite.agents.common.flow_actions`), the edit's from ``k_edit``
    (:func:`~qam_lite.networks.tanh_gaussian_sample`). ``f_theta`` is held fixed.

    Returns:
      ``(actions (B, D) in [-1, 1], log_prob (B,))``.
    """
    k_flow, k_edit = jax.random.split(key)
    frozen_actor = jax.lax.stop_gradient(params["actor"])
    a = flow_actions(
        networks.apply["actor"], frozen_actor, obs, k_flow, chunk_dim, config.flow_steps
    )
    mean, log_std = networks.apply["edit"](params["edit"], jnp.concatenate([obs, a], axis=-1))
    edit, log_prob = tanh_gaussian_sample(mean, log_std, k_edit)
    return jnp.clip(a + config.edit_scale * edit, -1.0, 1.0), log_prob


def edit_policy(networks, params, obs, key, config: Config, chunk_dim: int):
    """QAM-E's policy: the flow's action plus a sampled edit, clipped."""
    return edit_sample(networks, params, obs, key, config, chunk_dim)[0]


def edit_terms(networks, params, obs, key, config: Config, chunk_dim: int):
    """The edit policy's loss and its temperature's loss (see the module docstring)."""
    actions, log_prob = edit_sample(networks, params, obs, key, config, chunk_dim)
    qs = networks.apply["critic"](jax.lax.stop_gradient(params["critic"]), obs, actions)
    q_loss = -jnp.mean(jnp.mean(qs, axis=0))
    temp = networks.apply["edit_temp"](params["edit_temp"])
    entropy_loss = jnp.mean(log_prob * jax.lax.stop_gradient(temp))
    entropy = -jnp.mean(jax.lax.stop_gradient(log_prob))
    temp_loss = temp * (entropy - TARGET_ENTROPY_PER_DIM * chunk_dim)
    metrics = {
        "edit_q_loss": q_loss,
        "edit_entropy_loss": entropy_loss,
        "edit_temp_loss": temp_loss,
        "edit_entropy": entropy,
        "edit_temp": temp,
    }
    return q_loss + entropy_loss + temp_loss, metrics


def edit_head(config: Config, obs_dim: int, chunk_dim: int) -> Head:
    """The edit policy (``params['edit']``) and its temperature (``params['edit_temp']``)."""
    return Head(
        builders={
            "edit": lambda rngs: TanhGaussian(
                obs_dim + chunk_dim, config.actor_hidden, chunk_dim, kernel_init=XAVIER, rngs=rngs
            ),
            "edit_temp": lambda rngs: LogScalar(1.0, rngs=rngs),
        },
        act=edit_policy,
        terms=edit_terms,
    )


def make_qam_e(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The QAM-E :class:`~qam_lite.agents.common.Agent` (plain QAM when ``edit_scale == 0``)."""
    if config.edit_scale == 0:
        return make_qam(config, obs_dim, action_dim)
    head = edit_head(config, obs_dim, config.horizon * action_dim)
    return make_qam(config, obs_dim, action_dim, head=head)
