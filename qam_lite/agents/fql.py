"""Flow Q-learning (FQL): a one-step policy distilled from the BC flow while maximising Q.

Networks: the critic ensemble, the behaviour flow ``f_beta`` (flow matching, as in QAM) and a
one-step policy ``mu(s, z)`` (an MLP on ``[s, z]``, ``z ~ N(0, I)``). The actor loss is

    alpha mean ||mu(s, z) - EulerODE(f_beta, s, z)||^2 - mean Qbar(s, clip(mu(s, z))) / mean |Qbar|

(``Qbar`` the online ensemble mean, the normaliser held fixed, as in the published FQL; switch the
normaliser off with ``config.normalize_q_loss = False``). The critic is QAM's, with
``a' = clip(mu(s', z))``. Acting: ``clip(mu(s, z))``: one network call, no ODE.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.agents.common import (
    Agent,
    bc_flow_loss,
    build_networks,
    conditioned,
    critic_builder,
    critic_update_terms,
    make_init,
    make_optimizer,
    make_update,
    velocity_builder,
)
from qam_lite.config import Config
from qam_lite.flows import euler_sample
from qam_lite.networks import MLP


def make_fql(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The FQL :class:`~qam_lite.agents.common.Agent` (params: critic, bc_flow, actor = ``mu``)."""
    chunk_dim = config.horizon * action_dim
    networks = build_networks(
        {
            "critic": critic_builder(config, obs_dim, chunk_dim),
            "bc_flow": velocity_builder(config, obs_dim, chunk_dim),
            "actor": lambda rngs: MLP(
                obs_dim + chunk_dim, config.actor_hidden, chunk_dim, rngs=rngs
            ),
        },
    )
    optimizer = make_optimizer(config)
    mlp_apply, critic_apply = networks.apply["actor"], networks.apply["critic"]

    def one_step(actor_params, obs, noise):
        """Unclipped ``mu(s, z)``: ``(B, obs_dim), (B, D) -> (B, D)``."""
        return mlp_apply(actor_params, jnp.concatenate([obs, noise], axis=-1))

    def noise_like(obs, key):
        return jax.random.normal(key, (*obs.shape[:-1], chunk_dim), obs.dtype)

    def loss_fn(params, targets, batch, key):
        k_bc, k_next, k_z = jax.random.split(key, 3)
        obs, next_obs = batch["observations"], batch["next_observations"]
        bc = bc_flow_loss(networks.apply["bc_flow"], params["bc_flow"], batch, k_bc, action_dim)

        frozen_actor = jax.lax.stop_gradient(params["actor"])
        next_actions = jnp.clip(
            one_step(frozen_actor, next_obs, noise_like(next_obs, k_next)), -1.0, 1.0
        )
        critic, metrics = critic_update_terms(
            critic_apply, params, targets, batch, next_actions, config
        )

        # Distillation target: the (frozen) BC flow's ODE from the same noise z.
        z = noise_like(obs, k_z)
        frozen_flow = jax.lax.stop_gradient(params["bc_flow"])
        teacher = euler_sample(
            conditioned(networks.apply["bc_flow"], frozen_flow, obs), z, config.flow_steps
        )
        student = one_step(params["actor"], obs, z)
        distill = jnp.mean((student - teacher) ** 2)
        # The critic is frozen in the actor's term: Q must not be pushed up by the actor loss.
        q = jnp.mean(
            critic_apply(jax.lax.stop_gradient(params["critic"]), obs, jnp.clip(student, -1, 1)),
            axis=0,
        )
        scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(q))) if config.normalize_q_loss else 1.0
        q_loss = -jnp.mean(q) / scale
        actor = config.alpha * distill + q_loss
        metrics = {
            **metrics,
            "bc_loss": bc,
            "distill_loss": distill,
            "q_loss": q_loss,
            "actor_loss": actor,
        }
        return critic + bc + actor, metrics

    def act(state, obs, key):
        return jnp.clip(one_step(state.params["actor"], obs, noise_like(obs, key)), -1.0, 1.0)

    return Agent(
        init=make_init(networks, optimizer, ("critic",)),
        update=make_update(loss_fn, optimizer, config.polyak, config.action_clip),
        act=act,
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
        chunk_dim=chunk_dim,
    )
