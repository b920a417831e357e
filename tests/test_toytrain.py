"""Toy trainers: flow matching, the Gaussian baseline, adjoint matching and BPTT fine-tuning.

Fine-tuning tests start from an *exact* base (:func:`qam_lite.toytrain.residual_flow`: the
closed-form field of :mod:`qam_lite.toys` plus a zero-initialised MLP), so the only errors left
are the discretisation in ``T`` and the optimisation, and the analytic tilt is the right answer.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.stats import norm

from qam_lite import toys
from qam_lite import toytrain as tt
from qam_lite.sde import memoryless_sample

KEY = jax.random.PRNGKey(0)
C = jnp.array([1.0])
Q = toys.linear_q(C)
SMALL = (32, 32)


def _bimodal(key, n, centre=1.5, std=0.3):
    k1, k2 = jax.random.split(key)
    sign = jnp.where(jax.random.bernoulli(k1, 0.5, (n, 1)), 1.0, -1.0)
    return sign * centre + std * jax.random.normal(k2, (n, 1))


@pytest.fixture(scope="module")
def gaussian_base():
    """Exact field of N(0, 0.5^2); tilted by tau = 2, q(a) = a it becomes N(0.5, 0.5^2)."""
    return tt.residual_flow(KEY, toys.gaussian_velocity(0.0, 0.5), 1, hidden=SMALL)


GAUSSIAN_TILT = toys.gaussian_mixture(jnp.array([1.0]), jnp.array([0.5]), jnp.array([0.5]))


# ------------------------------------------------------------------------------ flow matching


def test_fit_flow_matches_a_1d_gaussian():
    data = 1.0 + 0.5 * jax.random.normal(KEY, (4000, 1))
    fit = tt.fit_flow(KEY, data, hidden=SMALL, steps=800, progress=False)
    assert fit.losses.shape == (800,) and fit.grad_norms.shape == (800,)
    assert fit.losses[-100:].mean() < fit.losses[:20].mean()
    x = np.asarray(tt.sample_flow(fit, jax.random.PRNGKey(1), 20000, num_flow_steps=20))
    assert x.shape == (20000, 1)
    assert abs(x.mean() - 1.0) < 0.08, x.mean()
    assert abs(x.std() - 0.5) < 0.08, x.std()


def test_progress_bars_are_off_when_nobody_watches(monkeypatch, capsys):
    for name in ("QAM_LITE_BATCH", "TQDM_DISABLE"):
        monkeypatch.delenv(name, raising=False)
    data = jax.random.normal(KEY, (64, 1))
    tt.fit_flow(KEY, data, hidden=(8,), steps=3)
    assert "flow matching" in capsys.readouterr().err  # a reader: the bar is shown
    for name in ("QAM_LITE_BATCH", "TQDM_DISABLE"):
        monkeypatch.setenv(name, "1")
        tt.fit_flow(KEY, data, hidden=(8,), steps=3)
        assert "flow matching" not in capsys.readouterr().err, name
        tt.fit_flow(KEY, data, hidden=(8,), steps=3, progress=True)  # forced on
        assert "flow matching" in capsys.readouterr().err, name
        monkeypatch.delenv(name)


def test_training_runs_in_equal_chunks_and_decay_is_accepted(monkeypatch):
    monkeypatch.setattr(tt, "CHUNK", 3)
    data = jax.random.normal(KEY, (64, 1))
    fit = tt.fit_flow(KEY, data, hidden=(8,), steps=7, decay=True, progress=False)
    assert fit.losses.shape == (7,) and np.all(np.isfinite(fit.losses))


def test_conditioned_flow_separates_states_and_gaussian_policy_cannot_cover_two_modes():
    """State -1: unimodal N(-1, 0.2^2); state +1: modes at +-1.5 (std 0.3)."""
    n = 6000
    k_obs, k_uni, k_bi, k_fit = jax.random.split(KEY, 4)
    obs = jnp.where(jax.random.bernoulli(k_obs, 0.5, (n, 1)), 1.0, -1.0)
    uni = -1.0 + 0.2 * jax.random.normal(k_uni, (n, 1))
    actions = jnp.where(obs > 0, _bimodal(k_bi, n), uni)
    flow = tt.fit_flow(k_fit, actions, obs, hidden=(64, 64), steps=1500, progress=False)
    gauss = tt.fit_gaussian_policy(k_fit, obs, actions, hidden=SMALL, steps=1500, progress=False)
    key = jax.random.PRNGKey(2)
    means, stds = np.array([[-1.5], [1.5]]), np.array([[0.3], [0.3]])

    flow_uni = np.asarray(tt.sample_flow(flow, key, 5000, jnp.array([-1.0]), num_flow_steps=20))
    assert abs(flow_uni.mean() + 1.0) < 0.1 and abs(flow_uni.std() - 0.2) < 0.08
    flow_bi = tt.sample_flow(flow, key, 5000, jnp.array([1.0]), num_flow_steps=20)
    coverage = tt.mode_coverage(flow_bi, means, stds)
    # Both modes present, each near its weight 1/2 (times P(|z| < 2) = 0.954).
    assert np.all(np.abs(coverage - 0.477) < 0.1), coverage

    g_uni = np.asarray(tt.gaussian_policy_sample(gauss, key, 5000, jnp.array([-1.0])))
    assert abs(g_uni.mean() + 1.0) < 0.05 and abs(g_uni.std() - 0.2) < 0.05
    g_bi = np.asarray(tt.gaussian_policy_sample(gauss, key, 5000, jnp.array([1.0])))
    # Maximum likelihood puts one wide Gaussian over both modes: N(0, 1.53^2) has 38 % near them.
    assert abs(g_bi.mean()) < 0.15 and abs(g_bi.std() - np.sqrt(1.5**2 + 0.3**2)) < 0.15
    assert tt.mode_coverage(g_bi, means, stds).sum() < 0.5
    # And the flow's held-out likelihood on the bimodal state beats the Gaussian's clearly.
    test = _bimodal(jax.random.PRNGKey(3), 500)
    lp_flow = tt.flow_log_prob(flow, test, jnp.array([1.0]), num_flow_steps=50).mean()
    lp_gauss = tt.gaussian_policy_log_prob(gauss, jnp.array([1.0]), test).mean()
    assert lp_flow > lp_gauss + 0.5, (lp_flow, lp_gauss)


def test_flow_log_prob_of_an_exact_gaussian_field():
    fit = tt.residual_flow(KEY, toys.gaussian_velocity(0.5, 0.7), 1, hidden=SMALL)
    x = jnp.linspace(-1.0, 2.0, 7)[:, None]
    lp = np.asarray(tt.flow_log_prob(fit, x, num_flow_steps=400))
    np.testing.assert_allclose(lp, norm.logpdf(np.asarray(x[:, 0]), 0.5, 0.7), atol=0.03)


def test_residual_flow_starts_exactly_at_its_field():
    v = toys.gaussian_velocity(0.3, 0.6)
    fit = tt.residual_flow(KEY, v, 1, hidden=SMALL)
    x, t = jnp.linspace(-2, 2, 5)[:, None], jnp.full((5, 1), 0.4)
    np.testing.assert_array_equal(tt.velocity_fn(fit)(x, t), v(x, t))


# ------------------------------------------------------------------------------ fine-tuning


def test_tau_zero_is_a_fixed_point(gaussian_base):
    """tau = 0: zero adjoints and f_theta = f_base make the loss and its gradient exactly 0."""
    fit = tt.adjoint_matching_finetune(
        KEY, gaussian_base, Q, 0.0, num_flow_steps=5, steps=3, batch_size=16, progress=False
    )
    np.testing.assert_array_equal(fit.losses, 0.0)
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), fit.params, gaussian_base.params)
    assert all(jax.tree.leaves(same))


@pytest.mark.parametrize(
    ("num_flow_steps", "tol_mean", "tol_std"), [(10, 0.06, 0.1), (25, 0.04, 0.05)]
)
def test_adjoint_matching_reaches_the_gaussian_tilt(
    gaussian_base, num_flow_steps, tol_mean, tol_std
):
    """N(0, 0.5^2) tilted by exp(2 a) is N(0.5, 0.5^2): the mean must move right by 0.5."""
    fit = tt.adjoint_matching_finetune(
        KEY, gaussian_base, Q, 2.0,
        num_flow_steps=num_flow_steps, steps=600, batch_size=128, progress=False,
    )  # fmt: skip
    x = tt.sample_flow(fit, jax.random.PRNGKey(1), 20000, num_flow_steps=num_flow_steps)
    m = tt.tilt_metrics(x, GAUSSIAN_TILT)
    assert abs(m["mean_error"]) < tol_mean, m
    assert abs(m["std"] - m["target_std"]) < tol_std, m


def test_discretisation_bias_on_a_bimodal_base_shrinks_with_more_steps():
    """Modes at +-1 (std 0.3), tau = 2: the tilt puts 98 % of the mass on the right mode.

    With T = 10 the scheme's fixed point leaves visibly more mass on the left (the memoryless
    property holds only as T grows); T = 40 lands closer in Wasserstein-1.
    """
    mix = toys.gaussian_mixture(
        jnp.array([0.5, 0.5]), jnp.array([-1.0, 1.0]), jnp.array([0.3, 0.3])
    )
    target = toys.tilt_mixture(mix, 2.0, C)
    base = tt.residual_flow(KEY, toys.mixture_velocity(mix), 1, hidden=SMALL)
    w1 = {}
    for T in (10, 40):
        fit = tt.adjoint_matching_finetune(
            KEY, base, Q, 2.0, num_flow_steps=T, steps=800, batch_size=128, progress=False
        )
        x = tt.sample_flow(fit, jax.random.PRNGKey(1), 20000, num_flow_steps=T)
        w1[T] = tt.tilt_metrics(x, target)["w1"]
    base_w1 = tt.tilt_metrics(tt.sample_flow(base, KEY, 20000), target)["w1"]
    assert w1[10] < 0.5 * base_w1, (w1, base_w1)  # it did learn most of the tilt
    assert w1[40] < 0.85 * w1[10], w1


def test_bptt_reaches_the_same_tilt_and_its_loss_decreases(gaussian_base):
    fit = tt.bptt_finetune(
        KEY, gaussian_base, Q, 2.0, num_flow_steps=25, steps=600, batch_size=128, progress=False
    )
    assert fit.losses[-50:].mean() < fit.losses[:50].mean()
    assert np.all(np.isfinite(fit.grad_norms)) and fit.grad_norms.shape == (600,)
    x = tt.sample_flow(fit, jax.random.PRNGKey(1), 20000, num_flow_steps=25)
    assert abs(tt.tilt_metrics(x, GAUSSIAN_TILT)["mean_error"]) < 0.05


def test_bptt_objective_value_at_the_base_is_minus_the_mean_reward():
    """At f_theta = f_base the KL term is exactly 0, so the objective is -E[tau q(x_T)]."""
    v = toys.gaussian_velocity(0.0, 0.5)
    x0 = jax.random.normal(KEY, (64, 1))
    key = jax.random.PRNGKey(5)
    val = tt.bptt_objective(v, v, lambda y: 2.0 * Q(y), x0, key, 8)
    xs, _ = memoryless_sample(v, v, x0, key, 8)
    np.testing.assert_allclose(val, -2.0 * jnp.mean(xs[-1, :, 0]), rtol=1e-6)


@pytest.mark.parametrize("method", ["adjoint", "bptt"])
def test_gradient_statistics(gaussian_base, method):
    stats = tt.gradient_statistics(
        KEY, gaussian_base, Q, 2.0, 5, method=method, num_batches=4, batch_size=32
    )
    assert set(stats) == {
        "norm_mean",
        "norm_std",
        "mean_grad_norm",
        "variance",
        "relative_variance",
    }
    assert all(np.isfinite(v) for v in stats.values())
    assert stats["norm_mean"] > 0 and stats["variance"] > 0
    if method == "adjoint":  # tau = 0: nothing to learn at the base
        zero = tt.gradient_statistics(KEY, gaussian_base, Q, 0.0, 5, num_batches=2, batch_size=8)
        assert zero["norm_mean"] == 0.0


# ------------------------------------------------------------------------------ bad input


def test_bad_input_is_named(gaussian_base):
    with pytest.raises(ValueError, match="tau must be a finite number >= 0"):
        tt.adjoint_matching_finetune(KEY, gaussian_base, Q, -1.0, steps=1, progress=False)
    with pytest.raises(ValueError, match="num_flow_steps must be an integer >= 1"):
        tt.bptt_finetune(KEY, gaussian_base, Q, 1.0, num_flow_steps=0, steps=1, progress=False)
    with pytest.raises(ValueError, match="method must be 'adjoint' or 'bptt'"):
        tt.gradient_statistics(KEY, gaussian_base, Q, 1.0, 5, method="reinforce")
    with pytest.raises(ValueError, match="obs has 3 rows but the actions have 4"):
        tt.fit_flow(KEY, jnp.zeros((4, 2)), jnp.zeros((3, 1)), steps=1, progress=False)
    with pytest.raises(ValueError, match="shape"):
        tt.fit_flow(KEY, jnp.zeros((4, 2, 2)), steps=1, progress=False)
    with pytest.raises(ValueError, match="unconditioned"):
        tt.velocity_fn(gaussian_base, obs=jnp.zeros(1))
    with pytest.raises(ValueError, match="steps must be an integer >= 1"):
        tt.fit_flow(KEY, jnp.zeros((4, 1)), steps=0)
