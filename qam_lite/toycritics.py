"""Critics with exact answers: a contextual bandit, a tiny chain MDP, and a critic-only learner.

Chapter 7 of the book teaches QAM's critic on problems where the right ``Q`` is known:

- a **contextual bandit** on chapter 2's behaviour data (:func:`bandit_q`, :func:`bandit_dataset`):
  ``Q(s, a)`` is a known function, a critic is plain regression (TD with no bootstrap);
- a **chain MDP** (:func:`chain_mdp`) small enough that the TD fixed point of a *chunked* critic is
  a linear solve (:func:`exact_chunk_q` for a fixed policy, :func:`optimal_chunk_q` for the best
  open-loop chunk policy), with an offline dataset in OGBench's layout
  (:func:`chain_dataset`) that :mod:`qam_lite.chunks` cuts into chunks like any real dataset;
- a **critic-only learner** (:func:`fit_critic`) assembled from the agents' own pieces
  (:func:`~qam_lite.agents.common.critic_update_terms`, the critic ensemble, one clipped Adam,
  Polyak-averaged targets), so what the chapter measures is what QAM's critic does.

The chain: states ``0 .. S-1`` in a row, observed one-hot; the goal is state ``S-1``, absorbing.
A 1-D action ``a in [-1, 1]`` moves left (``a < -1/3``), stays (``|a| <= 1/3``) or moves right
(``a > 1/3``); a move succeeds with probability ``1 - slip`` and otherwise leaves the state
unchanged. As in OGBench's single-task data the reward of a step is computed from the state it
starts in and the goal is a task terminal (``mask = 0``, no bootstrapping past it).
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite import chunks, toys
from qam_lite.agents.common import (
    Networks,
    build_networks,
    critic_builder,
    critic_update_terms,
    make_init,
    make_optimizer,
    make_update,
)
from qam_lite.config import Config

Batch = dict[str, jax.Array]
#: ``next_actions(key, batch, q_target) -> (B, D)``; ``q_target(obs, actions) -> (K, ...)`` is the
#: target critic (gradient stopped by the caller).
NextActions = Callable[[jax.Array, Batch, Callable], jax.Array]


# --------------------------------------------------------------------------------------------
# A contextual bandit on chapter 2's data
# --------------------------------------------------------------------------------------------

#: Width and height of the bandit's reward bump.
BANDIT_WIDTH, BANDIT_HEIGHT = 0.3, 1.0


def bandit_q(obs: jax.Array, actions: jax.Array) -> jax.Array:
    """The bandit's true ``Q(s, a)``: a bump on behaviour mode 0 plus a gentle slope.

    ``obs (..., 1)`` in ``[-1, 1]``, ``actions (..., 2)`` -> ``(...)``. The bump sits on the first
    of the three modes of :func:`qam_lite.toys.multimodal_policy_means` (it turns with ``s``); the
    slope ``0.3 a_1`` makes ``Q`` differ between the two other modes too.
    """
    centre = toys.multimodal_policy_means(obs[..., 0])[..., 0, :]
    d2 = jnp.sum((actions - centre) ** 2, axis=-1)
    return BANDIT_HEIGHT * jnp.exp(-d2 / (2 * BANDIT_WIDTH**2)) + 0.3 * actions[..., 0]


def bandit_dataset(key: jax.Array, n: int, noise: float = 0.1) -> dict[str, jax.Array]:
    """Chapter 2's ``n`` (state, action) pairs with rewards ``r = Q(s, a) + N(0, noise^2)``.

    Returns ``observations (n, 1)``, ``actions (n, 2)``, ``rewards (n,)``.
    """
    if noise < 0:
        raise ValueError(f"noise must be >= 0, got {noise}")
    k_data, k_noise = jax.random.split(key)
    obs, actions = toys.multimodal_policy_dataset(k_data, n)
    rewards = bandit_q(obs, actions) + noise * jax.random.normal(k_noise, (n,))
    return {"observations": obs, "actions": actions, "rewards": rewards}


def bandit_sampler(data: dict[str, jax.Array], batch_size: int) -> Callable[[jax.Array], Batch]:
    """``sample(key) -> batch`` of bandit rows in the chunk-batch layout, with nothing to bootstrap.

    A bandit episode is one step: ``masks = 0`` and ``discount = 0``, so the TD target
    ``R + discount * m * Q'(s', a')`` is just the reward and TD learning is regression. The batch
    carries ``next_actions`` (the actions themselves) for :func:`batch_next_actions`; they are
    multiplied by 0.
    """
    n = data["observations"].shape[0]

    def sample(key: jax.Array) -> Batch:
        idx = jax.random.randint(key, (batch_size,), 0, n)
        obs, actions = data["observations"][idx], data["actions"][idx]
        zeros = jnp.zeros((batch_size,), jnp.float32)
        return {
            "observations": obs,
            "actions": actions,
            "next_actions": actions,
            "rewards": data["rewards"][idx],
            "masks": zeros,
            "discount": zeros,
            "valid": jnp.ones((batch_size, 1), jnp.float32),
            "next_observations": obs,
        }

    return sample


# --------------------------------------------------------------------------------------------
# The chain MDP and its exact chunked Q
# --------------------------------------------------------------------------------------------

#: Zone boundaries of the 1-D action and a representative action per zone (left, stay, right).
ZONE_EDGE = 1.0 / 3.0
ZONE_ACTIONS = np.array([-2.0 / 3.0, 0.0, 2.0 / 3.0], np.float32)


class ChainMDP(NamedTuple):
    """A finite MDP with three effective actions (zones).

    Attributes:
      transitions: ``(3, S, S)`` ``P[z, s, s']`` for zone ``z`` (0 left, 1 stay, 2 right).
      rewards: ``(S,)`` reward of a step taken *from* state ``s`` (whatever the action).
      masks: ``(S,)`` 0 at the goal (a task terminal: no value after it), else 1.
      goal: the goal state (absorbing, reward 0).
    """

    transitions: np.ndarray
    rewards: np.ndarray
    masks: np.ndarray
    goal: int

    @property
    def num_states(self) -> int:
        return self.rewards.shape[0]


def chain_mdp(num_states: int = 6, slip: float = 0.2, reward: str = "sparse") -> ChainMDP:
    """The chain ``0 .. S-1`` with the goal at ``S-1``.

    Args:
      num_states: ``S >= 2``.
      slip: probability that a move fails (the state stays), in ``[0, 1)``.
      reward: ``'sparse'``: ``-1`` per step until the goal (OGBench's ``r' = -1[r != 0]``);
        ``'dense'``: ``-(distance to the goal)``, like OGBench's ``-(unsolved sub-goals)``.
    """
    if not isinstance(num_states, int) or num_states < 2:
        raise ValueError(f"num_states must be an integer >= 2, got {num_states!r}")
    if not 0.0 <= slip < 1.0:
        raise ValueError(f"slip must be in [0, 1), got {slip}")
    if reward not in ("sparse", "dense"):
        raise ValueError(f"reward must be 'sparse' or 'dense', got {reward!r}")
    goal = num_states - 1
    p = np.zeros((3, num_states, num_states))
    for s in range(num_states):
        for z, move in enumerate((-1, 0, 1)):
            if s == goal:
                p[z, s, s] = 1.0
                continue
            dest = min(max(s + move, 0), num_states - 1)
            p[z, s, dest] += 1.0 - slip
            p[z, s, s] += slip
    distance = (goal - np.arange(num_states)).astype(np.float64)
    rewards = -np.minimum(distance, 1.0) if reward == "sparse" else -distance
    masks = (np.arange(num_states) != goal).astype(np.float64)
    return ChainMDP(p, rewards, masks, goal)


def action_zone(actions) -> np.ndarray:
    """Zone index (0 left, 1 stay, 2 right) of actions in ``[-1, 1]`` (any shape)."""
    a = np.asarray(actions)
    return np.where(a < -ZONE_EDGE, 0, np.where(a > ZONE_EDGE, 2, 1))


def zone_probabilities(low: float = -1.0, high: float = 1.0) -> np.ndarray:
    """Zone probabilities ``(3,)`` (left, stay, right) of behaviour actions ``U[low, high]``."""
    if not -1.0 <= low < high <= 1.0:
        raise ValueError(f"need -1 <= low < high <= 1, got low={low}, high={high}")
    edges = np.array([-1.0, -ZONE_EDGE, ZONE_EDGE, 1.0])
    overlap = np.clip(np.minimum(edges[1:], high) - np.maximum(edges[:-1], low), 0.0, None)
    return overlap / (high - low)


def zone_chunks(horizon: int) -> np.ndarray:
    """All ``3^H`` zone sequences ``(C, H)``, in ``itertools.product`` order."""
    if not isinstance(horizon, int) or horizon < 1:
        raise ValueError(f"horizon must be an integer >= 1, got {horizon!r}")
    return np.array(list(itertools.product(range(3), repeat=horizon)), np.int64)


def chunk_model(mdp: ChainMDP, horizon: int, gamma: float) -> tuple[np.ndarray, np.ndarray]:
    """What executing each zone chunk open loop does: ``(R, P)``.

    Returns:
      ``R (S, C)``: expected chunked return ``E[sum_j gamma^j r(s_j)]``, ``s_0 = s``, the sum
      stopping at a terminal (the reward after the goal is 0 anyway);
      ``P (S, C, S)``: ``m * P(s_H = s' | s, chunk)`` (the distribution after ``H`` steps, zeroed
      where the chunk passed the goal, so ``R + gamma^H P V`` is the chunked Bellman backup).
    """
    chunks = zone_chunks(horizon)
    s = mdp.num_states
    eye = np.eye(s)
    r_out = np.zeros((s, len(chunks)))
    p_out = np.zeros((s, len(chunks), s))
    for c, zones in enumerate(chunks):
        dist = eye.copy()  # row s0: distribution of s_j, restricted to paths not yet terminal
        for j, z in enumerate(zones):
            r_out[:, c] += gamma**j * dist @ mdp.rewards
            dist = (dist * mdp.masks[None, :]) @ mdp.transitions[z]
        p_out[:, c, :] = dist * mdp.masks[None, :]
    return r_out, p_out


def exact_chunk_q(
    mdp: ChainMDP, horizon: int, gamma: float, policy: np.ndarray | None = None
) -> np.ndarray:
    """The chunked critic's exact TD fixed point ``(S, 3^H)`` for a fixed chunk policy.

    Solves ``Q = R + gamma^H P (pi Q)`` (one linear system), where ``pi(c | s)`` draws each of the
    chunk's ``H`` actions independently with the zone probabilities ``policy`` (``(3,)``, the same
    in every state, default uniform), as the critic target does with ``a' ~ pi(s')``.
    """
    if not 0.0 <= gamma < 1.0:
        raise ValueError(f"gamma must be in [0, 1), got {gamma}")
    probs = np.full(3, 1.0 / 3.0) if policy is None else np.asarray(policy, np.float64)
    if probs.shape != (3,) or np.any(probs < 0) or not np.isclose(probs.sum(), 1.0):
        raise ValueError(f"policy must be 3 zone probabilities summing to 1, got {policy}")
    r, p = chunk_model(mdp, horizon, gamma)
    chunk_probs = np.prod(probs[zone_chunks(horizon)], axis=1)  # (C,)
    s, c = r.shape
    # Q(s, c) - gamma^H sum_{s', c'} P(s, c, s') pi(c') Q(s', c') = R(s, c)
    m = np.einsum("sct,d->sctd", p, chunk_probs).reshape(s * c, s * c)
    q = np.linalg.solve(np.eye(s * c) - gamma**horizon * m, r.reshape(-1))
    return q.reshape(s, c)


def optimal_chunk_q(mdp: ChainMDP, horizon: int, gamma: float, tol: float = 1e-10) -> np.ndarray:
    """``Q*`` over open-loop chunk policies ``(S, 3^H)``: value iteration on the chunk MDP.

    ``Q(s, c) = R(s, c) + gamma^H P (max_c' Q(s', c'))``; no chunk policy does better, so a learned
    critic above ``Q*`` is overestimating, whatever its policy.
    """
    r, p = chunk_model(mdp, horizon, gamma)
    q = np.zeros_like(r)
    for _ in range(100_000):
        new = r + gamma**horizon * p @ q.max(axis=1)
        if np.max(np.abs(new - q)) < tol:
            return new
        q = new
    raise RuntimeError("value iteration did not converge")  # gamma^H < 1: unreachable


def chunk_index(zones) -> np.ndarray:
    """Row of :func:`zone_chunks` for zone sequences ``(..., H)`` (base-3 number)."""
    z = np.asarray(zones)
    h = z.shape[-1]
    return np.sum(z * 3 ** np.arange(h - 1, -1, -1), axis=-1)


def chain_dataset(
    mdp: ChainMDP,
    num_episodes: int,
    episode_length: int,
    *,
    low: float = -1.0,
    high: float = 1.0,
    seed: int = 0,
) -> dict[str, np.ndarray]:
    """Offline data in OGBench's layout: episodes of a behaviour ``a ~ U[low, high]``.

    Episodes start in a uniform non-goal state and last ``episode_length`` steps (a time-out, not
    a terminal; the goal is absorbing). Returns float32 ``observations (N, S)`` (one-hot),
    ``actions (N, 1)``, ``rewards (N,)``, ``masks (N,)``, ``terminals (N,)`` (1 at each episode's
    last step), ``next_observations (N, S)`` and int ``states (N,)``, ``N = episodes * length``.
    """
    if num_episodes < 1 or episode_length < 1:
        raise ValueError(
            f"num_episodes and episode_length must be >= 1, got {num_episodes}, {episode_length}"
        )
    zone_probabilities(low, high)  # validates the range
    rng = np.random.default_rng(seed)
    s_count = mdp.num_states
    states, nexts, actions = [], [], []
    for _ in range(num_episodes):
        s = int(rng.integers(0, s_count - 1))
        for _ in range(episode_length):
            a = rng.uniform(low, high)
            s_next = int(rng.choice(s_count, p=mdp.transitions[action_zone(a), s]))
            states.append(s)
            actions.append(a)
            nexts.append(s_next)
            s = s_next
    states, nexts = np.array(states), np.array(nexts)
    eye = np.eye(s_count, dtype=np.float32)
    terminals = np.zeros(len(states), np.float32)
    terminals[episode_length - 1 :: episode_length] = 1.0
    return {
        "observations": eye[states],
        "actions": np.array(actions, np.float32)[:, None],
        "rewards": mdp.rewards[states].astype(np.float32),
        "masks": mdp.masks[states].astype(np.float32),
        "terminals": terminals,
        "next_observations": eye[nexts],
        "states": states,
    }


def chunk_grid(horizon: int) -> np.ndarray:
    """The representative chunk of every zone sequence, ``(3^H, H)`` actions (zone centres)."""
    return ZONE_ACTIONS[zone_chunks(horizon)]


# --------------------------------------------------------------------------------------------
# Next actions a' for the critic target
# --------------------------------------------------------------------------------------------


def uniform_next_actions(chunk_dim: int, low: float = -1.0, high: float = 1.0) -> NextActions:
    """``a' ~ U[low, high]^D``: evaluate the (state-independent) behaviour policy."""

    def next_actions(key, batch, q_target):
        shape = (batch["next_observations"].shape[0], chunk_dim)
        return jax.random.uniform(key, shape, minval=low, maxval=high)

    return next_actions


def pessimistic_value(q: jax.Array, rho: float) -> jax.Array:
    """``mean_k Q_k - rho * std_k Q_k`` over the leading ensemble axis (population std)."""
    return jnp.mean(q, axis=0) - rho * jnp.std(q, axis=0)


def greedy_next_actions(candidates: jax.Array) -> NextActions:
    """``a' = argmax_c mean_k Q'_k(s', c)`` over fixed candidate chunks ``(C, D)``.

    The max a policy *trained to climb Q* tends toward (QAM's actor climbs the ensemble mean
    ``Qbar``), made exact. The pessimism ``- rho std`` then enters through the value of the
    target at ``a'`` (:func:`~qam_lite.agents.common.critic_target`), as in QAM.
    """
    candidates = jnp.asarray(candidates, jnp.float32)

    def next_actions(key, batch, q_target):
        obs = batch["next_observations"]
        grid = jnp.broadcast_to(candidates, (obs.shape[0], *candidates.shape))  # (B, C, D)
        values = jnp.mean(q_target(obs[:, None, :], grid), axis=0)  # (B, C)
        return candidates[jnp.argmax(values, axis=-1)]

    return next_actions


def batch_next_actions() -> NextActions:
    """``a' = batch['next_actions']``: the dataset's own next chunk (SARSA-style evaluation)."""

    def next_actions(key, batch, q_target):
        return batch["next_actions"]

    return next_actions


def data_chunk_sampler(
    data: dict, batch_size: int, horizon: int, gamma: float
) -> Callable[[jax.Array], Batch]:
    """``sample(key) -> batch`` of chunks (:func:`qam_lite.chunks.chunks_at`) plus
    ``next_actions (B, H * A)``: the data's chunk that starts where each chunk ends.

    ``data`` from :func:`qam_lite.chunks.to_device`. With :func:`batch_next_actions` the critic
    then evaluates the behaviour policy that collected the data. Start indices are uniform over
    ``[0, N - 2H]`` so both chunks exist (a chunk cut by an episode end has weight 0 anyway).
    """
    n = data["observations"].shape[0]
    if n < 2 * horizon:
        raise ValueError(f"need at least 2 * horizon = {2 * horizon} rows, got {n}")

    def sample(key: jax.Array) -> Batch:
        idx = jax.random.randint(key, (batch_size,), 0, n - 2 * horizon + 1)
        batch = chunks.chunks_at(data, idx, horizon, gamma)
        following = chunks.chunks_at(data, idx + horizon, horizon, gamma)
        return {**batch, "next_actions": following["actions"]}

    return sample


# --------------------------------------------------------------------------------------------
# A critic-only learner from the agents' pieces
# --------------------------------------------------------------------------------------------


def critic_config(**overrides: Any) -> Config:
    """A validated :class:`~qam_lite.config.Config` for a small critic (``overrides`` applied).

    Defaults: 10 members of ``(64, 64)``, lr ``1e-3``; everything else the library's defaults
    (batch 256, global gradient-norm clip 1.0, Polyak 0.005, ``rho`` 0.5).
    """
    return Config().replace(**{"critic_hidden": (64, 64), "lr": 1e-3, **overrides})


@dataclass(frozen=True)
class CriticFit:
    """A trained critic ensemble and its training record.

    ``apply(params, obs, actions) -> (K, ...)``; ``params`` the online and ``target`` the
    Polyak-averaged parameters; ``config`` the settings it was trained with; ``history`` maps each
    metric of :func:`~qam_lite.agents.common.critic_update_terms` (plus ``grad_norm`` and, if a
    ``probe`` was given, ``probe``) to one value per step.
    """

    apply: Callable
    params: Any
    target: Any
    config: Config
    history: dict[str, np.ndarray]

    def q(self, obs, actions, *, target: bool = False) -> jax.Array:
        """Ensemble values ``(K, ...)`` of the online (or target) critic."""
        return self.apply(self.target if target else self.params, obs, actions)


def critic_networks(config: Config, obs_dim: int, chunk_dim: int) -> Networks:
    """The agents' critic ensemble (``config.num_critics`` x ``config.critic_hidden``)."""
    return build_networks({"critic": critic_builder(config, obs_dim, chunk_dim)})


#: Config fields :func:`fit_critic` can sweep inside one compiled call.
SWEEPABLE = ("polyak", "rho")


def fit_critic(
    key: jax.Array,
    config: Config,
    obs_dim: int,
    chunk_dim: int,
    sample: Callable[[jax.Array], Batch],
    next_actions: NextActions,
    steps: int,
    *,
    probe: Callable[[Callable, Any], jax.Array] | None = None,
    sweep: dict[str, Any] | None = None,
) -> CriticFit | list[CriticFit]:
    """Train the critic ensemble alone with QAM's critic update, ``steps`` steps in one scan.

    Each step: draw a batch with ``sample(key)``, pick ``a' = next_actions(key, batch, Q')`` with
    the target critic, then one step of :func:`~qam_lite.agents.common.make_update` on
    :func:`~qam_lite.agents.common.critic_update_terms` (target
    ``R + discount * m * (mean - rho std)``, gradient-norm clip, Adam, Polyak at
    ``config.polyak``): the library's critic, without the actor.

    Args:
      probe: ``probe(apply, params) -> array`` recorded after every step (e.g. the critic at a
        few fixed inputs, to follow convergence).
      sweep: ``{field: values}`` for fields in :data:`SWEEPABLE`, all of one length ``n``: train
        ``n`` critics in one compiled, vectorised call, critic ``i`` with ``field = values[i]``;
        all of them share the initialisation and the batches (only the swept setting differs).

    Returns:
      one :class:`CriticFit`, or a list of ``n`` when ``sweep`` is given.
    """
    if not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps must be an integer >= 1, got {steps!r}")
    swept = dict(sweep or {})
    unknown = sorted(set(swept) - set(SWEEPABLE))
    if unknown:
        raise ValueError(f"cannot sweep {unknown}; accepted: {', '.join(SWEEPABLE)}")
    lengths = {len(v) for v in swept.values()}
    if len(lengths) > 1 or 0 in lengths:
        raise ValueError(f"sweep values must be non-empty lists of one length, got {swept}")
    n = lengths.pop() if lengths else 1
    values = {f: [float(v) for v in swept.get(f, [getattr(config, f)] * n)] for f in SWEEPABLE}
    configs = [config.replace(**{f: values[f][i] for f in SWEEPABLE}) for i in range(n)]

    networks = critic_networks(config, obs_dim, chunk_dim)
    apply = networks.apply["critic"]
    optimizer = make_optimizer(config)
    init = make_init(networks, optimizer, ("critic",))

    def train(key, polyak, rho):
        # The swept values are traced numbers; the library reads them as plain arithmetic.
        cfg = dataclasses.replace(config, polyak=polyak, rho=rho)

        def loss_fn(params, targets, batch, key):
            def q_target(obs, actions):
                return apply(jax.lax.stop_gradient(targets["critic"]), obs, actions)

            chosen = next_actions(key, batch, q_target)
            return critic_update_terms(apply, params, targets, batch, chosen, cfg)

        update = make_update(loss_fn, optimizer, polyak, config.action_clip)

        def step(state, key):
            k_batch, k_update = jax.random.split(key)
            state, metrics = update(state, sample(k_batch), k_update)
            if probe is not None:
                metrics = {**metrics, "probe": probe(apply, state.params["critic"])}
            return state, metrics

        k_init, k_steps = jax.random.split(key)
        return jax.lax.scan(step, init(k_init), jax.random.split(k_steps, steps))

    run = jax.jit(jax.vmap(train, in_axes=(None, 0, 0)))
    states, metrics = run(key, jnp.asarray(values["polyak"]), jnp.asarray(values["rho"]))
    fits = []
    for i, cfg in enumerate(configs):
        history = {name: np.asarray(value[i]) for name, value in metrics.items()}
        if not np.all(np.isfinite(history["critic_loss"])):
            bad = int(np.argmin(np.isfinite(history["critic_loss"])))
            raise FloatingPointError(f"critic loss not finite at step {bad} ({cfg}); lower lr")
        params, target = jax.tree.map(lambda x, i=i: x[i], (states.params, states.targets))
        fits.append(CriticFit(apply, params["critic"], target["critic"], cfg, history))
    return fits if sweep else fits[0]


def action_gradient(fit: CriticFit, obs, actions, *, target: bool = True) -> jax.Array:
    """``d/da mean_k Q_k(s, clip(a))`` per row, as QAM's adjoint starts from (``(..., D)``).

    The clip is differentiated too: a coordinate already outside ``[-1, 1]`` gets gradient 0.
    """
    params = fit.target if target else fit.params

    def q_sum(a):
        return jnp.sum(jnp.mean(fit.apply(params, obs, jnp.clip(a, -1.0, 1.0)), axis=0))

    return jax.grad(q_sum)(jnp.asarray(actions, jnp.float32))
