"""Analytic checks of the core maths: flows, the memoryless SDE, the lean adjoint, the AM loss.

Each test compares against a closed form from :mod:`qam_lite.toys` or against autodiff, and is
built so that a wrong sign, another time index or a dropped ``+h`` would make it fail.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from qam_lite import adjoint, flows, networks, sde, toys

MU, S = 1.0, 0.5
MIX = toys.gaussian_mixture([0.3, 0.7], [-1.5, 1.0], [0.3, 0.5])
N = 20_000


@pytest.fixture(scope="module")
def x0():
    return jax.random.normal(jax.random.key(0), (N, 1))


# ------------------------------------------------------------------------------------- flows


def test_time_grid_and_trajectory_shapes(x0):
    ts = flows.time_grid(x0[:5], 4)
    assert ts.shape == (4, 5, 1)
    np.testing.assert_allclose(ts[:, 0, 0], [0.0, 0.25, 0.5, 0.75])
    xs = flows.euler_trajectory(toys.gaussian_velocity(MU, S), x0[:5], 4)
    assert xs.shape == (5, 5, 1)
    np.testing.assert_array_equal(xs[0], x0[:5])
    np.testing.assert_allclose(xs[-1], flows.euler_sample(toys.gaussian_velocity(MU, S), x0[:5], 4))


@pytest.mark.parametrize(
    "name, velocity, quantile",
    [
        ("gaussian", toys.gaussian_velocity(MU, S), toys.gaussian_quantile(MU, S)),
        ("mixture", toys.mixture_velocity(MIX), toys.mixture_quantile_1d(MIX)),
    ],
)
def test_euler_with_exact_field_reaches_target_and_error_shrinks(x0, name, velocity, quantile):
    # Metric: Wasserstein-1 between 20k Euler samples and the exact quantiles. Its Monte Carlo
    # floor at n = 20k is ~0.005-0.01; the discretisation error must fall with T to below 0.02.
    errors = [
        float(toys.wasserstein1_1d(flows.euler_sample(velocity, x0, T), quantile))
        for T in (2, 8, 32, 128)
    ]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), (name, errors)
    assert errors[-1] < 0.02, (name, errors)
    assert errors[0] > 5 * errors[-1], (name, errors)


def test_exact_gaussian_field_moves_mean_and_std_exactly_in_the_limit(x0):
    x1 = flows.euler_sample(toys.gaussian_velocity(MU, S), x0, 256)
    # The ODE map is affine, x1 = MU + S * x0 in the limit: compare sample by sample.
    np.testing.assert_allclose(x1, MU + S * x0, atol=0.02)


def test_flow_matching_loss_is_minimised_by_the_exact_field_at_the_analytic_floor():
    key = jax.random.key(1)
    x1 = MU + S * jax.random.normal(jax.random.key(2), (400_000, 1))
    exact = toys.gaussian_velocity(MU, S)
    loss = float(flows.flow_matching_loss(exact, x1, key))
    # Irreducible loss of the exact field: E_t[s^2 / Var(x_t)] = pi s / 2.
    floor = float(toys.gaussian_flow_matching_floor(S))
    assert floor == pytest.approx(np.pi * S / 2)
    assert loss == pytest.approx(floor, rel=0.02)
    for perturbed in (
        lambda x, t: exact(x, t) + 0.1,
        lambda x, t: 1.1 * exact(x, t),
        toys.gaussian_velocity(MU + 0.1, S),
        toys.gaussian_velocity(MU, S * 1.2),
    ):
        assert float(flows.flow_matching_loss(perturbed, x1, key)) > loss + 1e-3


def test_flow_matching_loss_weights_mask_rows():
    key = jax.random.key(3)
    clean = jax.random.normal(jax.random.key(4), (64, 2))
    junk = clean.at[32:].set(1e3)
    mask = jnp.concatenate([jnp.ones((32, 1)), jnp.zeros((32, 1))])
    v = toys.gaussian_velocity(0.0, 1.0)
    masked_clean = flows.flow_matching_loss(v, clean, key, weights=mask)
    masked_junk = flows.flow_matching_loss(v, junk, key, weights=mask)
    np.testing.assert_allclose(masked_junk, masked_clean, rtol=1e-6)
    assert flows.flow_matching_loss(v, junk, key) > 100 * masked_clean
    np.testing.assert_allclose(
        flows.flow_matching_loss(v, clean, key, weights=jnp.ones((64, 1))),
        flows.flow_matching_loss(v, clean, key),
        rtol=1e-6,
    )


# -------------------------------------------------------------------------- memoryless SDE


def test_memoryless_sigma_formula():
    h = 0.1
    t = jnp.array([0.0, 0.5, 0.9])
    np.testing.assert_allclose(sde.memoryless_sigma(t, h), np.sqrt(2 * (1 - t + h) / (t + h)))


def test_memoryless_sample_keeps_marginal_and_forgets_x0(x0):
    base = toys.gaussian_velocity(MU, S)
    xs, ts = sde.memoryless_sample(base, base, x0, jax.random.key(5), 100)
    assert xs.shape == (101, N, 1) and ts.shape == (100, N, 1)
    np.testing.assert_allclose(ts[:, 0, 0], np.arange(100) / 100, atol=1e-7)
    np.testing.assert_array_equal(xs[0], x0)
    x1 = xs[-1, :, 0]
    assert float(jnp.mean(x1)) == pytest.approx(MU, abs=0.03)
    assert float(jnp.std(x1)) == pytest.approx(S, abs=0.03)
    corr_sde = float(jnp.corrcoef(x0[:, 0], x1)[0, 1])
    assert abs(corr_sde) < 0.05
    # The ODE with the same field is a deterministic, monotone map: correlation ~ 1.
    x1_ode = flows.euler_sample(base, x0, 100)[:, 0]
    assert float(jnp.corrcoef(x0[:, 0], x1_ode)[0, 1]) > 0.999


def test_memoryless_last_step_is_a_noise_free_base_step(x0):
    field = toys.gaussian_velocity(0.0, 1.0)
    base = toys.gaussian_velocity(2.0, 0.3)
    xs, ts = sde.memoryless_sample(field, base, x0[:256], jax.random.key(6), 10)
    h = 0.1
    np.testing.assert_allclose(xs[-1] - xs[-2], h * base(xs[-2], ts[-1]), atol=1e-5)
    assert not np.allclose(xs[-1] - xs[-2], h * field(xs[-2], ts[-1]), atol=1e-2)


def test_memoryless_first_steps_use_the_sampled_field_not_the_base(x0):
    # Same noise key, different base: only x_T may change.
    field = toys.gaussian_velocity(0.0, 1.0)
    xs_a, _ = sde.memoryless_sample(
        field, toys.gaussian_velocity(2.0, 0.3), x0[:64], jax.random.key(7), 8
    )
    xs_b, _ = sde.memoryless_sample(field, field, x0[:64], jax.random.key(7), 8)
    np.testing.assert_array_equal(xs_a[:-1], xs_b[:-1])
    assert not np.allclose(xs_a[-1], xs_b[-1])


# ------------------------------------------------------------------------------ lean adjoint


def _chain_adjoints(base, xs, ts, reward, *, field_time_shift=1.0):
    """Autodiff of ``-r(x_T)`` through ``x_{i+1} = x_i + h (2 f(x_i, t_i + h) - x_i / (t_i + h))``.

    The recursion is re-run from ``xs[0]`` with additive perturbations ``delta_i`` on ``x_i`` (the
    noise of the SDE is additive, so it is a constant here: the increments of ``xs``); the
    gradient with respect to ``delta_i`` at 0 is the exact adjoint ``a_i`` of the discrete map.
    """
    num_steps = ts.shape[0]
    h = 1.0 / num_steps
    shifted = ts + field_time_shift * h
    drift = lambda x, i: 2.0 * base(x, shifted[i]) - x / (ts[i] + h)
    noise = jnp.stack([xs[i + 1] - xs[i] - h * drift(xs[i], i) for i in range(num_steps)])

    def objective(deltas):
        x = xs[0]
        for i in range(num_steps):
            x = x + deltas[i]
            x = x + h * drift(x, i) + noise[i]
        return -jnp.sum(reward(x))

    return jax.jit(jax.grad(objective))(jnp.zeros_like(xs[:-1]))


def _nonlinear_setup(num_steps=8):
    mix = toys.gaussian_mixture([0.2, 0.5, 0.3], [[-1.0, 0.5], [0.8, 0.8], [0.0, -1.0]], 0.3)
    base = toys.mixture_velocity(mix)
    x0 = jax.random.normal(jax.random.key(8), (16, 2))
    xs, ts = sde.memoryless_sample(base, base, x0, jax.random.key(9), num_steps)
    reward = toys.bump_q([0.5, 0.5], 0.7, 3.0)
    return base, xs, ts, reward


def test_lean_adjoint_equals_autodiff_through_the_discrete_recursion():
    base, xs, ts, reward = _nonlinear_setup()
    grad_r = jax.vmap(jax.grad(reward))(xs[-1])
    lean = adjoint.lean_adjoint(base, xs, ts, grad_r)
    auto = _chain_adjoints(base, xs, ts, reward)
    assert lean.shape == (8, 16, 2)
    np.testing.assert_allclose(lean, auto, rtol=1e-4, atol=1e-5)
    # The final adjoint is -grad r applied through the last Jacobian, and nothing vanished.
    assert float(jnp.abs(lean).max()) > 0.1


def test_lean_adjoint_differs_from_the_t_i_recursion():
    # Reading the field at t_i gives the sampler's exact gradient (chapter 5); the published lean
    # adjoint reads it at t_i + h. The two must differ, or the test above could not tell them apart.
    base, xs, ts, reward = _nonlinear_setup()
    grad_r = jax.vmap(jax.grad(reward))(xs[-1])
    lean = adjoint.lean_adjoint(base, xs, ts, grad_r)
    at_t_i = _chain_adjoints(base, xs, ts, reward, field_time_shift=0.0)
    assert float(jnp.abs(lean - at_t_i).max()) > 1e-2


def test_lean_adjoint_with_a_random_mlp_field():
    field = networks.VelocityField(0, 2, [32, 32], rngs=nnx.Rngs(0))
    apply, params = networks.pure(field)
    base = lambda x, t: apply(params, None, x, t)
    x0 = jax.random.normal(jax.random.key(10), (8, 2))
    xs, ts = sde.memoryless_sample(base, base, x0, jax.random.key(11), 6)
    reward = lambda a: jnp.sin(a[..., 0]) * a[..., 1] ** 2
    grad_r = jax.vmap(jax.grad(reward))(xs[-1])
    np.testing.assert_allclose(
        adjoint.lean_adjoint(base, xs, ts, grad_r),
        _chain_adjoints(base, xs, ts, reward),
        rtol=1e-4,
        atol=1e-5,
    )


MU_B, S_B, TAU, C = 0.3, 0.5, 2.0, 1.5


def _linear_adjoints(num_steps):
    base = toys.gaussian_velocity(MU_B, S_B)
    x0 = jax.random.normal(jax.random.key(12), (32, 1))
    xs, ts = sde.memoryless_sample(base, base, x0, jax.random.key(13), num_steps)
    grad_r = jnp.full_like(xs[-1], TAU * C)  # d(tau c a)/da
    return base, xs, ts, adjoint.lean_adjoint(base, xs, ts, grad_r)


def test_discrete_adjoint_converges_to_closed_form_for_linear_q():
    errors, field_errors = [], []
    target = toys.gaussian_velocity(*toys.tilt_gaussian(MU_B, S_B, TAU, C))
    for num_steps in (25, 50, 100, 200):
        base, xs, ts, a = _linear_adjoints(num_steps)
        exact = toys.exact_linear_adjoint(S_B, TAU, C, ts)
        errors.append(float(jnp.abs(a - exact).max()))
        # Implied fine-tuned field f_beta - sigma^2 a / 2 vs the exact tilted field (t >= 0.2:
        # near t = 0, sigma^2 ~ 2 / t amplifies the O(h) adjoint error; the AM loss weights that
        # region by 4 / sigma^2).
        sigma = sde.memoryless_sigma(ts, 1.0 / num_steps)
        implied = base(xs[:-1], ts) - 0.5 * sigma**2 * a
        gap = jnp.where(ts >= 0.2, jnp.abs(implied - target(xs[:-1], ts)), 0.0)
        field_errors.append(float(gap.max()))
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
    assert errors[-1] < 0.03, errors  # |a| reaches tau c = 3: 1 % relative at T = 200
    assert all(a > b for a, b in zip(field_errors, field_errors[1:], strict=False)), field_errors
    assert field_errors[-1] < 0.04, field_errors


def test_exact_adjoint_solves_the_adjoint_ode():
    # a(1) = -tau c and da/dt = -J a with J = 2 k(t) - 1/t (finite differences).
    t = jnp.linspace(0.05, 0.95, 19)[:, None]
    a = lambda t: toys.exact_linear_adjoint(S_B, TAU, C, t)
    np.testing.assert_allclose(a(jnp.ones((1, 1))), [[-TAU * C]], rtol=1e-6)
    k = (t * S_B**2 - (1 - t)) / toys.path_variance(S_B, t)
    eps = 1e-3
    dadt = (a(t + eps) - a(t - eps)) / (2 * eps)
    np.testing.assert_allclose(dadt, -(2 * k - 1 / t) * a(t), rtol=2e-3, atol=1e-4)


def test_optimal_tilted_velocity_equals_the_exact_tilted_field():
    x = jnp.linspace(-3, 3, 41)[:, None]
    t = jnp.linspace(0, 1, 41)[:, None]
    np.testing.assert_allclose(
        toys.optimal_tilted_velocity(MU_B, S_B, TAU, C)(x, t),
        toys.gaussian_velocity(*toys.tilt_gaussian(MU_B, S_B, TAU, C))(x, t),
        atol=1e-5,
    )


# ------------------------------------------------------------------- adjoint matching loss


def test_adjoint_matching_loss_zero_at_the_control_and_positive_elsewhere():
    base, xs, ts, a = _linear_adjoints(20)
    h = 1.0 / 20
    sigma_of = lambda t: sde.memoryless_sigma(t, h)
    optimal = lambda x, t: (
        base(x, t) - 0.5 * sigma_of(t) ** 2 * toys.exact_linear_adjoint(S_B, TAU, C, t)
    )
    # The loss only sees the field at the stored (x_i, t_i); build f = f_base - sigma^2 a / 2 there.
    lookup = lambda x, t: base(x, t) - 0.5 * sigma_of(t) ** 2 * a
    assert float(adjoint.adjoint_matching_loss(lookup, base, xs, ts, a)) < 1e-8
    assert float(adjoint.adjoint_matching_loss(base, base, xs, ts, a)) > 1.0
    # The wrong sign of the control is far worse.
    flipped = lambda x, t: base(x, t) + 0.5 * sigma_of(t) ** 2 * a
    assert float(adjoint.adjoint_matching_loss(flipped, base, xs, ts, a)) > 3.0 * float(
        adjoint.adjoint_matching_loss(base, base, xs, ts, a)
    )
    assert float(adjoint.adjoint_matching_loss(optimal, base, xs, ts, a)) < float(
        adjoint.adjoint_matching_loss(base, base, xs, ts, a)
    )


def test_adjoint_matching_loss_gradient_reaches_only_the_trained_field():
    base_field = networks.VelocityField(0, 1, [16], rngs=nnx.Rngs(1))
    theta_field = networks.VelocityField(0, 1, [16], rngs=nnx.Rngs(2))
    apply_b, params_b = networks.pure(base_field)
    apply_t, params_t = networks.pure(theta_field)
    x0 = jax.random.normal(jax.random.key(14), (8, 1))

    def loss(params_theta, params_base, xs, adjoints):
        f = lambda x, t: apply_t(params_theta, None, x, t)
        fb = lambda x, t: apply_b(params_base, None, x, t)
        return adjoint.adjoint_matching_loss(f, fb, xs, ts, adjoints)

    fb = lambda x, t: apply_b(params_b, None, x, t)
    xs, ts = sde.memoryless_sample(fb, fb, x0, jax.random.key(15), 5)
    adjoints = adjoint.lean_adjoint(fb, xs, ts, jnp.ones_like(xs[-1]))
    g_theta, g_base, g_xs, g_adj = jax.jit(jax.grad(loss, argnums=(0, 1, 2, 3)))(
        params_t, params_b, xs, adjoints
    )
    norm = lambda tree: sum(float(jnp.sum(jnp.abs(x))) for x in jax.tree.leaves(tree))
    assert norm(g_theta) > 1e-3
    assert norm(g_base) == 0.0
    assert norm(g_xs) == 0.0 and norm(g_adj) == 0.0
    # The lean adjoint holds no gradient either.
    g_lean = jax.grad(
        lambda p: jnp.sum(
            adjoint.lean_adjoint(lambda x, t: apply_b(p, None, x, t), xs, ts, jnp.ones_like(xs[-1]))
        )
    )(params_b)
    assert norm(g_lean) == 0.0
