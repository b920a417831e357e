"""Chapter 7's critic toys: exact chunked fixed points, the data layout, and the critic learner."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite import chunks
from qam_lite import toycritics as tc

GAMMA = 0.9


def test_chunk_model_matches_a_hand_computation():
    # Deterministic chain 0-1-2-3 (goal 3): from 1, "right" three times reaches the goal after
    # two steps; the third step's reward (at the goal) is 0 and nothing is bootstrapped.
    mdp = tc.chain_mdp(4, slip=0.0)
    r, p = tc.chunk_model(mdp, 3, GAMMA)
    right3 = tc.chunk_index([2, 2, 2])
    assert r[1, right3] == pytest.approx(-1 - GAMMA)
    assert np.all(p[1, right3] == 0.0)
    # From 0, right twice then stay: three rewards of -1, then state 2 with probability 1.
    c = tc.chunk_index([2, 2, 1])
    assert r[0, c] == pytest.approx(-1 - GAMMA - GAMMA**2)
    np.testing.assert_allclose(p[0, c], [0, 0, 1, 0])
    # With slips the dense reward's expectation: from 2, one right move (slip 0.5) then stay.
    slippery = tc.chain_mdp(4, slip=0.5, reward="dense")
    r, _ = tc.chunk_model(slippery, 2, GAMMA)
    assert r[2, tc.chunk_index([2, 1])] == pytest.approx(-1 + GAMMA * 0.5 * (-1))


def _bellman_h1(mdp, probs, gamma):
    """Per-step policy evaluation, written independently: V = (I - gamma P_pi)^-1 r."""
    p_pi = np.einsum("z,zst->st", probs, mdp.transitions)
    v = np.linalg.solve(np.eye(mdp.num_states) - gamma * p_pi, mdp.rewards)
    return mdp.rewards[:, None] + gamma * np.einsum("zst,t->sz", mdp.transitions, v), v


@pytest.mark.parametrize("reward", ["sparse", "dense"])
def test_exact_chunk_q_h1_is_the_bellman_solution(reward):
    mdp = tc.chain_mdp(5, slip=0.3, reward=reward)
    probs = tc.zone_probabilities(-0.5, 1.0)
    q_expected, _ = _bellman_h1(mdp, probs, GAMMA)
    np.testing.assert_allclose(tc.exact_chunk_q(mdp, 1, GAMMA, probs), q_expected, atol=1e-10)


@pytest.mark.parametrize("horizon", [2, 3])
def test_exact_chunk_q_satisfies_the_chunked_bellman_equation(horizon):
    mdp = tc.chain_mdp(5, slip=0.2)
    probs = tc.zone_probabilities(-0.2, 0.9)
    q = tc.exact_chunk_q(mdp, horizon, GAMMA, probs)
    r, p = tc.chunk_model(mdp, horizon, GAMMA)
    pi = np.prod(probs[tc.zone_chunks(horizon)], axis=1)
    np.testing.assert_allclose(q, r + GAMMA**horizon * p @ (q @ pi), atol=1e-10)
    # A state-independent policy acts the same open loop as step by step: V does not depend on H.
    _, v = _bellman_h1(mdp, probs, GAMMA)
    np.testing.assert_allclose(q @ pi, v, atol=1e-10)
    assert np.all(q[mdp.goal] == 0.0)


def test_optimal_chunk_q_is_value_iteration_and_bounds_every_policy():
    mdp = tc.chain_mdp(5, slip=0.2)
    q1 = tc.optimal_chunk_q(mdp, 1, GAMMA)
    v = np.zeros(5)
    for _ in range(2000):
        v = np.max(mdp.rewards[:, None] + GAMMA * np.einsum("zst,t->sz", mdp.transitions, v), 1)
    np.testing.assert_allclose(q1.max(1), v, atol=1e-8)
    q2 = tc.optimal_chunk_q(mdp, 2, GAMMA)
    assert np.all(q2.max(1) <= q1.max(1) + 1e-9)  # open-loop chunks cannot do better
    for low, high in [(-1.0, 1.0), (-0.4, 0.6)]:
        q = tc.exact_chunk_q(mdp, 2, GAMMA, tc.zone_probabilities(low, high))
        assert np.all(q <= q2 + 1e-9)


def test_chunks_of_the_chain_data_average_to_the_exact_q():
    """Library chunks of the OGBench-layout data: E[R_H + discount m V(s')] = Q(s, c)."""
    mdp, h = tc.chain_mdp(4, slip=0.2), 2
    probs = tc.zone_probabilities(-1.0, 1.0)
    ds = tc.chain_dataset(mdp, 600, 10, seed=3)
    data = chunks.to_device(ds)
    idx = jnp.arange(len(ds["states"]))
    c = {k: np.asarray(v) for k, v in chunks.chunks_at(data, idx, h, GAMMA).items()}
    q = tc.exact_chunk_q(mdp, h, GAMMA, probs)
    v = q @ np.prod(probs[tc.zone_chunks(h)], axis=1)
    s_next = np.argmax(c["next_observations"], axis=1)
    y = c["rewards"] + c["discount"] * c["masks"] * v[s_next]
    keep = c["valid"][:, -1] == 1
    zones = tc.chunk_index(tc.action_zone(c["actions"]))
    # Chunk 8 is "right, right"; state 1 is two moves from the goal.
    for s, z in [(0, 8), (1, 8), (2, 4), (1, 0)]:
        sel = keep & (ds["states"] == s) & (zones == z)
        assert sel.sum() > 50
        tol = 4 * y[sel].std() / np.sqrt(sel.sum()) + 1e-5  # + float32 rounding
        assert y[sel].mean() == pytest.approx(q[s, z], abs=tol)


def test_zone_probabilities_and_validation():
    np.testing.assert_allclose(tc.zone_probabilities(), [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(tc.zone_probabilities(-0.5, 1.0), [1 / 9, 4 / 9, 4 / 9])
    with pytest.raises(ValueError, match="low"):
        tc.zone_probabilities(0.5, 0.2)
    with pytest.raises(ValueError, match="slip"):
        tc.chain_mdp(4, slip=1.0)
    with pytest.raises(ValueError, match="reward"):
        tc.chain_mdp(4, reward="shaped")
    with pytest.raises(ValueError, match="policy"):
        tc.exact_chunk_q(tc.chain_mdp(4), 1, GAMMA, [0.5, 0.5, 0.5])
    with pytest.raises(ValueError, match="gamma"):
        tc.exact_chunk_q(tc.chain_mdp(4), 1, 1.0)


def test_pessimistic_value_is_mean_minus_rho_population_std():
    q = jax.random.normal(jax.random.key(0), (10, 7))
    expected = np.mean(np.asarray(q), 0) - 0.5 * np.std(np.asarray(q), 0, ddof=0)
    np.testing.assert_allclose(tc.pessimistic_value(q, 0.5), expected, rtol=1e-5, atol=1e-6)


def test_greedy_next_actions_picks_the_ensemble_mean_argmax():
    candidates = jnp.array([[-1.0], [0.0], [0.5], [1.0]])

    def q_target(obs, actions):  # two members disagreeing; mean peaks at a = 0.5 for obs 0
        centre = jnp.where(obs[..., 0] > 0, -1.0, 0.5)
        base = -((actions[..., 0] - centre) ** 2)
        return jnp.stack([base + actions[..., 0], base - actions[..., 0]])

    batch = {"next_observations": jnp.array([[0.0], [1.0]])}
    chosen = tc.greedy_next_actions(candidates)(jax.random.key(0), batch, q_target)
    np.testing.assert_allclose(chosen, [[0.5], [-1.0]])


def test_fit_critic_reaches_the_exact_td_fixed_point():
    mdp, h = tc.chain_mdp(4, slip=0.2), 1
    data = chunks.to_device(tc.chain_dataset(mdp, 150, 12, seed=0))
    exact = tc.exact_chunk_q(mdp, h, GAMMA)
    cfg = tc.critic_config(
        horizon=h, gamma=GAMMA, rho=0.0, num_critics=2, critic_hidden=(32, 32), batch_size=64
    )
    grid = jnp.asarray(tc.chunk_grid(h))
    eye = jnp.eye(4)

    def probe(apply, params):
        q = apply(params, eye[:, None, :], jnp.broadcast_to(grid, (4, *grid.shape)))
        return jnp.sqrt(jnp.mean((q.mean(0) - exact) ** 2))

    fits = tc.fit_critic(
        jax.random.key(0),
        cfg,
        4,
        h,
        lambda k: chunks.sample_chunks(data, k, 64, h, GAMMA),
        tc.uniform_next_actions(h),
        1500,
        probe=probe,
        sweep={"polyak": [0.1, 1.0]},
    )
    assert [f.config.polyak for f in fits] == [0.1, 1.0]
    assert fits[0].history["probe"][0] == pytest.approx(fits[1].history["probe"][0], rel=0.2)
    for fit in fits:
        assert fit.history["probe"][-100:].mean() < 0.35, fit.history["probe"][-100:].mean()
        assert fit.history["probe"][-1] < 0.2 * fit.history["probe"][0]


def test_fit_critic_on_a_bandit_is_regression_and_rejects_bad_sweeps():
    data = tc.bandit_dataset(jax.random.key(1), 2000, noise=0.0)
    cfg = tc.critic_config(horizon=1, num_critics=2, critic_hidden=(32, 32), batch_size=64)
    fit = tc.fit_critic(
        jax.random.key(0), cfg, 1, 2, tc.bandit_sampler(data, 64), tc.batch_next_actions(), 800
    )
    # Targets are the rewards themselves (discount 0): the batch target mean is a reward mean.
    assert abs(fit.history["target_mean"].mean() - float(data["rewards"].mean())) < 0.05
    q = fit.q(data["observations"][:500], data["actions"][:500]).mean(0)
    assert float(jnp.sqrt(jnp.mean((q - data["rewards"][:500]) ** 2))) < 0.1
    grad = tc.action_gradient(fit, jnp.zeros(1), jnp.array([[1.5, 0.0], [0.2, 0.0]]))
    assert float(grad[0, 0]) == 0.0 and float(grad[1, 0]) != 0.0  # the clip stops x_1 = 1.5
    with pytest.raises(ValueError, match="cannot sweep"):
        tc.fit_critic(jax.random.key(0), cfg, 1, 2, None, None, 1, sweep={"lr": [1e-3]})
    with pytest.raises(ValueError, match="one length"):
        tc.fit_critic(
            jax.random.key(0), cfg, 1, 2, None, None, 1, sweep={"rho": [0.0], "polyak": [0.1, 1.0]}
        )


def test_chunk_grid_and_index_agree():
    for h in (1, 2, 3):
        zones = tc.zone_chunks(h)
        np.testing.assert_array_equal(tc.chunk_index(zones), np.arange(3**h))
        np.testing.assert_array_equal(tc.action_zone(tc.chunk_grid(h)), zones)
    assert list(itertools.product(range(3), repeat=2)) == [tuple(z) for z in tc.zone_chunks(2)]
