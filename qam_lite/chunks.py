"""Action-chunk sampling from an offline dataset, on the accelerator, inside the compiled update.

A chunk of horizon ``H`` starting at transition ``i`` of a ``qam_lite.data.datasets.load`` dataset::

    observations        s_i
    actions             a_i .. a_{i+H-1} flattened to (H * act_dim,)
    valid[j]            1 if i + j <= e_i, else 0     (e_i = last transition of i's episode)
    rewards             R_H = sum_j valid[j] gamma^j r_{i+j}
    masks               min over valid j of masks[i+j]  (0 once any step reached a task terminal)
    next_observations   next_observations[L],  L = min(i + H - 1, e_i)  (after the last valid step)
    discount            gamma^(sum_j valid[j])

This is the published action-chunking convention: start indices are uniform over ``[0, N - H]``
(the authors' ``sample_sequence``), and a chunk that runs past its episode end still takes its later
actions from the following indices (the next episode) but marks them invalid, so losses weight
them out. The critic target for a chunk is ``R_H + discount * masks * Q'(s', a')``: for a
full chunk ``discount = gamma^H`` (DESIGN.md); for a chunk cut by an episode end (a time-out in
OGBench, not a task terminal) ``s'`` is that episode's final observation and ``discount`` counts
only the steps actually taken, which is the correct n-step target. Using ``gamma^H`` there instead
(as some implementations do) only affects the ``H - 1`` start indices per episode that truncate.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

#: The per-transition arrays of an OGBench dataset that training reads (also the replay rows).
ROW_KEYS = ("observations", "actions", "rewards", "masks", "terminals", "next_observations")


def episode_ends(terminals: jax.Array, size: jax.Array | int | None = None) -> jax.Array:
    """Index of the last transition of each transition's episode.

    Args:
      terminals: ``(N,)``, nonzero at the last transition of each episode.
      size: number of filled rows (a replay buffer filled up to ``size``); rows at or past the
        last terminal end at ``size - 1`` (an episode still running ends where the data ends).

    Returns:
      ``(N,)`` int32 ``e`` with ``e[i] = min{j >= i : terminals[j] != 0}``, capped at ``size - 1``.
    """
    n = terminals.shape[0]
    last = n - 1 if size is None else jnp.asarray(size, jnp.int32) - 1
    idx = jnp.arange(n, dtype=jnp.int32)
    marked = jnp.where(terminals != 0, idx, n - 1)
    # A reverse running minimum finds the next terminal at or after each index in O(N), jittable.
    ends = jax.lax.cummin(marked, reverse=True)
    return jnp.minimum(ends, last).astype(jnp.int32)


def to_device(train: dict) -> dict:
    """Move a dataset dict (from ``datasets.load``) to the default device, as float32.

    Returns a dict with ``observations (N, obs_dim)``, ``actions (N, act_dim)``, ``rewards (N,)``,
    ``masks (N,)``, ``terminals (N,)``, ``next_observations (N, obs_dim)`` as float32 jnp arrays,
    plus ``episode_end (N,)`` int32 (see ``episode_ends``). Other keys are dropped.
    """
    missing = [k for k in ROW_KEYS if k not in train]
    if missing:
        raise KeyError(f"dataset is missing {missing}; expected keys {list(ROW_KEYS)}")
    n = len(train["observations"])
    for k in ROW_KEYS:
        if len(train[k]) != n:
            raise ValueError(f"dataset key {k!r} has {len(train[k])} rows, observations has {n}")
    data = {k: jnp.asarray(np.asarray(train[k], dtype=np.float32)) for k in ROW_KEYS}
    data["episode_end"] = episode_ends(data["terminals"])
    return data


def chunks_at(data: dict, idxs: jax.Array, horizon: int, gamma: float, size=None) -> dict:
    """Chunks starting at the given transition indices (pure, jittable; ``horizon`` static).

    Args:
      data: from ``to_device``.
      idxs: ``(B,)`` int start indices in ``[0, size)``.
      horizon: chunk length ``H``.
      gamma: discount factor.
      size: number of filled rows (default: all ``N``); rows past it are never read.

    Returns:
      dict of ``observations (B, obs_dim)``, ``actions (B, H * act_dim)``, ``rewards (B,)``,
      ``masks (B,)``, ``valid (B, H)``, ``next_observations (B, obs_dim)``, ``discount (B,)``;
      see the module docstring for the exact definitions.
    """
    n = data["observations"].shape[0]
    last = n - 1 if size is None else jnp.asarray(size, jnp.int32) - 1
    return chunks_from(lambda key, rows: data[key][rows], idxs, horizon, gamma, last)


def chunks_from(take, idxs: jax.Array, horizon: int, gamma: float, last) -> dict:
    """:func:`chunks_at` over any row store: ``take(key, rows)`` gathers rows of column ``key``
    (``episode_end`` included); ``last`` is the last row that may be read (an episode still
    running ends there). ``qam_lite.data.replay`` uses it on the dataset joined with online rows."""
    idxs = jnp.asarray(idxs, jnp.int32)
    steps = jnp.arange(horizon, dtype=jnp.int32)
    end = jnp.minimum(take("episode_end", idxs), last)  # (B,)
    raw = idxs[:, None] + steps[None, :]  # (B, H)
    valid = raw <= end[:, None]
    rows = jnp.minimum(raw, last)  # past the data's end: repeat the last row (invalid anyway)

    gammas = gamma ** steps.astype(jnp.float32)
    rewards = jnp.sum(jnp.where(valid, gammas * take("rewards", rows), 0.0), axis=1)
    masks = jnp.min(jnp.where(valid, take("masks", rows), 1.0), axis=1)
    last_valid = jnp.minimum(idxs + horizon - 1, end)
    num_valid = jnp.sum(valid, axis=1)
    actions = take("actions", rows)  # (B, H, act_dim)
    return {
        "observations": take("observations", idxs),
        "actions": actions.reshape(actions.shape[0], -1),
        "rewards": rewards,
        "masks": masks,
        "valid": valid.astype(jnp.float32),
        "next_observations": take("next_observations", last_valid),
        "discount": (gamma ** num_valid.astype(jnp.float32)).astype(jnp.float32),
    }


def start_indices(key: jax.Array, batch_size: int, horizon: int, size) -> jax.Array:
    """``(batch_size,)`` start indices uniform over ``[0, size - horizon]``, as the authors'
    ``sample_sequence`` draws them: every chunk's ``H`` rows exist (a chunk still stops at its
    episode's end, through ``valid``)."""
    return jax.random.randint(key, (batch_size,), 0, size - horizon + 1)


