"""Networks: MLPs, state-conditioned velocity fields and critic ensembles (Flax NNX).

Hot paths never carry NNX objects: :func:`pure` splits a module into a static ``graphdef`` and a
parameter pytree, and returns a pure ``apply(params, *args)`` that ``jit``, ``scan``, ``grad`` and
``vmap`` treat like any JAX function.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import jax
import jax.numpy as jnp
from flax import nnx


class MLP(nnx.Module):
    """``in_dim -> hidden... -> out_dim`` with GELU, optional layer norm after each hidden layer."""

    def __init__(
        self,
        in_dim: int,
        hidden: Sequence[int],
        out_dim: int,
        *,
        layer_norm: bool = False,
        rngs: nnx.Rngs,
    ):
        dims = [in_dim, *hidden]
        self.hidden = nnx.List(
            [nnx.Linear(a, b, rngs=rngs) for a, b in zip(dims[:-1], dims[1:], strict=True)]
        )
        self.norms = nnx.List([nnx.LayerNorm(b, rngs=rngs) for b in hidden] if layer_norm else [])
        self.out = nnx.Linear(dims[-1], out_dim, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for i, layer in enumerate(self.hidden):
            x = nnx.gelu(layer(x))
            if len(self.norms):
                x = self.norms[i](x)
        return self.out(x)


class VelocityField(nnx.Module):
    """``f(obs, x, t) -> v``: an MLP on ``[obs, x, t]``; ``obs_dim = 0`` for unconditioned toys.

    Shapes: ``obs (..., obs_dim)`` (broadcast against ``x``'s leading axes, so one batch of states
    serves all ``T`` flow steps), ``x (..., d)``, ``t (..., 1)`` -> ``(..., d)``.
    """

    def __init__(self, obs_dim: int, action_dim: int, hidden: Sequence[int], *, rngs: nnx.Rngs):
        self.obs_dim = obs_dim
        self.mlp = MLP(obs_dim + action_dim + 1, hidden, action_dim, rngs=rngs)

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
        rngs: nnx.Rngs,
    ):
        @nnx.split_rngs(splits=num_critics)
        @nnx.vmap(in_axes=(0,), out_axes=0)
        def make(rngs: nnx.Rngs) -> MLP:
            return MLP(obs_dim + action_dim, hidden, 1, layer_norm=True, rngs=rngs)

        self.members = make(rngs)

    def __call__(self, obs: jax.Array, action: jax.Array) -> jax.Array:
        """``obs (..., obs_dim)`` (broadcast to ``action``), ``action (..., d)`` -> ``(K, ...)``."""
        obs = jnp.broadcast_to(obs, (*action.shape[:-1], obs.shape[-1]))
        x = jnp.concatenate([obs, action], axis=-1)
        # A plain jax.vmap over the members' stacked parameters (not nnx.vmap): it stays pure when
        # the parameters are tracers of an outer transform, e.g. a target critic inside jax.grad.
        graphdef, members = nnx.split(self.members)
        return jax.vmap(lambda p: nnx.merge(graphdef, p)(x)[..., 0])(members)


def pure(module: nnx.Module) -> tuple[Callable, nnx.State]:
    """Split ``module`` into ``(apply, params)`` with ``apply(params, *args) == module(*args)``."""
    graphdef, params = nnx.split(module)

    def apply(params, *args):
        return nnx.merge(graphdef, params)(*args)

    return apply, params
