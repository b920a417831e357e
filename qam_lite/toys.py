"""Toy problems with exact answers: Gaussian mixtures, their flow fields, tilts and adjoints.

Everything here is closed form (or a numerically normalised density on a grid), so the book can
put a learned or sampled answer next to the exact one, and the tests can check the core maths
(:mod:`qam_lite.flows`, :mod:`qam_lite.sde`, :mod:`qam_lite.adjoint`) against it.

Conventions: the source is ``N(0, I)``, the path is linear, ``x_t = (1 - t) x_0 + t x_1``; a
mixture has diagonal Gaussian components; a ``q`` function maps actions ``(..., d)`` to ``(...)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite.flows import Velocity, time_grid
from qam_lite.sde import memoryless_sigma

QFunction = Callable[[jax.Array], jax.Array]
LogProb = Callable[[jax.Array], jax.Array]


# --------------------------------------------------------------------------------------------
# Gaussian mixtures
# --------------------------------------------------------------------------------------------


class Mixture(NamedTuple):
    """A mixture of diagonal Gaussians: ``weights (K,)``, ``means (K, d)``, ``stds (K, d)``."""

    weights: jax.Array
    means: jax.Array
    stds: jax.Array

    @property
    def dim(self) -> int:
        """Dimension ``d`` of the samples."""
        return self.means.shape[-1]


def _concrete(x) -> np.ndarray | None:
    """``x`` as a NumPy array, or ``None`` when it is a tracer (values unknown under ``jit``)."""
    if isinstance(x, jax.core.Tracer):
        return None
    return np.asarray(x, dtype=np.float64)


def gaussian_mixture(weights, means, stds) -> Mixture:
    """Build and validate a :class:`Mixture`.

    Args:
      weights: ``(K,)`` positive mixture weights summing to 1 (checked to 1e-5, then renormalised).
      means: ``(K, d)``, or ``(K,)`` for a 1D mixture (becomes ``(K, 1)``).
      stds: positive; ``(K, d)``, or ``(K,)`` (one isotropic std per component, broadcast over
        ``d``), or a scalar shared by every component.

    Raises:
      ValueError: naming the offending argument and what is accepted.
    """
    weights = jnp.asarray(weights, dtype=jnp.float32)
    means = jnp.asarray(means, dtype=jnp.float32)
    stds = jnp.asarray(stds, dtype=jnp.float32)
    if weights.ndim != 1 or weights.shape[0] == 0:
        raise ValueError(f"weights must have shape (K,) with K >= 1, got shape {weights.shape}")
    k = weights.shape[0]
    if means.ndim == 1:
        means = means[:, None]
    if means.ndim != 2 or means.shape[0] != k:
        raise ValueError(f"means must have shape (K, d) or (K,) with K={k}, got {means.shape}")
    if stds.ndim == 1 and stds.shape[0] == k:
        stds = stds[:, None]
    try:
        stds = jnp.broadcast_to(stds, means.shape)
    except ValueError:
        raise ValueError(
            f"stds must be a scalar, (K,) or (K, d) = {means.shape}, got shape {stds.shape}"
        ) from None
    w, s = _concrete(weights), _concrete(stds)
    if w is not None:
        if not np.all(w > 0):
            raise ValueError(f"weights must all be positive, got {w.tolist()}")
        if abs(w.sum() - 1.0) > 1e-5:
            raise ValueError(f"weights must sum to 1, got sum {w.sum():.6g}")
    if s is not None and not np.all(s > 0):
        raise ValueError("stds must all be positive (got a value <= 0)")
    return Mixture(weights / jnp.sum(weights), means, stds)


def _component_log_probs(mix: Mixture, x: jax.Array, loc: jax.Array, var: jax.Array) -> jax.Array:
    """``log pi_k + log N(x; loc_k, diag var_k)`` ``(..., K)``; loc, var ``(..., K, d)``."""
    z = (x[..., None, :] - loc) ** 2 / var
    log_n = -0.5 * jnp.sum(z + jnp.log(2.0 * jnp.pi * var), axis=-1)
    return jnp.log(mix.weights) + log_n


def mixture_log_prob(mix: Mixture, x: jax.Array) -> jax.Array:
    """Log density of ``mix`` at ``x (..., d)``; returns ``(...)``."""
    return jax.nn.logsumexp(_component_log_probs(mix, x, mix.means, mix.stds**2), axis=-1)


def mixture_sample(mix: Mixture, key: jax.Array, n: int) -> jax.Array:
    """``n`` samples of shape ``(n, d)``."""
    kc, kz = jax.random.split(key)
    comp = jax.random.categorical(kc, jnp.log(mix.weights), shape=(n,))
    z = jax.random.normal(kz, (n, mix.dim))
    return mix.means[comp] + mix.stds[comp] * z


def mixture_mean(mix: Mixture) -> jax.Array:
    """Mean ``sum_k pi_k mu_k`` of shape ``(d,)``."""
    return mix.weights @ mix.means


def mixture_std(mix: Mixture) -> jax.Array:
    """Per-coordinate standard deviation ``(d,)``: ``sqrt(sum_k pi_k (s_k^2 + mu_k^2) - m^2)``."""
    m = mixture_mean(mix)
    return jnp.sqrt(mix.weights @ (mix.stds**2 + mix.means**2) - m**2)


# --------------------------------------------------------------------------------------------
# Exact velocity fields of the linear path from N(0, I)
# --------------------------------------------------------------------------------------------


def path_variance(s: jax.Array, t: jax.Array) -> jax.Array:
    """``Var(x_t) = (1 - t)^2 + t^2 s^2`` for target std ``s`` (per dimension)."""
    return (1.0 - t) ** 2 + t**2 * s**2


def path_marginal(mix: Mixture, t) -> Mixture:
    """The law ``p_t`` of ``x_t = (1 - t) x_0 + t x_1``, ``x_1 ~ mix``: the same weights, means
    ``t mu_k`` and stds ``sqrt((1 - t)^2 + t^2 s_k^2)``; ``t`` a scalar in ``[0, 1]``."""
    return Mixture(mix.weights, t * mix.means, jnp.sqrt(path_variance(mix.stds, t)))


def _gaussian_field(mu, s, x, t):
    # x_t = (1-t) x0 + t x1 is jointly Gaussian with x1 - x0; the field is the regression
    # E[x1 - x0 | x_t = x] = mu + Cov(x1 - x0, x_t) / Var(x_t) * (x - t mu).
    return mu + (x - t * mu) * (t * s**2 - (1.0 - t)) / path_variance(s, t)


def gaussian_velocity(mu, s) -> Velocity:
    """Exact field carrying ``N(0, I)`` to ``N(mu, diag s^2)`` along the linear path.

    ``v(x, t) = mu + (x - t mu) (t s^2 - (1 - t)) / ((1 - t)^2 + t^2 s^2)``; ``mu``, ``s`` are
    scalars or ``(d,)``; ``x (..., d)``, ``t (..., 1)`` -> ``(..., d)``.
    """
    mu = jnp.asarray(mu, dtype=jnp.float32)
    s = jnp.asarray(s, dtype=jnp.float32)
    return lambda x, t: _gaussian_field(mu, s, x, t)


def mixture_velocity(mix: Mixture) -> Velocity:
    """Exact field of a Gaussian-mixture target: posterior-weighted component fields.

    ``v(x, t) = sum_k w_k(x, t) v_k(x, t)`` with ``w_k ∝ pi_k N(x; t mu_k, (1-t)^2 + t^2 s_k^2)``,
    the weights computed by a softmax of log densities (stable far from every component).
    Shapes: ``x (..., d)``, ``t (..., 1)`` -> ``(..., d)``.
    """

    def velocity(x, t):
        t = jnp.broadcast_to(t, (*x.shape[:-1], 1))[..., None, :]  # (..., 1, 1) against (K, d)
        var = path_variance(mix.stds, t)
        w = jax.nn.softmax(_component_log_probs(mix, x, t * mix.means, var), axis=-1)
        v_k = _gaussian_field(mix.means, mix.stds, x[..., None, :], t)
        return jnp.sum(w[..., None] * v_k, axis=-2)

    return velocity


def gaussian_flow_matching_floor(s) -> jax.Array:
    """Irreducible flow-matching loss ``pi s / 2`` (mean over dims) for target ``N(mu, s^2)``.

    Even the exact field cannot predict ``x1 - x0`` from ``x_t``: the conditional variance is
    ``s^2 / Var(x_t)``, and ``int_0^1 s^2 / ((1-t)^2 + t^2 s^2) dt = pi s / 2``.
    """
    return jnp.mean(0.5 * jnp.pi * jnp.asarray(s, dtype=jnp.float32))


# --------------------------------------------------------------------------------------------
# Q functions and tilts pi(a) ∝ pi_beta(a) exp(tau Q(a))
# --------------------------------------------------------------------------------------------


def linear_q(c) -> QFunction:
    """``q(a) = a @ c``: ``a (..., d)`` -> ``(...)``."""
    c = jnp.asarray(c, dtype=jnp.float32)
    return lambda a: jnp.sum(a * c, axis=-1)


def bump_q(center, width: float, height: float = 1.0) -> QFunction:
    """Smooth bump ``height * exp(-|a - center|^2 / (2 width^2))``: ``(..., d) -> (...)``."""
    if width <= 0:
        raise ValueError(f"width must be positive, got {width}")
    center = jnp.asarray(center, dtype=jnp.float32)
    return lambda a: height * jnp.exp(-jnp.sum((a - center) ** 2, axis=-1) / (2.0 * width**2))


def _check_tau(tau) -> None:
    t = _concrete(tau)
    if t is not None and np.any(t < 0):
        raise ValueError(f"tau must be >= 0 (0 = behaviour cloning), got {t.tolist()}")


def tilt_gaussian(mu, s, tau, c) -> tuple[jax.Array, jax.Array]:
    """``N(mu, s^2) exp(tau c.a)``, normalised, is ``N(mu + tau c s^2, s^2)``: ``(mu', s)``."""
    _check_tau(tau)
    mu, s, c = (jnp.asarray(v, dtype=jnp.float32) for v in (mu, s, c))
    return mu + tau * c * s**2, s


def tilt_mixture(mix: Mixture, tau, c) -> Mixture:
    """Exact tilt of a mixture by ``exp(tau c.a)``.

    Each component moves to ``mu_k + tau c s_k^2`` and is re-weighted by
    ``pi_k exp(tau c.mu_k + tau^2 |c s_k|^2 / 2)`` (its normaliser), normalised in log space.
    """
    _check_tau(tau)
    c = jnp.asarray(c, dtype=jnp.float32)
    log_w = (
        jnp.log(mix.weights)
        + tau * mix.means @ c
        + 0.5 * tau**2 * jnp.sum((c * mix.stds) ** 2, axis=-1)
    )
    return Mixture(jax.nn.softmax(log_w), mix.means + tau * c * mix.stds**2, mix.stds)


def _grid_points_and_cell(grid: jax.Array, cell_area) -> tuple[jax.Array, jax.Array]:
    grid = jnp.asarray(grid, dtype=jnp.float32)
    if grid.ndim == 1:
        if grid.shape[0] < 2:
            raise ValueError("a 1D grid needs at least 2 points")
        return grid[:, None], grid[1] - grid[0]
    if grid.ndim == 2:
        if cell_area is None:
            raise ValueError("a grid of points (n, d) needs cell_area (the volume of one cell)")
        return grid, jnp.asarray(cell_area, dtype=jnp.float32)
    raise ValueError(f"grid must be (n,) (uniform 1D) or (n, d) points, got shape {grid.shape}")


def _log_tilted_density(log_base: jax.Array, qv: jax.Array, tau, cell) -> jax.Array:
    """``log`` of :func:`tilted_density` from the base log density and ``q`` on the grid points."""
    log_p = log_base + tau * qv
    return log_p - jax.nn.logsumexp(log_p) - jnp.log(cell)


def tilted_density(
    log_prob_fn: LogProb, q: QFunction, tau, grid: jax.Array, cell_area=None
) -> jax.Array:
    """Density of ``pi(a) exp(tau q(a))``, normalised numerically on a grid; returns ``(n,)``.

    Convention: the values are densities (not cell masses): ``sum(p) * cell == 1``.

    Args:
      log_prob_fn: base log density, ``(..., d) -> (...)``.
      q: ``(..., d) -> (...)``.
      tau: ``>= 0``.
      grid: ``(n,)`` a uniform 1D grid (cell = spacing), or ``(n, d)`` points of a uniform grid
        whose cell volume is ``cell_area``.
      cell_area: volume of one grid cell, required for ``(n, d)`` grids.
    """
    _check_tau(tau)
    points, cell = _grid_points_and_cell(grid, cell_area)
    return jnp.exp(_log_tilted_density(log_prob_fn(points), q(points), tau, cell))


def tilt_statistics(
    log_prob_fn: LogProb, q: QFunction, taus, grid: jax.Array, cell_area=None
) -> dict[str, jax.Array]:
    """KL to the base and expected ``q`` of the tilted density, for each ``tau``, on a grid.

    Returns ``{"tau": (m,), "kl": (m,), "expected_q": (m,)}`` with
    ``kl = KL(pi_tau || pi_0) = sum p_tau log(p_tau / p_0) * cell`` and
    ``expected_q = sum p_tau q * cell``.
    """
    taus = jnp.atleast_1d(jnp.asarray(taus, dtype=jnp.float32))
    _check_tau(taus)
    points, cell = _grid_points_and_cell(grid, cell_area)
    log_base, qv = log_prob_fn(points), q(points)
    log_p0 = _log_tilted_density(log_base, qv, 0.0, cell)

    def stats(tau):
        log_p = _log_tilted_density(log_base, qv, tau, cell)
        p = jnp.exp(log_p)
        # The log ratio is taken in log space, so tails where both densities underflow to 0 in
        # float32 contribute p * (finite) = 0 instead of 0 * log(0 / 0).
        kl = jnp.sum(p * (log_p - log_p0)) * cell
        # A KL is >= 0; clip the float rounding of the tau = 0 case (~1e-7) at zero.
        return jnp.maximum(kl, 0.0), jnp.sum(p * qv) * cell

    kl, eq = jax.vmap(stats)(taus)
    return {"tau": taus, "kl": kl, "expected_q": eq}


# --------------------------------------------------------------------------------------------
# The lean adjoint in closed form (Gaussian base, linear Q)
# --------------------------------------------------------------------------------------------


def exact_linear_adjoint(s, tau, c, t) -> jax.Array:
    """Continuous lean adjoint for base ``N(mu, s^2)`` and reward ``tau c.a``.

    The adjoint ODE ``da/dt = -J(t) a``, ``a(1) = -tau c``, has ``J = 2 k(t) - 1/t`` with
    ``k = (t s^2 - (1 - t)) / var(t)``, ``var(t) = (1 - t)^2 + t^2 s^2``; since ``var' = 2 k var``
    its solution is ``a(t) = -tau c s^2 t / var(t)`` (independent of ``mu`` and of ``x``).
    Shapes broadcast: ``t (..., 1)`` with ``c``, ``s`` ``(d,)`` -> ``(..., d)``.
    """
    s, c, t = (jnp.asarray(v, dtype=jnp.float32) for v in (s, c, t))
    return -tau * c * s**2 * t / path_variance(s, t)


def sampler_adjoint(
    base_velocity: Velocity, xs: jax.Array, ts: jax.Array, grad_reward: jax.Array
) -> jax.Array:
    """The exact gradient ``a_i = d(-r(x_T)) / dx_i`` of the discrete sampler, ``(T, ..., d)``.

    :func:`qam_lite.sde.memoryless_sample` with ``velocity = base_velocity`` maps ``x_i`` to
    ``x_{i+1} = x_i + h (2 f(x_i, t_i) - x_i / (t_i + h)) + noise`` for ``i <= T - 2`` and ends with
    the ODE step ``x_T = x_{T-1} + h f(x_{T-1}, t_{T-1})``; the chain rule through those maps is
    ``a_i = a_{i+1} + h J_i^T a_{i+1}`` with the field read at ``t_i`` and, for the last step, the
    Jacobian of ``f`` alone. :func:`qam_lite.adjoint.lean_adjoint` (the published convention) reads
    the field at ``t_i + h`` and uses the memoryless drift on the last step too; both recursions
    are consistent discretisations of the same adjoint ODE. ``xs (T + 1, ..., d)``,
    ``ts (T, ..., 1)``, ``grad_reward (..., d)`` as for ``lean_adjoint``.
    """
    num_steps = ts.shape[0]
    h = 1.0 / num_steps
    is_last = jnp.arange(num_steps) == num_steps - 1

    def back_step(a_next, inputs):
        x, t, last = inputs

        def step_map(y):
            v = base_velocity(y, t)
            return jnp.where(last, v, 2.0 * v - y / (t + h))

        a = a_next + h * jax.vjp(step_map, x)[1](a_next)[0]
        return a, a

    _, adjoints = jax.lax.scan(back_step, -grad_reward, (xs[:-1], ts, is_last), reverse=True)
    return adjoints


def optimal_tilted_velocity(mu, s, tau, c) -> Velocity:
    """``f_beta - sigma(t)^2 a(t) / 2`` with ``sigma^2 = 2 (1 - t) / t`` and the exact adjoint.

    This is the field adjoint matching regresses onto. Analytically it equals
    ``gaussian_velocity(mu + tau c s^2, s)`` (the exact field of the tilted Gaussian): the tests
    check that identity. The ``t`` of ``sigma^2`` cancels the ``t`` of ``a(t)``, so the product is
    written as ``-(1 - t) tau c s^2 / var(t)`` to stay finite at ``t = 0``.
    """
    base = gaussian_velocity(mu, s)
    s_, c_ = jnp.asarray(s, dtype=jnp.float32), jnp.asarray(c, dtype=jnp.float32)

    def velocity(x, t):
        half_sigma2_a = -(1.0 - t) * tau * c_ * s_**2 / path_variance(s_, t)
        return base(x, t) - half_sigma2_a

    return velocity


# --------------------------------------------------------------------------------------------
# Noise schedules between the ODE and the memoryless SDE
# --------------------------------------------------------------------------------------------


def scaled_noise_sample(
    velocity: Velocity, x0: jax.Array, key: jax.Array, num_steps: int, eta: float
) -> jax.Array:
    """Sample the marginal-preserving SDE with noise ``eta`` times the memoryless schedule.

    For the linear path the score is ``(t v - x) / (1 - t)``; adding ``sigma^2 / 2`` times it to
    ``v`` with ``sigma^2 = eta * 2 (1 - t) / t`` gives the drift ``(1 + eta) v - eta x / t``:
    ``eta = 0`` is the Euler ODE, ``eta = 1`` the memoryless SDE of
    :func:`qam_lite.sde.memoryless_sample` (same ``+h`` time shift, same noise for the same key,
    last step a noise-free ODE step).

    Args:
      velocity: ``velocity(x, t)``.
      x0: ``(..., d)`` noise.
      key: PRNG key.
      num_steps: ``T >= 1``.
      eta: noise scale ``>= 0``.

    Returns:
      ``(T + 1, ..., d)``: ``x_0 .. x_T``.
    """
    if eta < 0:
        raise ValueError(f"eta must be >= 0 (0 = ODE, 1 = memoryless), got {eta}")
    h = 1.0 / num_steps
    ts = time_grid(x0, num_steps)
    noise = jax.random.normal(key, (num_steps - 1, *x0.shape), x0.dtype)

    def step(x, inputs):
        t, eps = inputs
        v = velocity(x, t)
        drift = (1.0 + eta) * v - eta * x / (t + h)
        x_next = x + h * drift + jnp.sqrt(h * eta) * memoryless_sigma(t, h) * eps
        return x_next, x_next

    x_last, xs = jax.lax.scan(step, x0, (ts[:-1], noise))
    x_final = x_last + h * velocity(x_last, ts[-1])
    return jnp.concatenate([x0[None], xs, x_final[None]], axis=0)


def initial_value_biased_tilt(mu, s, tau, c, corr) -> tuple[jax.Array, jax.Array]:
    """Marginal of the KL-optimal controlled process when ``corr(x_0, x_1) = corr``.

    Reward-tilting the whole path ``P*(path) ∝ P_base(path) exp(tau c.x_1) / exp(V(x_0))`` keeps
    ``x_0 ~ N(0, 1)``, so only the conditional ``x_1 | x_0`` (variance ``s^2 (1 - corr^2)`` for a
    Gaussian base) is tilted: the mean moves by ``(1 - corr^2) tau c s^2`` instead of the target's
    ``tau c s^2``; the variance stays ``s^2``. ``corr = 0`` (memoryless) gives the exact tilt,
    ``corr = 1`` (deterministic ODE) no tilt at all. Returns ``(mean, std)``.
    """
    _check_tau(tau)
    mu, s, c, corr = (jnp.asarray(v, dtype=jnp.float32) for v in (mu, s, c, corr))
    return mu + (1.0 - corr**2) * tau * c * s**2, s


# --------------------------------------------------------------------------------------------
# A state-conditioned multimodal policy (behaviour cloning toy)
# --------------------------------------------------------------------------------------------

#: Number of modes of :func:`multimodal_policy_mixture`, their radius and std.
POLICY_MODES, POLICY_RADIUS, POLICY_STD = 3, 0.6, 0.07


def multimodal_policy_means(obs: jax.Array) -> jax.Array:
    """Mode centres ``(..., K, 2)`` for states ``obs (...)``: points on a circle turning with s."""
    k = jnp.arange(POLICY_MODES)
    angle = 2.0 * jnp.pi * k / POLICY_MODES + 0.5 * jnp.pi * obs[..., None]
    return POLICY_RADIUS * jnp.stack([jnp.cos(angle), jnp.sin(angle)], axis=-1)


def multimodal_policy_mixture(obs_value: float) -> Mixture:
    """Exact conditional ``pi_beta(a | s)``: three equal modes on a circle of radius 0.6, std 0.07.

    The circle turns by ``pi s / 2`` as ``s`` goes over ``[-1, 1]``, so every state has three
    well-separated modes, all inside ``[-1, 1]^2``.
    """
    if not -1.0 <= float(obs_value) <= 1.0:
        raise ValueError(f"obs_value must lie in [-1, 1], got {obs_value}")
    means = multimodal_policy_means(jnp.asarray(obs_value, dtype=jnp.float32))
    weights = jnp.full((POLICY_MODES,), 1.0 / POLICY_MODES)
    return gaussian_mixture(weights, means, POLICY_STD)


def multimodal_policy_dataset(key: jax.Array, n: int) -> tuple[jax.Array, jax.Array]:
    """``n`` pairs ``(obs (n, 1), actions (n, 2))``: ``s ~ U[-1, 1]``, ``a ~ pi_beta(. | s)``."""
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    ks, kc, kz = jax.random.split(key, 3)
    obs = jax.random.uniform(ks, (n,), minval=-1.0, maxval=1.0)
    comp = jax.random.randint(kc, (n,), 0, POLICY_MODES)
    means = multimodal_policy_means(obs)[jnp.arange(n), comp]
    actions = means + POLICY_STD * jax.random.normal(kz, (n, 2))
    return obs[:, None], actions


def wasserstein1_1d(samples: jax.Array, quantile_fn: Callable[[jax.Array], jax.Array]) -> jax.Array:
    """Wasserstein-1 distance between 1D ``samples (n,)`` and a distribution given by its quantiles.

    ``W1 ≈ mean_i |sorted(x)_i - F^{-1}((i + 1/2) / n)|`` (exact for the empirical measure against
    the midpoint quantiles).
    """
    x = jnp.sort(jnp.ravel(samples))
    n = x.shape[0]
    u = (jnp.arange(n) + 0.5) / n
    return jnp.mean(jnp.abs(x - quantile_fn(u)))


def gaussian_quantile(mu: float, s: float) -> Callable[[jax.Array], jax.Array]:
    """Quantile function of ``N(mu, s^2)``."""
    return lambda u: mu + s * math.sqrt(2.0) * jax.scipy.special.erfinv(2.0 * u - 1.0)


def mixture_quantile_1d(mix: Mixture, lo: float = -10.0, hi: float = 10.0, n: int = 20001):
    """Quantile function of a 1D mixture by interpolating its CDF on ``[lo, hi]`` (``n`` points)."""
    if mix.dim != 1:
        raise ValueError(f"mixture_quantile_1d needs a 1D mixture, got d={mix.dim}")
    grid = jnp.linspace(lo, hi, n)
    z = (grid[:, None] - mix.means[:, 0]) / mix.stds[:, 0]
    cdf = jnp.sum(mix.weights * jax.scipy.stats.norm.cdf(z), axis=-1)
    return lambda u: jnp.interp(u, cdf, grid)
