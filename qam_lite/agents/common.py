"""What every agent shares: the state and interface types, network building, the critic, Polyak.

An agent is a :class:`Agent` of *pure* functions over pytrees (no NNX objects on the hot path):
``init(key) -> TrainState``, ``update(state, batch, key) -> (state, metrics)`` (one gradient step,
jittable) and ``act(state, obs, key) -> actions``.

Batch convention (``qam_lite.chunks.sample_chunks``), with ``D = H * A`` the flattened chunk size:

- ``observations (B, obs_dim)``, ``next_observations (B, obs_dim)``
- ``actions (B, D)``: the chunk ``a_i .. a_{i+H-1}`` flattened
- ``rewards (B,)``: ``R_H = sum_j gamma^j r_{i+j}`` up to the episode end
- ``masks (B,)``: 1 unless the chunk ends in a terminal state
- ``valid (B, H)``: step ``j`` has not crossed an episode end
- optional ``discount (B,)``: the bootstrap factor; ``gamma ** H`` when absent

Losses follow the published implementation (``ColinQiyangLi/qam``, ``agents/``): every sample's
BC and TD terms are weighted by the chunk's *last* ``valid`` flag, the critic loss is the mean
over the ``K`` members and the batch, and networks start from Xavier-uniform kernels.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax
from flax import nnx

from qam_lite.config import Config
from qam_lite.flows import euler_sample, flow_matching_loss
from qam_lite.networks import XAVIER, CriticEnsemble, VelocityField, pure

Batch = Mapping[str, jax.Array]
Metrics = dict[str, jax.Array]


class TrainState(NamedTuple):
    """Everything an agent updates; a pytree (checkpoint it with any pytree saver).

    Attributes:
      params: trained networks, a dict with a subset of ``'critic'``, ``'bc_flow'`` (f_beta),
        ``'actor'`` (f_theta for QAM/BAM/QAM-E/QAM-F, the one-step policy for FQL),
        ``'one_step'`` (QAM-F's one-step policy), ``'edit'`` and ``'edit_temp'`` (QAM-E's edit
        policy and its entropy temperature).
      targets: Polyak-averaged copies (``'critic'``, and ``'bc_flow'`` where the agent uses it).
      opt_state: the one Adam's state over ``params``.
      step: number of gradient steps taken (int32 scalar).
    """

    params: dict[str, Any]
    targets: dict[str, Any]
    opt_state: Any
    step: jax.Array


class Agent(NamedTuple):
    """Pure functions of one algorithm plus the sizes they were built for.

    Attributes:
      init: ``init(key) -> TrainState``.
      update: ``update(state, batch, key) -> (state, metrics)``: one gradient step (jittable);
        ``metrics`` maps names to float scalars.
      act: ``act(state, obs (..., obs_dim), key) -> actions (..., H * A)`` in ``[-1, 1]``.
      config: the :class:`~qam_lite.config.Config` it was built from.
      obs_dim: observation size.
      action_dim: per-step action size ``A``.
      chunk_dim: ``H * A``, the size of what ``act`` returns.
    """

    init: Callable[[jax.Array], TrainState]
    update: Callable[[TrainState, Batch, jax.Array], tuple[TrainState, Metrics]]
    act: Callable[[TrainState, jax.Array, jax.Array], jax.Array]
    config: Config
    obs_dim: int
    action_dim: int
    chunk_dim: int


class Networks(NamedTuple):
    """``init(key) -> params dict`` and the pure ``apply`` of each named network."""

    init: Callable[[jax.Array], dict[str, Any]]
    apply: dict[str, Callable]


def build_networks(
    builders: dict[str, Callable[[nnx.Rngs], nnx.Module]],
) -> Networks:
    """Pure ``apply`` functions and a jittable/vmappable parameter ``init`` for NNX builders.

    ``builders`` maps a name to ``rngs -> module``. The graph definitions come from an abstract
    (shape-only) construction, so building an agent allocates nothing; ``init`` constructs the
    modules again from a key and keeps only their parameter pytrees.
    """
    apply = {
        name: pure(nnx.eval_shape(lambda b=build: b(nnx.Rngs(0))))[0]
        for name, build in builders.items()
    }

    def init(key: jax.Array) -> dict[str, Any]:
        keys = jax.random.split(key, len(builders))
        return {
            name: nnx.split(build(nnx.Rngs(k)))[1]
            for k, (name, build) in zip(keys, builders.items(), strict=True)
        }

    return Networks(init, apply)


def velocity_builder(config: Config, obs_dim: int, chunk_dim: int):
    """Builder of a state-conditioned velocity field (actor sizes, no layer norm)."""
    return lambda rngs: VelocityField(
        obs_dim, chunk_dim, config.actor_hidden, kernel_init=XAVIER, rngs=rngs
    )


def critic_builder(config: Config, obs_dim: int, chunk_dim: int):
    """Builder of the ``K``-member layer-normed critic ensemble."""
    return lambda rngs: CriticEnsemble(
        obs_dim, chunk_dim, config.critic_hidden, config.num_critics, kernel_init=XAVIER, rngs=rngs
    )


def conditioned(apply: Callable, params: Any, obs: jax.Array) -> Callable:
    """The velocity ``(x, t) -> apply(params, obs, x, t)`` of a field at states ``obs``."""
    return functools.partial(apply, params, obs)


def noise_like(obs: jax.Array, key: jax.Array, chunk_dim: int) -> jax.Array:
    """``N(0, I)`` noise ``(..., chunk_dim)`` for states ``obs (..., obs_dim)``."""
    return jax.random.normal(key, (*obs.shape[:-1], chunk_dim), obs.dtype)


def flow_from_noise(
    apply: Callable, params: Any, obs: jax.Array, x0: jax.Array, num_steps: int
) -> jax.Array:
    """``clip(EulerODE(f, s, x_0), -1, 1)`` from given noise ``x0 (..., D)``."""
    return jnp.clip(euler_sample(conditioned(apply, params, obs), x0, num_steps), -1.0, 1.0)


def flow_actions(
    apply: Callable, params: Any, obs: jax.Array, key: jax.Array, chunk_dim: int, num_steps: int
) -> jax.Array:
    """``clip(EulerODE(f, s), -1, 1)`` from ``x_0 ~ N(0, I)``: ``(..., obs_dim) -> (..., D)``."""
    return flow_from_noise(apply, params, obs, noise_like(obs, key, chunk_dim), num_steps)


def bc_flow_loss(apply, params, batch: Batch, key: jax.Array) -> jax.Array:
    """Flow-matching loss of f_beta on the data chunks (mean over samples and dimensions).

    Each sample is weighted by its chunk's last ``valid`` flag, as in the published code: a chunk
    cut by an episode end is dropped (its tail holds the next episode's actions).
    """
    velocity = conditioned(apply, params, batch["observations"])
    weights = batch["valid"][:, -1:].astype(batch["actions"].dtype)  # (B, 1)
    return flow_matching_loss(velocity, batch["actions"], key, weights=weights)


def critic_target(
    q_next: jax.Array,
    rewards: jax.Array,
    masks: jax.Array,
    discount: jax.Array | float,
    rho: float,
) -> jax.Array:
    """``y = R_H + discount * m * (mean_k Q'_k - rho * std_k Q'_k)``.

    Args:
      q_next: ``(K, B)`` target-critic values at ``(s', a')``.
      rewards: ``(B,)`` chunk rewards ``R_H``.
      masks: ``(B,)`` not-terminal flags.
      discount: ``gamma ** H`` or a ``(B,)`` array.
      rho: pessimism; the std is the population std over the ``K`` members.

    Returns:
      ``(B,)`` targets (gradient stopped).
    """
    pessimistic = jnp.mean(q_next, axis=0) - rho * jnp.std(q_next, axis=0)
    return jax.lax.stop_gradient(rewards + discount * masks * pessimistic)


def critic_loss(q: jax.Array, target: jax.Array, weight: jax.Array) -> jax.Array:
    """``mean_k E_b[(Q_k - y)^2 * w]`` for ``q (K, B)``, ``target (B,)``, ``weight (B,)``.

    The mean (not the sum) over the ``K`` members, as published: with one gradient-norm clip
    shared by critic and actor, a ``K`` times larger critic gradient would change how much the
    actor's step is scaled down.
    """
    return jnp.mean((q - target) ** 2 * weight)


def critic_update_terms(
    critic_apply: Callable,
    params: dict[str, Any],
    targets: dict[str, Any],
    batch: Batch,
    next_actions: jax.Array,
    config: Config,
) -> tuple[jax.Array, Metrics]:
    """The K-ensemble TD loss and its metrics, for any agent's ``next_actions (B, D)``.

    The per-sample weight is the *chunk-level* validity ``valid[:, -1]`` (the whole chunk lies in
    one episode), as the published implementation does: a chunk cut by an episode end carries a
    reward sum that is not an H-step return, so its TD error is dropped rather than down-weighted.
    """
    obs, next_obs = batch["observations"], batch["next_observations"]
    discount = batch.get("discount", config.gamma**config.horizon)
    q_next = critic_apply(targets["critic"], next_obs, jax.lax.stop_gradient(next_actions))
    y = critic_target(q_next, batch["rewards"], batch["masks"], discount, config.rho)
    q = critic_apply(params["critic"], obs, batch["actions"])
    weight = batch["valid"][:, -1].astype(q.dtype)
    loss = critic_loss(q, y, weight)
    metrics = {
        "critic_loss": loss,
        "q_mean": jnp.mean(q),
        "q_std": jnp.mean(jnp.std(q, axis=0)),  # ensemble disagreement
        "q_max": jnp.max(q),
        "q_min": jnp.min(q),
        "target_mean": jnp.mean(y),
    }
    return loss, metrics


def polyak(target: Any, online: Any, rate: float) -> Any:
    """``target <- (1 - rate) * target + rate * online``, leaf by leaf."""
    return jax.tree.map(lambda t, o: (1.0 - rate) * t + rate * o, target, online)


def make_optimizer(config: Config) -> optax.GradientTransformation:
    """One Adam over every trained network, after a global gradient-norm clip of
    ``config.grad_clip`` (``None``: plain Adam, the published FQL's optimiser)."""
    if config.grad_clip is None:
        return optax.adam(config.lr)
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), optax.adam(config.lr))


