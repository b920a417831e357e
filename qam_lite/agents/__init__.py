"""Agents: QAM and its baselines as pure functions over pytrees.

``make_agent(config, obs_dim, action_dim)`` returns an :class:`Agent` with ``init(key) -> state``,
``update(state, batch, key) -> (state, metrics)`` (one jittable gradient step) and
``act(state, obs, key) -> actions (..., H * A)`` in ``[-1, 1]``. The state is a
:class:`TrainState` ``(params, targets, opt_state, step)``; see ``agents.common`` for the batch
layout.

=========  ==========================================================================
``qam``    Q-learning with adjoint matching (``agents.qam``)
``bc``     behaviour-cloning flow, QAM at ``tau = 0`` (``agents.bc``)
``fql``    flow Q-learning: one-step policy distilled from the BC flow (``agents.fql``)
``bam``    back-propagation through the SDE sample instead of the lean adjoint (``agents.bam``)
``qam-e``  QAM plus a tanh-Gaussian edit policy on the flow's action (``agents.qam_e``)
``qam-f``  QAM plus a one-step policy distilled from the QAM flow, which acts (``agents.qam_f``)
=========  ==========================================================================

Every agent is the published one (``ColinQiyangLi/qam``) by default; the config options that
depart from it are ``normalize_q_loss`` (fql) and ``bam_path_kl`` (bam), both off.
"""

from __future__ import annotations

from qam_lite.agents.bam import make_bam
from qam_lite.agents.bc import make_bc
from qam_lite.agents.common import Agent, TrainState
from qam_lite.agents.fql import make_fql
from qam_lite.agents.qam import make_qam
from qam_lite.agents.qam_e import make_qam_e
from qam_lite.agents.qam_f import make_qam_f
from qam_lite.config import AGENTS, Config, ConfigError, validate

MAKERS = {
    "qam": make_qam,
    "bc": make_bc,
    "fql": make_fql,
    "bam": make_bam,
    "qam-e": make_qam_e,
    "qam-f": make_qam_f,
}
assert tuple(MAKERS) == AGENTS


def make_agent(config: Config, obs_dim: int, action_dim: int) -> Agent:
    """The agent ``config.agent`` for observations of ``obs_dim`` and actions of ``action_dim``.

    The policy outputs chunks of ``config.horizon * action_dim`` numbers.
    """
    validate(config)
    for name, value in (("obs_dim", obs_dim), ("action_dim", action_dim)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"{name}={value!r} is invalid; accepted: an integer >= 1")
    return MAKERS[config.agent](config, obs_dim, action_dim)


__all__ = ["AGENTS", "MAKERS", "Agent", "TrainState", "make_agent"]
