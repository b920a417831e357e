"""Q-learning with Adjoint Matching, one gradient step read top to bottom.

Three networks share one Adam: the critic ensemble ``Q_k`` (TD), the behaviour flow ``f_beta``
(flow matching on the data) and the fine-tuned flow ``f_theta`` (adjoint matching). Per step:

1. BC: flow-matching loss of ``f_beta`` on the data chunks.
2. Critic: ``y = R_H + gamma^H m (mean_k Q'_k(s', a') - rho std_k Q'_k(s', a'))`` with
   ``a'`` from the acting policy (``clip(EulerODE(f_theta, s'))``) and ``Q'`` the target critic.
3. Actor: sample the memoryless SDE with ``f_theta`` (last step: ODE with the target ``f_beta``),
   transport ``a_T = -tau grad_a Qbar'(s, clip(x_T))`` (target-critic mean) back along the target
   ``f_beta``'s drift (lean adjoint), regress ``f_theta`` on it (adjoint matching).
4. Polyak-average the target critic and the target ``f_beta``.

Acting: Euler ODE with ``f_theta`` from ``N(0, I)``, clipped to ``[-1, 1]``.

The paper's variants add a :class:`Head` on top of the QAM flow (``agents.qam_e``,
``agents.qam_f``): extra networks with their own loss term, and a policy that replaces the flow
for acting and for the critic's next actions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from qam_lite.adjoint import adjoint_matching_loss, lean_adjoint
from qam_lite.agents.common import (
    Agent,
    Networks,
    bc_flow_loss,
    build_networks,
    conditioned,
    critic_builder,
    critic_update_terms,
    flow_actions,
    make_init,
    make_optimizer,
    make_update,
    velocity_builder,
)
from qam_lite.config import Config
from qam_lite.sde import memoryless_sample


class Head(NamedTuple):
    """A policy on top of the QAM flow (QAM-E's edit, QAM-F's one-step policy).

    Attributes:
      builders: extra networks, ``name -> (rngs -> nnx.Module)``, trained by the same Adam.
      act: ``act(networks, params, obs, key, config, chunk_dim) -> actions (..., D)`` in
        ``[-1, 1]``: the agent's policy, also used for the critic's next actions.
      terms: ``terms(networks, params, obs, key, config, chunk_dim) -> (loss, metrics)``: the
        head's own training loss at states ``obs (B, obs_dim)``.
    """

    builders: dict[str, Callable]
    act: Callable
    terms: Callable


def flow_policy(networks: Networks, params, obs, key, config: Config, chunk_dim: int):
    """QAM's policy: ``clip(EulerODE(f_theta, s))`` from ``N(0, I)``; at ``tau = 0`` the
    behaviour flow's ``clip(EulerODE(f_beta, s))`` instead, as the published ``sample_actions``
    does (its ``inv_temp == 0`` acts with the "slow" actor, f_beta), for acting and for the
    critic's next actions alike. At ``tau = 0`` the target policy *is* ``pi_beta``; f_beta is it
    exactly, while f_theta only approaches it as its regression converges."""
    name = "bc_flow" if config.tau == 0 else "actor"
    return flow_actions(networks.apply[name], params[name], obs, key, chunk_dim, config.flow_steps)


def make_networks(
    config: Config, obs_dim: int, chunk_dim: int, extra: dict[str, Callable] | None = None
) -> Networks:
    """Critic ensemble, ``bc_flow`` (f_beta), ``actor`` (f_theta) and ``extra`` builders."""
    return build_networks(
        {
            "critic": critic_builder(config, obs_dim, chunk_dim),
            "bc_flow": velocity_builder(config, obs_dim, chunk_dim),
            "actor": velocity_builder(config, obs_dim, chunk_dim),
            **(extra or {}),
        },
    )


def adjoint_terms(networks: Networks, params, targets, obs, key, config: Config, chunk_dim: int):
    """The actor's adjoint-matching loss at states ``obs (B, obs_dim)``.

    The SDE sample, the base field and the reward gradient use only ``targets`` (target
    ``f_beta``, target critic) and a stop-gradient copy of ``f_theta``; gradients reach
    ``params['actor']`` through the regression in :func:`~qam_lite.adjoint.adjoint_matching_loss`
    alone. Noise: ``k_x0, k_sde = split(key)``; ``x_0 = normal(k_x0, (B, D))``, the SDE's
    increments from ``k_sde`` (:func:`~qam_lite.sde.memoryless_sample`).

    Returns:
      ``(am_loss, metrics)``.
    """
    velocity_apply, critic_apply = networks.apply["actor"], networks.apply["critic"]
    k_x0, k_sde = jax.random.split(key)
    base = conditioned(velocity_apply, targets["bc_flow"], obs)
    frozen_actor = conditioned(velocity_apply, jax.lax.stop_gradient(params["actor"]), obs)
    x0 = jax.random.normal(k_x0, (obs.shape[0], chunk_dim), obs.dtype)
    xs, ts = memoryless_sample(frozen_actor, base, x0, k_sde, config.flow_steps)

    # d/dx of the ensemble-mean target Q at the clipped sample, per sample (samples are independent,
    # so the gradient of the sum). The clip is differentiated too, as in the published code: a
    # coordinate already past the action bound gets no push further out.
    def q_sum(x):
        return jnp.sum(
            jnp.mean(critic_apply(targets["critic"], obs, jnp.clip(x, -1.0, 1.0)), axis=0)
        )

    grad_q = jax.grad(q_sum)(xs[-1])
    adjoints = lean_adjoint(base, xs, ts, config.tau * grad_q)
    actor = conditioned(velocity_apply, params["actor"], obs)
    loss = adjoint_matching_loss(actor, base, xs, ts, adjoints)
    metrics = {
        "am_loss": loss,
        "adjoint_norm": jnp.mean(jnp.linalg.norm(adjoints, axis=-1)),  # over steps, batch
        "grad_q_norm": jnp.mean(jnp.linalg.norm(grad_q, axis=-1)),
    }
    return loss, metrics


def make_loss(
    config: Config,
    networks: Networks,
    chunk_dim: int,
    actor_terms=adjoint_terms,
    head: Head | None = None,
):
    """``loss(params, targets, batch, key) -> (critic + bc + actor [+ head], metrics)``.

    ``actor_terms`` is the flow's policy objective: :func:`adjoint_terms` for QAM; the BAM
    ablation passes its back-propagation-through-time objective and shares everything else.
    ``head`` (QAM-E, QAM-F) adds its loss term and supplies the critic's next actions.
    Keys: ``k_bc, k_next, k_actor, k_head = split(key, 4)``.
    """
    policy = flow_policy if head is None else head.act

    def loss_fn(params, targets, batch, key):
        k_bc, k_next, k_actor, k_head = jax.random.split(key, 4)
        bc = bc_flow_loss(networks.apply["bc_flow"], params["bc_flow"], batch, k_bc)
        next_actions = policy(
            networks,
            jax.lax.stop_gradient(params),
            batch["next_observations"],
            k_next,
            config,
            chunk_dim,
        )
        critic, metrics = critic_update_terms(
            networks.apply["critic"], params, targets, batch, next_actions, config
        )
        actor, actor_metrics = actor_terms(
            networks, params, targets, batch["observations"], k_actor, config, chunk_dim
        )
        total = critic + bc + actor
        metrics = {**metrics, **actor_metrics, "bc_loss": bc}
        if head is not None:
            extra, head_metrics = head.terms(
                networks, params, batch["observations"], k_head, config, chunk_dim
            )
            total, metrics = total + extra, {**metrics, **head_metrics}
        return total, metrics

    return loss_fn


def make_qam(
    config: Config,
    obs_dim: int,
    action_dim: int,
    actor_terms=adjoint_terms,
    head: Head | None = None,
) -> Agent:
    """The QAM :class:`~qam_lite.agents.common.Agent` for ``config`` (see :func:`make_loss`)."""
    chunk_dim = config.horizon * action_dim
    networks = make_networks(config, obs_dim, chunk_dim, None if head is None else head.builders)
    optimizer = make_optimizer(config)
    policy = flow_policy if head is None else head.act

    def act(state, obs, key):
        return policy(networks, state.params, obs, key, config, chunk_dim)

    return Agent(
        init=make_init(networks, optimizer, ("critic", "bc_flow")),
        update=make_update(
            make_loss(config, networks, chunk_dim, actor_terms, head),
            optimizer,
            config.polyak,
            config.action_clip,
        ),
        act=act,
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
        chunk_dim=chunk_dim,
    )