LossFn = Callable[[dict, dict, Batch, jax.Array], tuple[jax.Array, Metrics]]


def make_init(networks: Networks, optimizer, target_names: tuple[str, ...]):
    """``init(key) -> TrainState``: fresh params, targets equal to the online copies, Adam state."""

    def init(key: jax.Array) -> TrainState:
        params = networks.init(key)
        # Copies, not aliases: a donated state must not hold one buffer twice.
        targets = {name: jax.tree.map(jnp.copy, params[name]) for name in target_names}
        return TrainState(params, targets, optimizer.init(params), jnp.zeros((), jnp.int32))

    return init


def prepare_batch(batch: Batch, action_clip: float) -> dict[str, jax.Array]:
    """Clip the data actions to ``+-action_clip`` (``1 - 1e-5``: flow targets stay inside the
    open box the policy's clipped samples live in)."""
    return {**batch, "actions": jnp.clip(batch["actions"], -action_clip, action_clip)}


def make_update(loss_fn: LossFn, optimizer, rate: float, clip: float):
    """One gradient step of ``loss_fn(params, targets, batch, key) -> (loss, metrics)``.

    Every loss term of an agent is summed into ``loss_fn``; terms are arranged (stop-gradients)
    so that each network only receives the gradient of its own term. Targets are Polyak-averaged
    toward the *updated* online parameters.
    """

    def update(state: TrainState, batch: Batch, key: jax.Array) -> tuple[TrainState, Metrics]:
        batch = prepare_batch(batch, clip)
        grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
        (_, metrics), grads = grad_fn(state.params, state.targets, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        targets = {name: polyak(t, params[name], rate) for name, t in state.targets.items()}
        metrics = {**metrics, "grad_norm": optax.tree.norm(grads)}
        return TrainState(params, targets, opt_state, state.step + 1), metrics

    return update
