"""The online phase's replay buffer: the dataset, then each seed's online transitions in a ring.

Rows are addressed as one array of ``N + capacity`` rows: ``0..N-1`` the offline dataset (on the
device once, shared by every seed), ``N..N+capacity-1`` seed ``s``'s online transitions, a ring
of ``capacity = online_buffer_size`` rows. The authors' buffer is the dataset followed by
``online_steps`` rows, so it never fills; here, once the ring is full, the *oldest online* row is
overwritten and the dataset is always kept. Seeds step in lockstep, one transition each per
environment step, so every seed's ring has the same fill and write position.

Chunks are read with :func:`qam_lite.chunks.chunks_from` on this joined view, start indices
uniform over ``[0, filled - H]``. Every row carries ``episode_end``, the last row of its episode
that is in the buffer:

* the dataset's come from its ``terminals`` (``chunks.to_device``);
* the running episode's rows all point at its newest row, updated at each write (so a chunk
  never reads past the data collected so far);
* a ring write position wrapping to the ring's start cuts the running episode there (rows before
  the wrap end at the ring's last row): a chunk stops at the cut, like an OGBench time-out, and
  bootstraps from the cut row's ``next_observation``, which is the correct n-step target;
* overwriting proceeds in order, so an older episode's surviving rows still end at a row that
  survives.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite.chunks import ROW_KEYS, chunks_from, start_indices


def empty_rings(num_seeds: int, capacity: int, obs_dim: int, action_dim: int) -> dict:
    """Zeroed rings ``(num_seeds, capacity, ...)`` for every row key, plus ``episode_end``."""
    shapes = {
        "observations": (obs_dim,),
        "actions": (action_dim,),
        "next_observations": (obs_dim,),
    }
    rings = {k: jnp.zeros((num_seeds, capacity, *shapes.get(k, ())), jnp.float32) for k in ROW_KEYS}
    rings["episode_end"] = jnp.zeros((num_seeds, capacity), jnp.int32)
    return rings


def rings_from_host(rows: dict, capacity: int) -> dict:
    """Rings holding saved rows ``(num_seeds, filled, ...)`` (:func:`to_host`) in their first
    ``filled`` positions."""
    out = {}
    for k, v in rows.items():
        v = np.asarray(v)
        pad = np.zeros((v.shape[0], capacity - v.shape[1], *v.shape[2:]), v.dtype)
        out[k] = jnp.asarray(np.concatenate([v, pad], axis=1))
    return out


def to_host(rings: dict, filled_online: int) -> dict:
    """The filled part of the rings as NumPy arrays (what a checkpoint saves)."""
    return {k: np.asarray(v[:, :filled_online]) for k, v in rings.items()}


def _add(ring: dict, row: dict, position, index, segment_start):
    """One seed's ring with ``row`` written at ring ``position`` (absolute row ``index``); the
    running episode's rows (absolute ``segment_start..index``) now end at ``index``."""
    out = {k: ring[k].at[position].set(row[k].astype(jnp.float32)) for k in ROW_KEYS}
    absolute = index - position + jnp.arange(ring["episode_end"].shape[0], dtype=jnp.int32)
    running = (absolute >= segment_start) & (absolute <= index)
    out["episode_end"] = jnp.where(running, index, ring["episode_end"]).astype(jnp.int32)
    return out


@functools.partial(jax.jit, donate_argnums=(0,))
def add(rings: dict, rows: dict, position, index, segment_starts) -> dict:
    """Write every seed's row ``rows[k] (num_seeds, ...)`` at ring ``position``.

    ``index = N + position`` is the rows' absolute index; ``segment_starts (num_seeds,)`` the
    absolute index where each seed's running episode (or its part since the last wrap) starts.
    The rings are donated.
    """
    return jax.vmap(_add, in_axes=(0, 0, None, None, 0))(
        rings, rows, position, index, segment_starts
    )


def joined(dataset: dict, ring: dict):
    """``take(key, rows)`` reading absolute rows of ``dataset`` (``chunks.to_device``) followed
    by one seed's ``ring`` (see :func:`qam_lite.chunks.chunks_from`)."""
    n = dataset["observations"].shape[0]
    capacity = ring["observations"].shape[0]

    def take(key, rows):
        in_data = rows < n
        old = dataset[key][jnp.clip(rows, 0, n - 1)]
        new = ring[key][jnp.clip(rows - n, 0, capacity - 1)]
        shape = in_data.shape + (1,) * (old.ndim - in_data.ndim)
        return jnp.where(in_data.reshape(shape), old, new)

    return take


def sample(dataset: dict, ring: dict, key, batch_size: int, horizon: int, gamma: float, filled):
    """A batch of chunks from one seed's buffer (``dataset`` joined with its ``ring``), start
    indices uniform over ``[0, filled - horizon]``; pure, jittable. Shapes as ``chunks_at``."""
    idxs = start_indices(key, batch_size, horizon, filled)
    last = jnp.asarray(filled, jnp.int32) - 1
    return chunks_from(joined(dataset, ring), idxs, horizon, gamma, last)
