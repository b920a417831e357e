"""Flow Q-learning (FQL): a one-step policy distilled from the BC flow while maximising Q.

Networks: the critic ensemble, the behaviour flow ``f_beta`` (flow matching, as in QAM) and a
one-step policy ``mu(s, z)`` (an MLP on ``[s, z]``, ``z ~ N(0, I)``). The actor loss is, as in the
published code,

    alpha mean ||mu(s, z) - clip(EulerODE(f_beta, s, z))||^2 - mean_B mean_k Q_k(s, clip(mu(s, z)))

with the online critic held fixed and the teacher ``f_beta`` held fixed (no target copy). The
critic is QAM's with ``a' = clip(mu(s', z'))``. The published FQL optimises with plain Adam (no
gradient clipping: :func:`~qam_lite.training.settings.make_config` sets ``grad_clip=None``
for ``fql``).
Acting: ``clip(mu(s, z))``: one network call, no ODE.

Option (a departure, off by default): ``normalize_q_loss=True`` divides the Q term by the batch's
mean ``|Q|`` (held fixed), an option of the original FQL code that the QAM paper's runs do not
use; the per-domain ``alpha`` values were tuned without it.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from qam_lite.agents.common import (
    Agent,
    Networks,
    bc_flow_loss,
    build_networks,
    critic_builder,
    critic_update_terms,
    flow_from_noise,
    make_init,
    make_optimizer,
    make_update,
    noise_like,
    velocity_builder,
)
from qam_lite.config import Config
from qam_lite.networks import MLP, XAVIER


def one_step_builder(config: Config, obs_dim: int, chunk_dim: int):
    """Builder of a one-step policy ``mu``: an MLP on ``[s, z]`` with the actor's sizes."""
    return lambda rngs: MLP(
        obs_dim + chunk_dim, config.actor_hidden, chunk_dim, kernel_init=XAVIER, rngs=rngs
    )


def one_step(apply, params, obs, noise):
    """Unclipped ``mu(s, z)``: ``(B, obs_dim), (B, D) -> (B, D)``."""
    return apply(params, jnp.concatenate([obs, noise], axis=-1))


def distill_terms(
    mu_apply, mu_params, critic_apply, critic_params, obs, teacher, noise, alpha, normalize=False
):
    """FQL's policy loss ``alpha * distill - Q`` for a student ``mu`` and its teacher's actions.

    Args:
      mu_apply, mu_params: the one-step policy (gradients flow into ``mu_params``).
      critic_apply, critic_params: the online critic (held fixed here).
      obs: ``(B, obs_dim)`` states; ``noise``: the ``(B, D)`` noise ``z`` both policies start from.
      teacher: ``(B, D)`` the teacher's clipped actions from the same ``z`` (held fixed).
      alpha: distillation weight.
      normalize: divide the Q term by the batch's mean ``|Q|`` (held fixed).

    Returns:
      ``(loss, metrics)`` with ``distill_loss`` and ``q_loss``.
    """
    student = one_step(mu_apply, mu_params, obs, noise)
    distill = jnp.mean((student - jax.lax.stop_gradient(teacher)) ** 2)
    qs = critic_apply(jax.lax.stop_gradient(critic_params), obs, jnp.clip(student, -1.0, 1.0))
    q = jnp.mean(qs, axis=0)  # (B,)
    scale = jax.lax.stop_gradient(jnp.mean(jnp.abs(q))) if normalize else 1.0
    q_loss = -jnp.mean(q) / scale
    return alpha * distill + q_loss, {"distill_loss": distill, "q_loss": q_loss}


def make_networks(config: Config, obs_dim: int, chunk_dim: int) -> Networks:
    """Critic ensemble, ``bc_flow`` (f_beta) and ``actor`` (the one-step policy ``mu``)."""
    return build_networks(
        {
            "critic": critic_builder(config, obs_dim, chunk_dim),
            "bc_flow": velocity_builder(config, obs_dim, chunk_dim),
            "actor": one_step_builder(config, obs_dim, chunk_dim),
        },
    )


def policy(networks: Networks, actor_params, obs, key, chunk_dim: int):
    """FQL's policy ``clip(mu(s, z))``, ``z = normal(key, (B, D))``."""
    noise = noise_like(obs, key, chunk_dim)
    return jnp.clip(one_step(networks.apply["actor"], actor_params, obs, noise), -1.0, 1.0)


def make_loss(config: Config, networks: Networks, chunk_dim: int):
    """``loss(params, targets, batch, key) -> (critic + bc + actor, metrics)``.

    Keys: ``k_bc, k_next, k_z = split(key, 3)``: the BC loss's, the next actions' noise, the
    distillation noise ``z = normal(k_z, (B, D))``.
    """
    critic_apply = networks.apply["critic"]

    def loss_fn(params, targets, batch, key):
        k_bc, k_next, k_z = jax.random.split(key, 3)
        obs = batch["observations"]
        bc = bc_flow_loss(networks.apply["bc_flow"], params["bc_flow"], batch, k_bc)
        frozen_actor = jax.lax.stop_gradient(params["actor"])
        next_actions = policy(networks, frozen_actor, batch["next_observations"], k_next, chunk_dim)
        critic, metrics = critic_update_terms(
            critic_apply, params, targets, batch, next_actions, config
        )
        # The teacher: the BC flow's clipped ODE from the same noise z, held fixed.
        z = noise_like(obs, k_z, chunk_dim)
        frozen_flow = jax.lax.stop_gradient(params["bc_flow"])
        teacher = flow_from_noise(networks.apply["bc_flow"], frozen_flow, obs, z, config.flow_steps)
        actor, actor_metrics = distill_terms(
            networks.apply["actor"],
            params["actor"],
            critic_apply,
            params["critic"],
            obs,
            teacher,
            z,
            config.alpha,
            config.normalize_q_loss,
        )
        metrics = {**metrics, **actor_metrics, "bc_loss": bc, "actor_loss": actor}
        return critic + bc + actor, metrics

    return loss_fn


def make_fql(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The FQL :class:`~qam_lite.agents.common.Agent` (params: critic, bc_flow, actor = ``mu``)."""
    chunk_dim = config.horizon * action_dim
    networks = make_networks(config, obs_dim, chunk_dim)
    optimizer = make_optimizer(config)

    def act(state, obs, key):
        return policy(networks, state.params["actor"], obs, key, chunk_dim)

    return Agent(
        init=make_init(networks, optimizer, ("critic",)),
        update=make_update(
            make_loss(config, networks, chunk_dim),
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
