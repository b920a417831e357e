"""Networks: MLPs, state-conditioned velocity fields, critic ensembles, a tanh-Gaussian policy
and a learned positive scalar (Flax NNX).

Hot paths never carry NNX objects: :func:`pure` splits a module into a static ``graphdef`` and a
parameter pytree, and returns a pure ``apply(params, *args)`` that ``jit``, ``scan``, ``grad`` and
``vmap`` treat like any JAX function.

Layers are held as numbered attributes (``layer_0``, ``layer_1``, ...), not in a list: a plain
list of modules is an error in flax >= 0.12 and ``nnx.List`` does not exist in flax 0.11 (Colab's
version); numbered attributes work in both.

The agents initialise kernels with :data:`XAVIER` (Glorot uniform, zero biases), as the published
implementation does; NNX's own default (LeCun normal) is kept for the toy chapters.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx

#: The published implementation's kernel initialiser (``xavier_uniform``); biases start at zero.
XAVIER = nnx.initializers.xavier_uniform()
_DEFAULT_INIT = nnx.initializers.lecun_normal()


class MLP(nnx.Module):
    """``in_dim -> hidden... -> out_dim`` with GELU, optional layer norm after each hidden layer.

    ``activate_final`` also applies GELU (and the layer norm) to the output, for use as a trunk.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        *,
        layer_norm: bool = False,
        activate_final: bool = False,
        kernel_init: Callable = _DEFAULT_INIT,
        rngs: nnx.Rngs,
    ):
        dims = [in_dim, *hidden, out_dim]
        self.num_layers = len(dims) - 1
        self.activated = self.num_layers if activate_final else self.num_layers - 1
        self.layer_norm = layer_norm
        for i, (a, b) in enumerate(zip(dims[:-1], dims[1:], strict=True)):
            setattr(self, f"layer_{i}", nnx.Linear(a, b, kernel_init=kernel_init, rngs=rngs))
            if layer_norm and i < self.activated:
                setattr(self, f"norm_{i}", nnx.LayerNorm(b, rngs=rngs))

    def __call__(self, x: jax.Array) -> jax.Array:
        for i in range(self.num_layers):
            x = getattr(self, f"layer_{i}")(x)
            if i < self.activated:
                x = nnx.gelu(x)
                if self.layer_norm:
                    x = getattr(self, f"norm_{i}")(x)
        return x


class VelocityField(nnx.Module):
    """``f(obs, x, t) -> v``: an MLP on ``[obs, x, t]``; ``obs_dim = 0`` for unconditioned toys.

    Shapes: ``obs (..., obs_dim)`` (broadcast against ``x``'s leading axes, so one batch of states
    serves all ``T`` flow steps), ``x (..., d)``, ``t (..., 1)`` -> ``(..., d)``.
    """

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        *,
        kernel_init: Callable = _DEFAULT_INIT,
        rngs: nnx.Rngs,
    ):
        self.obs_dim = obs_dim
        self.mlp = MLP(
            obs_dim + action_dim + 1, hidden, action_dim, kernel_init=kernel_init, rngs=rngs
        )

    def __call__(self, obs: jax.Array | None, x: jax.Array, t: jax.Array) -> jax.Array:
        t = jnp.broadcast_to(t, (*x.shape[:-1], 1)).astype(x.dtype)
        parts = [x, t]
        if self.obs_dim:
            parts.insert(0, jnp.broadcast_to(obs, (*x.shape[:-1], obs.shape[-1])))
        return self.mlp(jnp.concatenate(parts, axis=-1))


