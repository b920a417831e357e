"""Behaviour cloning with a flow policy: QAM at ``tau = 0``, trained and run the cheap way.

At ``tau = 0`` QAM's adjoints vanish and adjoint matching's fixed point is ``f_theta = f_beta``:
the fine-tuned policy *is* the behaviour flow. So this baseline trains only ``f_beta`` (flow
matching on the data chunks) and acts with it, skipping the critic and the actor entirely: the same
policy at the fixed point, at a fraction of the cost (and no learning-dynamics lag of ``f_theta``
behind ``f_beta``). Acting: Euler ODE with ``f_beta``, clipped.
"""

from __future__ import annotations

from qam_lite.agents.common import (
    Agent,
    bc_flow_loss,
    build_networks,
    flow_actions,
    make_init,
    make_optimizer,
    make_update,
    velocity_builder,
)
from qam_lite.config import Config


def make_bc(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The BC-flow :class:`~qam_lite.agents.common.Agent` (params: ``bc_flow`` only)."""
    chunk_dim = config.horizon * action_dim
    networks = build_networks({"bc_flow": velocity_builder(config, obs_dim, chunk_dim)})
    optimizer = make_optimizer(config)
    apply = networks.apply["bc_flow"]

    def loss_fn(params, targets, batch, key):
        loss = bc_flow_loss(apply, params["bc_flow"], batch, key)
        return loss, {"bc_loss": loss}

    def act(state, obs, key):
        return flow_actions(apply, state.params["bc_flow"], obs, key, chunk_dim, config.flow_steps)

    return Agent(
        init=make_init(networks, optimizer, ()),
        update=make_update(loss_fn, optimizer, config.polyak, config.action_clip),
        act=act,
        config=config,
        obs_dim=obs_dim,
        action_dim=action_dim,
        chunk_dim=chunk_dim,
    )
