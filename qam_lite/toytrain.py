"""Small, compiled trainers and metrics for the toy chapters.

Everything here trains a few-thousand-parameter network on a toy problem in seconds on a CPU:

- :func:`fit_flow`: flow matching of a (optionally state-conditioned) velocity field on samples;
- :func:`fit_gaussian_policy`: the unimodal baseline, a diagonal Gaussian fitted by likelihood;
- :func:`adjoint_matching_finetune`: fine-tune a flow toward ``pi_beta exp(tau q)`` with the lean
  adjoint (no gradient through the sampler);
- :func:`bptt_finetune`: the same target reached by back-propagating through the whole SDE sample;
- :func:`gradient_statistics`: how noisy/large each method's gradient is at the base;
- metrics that compare samples to a known answer (:func:`tilt_metrics`, :func:`mode_coverage`,
  :func:`flow_log_prob`).

Training loops are ``lax.scan`` over chunks of steps inside one ``jit`` (one host round-trip per
chunk, used to update a ``tqdm`` bar and to stop on a non-finite loss).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from qam_lite import toys
from qam_lite.adjoint import adjoint_matching_loss, lean_adjoint
from qam_lite.flows import Velocity, euler_sample, flow_matching_loss
from qam_lite.networks import MLP, VelocityField, pure
from qam_lite.sde import memoryless_sample, memoryless_sigma
from qam_lite.toys import Mixture

#: Steps per compiled chunk: enough to amortise dispatch, few enough for a live progress bar.
CHUNK = 250


@dataclass(frozen=True)
class FlowFit:
    """A trained velocity field ``apply(params, obs, x, t) -> v`` and its training record.

    ``apply`` is pure (from :func:`qam_lite.networks.pure`); ``obs`` is ``None`` when
    ``obs_dim == 0``. ``losses`` has one entry per optimisation step; ``grad_norms`` likewise
    (global gradient norm before any clipping).
    """

    apply: Callable
    params: Any
    obs_dim: int
    action_dim: int
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))
    grad_norms: np.ndarray = field(default_factory=lambda: np.zeros(0))


@dataclass(frozen=True)
class GaussianFit:
    """A diagonal Gaussian policy ``apply(params, obs) -> (mean, log_std)``, each ``(..., d)``."""

    apply: Callable
    params: Any
    obs_dim: int
    action_dim: int
    losses: np.ndarray = field(default_factory=lambda: np.zeros(0))


# --------------------------------------------------------------------------------------------
# validation helpers


def _positive_int(name: str, value: int) -> int:
    if not isinstance(value, int | np.integer) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
    return int(value)


def _check_tau(tau: float) -> float:
    tau = float(tau)
    if not np.isfinite(tau) or tau < 0:
        raise ValueError(f"tau must be a finite number >= 0 (0 keeps the base policy), got {tau!r}")
    return tau


def _as_2d(name: str, array, *, rows: int | None = None) -> jax.Array:
    array = jnp.asarray(array, jnp.float32)
    if array.ndim == 1:
        array = array[:, None]
    if array.ndim != 2:
        raise ValueError(f"{name} must have shape (n, dim) or (n,), got {array.shape}")
    if rows is not None and array.shape[0] != rows:
        raise ValueError(f"{name} has {array.shape[0]} rows but the actions have {rows}")
    return array


# --------------------------------------------------------------------------------------------
# the one optimisation loop


def _optimise(
    loss_fn: Callable,
    params,
    data,
    key: jax.Array,
    *,
    steps: int,
    lr: float,
    desc: str,
    progress: bool | None,
    clip: float | None = None,
    decay: bool = False,
):
    """Adam on ``loss_fn(params, data, key) -> scalar`` for ``steps`` steps, scanned in chunks.

    ``decay``: cosine-decay the step size to 5 % of ``lr`` so the last iterate settles at the fixed
    point of a noisy objective instead of fluctuating around it.

    Returns ``(params, losses (steps,), grad_norms (steps,))``. Raises ``FloatingPointError`` on a
    non-finite loss, naming the step.
    """
    from tqdm.auto import tqdm

    tx = optax.adam(optax.cosine_decay_schedule(lr, steps, alpha=0.05) if decay else lr)
    if clip is not None:
        tx = optax.chain(optax.clip_by_global_norm(clip), tx)
    opt_state = tx.init(params)

    def step(carry, key):
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params, data, key)
        updates, opt_state = tx.update(grads, opt_state, params)
        # The global norm by hand: optax renamed its helper across the versions we support.
        norm = jnp.sqrt(sum(jnp.sum(g**2) for g in jax.tree.leaves(grads)))
        return (optax.apply_updates(params, updates), opt_state), (loss, norm)

    @functools.partial(jax.jit, static_argnums=2)
    def run(carry, key, length):
        return jax.lax.scan(step, carry, jax.random.split(key, length))

    # Equal chunks (at most CHUNK steps): each distinct length is one more compilation.
    chunk = -(-steps // -(-steps // CHUNK))
    carry, losses, norms, done = (params, opt_state), [], [], 0
    with tqdm(total=steps, desc=desc, leave=False, disable=not _show_progress(progress)) as bar:
        while done < steps:
            length = min(chunk, steps - done)
            key, sub = jax.random.split(key)
            carry, (loss, norm) = run(carry, sub, length)
            loss = np.asarray(loss)
            if not np.all(np.isfinite(loss)):
                bad = done + int(np.argmin(np.isfinite(loss)))
                raise FloatingPointError(f"{desc}: non-finite loss at step {bad}; lower lr or tau")
            losses.append(loss)
            norms.append(np.asarray(norm))
            done += length
            bar.update(length)
            bar.set_postfix(loss=f"{loss[-1]:.4g}")
    return carry[0], np.concatenate(losses), np.concatenate(norms)


def _show_progress(progress: bool | None) -> bool:
    """``progress``, or when ``None``: on unless nobody is watching.

    Batch execution of the book (``qam-lite book``, the site build, the tests) sets
    ``QAM_LITE_BATCH=1`` and ``TQDM_DISABLE=1``; a bar saved in a notebook's outputs would be a
    frozen "0%". The check is done here because ``tqdm.notebook`` ignores ``TQDM_DISABLE``.
    """
    if progress is not None:
        return bool(progress)
    off = {"1", "true", "yes"}
    return not any(
        os.environ.get(name, "").strip().lower() in off
        for name in ("QAM_LITE_BATCH", "TQDM_DISABLE")
    )


def _batch(key: jax.Array, arrays: Sequence[jax.Array | None], batch_size: int):
    """The same random rows (with replacement) of every non-``None`` array."""
    n = next(a for a in arrays if a is not None).shape[0]
    idx = jax.random.randint(key, (batch_size,), 0, n)
    return [None if a is None else a[idx] for a in arrays]


# --------------------------------------------------------------------------------------------
# flows


def new_flow(
    key: jax.Array, action_dim: int, obs_dim: int = 0, hidden: Sequence[int] = (128, 128)
) -> FlowFit:
    """An untrained :class:`FlowFit` (a :class:`~qam_lite.networks.VelocityField`)."""
    module = VelocityField(obs_dim, action_dim, tuple(hidden), rngs=nnx.Rngs(key))
    apply, params = pure(module)
    return FlowFit(apply, params, obs_dim, action_dim)


def residual_flow(
    key: jax.Array,
    velocity: Velocity,
    action_dim: int,
    hidden: Sequence[int] = (64, 64),
) -> FlowFit:
    """A :class:`FlowFit` equal to a known field ``velocity(x, t)`` plus a zero-initialised MLP.

    Its initial ``params`` reproduce ``velocity`` exactly, so it serves as an *exact* base for
    fine-tuning (no flow-matching error to confound the comparison with the analytic tilt), while
    fine-tuning can still move the field through the MLP. Unconditioned (``obs_dim = 0``).
    """
    module = VelocityField(0, action_dim, tuple(hidden), rngs=nnx.Rngs(key))
    # Zero output layer: the correction starts at exactly 0 but still receives gradients.
    out = getattr(module.mlp, f"layer_{module.mlp.num_layers - 1}")
    out.kernel[...] = jnp.zeros_like(out.kernel[...])
    out.bias[...] = jnp.zeros_like(out.bias[...])
    net, params = pure(module)

    def apply(params, obs, x, t):
        return velocity(x, t) + net(params, obs, x, t)

    return FlowFit(apply, params, 0, action_dim)


def velocity_fn(fit: FlowFit, params=None, obs=None) -> Velocity:
    """``velocity(x, t)`` of ``fit`` (with ``params``, default its own), conditioned on ``obs``.

    ``obs`` of shape ``(obs_dim,)`` or ``(..., obs_dim)`` broadcasts against ``x``'s leading axes.
    """
    if fit.obs_dim and obs is None:
        raise ValueError(f"this flow is conditioned on a state of dim {fit.obs_dim}: pass obs")
    if not fit.obs_dim and obs is not None:
        raise ValueError("this flow is unconditioned (obs_dim = 0): pass obs=None")
    params = fit.params if params is None else params
    if obs is not None:
        obs = jnp.asarray(obs, jnp.float32)
    return functools.partial(fit.apply, params, obs)


def fit_flow(
    key: jax.Array,
    actions,
    obs=None,
    *,
    hidden: Sequence[int] = (128, 128),
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 1e-3,
    decay: bool = False,
    progress: bool | None = None,
) -> FlowFit:
    """Fit a velocity field to ``actions`` by flow matching (linear path), optionally on ``obs``.

    Args:
      key: PRNG key (initialisation and minibatches).
      actions: ``(n, d)`` samples (``(n,)`` is read as ``d = 1``).
      obs: optional ``(n, obs_dim)`` states, row ``i`` paired with ``actions[i]``.
      hidden: MLP widths.
      steps, batch_size, lr: Adam steps, minibatch size (rows drawn with replacement), step size.
      decay: cosine-decay the step size to 5 % of ``lr`` over the run (sharper fields at the end).
      progress: ``tqdm`` bar; ``None`` (default): shown unless ``QAM_LITE_BATCH`` or
        ``TQDM_DISABLE`` is set (batch execution of the book); ``True``/``False`` force it.

    Returns:
      :class:`FlowFit` with ``losses`` of shape ``(steps,)``.
    """
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    actions = _as_2d("actions", actions)
    obs = None if obs is None else _as_2d("obs", obs, rows=actions.shape[0])
    init_key, train_key = jax.random.split(key)
    flow = new_flow(init_key, actions.shape[1], 0 if obs is None else obs.shape[1], hidden)

    def loss_fn(params, data, key):
        k_batch, k_loss = jax.random.split(key)
        a, o = _batch(k_batch, data, batch_size)
        return flow_matching_loss(functools.partial(flow.apply, params, o), a, k_loss)

    params, losses, norms = _optimise(
        loss_fn, flow.params, (actions, obs), train_key,
        steps=steps, lr=lr, desc="flow matching", progress=progress, decay=decay,
    )  # fmt: skip
    return FlowFit(flow.apply, params, flow.obs_dim, flow.action_dim, losses, norms)


def sample_flow(
    fit: FlowFit, key: jax.Array, num_samples: int, obs=None, *, num_flow_steps: int = 10
) -> jax.Array:
    """``num_samples`` actions ``(num_samples, d)`` by the Euler ODE from ``x_0 ~ N(0, I)``.

    ``obs``: ``(obs_dim,)`` (one state for every sample) or ``(num_samples, obs_dim)``.
    """
    num_samples = _positive_int("num_samples", num_samples)
    num_flow_steps = _positive_int("num_flow_steps", num_flow_steps)
    velocity_fn(fit, obs=obs)  # validates obs against the flow
    obs = None if obs is None else jnp.asarray(obs, jnp.float32)
    x0 = jax.random.normal(key, (num_samples, fit.action_dim))
    return _sample_jit(fit.apply, fit.params, obs, x0, num_flow_steps)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _sample_jit(apply, params, obs, x0, num_steps):
    return euler_sample(functools.partial(apply, params, obs), x0, num_steps)


def flow_log_prob(fit: FlowFit, actions, obs=None, *, num_flow_steps: int = 100) -> jax.Array:
    """Log-density ``(n,)`` of ``actions`` under the flow's ODE, by the change of variables.

    Integrates ``dx/dt = v(x, t)`` backwards from ``x_1 = a`` to ``x_0`` (Euler, ``num_flow_steps``)
    accumulating ``log p_1(x_1) = log N(x_0; 0, I) - int_0^1 div v(x_t, t) dt``. The divergence is
    exact (a Jacobian per sample), which is cheap for the small action dimensions of the toys.
    """
    num_flow_steps = _positive_int("num_flow_steps", num_flow_steps)
    actions = _as_2d("actions", actions)
    if obs is not None:
        obs = jnp.asarray(obs, jnp.float32)
        obs = jnp.broadcast_to(obs, (actions.shape[0], obs.shape[-1]))
    return _log_prob_jit(fit.apply, fit.params, obs, actions, num_flow_steps)


@functools.partial(jax.jit, static_argnums=(0, 4))
def _log_prob_jit(apply, params, obs, actions, num_steps):
    h = 1.0 / num_steps

    def one(o, a):
        def v(x, t):
            return apply(params, o, x, jnp.reshape(t, (1,)))

        def step(carry, t):
            x, div_int = carry
            div = jnp.trace(jax.jacfwd(v)(x, t))
            return (x - h * v(x, t), div_int + h * div), None

        # Going backwards from t = 1: evaluate at the right end of each interval.
        ts = 1.0 - jnp.arange(num_steps, dtype=a.dtype) * h
        (x0, div_int), _ = jax.lax.scan(step, (a, jnp.zeros((), a.dtype)), ts)
        log_base = -0.5 * jnp.sum(x0**2) - 0.5 * a.shape[-1] * jnp.log(2 * jnp.pi)
        return log_base - div_int

    return (
        jax.vmap(one)(obs, actions)
        if obs is not None
        else jax.vmap(lambda a: one(None, a))(actions)
    )


# --------------------------------------------------------------------------------------------
# the Gaussian baseline


def fit_gaussian_policy(
    key: jax.Array,
    obs,
    actions,
    *,
    hidden: Sequence[int] = (128, 128),
    steps: int = 3000,
    batch_size: int = 256,
    lr: float = 1e-3,
    progress: bool | None = None,
) -> GaussianFit:
    """Fit ``pi(a | s) = N(mu(s), diag(sigma(s)^2))`` to ``(obs, actions)`` by maximum likelihood.

    Args:
      obs: ``(n, obs_dim)`` states; actions: ``(n, d)``.

    Returns:
      :class:`GaussianFit`; ``losses`` are the mean negative log-likelihoods per step.
    """
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    actions = _as_2d("actions", actions)
    obs = _as_2d("obs", obs, rows=actions.shape[0])
    init_key, train_key = jax.random.split(key)
    d = actions.shape[1]
    net, params = pure(MLP(obs.shape[1], tuple(hidden), 2 * d, rngs=nnx.Rngs(init_key)))

    def apply(params, o):
        out = net(params, o)
        # Bounded log-std keeps the likelihood finite early in training.
        return out[..., :d], jnp.clip(out[..., d:], -5.0, 2.0)

    fit = GaussianFit(apply, params, obs.shape[1], d)

    def loss_fn(params, data, key):
        a, o = _batch(key, data, batch_size)
        return -jnp.mean(_gaussian_log_prob(fit, params, o, a))

    params, losses, _ = _optimise(
        loss_fn, params, (actions, obs), train_key,
        steps=steps, lr=lr, desc="Gaussian policy", progress=progress,
    )  # fmt: skip
    return GaussianFit(apply, params, obs.shape[1], d, losses)


def _gaussian_log_prob(fit: GaussianFit, params, obs, actions):
    mean, log_std = fit.apply(params, obs)
    z = (actions - mean) / jnp.exp(log_std)
    return jnp.sum(-0.5 * z**2 - log_std - 0.5 * jnp.log(2 * jnp.pi), axis=-1)


def gaussian_policy_log_prob(fit: GaussianFit, obs, actions) -> jax.Array:
    """``log pi(a | s)`` of shape ``(n,)`` for ``obs (n, obs_dim)`` (or one ``(obs_dim,)``)."""
    actions = _as_2d("actions", actions)
    obs = jnp.broadcast_to(jnp.asarray(obs, jnp.float32), (actions.shape[0], fit.obs_dim))
    return _gaussian_log_prob(fit, fit.params, obs, actions)


def gaussian_policy_sample(fit: GaussianFit, key: jax.Array, num_samples: int, obs) -> jax.Array:
    """``(num_samples, d)`` actions; ``obs`` is ``(obs_dim,)`` or ``(num_samples, obs_dim)``."""
    num_samples = _positive_int("num_samples", num_samples)
    obs = jnp.broadcast_to(jnp.asarray(obs, jnp.float32), (num_samples, fit.obs_dim))
    mean, log_std = fit.apply(fit.params, obs)
    return mean + jnp.exp(log_std) * jax.random.normal(key, mean.shape)


# --------------------------------------------------------------------------------------------
# fine-tuning toward pi_beta exp(tau q)


def _reward_grad(q: Callable, obs, x: jax.Array, tau: float) -> jax.Array:
    """``tau * grad_x q`` per sample (``q`` returns one value per sample)."""
    if obs is None:
        return tau * jax.grad(lambda y: jnp.sum(q(y)))(x)
    return tau * jax.grad(lambda y: jnp.sum(q(obs, y)))(x)


def _finetune_setup(key, base: FlowFit, obs, batch_size: int):
    """Per-step draws: a batch of states (or ``None``), ``x_0`` noise and the Brownian key."""
    k_obs, k_x0, k_sde = jax.random.split(key, 3)
    o = None if obs is None else _batch(k_obs, [obs], batch_size)[0]
    x0 = jax.random.normal(k_x0, (batch_size, base.action_dim))
    return o, x0, k_sde


def _adjoint_loss(base: FlowFit, q, tau, num_steps, batch_size):
    """``loss(params, obs_data, key)``: one minibatch of the adjoint-matching objective."""

    def loss_fn(params, obs_data, key):
        o, x0, k_sde = _finetune_setup(key, base, obs_data, batch_size)
        f_base = functools.partial(base.apply, base.params, o)
        # Samples come from the current f_theta but carry no gradient (the "lean" part).
        f_now = functools.partial(base.apply, jax.lax.stop_gradient(params), o)
        xs, ts = memoryless_sample(f_now, f_base, x0, k_sde, num_steps)
        adjoints = lean_adjoint(f_base, xs, ts, _reward_grad(q, o, xs[-1], tau))
        f_theta = functools.partial(base.apply, params, o)
        return adjoint_matching_loss(f_theta, f_base, xs, ts, adjoints)

    return loss_fn


def bptt_objective(f_theta: Velocity, f_base: Velocity, reward: Callable, x0, key, num_steps):
    """``mean_batch[-reward(x_T) + sum_{i<T-1} 2 h / sigma_i^2 ||f_theta - f_base||^2 (x_i, t_i)]``.

    Differentiable through the whole memoryless-SDE sample. The regulariser is the KL divergence
    between the fine-tuned and base path measures (drift difference ``2 (f_theta - f_base)``,
    ``KL = 1/2 int ||drift diff||^2 / sigma^2 dt``, Euler sum with step ``h``); the last step is the
    base's ODE step, so it carries no control. ``reward`` already includes ``tau``.
    """
    h = 1.0 / num_steps
    xs, ts = memoryless_sample(f_theta, f_base, x0, key, num_steps)
    x, t = xs[: num_steps - 1], ts[: num_steps - 1]
    diff = jnp.sum((f_theta(x, t) - f_base(x, t)) ** 2, axis=-1)
    kl = jnp.sum(2.0 * h * diff / memoryless_sigma(t, h)[..., 0] ** 2, axis=0)
    return jnp.mean(kl - reward(xs[-1]))


def _bptt_loss(base: FlowFit, q, tau, num_steps, batch_size):
    def loss_fn(params, obs_data, key):
        o, x0, k_sde = _finetune_setup(key, base, obs_data, batch_size)
        f_base = functools.partial(base.apply, base.params, o)
        f_theta = functools.partial(base.apply, params, o)
        reward = (lambda y: tau * q(y)) if o is None else (lambda y: tau * q(o, y))
        return bptt_objective(f_theta, f_base, reward, x0, k_sde, num_steps)

    return loss_fn


def _finetune(
    method, key, base, q, tau, obs, num_flow_steps, steps, batch_size, lr, clip, progress
):
    tau = _check_tau(tau)
    num_flow_steps = _positive_int("num_flow_steps", num_flow_steps)
    steps = _positive_int("steps", steps)
    batch_size = _positive_int("batch_size", batch_size)
    if base.obs_dim and obs is None:
        raise ValueError(f"the base flow is conditioned (obs_dim={base.obs_dim}): pass obs states")
    obs = None if obs is None else _as_2d("obs", obs)
    make = {"adjoint": _adjoint_loss, "bptt": _bptt_loss}[method]
    loss_fn = make(base, q, tau, num_flow_steps, batch_size)
    desc = {"adjoint": "adjoint matching", "bptt": "BPTT"}[method]
    params, losses, norms = _optimise(
        loss_fn, base.params, obs, key,
        steps=steps, lr=lr, desc=desc, progress=progress, clip=clip, decay=True,
    )  # fmt: skip
    return FlowFit(base.apply, params, base.obs_dim, base.action_dim, losses, norms)


def adjoint_matching_finetune(
    key: jax.Array,
    base: FlowFit,
    q: Callable,
    tau: float,
    *,
    obs=None,
    num_flow_steps: int = 10,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    clip: float | None = 1.0,
    progress: bool | None = None,
) -> FlowFit:
    """Fine-tune ``f_theta`` (initialised at ``base``, which stays frozen) by adjoint matching.

    Each step: ``x_0 ~ N(0, I)``; memoryless SDE sample with ``f_theta`` (last step with the base);
    ``a_T = -tau grad q(x_T)`` carried back along the base by
    :func:`~qam_lite.adjoint.lean_adjoint`; Adam on
    :func:`~qam_lite.adjoint.adjoint_matching_loss`. The fixed point is
    ``pi ∝ pi_base exp(tau q)`` up to the discretisation error of ``num_flow_steps``.

    Args:
      key: PRNG key.
      base: the frozen base flow.
      q: reward, ``q(x) -> (n,)`` for ``x (n, d)``; ``q(obs, x)`` when ``obs`` is given.
      tau: inverse temperature ``>= 0``.
      obs: optional ``(n_states, obs_dim)`` states to draw minibatches from (conditioned base).
      num_flow_steps: ``T``; steps, batch_size, lr, clip: Adam settings (global-norm clip).
      progress: ``tqdm`` bar; ``None`` (default): shown unless ``QAM_LITE_BATCH`` or
        ``TQDM_DISABLE`` is set (batch execution of the book); ``True``/``False`` force it.

    Returns:
      :class:`FlowFit` of ``f_theta`` (same ``apply`` as ``base``) with losses and gradient norms.
    """
    return _finetune(
        "adjoint", key, base, q, tau, obs, num_flow_steps, steps, batch_size, lr, clip, progress
    )


def bptt_finetune(
    key: jax.Array,
    base: FlowFit,
    q: Callable,
    tau: float,
    *,
    obs=None,
    num_flow_steps: int = 10,
    steps: int = 2000,
    batch_size: int = 256,
    lr: float = 1e-3,
    clip: float | None = 1.0,
    progress: bool | None = None,
) -> FlowFit:
    """Fine-tune toward the same tilt by back-propagating through the SDE (:func:`bptt_objective`).

    Same arguments and result as :func:`adjoint_matching_finetune`; ``grad_norms`` records the
    global gradient norm before clipping, the quantity that grows with ``num_flow_steps``.
    """
    return _finetune(
        "bptt", key, base, q, tau, obs, num_flow_steps, steps, batch_size, lr, clip, progress
    )


def gradient_statistics(
    key: jax.Array,
    base: FlowFit,
    q: Callable,
    tau: float,
    num_flow_steps: int,
    *,
    method: str = "adjoint",
    obs=None,
    num_batches: int = 32,
    batch_size: int = 256,
) -> dict[str, float]:
    """Gradient of one minibatch loss at ``params = base.params``, across ``num_batches`` batches.

    Returns a dict with ``norm_mean`` and ``norm_std`` (of the per-batch global gradient norm),
    ``mean_grad_norm`` (norm of the average gradient, the signal) and ``variance`` (trace of the
    gradient covariance across batches, the noise), and ``relative_variance = variance /
    mean_grad_norm^2`` which does not depend on how each method scales its loss.
    """
    if method not in ("adjoint", "bptt"):
        raise ValueError(f"method must be 'adjoint' or 'bptt', got {method!r}")
    tau = _check_tau(tau)
    num_flow_steps = _positive_int("num_flow_steps", num_flow_steps)
    num_batches = _positive_int("num_batches", num_batches)
    batch_size = _positive_int("batch_size", batch_size)
    obs = None if obs is None else _as_2d("obs", obs)
    make = {"adjoint": _adjoint_loss, "bptt": _bptt_loss}[method]
    loss_fn = make(base, q, tau, num_flow_steps, batch_size)

    @jax.jit
    def grads(params, obs, keys):
        g = jax.lax.map(lambda k: jax.grad(loss_fn)(params, obs, k), keys)
        flat = jnp.concatenate(
            [leaf.reshape(num_batches, -1) for leaf in jax.tree.leaves(g)], axis=1
        )
        return flat

    flat = np.asarray(grads(base.params, obs, jax.random.split(key, num_batches)), np.float64)
    norms = np.linalg.norm(flat, axis=1)
    mean = flat.mean(axis=0)
    variance = float(np.sum(flat.var(axis=0)))
    mean_norm = float(np.linalg.norm(mean))
    return {
        "norm_mean": float(norms.mean()),
        "norm_std": float(norms.std()),
        "mean_grad_norm": mean_norm,
        "variance": variance,
        "relative_variance": variance / max(mean_norm**2, 1e-30),
    }


# --------------------------------------------------------------------------------------------
# metrics against known answers


def tilt_metrics(samples, target: Mixture) -> dict[str, float]:
    """How far 1D ``samples`` (``(n,)`` or ``(n, 1)``) are from a 1D ``target`` (e.g. the tilt).

    Returns ``mean``, ``std`` of the samples, ``target_mean``, ``target_std``, ``mean_error``
    (samples minus target), and ``w1``: the Wasserstein-1 distance
    (:func:`qam_lite.toys.wasserstein1_1d` against the target's quantiles).
    """
    if target.dim != 1:
        raise ValueError(f"tilt_metrics needs a 1D target mixture, got d={target.dim}")
    x = np.asarray(samples, np.float64).reshape(-1)
    w = np.asarray(target.weights, np.float64)
    mu = np.asarray(target.means, np.float64)[:, 0]
    s = np.asarray(target.stds, np.float64)[:, 0]
    t_mean = float(w @ mu)
    t_std = float(np.sqrt(w @ (s**2 + mu**2) - t_mean**2))
    lo, hi = min(x.min(), (mu - 10 * s).min()), max(x.max(), (mu + 10 * s).max())
    w1 = toys.wasserstein1_1d(jnp.asarray(x), toys.mixture_quantile_1d(target, lo, hi))
    return {
        "mean": float(x.mean()),
        "std": float(x.std()),
        "target_mean": t_mean,
        "target_std": t_std,
        "mean_error": float(x.mean()) - t_mean,
        "w1": float(w1),
    }


def mode_coverage(samples, means, stds, *, radius: float = 2.0) -> np.ndarray:
    """Fraction of samples within ``radius`` (per-dimension-scaled) stds of each mode, ``(K,)``.

    ``samples (n, d)``; ``means``, ``stds`` ``(K, d)``. A policy that covers every mode puts about
    the mixture weight times ``P(|z| <= radius)``, ``z ~ N(0, I_d)``, on each (in 2D
    ``1 - exp(-radius^2 / 2)``, 0.865 for radius 2); ``1 - sum`` is the mass between modes.
    """
    x = np.asarray(samples, np.float64)
    x = x.reshape(x.shape[0], -1)
    mu = np.asarray(means, np.float64).reshape(-1, x.shape[1])
    s = np.asarray(stds, np.float64).reshape(mu.shape)
    dist = np.sqrt(np.sum(((x[:, None, :] - mu[None]) / s[None]) ** 2, axis=-1))
    return np.mean(dist <= radius, axis=0)
