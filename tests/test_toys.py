"""The exact toy answers: mixtures, fields, tilts, adjoints and noise schedules.

(The ``tau`` widget is tested in ``test_widgets.py``.)
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from qam_lite import flows, sde, toys

MIX = toys.gaussian_mixture([0.3, 0.7], [-1.5, 1.0], [0.3, 0.5])
# Wide enough that every tilted Gaussian the property tests draw (mean up to ~7.75, std up to
# 1.5) has negligible mass past the ends.
GRID = jnp.linspace(-16.0, 16.0, 8001)
DX = float(GRID[1] - GRID[0])


# ---------------------------------------------------------------------------------- mixtures


def test_gaussian_mixture_accepts_lists_and_1d_shapes():
    assert MIX.weights.shape == (2,) and MIX.means.shape == (2, 1) and MIX.stds.shape == (2, 1)
    iso = toys.gaussian_mixture([0.5, 0.5], [[0.0, 1.0], [1.0, 0.0]], [0.1, 0.2])
    np.testing.assert_allclose(iso.stds, [[0.1, 0.1], [0.2, 0.2]])
    shared = toys.gaussian_mixture([1.0], [[0.0, 1.0]], 0.3)
    assert shared.stds.shape == (1, 2) and shared.dim == 2


@pytest.mark.parametrize(
    "weights, means, stds, message",
    [
        ([0.5, 0.6], [0.0, 1.0], [1.0, 1.0], "sum to 1"),
        ([1.5, -0.5], [0.0, 1.0], [1.0, 1.0], "positive"),
        ([[0.5, 0.5]], [0.0, 1.0], [1.0, 1.0], "shape"),
        ([0.5, 0.5], [0.0, 1.0, 2.0], [1.0, 1.0], "means"),
        ([0.5, 0.5], [0.0, 1.0], [1.0, 0.0], "stds"),
        ([0.5, 0.5], [[0.0, 1.0], [1.0, 0.0]], [[1.0, 1.0, 1.0]] * 2, "stds"),
    ],
)
def test_gaussian_mixture_rejects_bad_input(weights, means, stds, message):
    with pytest.raises(ValueError, match=message):
        toys.gaussian_mixture(weights, means, stds)


def test_mixture_log_prob_normalised_and_matches_the_formula():
    p = jnp.exp(toys.mixture_log_prob(MIX, GRID[:, None]))
    assert float(jnp.sum(p) * DX) == pytest.approx(1.0, abs=1e-4)
    x = jnp.array([[0.3]])
    by_hand = sum(
        w * np.exp(-0.5 * ((0.3 - m) / s) ** 2) / (s * np.sqrt(2 * np.pi))
        for w, m, s in [(0.3, -1.5, 0.3), (0.7, 1.0, 0.5)]
    )
    assert float(jnp.exp(toys.mixture_log_prob(MIX, x))[0]) == pytest.approx(by_hand, rel=1e-5)


def test_mixture_sample_moments():
    x = toys.mixture_sample(MIX, jax.random.key(0), 100_000)
    assert x.shape == (100_000, 1)
    mean = 0.3 * -1.5 + 0.7 * 1.0
    var = 0.3 * (0.3**2 + 1.5**2) + 0.7 * (0.5**2 + 1.0**2) - mean**2
    assert float(x.mean()) == pytest.approx(mean, abs=0.01)
    assert float(x.var()) == pytest.approx(var, rel=0.02)
    np.testing.assert_allclose(toys.mixture_mean(MIX), [mean], rtol=1e-6)


# ------------------------------------------------------------------------------ exact fields


def test_single_component_mixture_field_equals_the_gaussian_field():
    mix = toys.gaussian_mixture([1.0], [[0.5, -1.0]], [[0.3, 2.0]])
    x = jax.random.normal(jax.random.key(1), (50, 2)) * 3
    t = jax.random.uniform(jax.random.key(2), (50, 1))
    np.testing.assert_allclose(
        toys.mixture_velocity(mix)(x, t),
        toys.gaussian_velocity(jnp.array([0.5, -1.0]), jnp.array([0.3, 2.0]))(x, t),
        rtol=1e-5,
        atol=1e-5,
    )


def test_mixture_field_is_stable_far_from_every_component():
    v = toys.mixture_velocity(MIX)(jnp.array([[60.0], [-60.0]]), jnp.array([[0.99], [0.99]]))
    assert bool(jnp.all(jnp.isfinite(v)))


def test_mixture_field_satisfies_the_continuity_equation():
    # d/dt p_t + d/dx (p_t v) = 0 with p_t the mixture with means t mu_k, var (1-t)^2 + t^2 s_k^2.
    x = jnp.linspace(-4.0, 4.0, 801)[:, None]
    dx = float(x[1, 0] - x[0, 0])

    def density(t):
        var = toys.path_variance(MIX.stds[:, 0], t)
        mix_t = toys.Mixture(MIX.weights, t * MIX.means, jnp.sqrt(var)[:, None])
        return jnp.exp(toys.mixture_log_prob(mix_t, x))

    v = toys.mixture_velocity(MIX)
    for t in (0.2, 0.5, 0.8):
        eps = 1e-3
        dp_dt = (density(t + eps) - density(t - eps)) / (2 * eps)
        flux = density(t) * v(x, jnp.full_like(x, t))[:, 0]
        dflux = jnp.gradient(flux, dx)
        residual = jnp.abs(dp_dt + dflux)[5:-5]
        assert float(residual.max()) < 2e-2 * float(jnp.abs(dp_dt).max()), t
    # A wrong sign on the field fails the same check.
    flux = density(0.5) * -v(x, jnp.full_like(x, 0.5))[:, 0]
    dp_dt = (density(0.501) - density(0.499)) / 2e-3
    assert float(jnp.abs(dp_dt + jnp.gradient(flux, dx)).max()) > 0.1


def test_gaussian_field_endpoints():
    x = jnp.linspace(-2, 2, 5)[:, None]
    v = toys.gaussian_velocity(1.0, 0.5)
    # t = 0: E[x1 - x0 | x0 = x] = mu - x; t = 1: E[x1 - x0 | x1 = x] = x - 0 = x.
    np.testing.assert_allclose(v(x, jnp.zeros_like(x)), 1.0 - x, atol=1e-6)
    np.testing.assert_allclose(v(x, jnp.ones_like(x)), x, atol=1e-6)


# ------------------------------------------------------------------------------------ tilts


def test_q_functions_shapes_and_gradients():
    a = jnp.ones((4, 3, 2))
    assert toys.linear_q([1.0, -2.0])(a).shape == (4, 3)
    np.testing.assert_allclose(jax.grad(lambda a: toys.linear_q([1.0, -2.0])(a))(a[0, 0]), [1, -2])
    bump = toys.bump_q([0.0, 0.0], 0.5, 2.0)
    assert float(bump(jnp.zeros(2))) == pytest.approx(2.0)
    np.testing.assert_allclose(jax.grad(bump)(jnp.zeros(2)), [0.0, 0.0], atol=1e-7)
    assert float(jax.grad(bump)(jnp.array([0.3, 0.0]))[0]) < 0  # points back to the centre
    with pytest.raises(ValueError, match="width"):
        toys.bump_q([0.0], 0.0)


@settings(max_examples=20, deadline=None, derandomize=True)
@given(
    mu=st.floats(-1.0, 1.0),
    s=st.floats(0.2, 1.5),
    tau=st.floats(0.0, 3.0),
    c=st.floats(-1.0, 1.0),
)
@example(mu=1.0, s=1.5, tau=3.0, c=1.0)  # the largest shift the strategies allow
@example(mu=0.0, s=1.5, tau=2.0, c=1.0)  # once failed on a grid that was too narrow
def test_tilt_gaussian_matches_the_numerical_tilt(mu, s, tau, c):
    mix = toys.gaussian_mixture([1.0], [mu], [s])
    p = toys.tilted_density(lambda x: toys.mixture_log_prob(mix, x), toys.linear_q([c]), tau, GRID)
    mu_t, s_t = toys.tilt_gaussian(mu, s, tau, c)
    assert float(jnp.sum(p * GRID) * DX) == pytest.approx(float(mu + tau * c * s**2), abs=1e-3)
    assert float(s_t) == pytest.approx(s, rel=1e-6)
    exact = jnp.exp(-0.5 * ((GRID - mu_t) / s) ** 2) / (s * np.sqrt(2 * np.pi))
    np.testing.assert_allclose(p, exact, atol=2e-3)


def test_tilt_mixture_matches_the_numerical_tilt_in_1d():
    for tau in (0.0, 0.5, 2.0):
        p = toys.tilted_density(
            lambda x: toys.mixture_log_prob(MIX, x), toys.linear_q([-1.2]), tau, GRID
        )
        assert float(jnp.sum(p) * DX) == pytest.approx(1.0, abs=1e-5)
        closed = jnp.exp(toys.mixture_log_prob(toys.tilt_mixture(MIX, tau, [-1.2]), GRID[:, None]))
        np.testing.assert_allclose(p, closed, atol=1e-3)
    # Tilting toward -a moves weight to the left component.
    assert float(toys.tilt_mixture(MIX, 2.0, [-1.2]).weights[0]) > 0.9


def test_tilt_mixture_matches_the_numerical_tilt_in_2d():
    mix = toys.gaussian_mixture([0.5, 0.5], [[-1.0, 0.0], [1.0, 0.5]], [[0.4, 0.3], [0.3, 0.5]])
    axis = jnp.linspace(-5, 5, 201)
    gx, gy = jnp.meshgrid(axis, axis, indexing="ij")
    points = jnp.stack([gx.ravel(), gy.ravel()], axis=-1)
    cell = float(axis[1] - axis[0]) ** 2
    c = [0.7, -0.4]
    p = toys.tilted_density(
        lambda x: toys.mixture_log_prob(mix, x), toys.linear_q(c), 1.5, points, cell
    )
    closed = jnp.exp(toys.mixture_log_prob(toys.tilt_mixture(mix, 1.5, c), points))
    assert float(jnp.sum(p) * cell) == pytest.approx(1.0, abs=1e-5)
    np.testing.assert_allclose(p, closed, atol=2e-3)


def test_tilted_density_input_errors():
    lp = lambda x: toys.mixture_log_prob(MIX, x)
    with pytest.raises(ValueError, match="tau"):
        toys.tilted_density(lp, toys.linear_q([1.0]), -1.0, GRID)
    with pytest.raises(ValueError, match="cell_area"):
        toys.tilted_density(lp, toys.linear_q([1.0]), 1.0, GRID[:, None])
    with pytest.raises(ValueError, match="grid"):
        toys.tilted_density(lp, toys.linear_q([1.0]), 1.0, jnp.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="tau"):
        toys.tilt_mixture(MIX, -0.1, [1.0])


def test_tilt_statistics_match_the_gaussian_closed_form():
    mu, s, c = 0.2, 0.6, 1.3
    mix = toys.gaussian_mixture([1.0], [mu], [s])
    taus = jnp.array([0.0, 0.5, 1.0, 2.0])
    stats = toys.tilt_statistics(
        lambda x: toys.mixture_log_prob(mix, x), toys.linear_q([c]), taus, GRID
    )
    # KL(N(mu + d, s^2) || N(mu, s^2)) = d^2 / (2 s^2) with d = tau c s^2; E[q] = c (mu + d).
    np.testing.assert_allclose(stats["kl"], (taus * c * s) ** 2 / 2, atol=1e-4)
    np.testing.assert_allclose(stats["expected_q"], c * (mu + taus * c * s**2), atol=1e-4)


def test_tilt_statistics_monotone_for_a_nonlinear_q():
    q = toys.bump_q([1.0], 0.4)
    stats = toys.tilt_statistics(
        lambda x: toys.mixture_log_prob(MIX, x), q, jnp.linspace(0, 10, 6), GRID
    )
    assert float(stats["kl"][0]) == pytest.approx(0.0, abs=1e-6)
    assert bool(jnp.all(jnp.diff(stats["kl"]) > 0))
    assert bool(jnp.all(jnp.diff(stats["expected_q"]) > 0))


# ----------------------------------------------------------------------- noise schedules


def test_scaled_noise_sample_interpolates_between_ode_and_memoryless():
    v = toys.gaussian_velocity(1.0, 0.5)
    x0 = jax.random.normal(jax.random.key(3), (4000, 1))
    key = jax.random.key(4)
    xs_sde, _ = sde.memoryless_sample(v, v, x0, key, 50)
    np.testing.assert_allclose(toys.scaled_noise_sample(v, x0, key, 50, 1.0), xs_sde, atol=1e-5)
    np.testing.assert_allclose(
        toys.scaled_noise_sample(v, x0, key, 50, 0.0), flows.euler_trajectory(v, x0, 50), atol=1e-5
    )
    corrs = []
    for eta in (0.0, 0.1, 0.3, 1.0):
        x1 = toys.scaled_noise_sample(v, x0, key, 100, eta)[-1, :, 0]
        assert float(x1.mean()) == pytest.approx(1.0, abs=0.05), eta
        assert float(x1.std()) == pytest.approx(0.5, abs=0.05), eta
        corrs.append(float(jnp.corrcoef(x0[:, 0], x1)[0, 1]))
    assert all(a > b for a, b in zip(corrs, corrs[1:], strict=False)), corrs
    with pytest.raises(ValueError, match="eta"):
        toys.scaled_noise_sample(v, x0, key, 10, -1.0)


def test_initial_value_biased_tilt_limits():
    full = toys.tilt_gaussian(0.2, 0.5, 2.0, 1.0)
    np.testing.assert_allclose(toys.initial_value_biased_tilt(0.2, 0.5, 2.0, 1.0, 0.0), full)
    np.testing.assert_allclose(toys.initial_value_biased_tilt(0.2, 0.5, 2.0, 1.0, 1.0), (0.2, 0.5))
    half = toys.initial_value_biased_tilt(0.2, 0.5, 2.0, 1.0, np.sqrt(0.5))[0]
    assert float(half) == pytest.approx(0.2 + 0.5 * 2.0 * 0.25, rel=1e-5)


# ---------------------------------------------------------------------- multimodal policy


def test_path_marginal_and_mixture_std_match_samples_of_the_linear_path():
    t = 0.35
    k0, k1 = jax.random.split(jax.random.key(3))
    x0 = jax.random.normal(k0, (200_000, 1))
    xt = flows.linear_path(x0, toys.mixture_sample(MIX, k1, 200_000), t)
    p_t = toys.path_marginal(MIX, t)
    np.testing.assert_allclose(toys.mixture_mean(p_t), xt.mean(0), atol=0.01)
    np.testing.assert_allclose(toys.mixture_std(p_t), xt.std(0), atol=0.01)
    # The endpoints: N(0, 1) at t = 0, the target at t = 1.
    np.testing.assert_allclose(toys.mixture_std(toys.path_marginal(MIX, 0.0)), [1.0], atol=1e-6)
    np.testing.assert_allclose(toys.path_marginal(MIX, 1.0).stds, MIX.stds, atol=1e-6)


def _sampler_autodiff(base, reward, x0, key, num_steps):
    """``d(-r(x_T)) / dx_i`` by ``jax.grad`` through ``sde.memoryless_sample`` itself.

    ``a_0`` is the gradient in ``x0``; ``a_{i+1}`` the gradient in a kick added to ``x_{i+1}`` by
    step ``i`` (a field offset ``kick / 2h``, the drift being ``2 f``).
    """
    h = 1.0 / num_steps

    def minus_reward(x0, kicks):
        def kicked(x, t):
            i = jnp.round(t.reshape(-1)[0] / h).astype(jnp.int32)
            return base(x, t) + kicks[i] / (2 * h)

        xs, _ = sde.memoryless_sample(kicked, base, x0, key, num_steps)
        return -jnp.sum(reward(xs[-1]))

    kicks = jnp.zeros((num_steps - 1, *x0.shape))
    g0, gk = jax.grad(minus_reward, argnums=(0, 1))(x0, kicks)
    return jnp.concatenate([g0[None], gk])


def test_sampler_adjoint_is_the_gradient_of_the_sampler_and_differs_from_the_lean_one():
    from qam_lite import adjoint

    mix = toys.gaussian_mixture([0.2, 0.5, 0.3], [[-1.0, 0.5], [0.8, 0.8], [0.0, -1.0]], 0.3)
    base = toys.mixture_velocity(mix)
    reward = toys.bump_q([0.5, 0.5], 0.7, 3.0)
    x0, key = jax.random.normal(jax.random.key(8), (16, 2)), jax.random.key(9)
    xs, ts = sde.memoryless_sample(base, base, x0, key, 10)
    grad_r = jax.vmap(jax.grad(reward))(xs[-1])
    exact = _sampler_autodiff(base, reward, x0, key, 10)
    sampler = toys.sampler_adjoint(base, xs, ts, grad_r)
    assert sampler.shape == (10, 16, 2)
    np.testing.assert_allclose(sampler, exact, rtol=1e-4, atol=1e-4)
    # The published convention (field at t_i + h, memoryless last step) is a different recursion.
    lean = adjoint.lean_adjoint(base, xs, ts, grad_r)
    assert float(jnp.linalg.norm(lean - exact) / jnp.linalg.norm(exact)) > 0.1


def test_both_adjoint_conventions_converge_to_the_closed_form():
    from qam_lite import adjoint

    mu, s, tau, c = 0.3, 0.5, 2.0, 1.5
    base = toys.gaussian_velocity(mu, s)
    x0 = jax.random.normal(jax.random.key(1), (4, 1))
    errors = {"lean": [], "sampler": []}
    for num_steps in (20, 200):
        xs, ts = sde.memoryless_sample(base, base, x0, jax.random.key(2), num_steps)
        g = jnp.full_like(xs[-1], tau * c)
        exact = toys.exact_linear_adjoint(s, tau, c, ts)
        errors["lean"].append(float(jnp.abs(adjoint.lean_adjoint(base, xs, ts, g) - exact).max()))
        errors["sampler"].append(
            float(jnp.abs(toys.sampler_adjoint(base, xs, ts, g) - exact).max())
        )
    for name, (coarse, fine) in errors.items():
        # First order: ten times the steps, about a tenth of the error.
        assert fine < 0.15 * coarse and fine < 0.03, (name, coarse, fine)


def test_multimodal_policy_dataset_follows_its_exact_mixture():
    obs, actions = toys.multimodal_policy_dataset(jax.random.key(5), 3000)
    assert obs.shape == (3000, 1) and actions.shape == (3000, 2)
    assert float(jnp.abs(obs).max()) <= 1.0 and float(jnp.abs(actions).max()) < 1.0
    for s in (-0.9, 0.0, 0.7):
        mix = toys.multimodal_policy_mixture(s)
        assert mix.means.shape == (toys.POLICY_MODES, 2)
        # Every mode is far from the others (multimodal), relative to the std.
        gaps = jnp.linalg.norm(mix.means[:, None] - mix.means[None], axis=-1)
        assert float(jnp.min(gaps + 10 * jnp.eye(toys.POLICY_MODES))) > 10 * toys.POLICY_STD
    # Each action lies within 5 std of a mode of its own state's mixture, not of a far state's.
    dist = lambda o: jnp.min(
        jnp.linalg.norm(toys.multimodal_policy_means(o) - actions[:, None], axis=-1), axis=-1
    )
    assert float(jnp.max(dist(obs[:, 0]))) < 5 * toys.POLICY_STD
    assert float(jnp.median(dist(-obs[:, 0]))) > 2 * toys.POLICY_STD
    np.testing.assert_allclose(
        toys.multimodal_policy_means(jnp.asarray(0.7)), toys.multimodal_policy_mixture(0.7).means
    )
    with pytest.raises(ValueError, match="obs_value"):
        toys.multimodal_policy_mixture(1.5)


# ------------------------------------------------------------------------------- metrics


def test_wasserstein_and_quantiles():
    x = 1.0 + 0.5 * jax.random.normal(jax.random.key(6), (20_000,))
    assert float(toys.wasserstein1_1d(x, toys.gaussian_quantile(1.0, 0.5))) < 0.01
    assert float(toys.wasserstein1_1d(x + 0.3, toys.gaussian_quantile(1.0, 0.5))) == pytest.approx(
        0.3, abs=0.01
    )
    q = toys.mixture_quantile_1d(MIX)
    u = jnp.array([0.1, 0.3, 0.5, 0.9])
    cdf_on_grid = jnp.cumsum(jnp.exp(toys.mixture_log_prob(MIX, GRID[:, None]))) * DX
    np.testing.assert_allclose(jnp.interp(q(u), GRID, cdf_on_grid), u, atol=3e-3)