class CriticEnsemble(nnx.Module):
    """``K`` independent layer-normed MLPs ``Q_k(obs, a)``; returns ``(K, ...)`` values."""

    def __init__(
        self,
        obs_dim: int,
        action_dim: int,
        hidden: Sequence[int],
        num_critics: int,
        *,
        kernel_init: Callable = _DEFAULT_INIT,
        rngs: nnx.Rngs,
    ):
        @nnx.split_rngs(splits=num_critics)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs: nnx.Rngs) -> MLP:
            return MLP(
                obs_dim + action_dim, hidden, 1, layer_norm=True, kernel_init=kernel_init, rngs=rngs
            )

        self.members = make(rngs)

    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        """``obs (..., obs_dim)`` (broadcast to ``action``), ``action (..., d)`` -> ``(K, ...)``."""
        obs = jnp.broadcast_to(obs, (*action.shape[:-1], obs.shape[-1]))
        x = jnp.concatenate([obs, action], axis=-1)
        # A plain jax.vmap over the members' stacked parameters (not nnx.vmap): it stays pure when
        # the parameters are tracers of an outer transform, e.g. a target critic inside jax.grad.
        graphdef, members = nnx.split(self.members)
        return jax.vmap(lambda p: nnx.merge(graphdef, p)(x)[..., 0])(members)


#: Bounds on a Gaussian policy's log standard deviation (those of the published implementation).
LOG_STD_MIN, LOG_STD_MAX = -20.0, 2.0


class TanhGaussian(nnx.Module):
    """``x -> (mean, log_std)`` of a diagonal Gaussian that :func:`tanh_gaussian_sample` squashes.

    A GELU trunk (every layer activated) and two linear heads; ``log_std`` is clipped to
    ``[LOG_STD_MIN, LOG_STD_MAX]``. Shapes: ``x (..., in_dim)`` -> two ``(..., out_dim)``.
    """

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        *,
        kernel_init: Callable = _DEFAULT_INIT,
        rngs: nnx.Rngs,
    ):
        self.trunk = MLP(
            in_dim, hidden[:-1], hidden[-1], activate_final=True, kernel_init=kernel_init, rngs=rngs
        )
        self.mean = nnx.Linear(hidden[-1], out_dim, kernel_init=kernel_init, rngs=rngs)
        self.log_std = nnx.Linear(hidden[-1], out_dim, kernel_init=kernel_init, rngs=rngs)

    def __call__(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        features = self.trunk(x)
        log_std = jnp.clip(self.log_std(features), LOG_STD_MIN, LOG_STD_MAX)
        return self.mean(features), log_std


def tanh_gaussian_sample(
    mean: jax.Array, log_std: jax.Array, key: jax.Array
) -> tuple[jax.Array, jax.Array]:
    """A reparameterised sample ``tanh(mean + exp(log_std) * eps)`` and its log-density.

    The density is that of the squashed variable:
    ``log N(u; mean, std^2) - sum_d log(1 - tanh(u_d)^2)`` with the pre-squash sample ``u``,
    using ``log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u))``, which stays finite where
    ``tanh(u)`` rounds to +-1.

    Returns:
      ``(sample (..., d), log_prob (...))``.
    """
    eps = jax.random.normal(key, mean.shape, mean.dtype)
    u = mean + jnp.exp(log_std) * eps
    gaussian = -0.5 * eps**2 - log_std - 0.5 * jnp.log(2.0 * jnp.pi)
    log_det = 2.0 * (jnp.log(2.0) - u - jax.nn.softplus(-2.0 * u))
    return jnp.tanh(u), jnp.sum(gaussian - log_det, axis=-1)


class LogScalar(nnx.Module):
    """A learned positive scalar ``exp(log_value)`` (e.g. an entropy temperature), starting at
    ``init_value``."""

    def __init__(self, init_value: float = 1.0, *, rngs: nnx.Rngs | None = None):
        del rngs  # no randomness; accepted so every builder has the same signature
        self.log_value = nnx.Param(jnp.full((), jnp.log(init_value), jnp.float32))

    def __call__(self) -> jax.Array:
        return jnp.exp(self.log_value[...])


def pure(module: nnx.Module) -> tuple[Callable, nnx.State]:
    """Split ``module`` into ``(apply, params)`` with ``apply(params, *args) == module(*args)``."""
    graphdef, params = nnx.split(module)

    def apply(params, *args):
        return nnx.merge(graphdef, params)(*args)

    return apply, params
