"""Agents: shapes, finite updates, which networks feed which loss, fixed points, the TD target.

The losses themselves are checked against transcriptions of the published code in
``test_published_losses.py``.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from optax import ScaleByAdamState

from qam_lite.agents import AGENTS, make_agent
from qam_lite.agents import bam as bam_module
from qam_lite.agents import qam as qam_module
from qam_lite.agents.common import (
    critic_loss,
    critic_target,
    critic_update_terms,
    flow_actions,
    make_optimizer,
    polyak,
)
from qam_lite.config import ConfigError
from qam_lite.training.settings import make_config

OBS, ACT, H, B = 3, 2, 2, 8
TINY = dict(
    horizon=H,
    actor_hidden=(16,),
    critic_hidden=(16,),
    num_critics=3,
    flow_steps=3,
    batch_size=B,
    polyak=0.1,
)


@functools.cache
def compiled(name):
    """A tiny agent and its jitted update, shared between tests (compiles once per agent)."""
    agent = make_agent(tiny(name), OBS, ACT)
    return agent, jax.jit(agent.update)


def tiny(agent="qam", **overrides):
    # antmaze-large: QAM-E's edit and QAM-F's one-step policy are both on there.
    task = "antmaze-large-navigate-singletask-task1-v0"
    return make_config(task, agent=agent, **{**TINY, **overrides})


def random_batch(key, valid=None):
    ks = jax.random.split(key, 5)
    return {
        "observations": jax.random.normal(ks[0], (B, OBS)),
        "next_observations": jax.random.normal(ks[1], (B, OBS)),
        "actions": jax.random.uniform(ks[2], (B, H * ACT), minval=-1.0, maxval=1.0),
        "rewards": jax.random.normal(ks[3], (B,)),
        "masks": (jax.random.uniform(ks[4], (B,)) > 0.3).astype(jnp.float32),
        "valid": jnp.ones((B, H)) if valid is None else valid,
    }


def perturb(tree, key, scale=0.5):
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    noisy = [x + scale * jax.random.normal(k, x.shape) for x, k in zip(leaves, keys, strict=True)]
    return jax.tree.unflatten(treedef, noisy)


@pytest.mark.parametrize("name", AGENTS)
def test_updates_are_finite_and_actions_lie_in_the_box(name):
    agent, update = compiled(name)
    state = agent.init(jax.random.key(0))
    before = jax.tree.leaves(state.params)
    for i in range(3):
        state, metrics = update(state, random_batch(jax.random.key(i)), jax.random.key(10 + i))
    assert int(state.step) == 3
    assert metrics and all(np.isfinite(float(v)) for v in metrics.values()), metrics
    assert "grad_norm" in metrics and "bc_loss" in metrics
    if name != "bc":
        assert {"critic_loss", "q_mean", "q_std", "q_max", "q_min"} <= set(metrics)
    extra = {"qam-e": {"edit", "edit_temp"}, "qam-f": {"one_step"}}.get(name, set())
    assert extra <= set(state.params)
    assert {"qam-e": {"edit_entropy", "edit_temp"}, "qam-f": {"distill_loss"}}.get(
        name, set()
    ) <= set(metrics)
    moved = [
        not np.allclose(a, b) for a, b in zip(before, jax.tree.leaves(state.params), strict=True)
    ]
    assert all(moved)  # every trained network received a gradient
    obs = 5.0 * jax.random.normal(jax.random.key(7), (B, OBS))
    actions = jax.jit(agent.act)(state, obs, jax.random.key(8))
    assert actions.shape == (B, H * ACT)
    assert float(jnp.max(jnp.abs(actions))) <= 1.0


@pytest.mark.parametrize(("name", "switch"), [("qam-e", "edit_scale"), ("qam-f", "alpha")])
def test_variants_switched_off_are_qam(name, switch):
    # The authors build no edit / one-step policy when edit_scale / fql_alpha is 0 (cube-double).
    assert getattr(make_config("cube-double-play", name), switch) == 0.0
    config = tiny(name, **{switch: 0.0})
    variant, qam = make_agent(config, OBS, ACT), make_agent(config.replace(agent="qam"), OBS, ACT)
    s_variant, s_qam = variant.init(jax.random.key(0)), qam.init(jax.random.key(0))
    assert set(s_variant.params) == set(s_qam.params) == {"critic", "bc_flow", "actor"}
    obs = jax.random.normal(jax.random.key(1), (B, OBS))
    np.testing.assert_array_equal(
        variant.act(s_variant, obs, jax.random.key(2)), qam.act(s_qam, obs, jax.random.key(2))
    )


def test_fql_uses_plain_adam_and_the_others_a_clipped_adam():
    grads = {"w": jnp.full((3,), 1e3)}
    for name, clipped in (("fql", False), ("qam", True), ("qam-f", True), ("bam", True)):
        config = make_config("cube-double-play", name)
        assert (config.grad_clip is not None) == clipped
        opt = make_optimizer(config)
        _, opt_state = opt.update(grads, opt.init(grads), grads)
        (adam,) = [
            s
            for s in jax.tree.leaves(opt_state, is_leaf=lambda x: isinstance(x, ScaleByAdamState))
            if isinstance(s, ScaleByAdamState)
        ]
        seen = 1.0 / np.sqrt(3.0) if clipped else 1e3  # the gradient Adam received
        np.testing.assert_allclose(adam.mu["w"], (1 - 0.9) * seen, rtol=1e-5)


def test_make_agent_rejects_bad_sizes():
    with pytest.raises(ConfigError, match="action_dim=0"):
        make_agent(tiny(), OBS, 0)


def qam_parts(**overrides):
    config = tiny(**overrides)
    networks = qam_module.make_networks(config, OBS, H * ACT)
    params = networks.init(jax.random.key(1))
    targets = {
        "critic": perturb(params["critic"], jax.random.key(2)),
        "bc_flow": perturb(params["bc_flow"], jax.random.key(3)),
    }
    return config, networks, params, targets


def test_qam_actor_loss_uses_only_the_target_critic_and_target_bc_flow():
    config, networks, params, targets = qam_parts(tau=3.0)
    obs = jax.random.normal(jax.random.key(4), (B, OBS))

    @jax.jit
    def am(params, targets):
        return qam_module.adjoint_terms(
            networks, params, targets, obs, jax.random.key(5), config, H * ACT
        )[0]

    base = am(params, targets)
    online_moved = {
        **params,
        "critic": perturb(params["critic"], jax.random.key(6)),
        "bc_flow": perturb(params["bc_flow"], jax.random.key(7)),
    }
    assert float(am(online_moved, targets)) == float(base)
    assert abs(float(am(params, {**targets, "critic": params["critic"]})) - float(base)) > 1e-4
    assert abs(float(am(params, {**targets, "bc_flow": params["bc_flow"]})) - float(base)) > 1e-4
    # The whole QAM loss sends the actor no gradient through the critic or the BC flow, and the
    # actor's gradient does not depend on the online critic.
    loss_fn = qam_module.make_loss(config, networks, H * ACT)
    batch = random_batch(jax.random.key(8))
    grad = jax.jit(jax.grad(lambda p, t: loss_fn(p, t, batch, jax.random.key(9))[0]))
    g1 = grad(params, targets)["actor"]
    g2 = grad({**params, "critic": perturb(params["critic"], jax.random.key(10))}, targets)["actor"]
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tau_zero_adjoint_matching_is_minimised_at_the_base_field():
    config, networks, params, targets = qam_parts(tau=0.0)
    obs = jax.random.normal(jax.random.key(4), (B, OBS))

    def am(actor):
        return qam_module.adjoint_terms(
            networks, {**params, "actor": actor}, targets, obs, jax.random.key(5), config, H * ACT
        )[0]

    value, grad = jax.jit(jax.value_and_grad(am))(targets["bc_flow"])
    assert float(value) == pytest.approx(0.0, abs=1e-10)
    assert all(float(jnp.max(jnp.abs(g))) < 1e-6 for g in jax.tree.leaves(grad))
    assert float(jax.jit(am)(params["actor"])) > 1e-3  # any other field pays


def test_bam_at_tau_zero_is_zero_at_the_base_and_positive_elsewhere():
    config, networks, params, targets = qam_parts(tau=0.0, agent="bam")
    obs = jax.random.normal(jax.random.key(4), (B, OBS))

    def loss(actor):
        return bam_module.bptt_terms(
            networks, {**params, "actor": actor}, targets, obs, jax.random.key(5), config, H * ACT
        )[0]

    assert float(jax.jit(loss)(targets["bc_flow"])) == pytest.approx(0.0, abs=1e-10)
    assert float(jax.jit(loss)(params["actor"])) > 1e-3


def test_polyak_math_and_targets_after_an_update():
    t, o = {"w": jnp.array([1.0, 2.0])}, {"w": jnp.array([3.0, -2.0])}
    np.testing.assert_allclose(polyak(t, o, 0.25)["w"], [1.5, 1.0])
    agent, update = compiled("qam")
    state = agent.init(jax.random.key(0))
    for name in ("critic", "bc_flow"):
        pairs = zip(*(jax.tree.leaves(t[name]) for t in (state.targets, state.params)), strict=True)
        for a, b in pairs:
            np.testing.assert_array_equal(a, b)  # targets start equal to the online networks
    new, _ = update(state, random_batch(jax.random.key(1)), jax.random.key(2))
    for name in ("critic", "bc_flow"):
        old_t, new_p = jax.tree.leaves(state.targets[name]), jax.tree.leaves(new.params[name])
        for got, a, b in zip(jax.tree.leaves(new.targets[name]), old_t, new_p, strict=True):
            np.testing.assert_allclose(got, 0.9 * a + 0.1 * b, rtol=1e-6, atol=1e-7)


def test_critic_target_and_loss_against_numpy():
    rng = np.random.default_rng(0)
    k, b, gamma, horizon, rho = 4, 6, 0.9, 3, 0.7
    q_next = rng.normal(size=(k, b)).astype(np.float32)
    q = rng.normal(size=(k, b)).astype(np.float32)
    rewards = rng.normal(size=b).astype(np.float32)
    masks = np.array([1, 0, 1, 1, 0, 1], np.float32)
    valid = np.ones((b, horizon), np.float32)
    valid[2, 1:] = 0.0  # chunk 2 crosses an episode end: dropped from the TD loss
    y = rewards + gamma**horizon * masks * (q_next.mean(0) - rho * q_next.std(0))
    np.testing.assert_allclose(
        critic_target(q_next, rewards, masks, gamma**horizon, rho), y, rtol=1e-5, atol=1e-6
    )
    w = valid[:, -1]
    expected = np.mean(np.mean((q - y) ** 2, axis=0) * w)  # mean over members, then batch
    assert float(critic_loss(q, y, w)) == pytest.approx(expected, rel=1e-5)

    # Through critic_update_terms with a stand-in ensemble Q_k(s, a) = c_k * sum(s) + sum(a).
    def apply(p, obs, a):
        return p[:, None] * jnp.sum(obs, -1)[None] + jnp.sum(a, -1)[None]

    obs = rng.normal(size=(b, 2)).astype(np.float32)
    next_obs = rng.normal(size=(b, 2)).astype(np.float32)
    actions = rng.uniform(-1, 1, size=(b, horizon)).astype(np.float32)
    next_actions = rng.uniform(-1, 1, size=(b, horizon)).astype(np.float32)
    online, target = np.arange(1.0, k + 1, dtype=np.float32), -np.arange(k, dtype=np.float32)
    batch = {
        "observations": obs,
        "next_observations": next_obs,
        "actions": actions,
        "rewards": rewards,
        "masks": masks,
        "valid": valid,
    }
    config = tiny(gamma=gamma, horizon=horizon, rho=rho, num_critics=k)
    loss, metrics = critic_update_terms(
        apply, {"critic": online}, {"critic": target}, batch, next_actions, config
    )
    qn = target[:, None] * next_obs.sum(-1)[None] + next_actions.sum(-1)[None]
    yy = rewards + gamma**horizon * masks * (qn.mean(0) - rho * qn.std(0))
    qq = online[:, None] * obs.sum(-1)[None] + actions.sum(-1)[None]
    assert float(loss) == pytest.approx(np.mean(np.mean((qq - yy) ** 2, 0) * w), rel=1e-5)
    assert float(metrics["target_mean"]) == pytest.approx(yy.mean(), rel=1e-5, abs=1e-6)
    # A per-sample 'discount' (chunks.sample_chunks provides one) replaces gamma ** H.
    disc = np.full(b, 0.5, np.float32)
    loss2, _ = critic_update_terms(
        apply,
        {"critic": online},
        {"critic": target},
        {**batch, "discount": disc},
        next_actions,
        config,
    )
    y2 = rewards + disc * masks * (qn.mean(0) - rho * qn.std(0))
    assert float(loss2) == pytest.approx(np.mean(np.mean((qq - y2) ** 2, 0) * w), rel=1e-5)


@pytest.mark.parametrize("agent", ["qam", "bam"])
def test_at_tau_zero_the_policy_is_the_behaviour_flow(agent):
    # The published sample_actions acts with the "slow" actor (f_beta) when inv_temp == 0, for
    # acting and for the critic's next actions; at tau > 0 with f_theta.
    obs, key = jax.random.normal(jax.random.key(4), (B, OBS)), jax.random.key(5)
    for tau, name in ((0.0, "bc_flow"), (1.0, "actor")):
        ag = make_agent(tiny(agent, tau=tau), OBS, ACT)
        state = ag.init(jax.random.key(1))
        networks = qam_module.make_networks(ag.config, OBS, H * ACT)
        want = flow_actions(
            networks.apply[name], state.params[name], obs, key, H * ACT, ag.config.flow_steps
        )
        other = "actor" if name == "bc_flow" else "bc_flow"
        not_want = flow_actions(
            networks.apply[other], state.params[other], obs, key, H * ACT, ag.config.flow_steps
        )
        got = ag.act(state, obs, key)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
        assert not np.allclose(got, not_want, atol=1e-4)