@functools.partial(jax.jit, static_argnames=("batch_size", "horizon"))
def sample_chunks(
    data: dict, key: jax.Array, batch_size: int, horizon: int, gamma: float, size=None
) -> dict:
    """A batch of ``batch_size`` chunks with start indices uniform over ``[0, size - H]``.

    ``size`` defaults to the dataset length; pass the filled size of a growing replay buffer.
    Shapes as in ``chunks_at``. Already jitted; also usable inside a larger jit/scan.
    """
    n = data["observations"].shape[0]
    high = n if size is None else size
    idxs = start_indices(key, batch_size, horizon, high)
    return chunks_at(data, idxs, horizon, gamma, size=size)


def reference_chunks(train: dict, idxs, horizon: int, gamma: float) -> dict:
    """Plain NumPy reading of the chunk definition, one index at a time (for tests)."""
    obs, act = np.asarray(train["observations"]), np.asarray(train["actions"])
    rew, msk = np.asarray(train["rewards"]), np.asarray(train["masks"])
    term, nxt = np.asarray(train["terminals"]), np.asarray(train["next_observations"])
    n = len(obs)
    out = {k: [] for k in ("observations", "actions", "rewards", "masks", "valid")}
    out.update(next_observations=[], discount=[])
    for i in np.asarray(idxs):
        ret, mask, taken, ended = 0.0, 1.0, 0, False
        chunk, valid = [], []
        for j in range(horizon):
            row = min(i + j, n - 1)
            chunk.append(act[row])
            valid.append(0.0 if ended else 1.0)
            if not ended:
                ret += gamma**j * rew[i + j]
                mask = min(mask, msk[i + j])
                taken = j + 1
                ended = bool(term[i + j]) or i + j == n - 1
        out["observations"].append(obs[i])
        out["actions"].append(np.concatenate(chunk))
        out["rewards"].append(ret)
        out["masks"].append(mask)
        out["valid"].append(valid)
        out["next_observations"].append(nxt[i + taken - 1])
        out["discount"].append(gamma**taken)
    return {k: np.asarray(v, dtype=np.float32) for k, v in out.items()}
