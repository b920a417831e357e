"""The online replay buffer: per-seed rings after the dataset, wrapping, chunk validity."""

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite.chunks import chunks_from, to_device
from qam_lite.data import replay

GAMMA = 0.9
H = 3


def _dataset(n=6):
    return {
        "observations": np.arange(n, dtype=np.float32)[:, None],
        "actions": np.arange(n, dtype=np.float32)[:, None],
        "rewards": np.ones(n, np.float32),
        "masks": np.ones(n, np.float32),
        "terminals": np.array([0, 0, 1, 0, 0, 1], np.float32)[:n],
        "next_observations": np.arange(1, n + 1, dtype=np.float32)[:, None],
    }


def _fill(lengths, capacity, n_data):
    """Write episodes of the given lengths (the last one still running) into one seed's ring,
    the way the training loop does; also return, for the reference, each ring position's
    (episode, write time)."""
    rings = replay.empty_rings(1, capacity, 1, 1)
    segment = n_data
    written = {}
    t = 0
    for episode, length in enumerate(lengths):
        for j in range(length):
            position = t % capacity
            if position == 0:
                segment = n_data
            value = 100.0 * (episode + 1) + j
            done = j == length - 1 and episode < len(lengths) - 1
            row = {
                "observations": [[value]],
                "actions": [[value]],
                "rewards": [1.0],
                "masks": [1.0],
                "terminals": [float(done)],
                "next_observations": [[value + 0.5]],
            }
            row = {k: jnp.asarray(v, jnp.float32) for k, v in row.items()}
            index = n_data + position
            rings = replay.add(rings, row, position, index, jnp.asarray([segment]))
            written[position] = (episode, t)
            t += 1
            if done:
                segment = index + 1
    return jax.tree.map(lambda x: x[0], rings), written, t


def _reference_valid(start, written, n_data, capacity, filled, newest_time, data_ends):
    """valid[j] of a chunk at absolute ``start`` from first principles: row start + j exists,
    was written right after row start + j - 1 in the same episode (online), or belongs to the
    same dataset episode."""
    valid = []
    for j in range(H):
        row = start + j
        if j == 0:
            ok = True
        elif start < n_data:
            ok = row < n_data and row <= data_ends[start]
        else:
            p0, p = start - n_data, row - n_data
            ok = (
                row < filled
                and p < capacity
                and p in written
                and written[p][0] == written[p0][0]
                and written[p][1] == written[p0][1] + j
                and written[p][1] <= newest_time
            )
        valid.append(float(ok and (not valid or valid[-1] == 1.0)))
    return valid


def test_chunks_from_the_joined_buffer_match_first_principles_across_a_wrap():
    n_data, capacity = 6, 7
    data = to_device(_dataset(n_data))
    # Episodes of 4, 5 and (running) 6 rows: 15 writes into 7 positions wrap twice, cutting
    # the running episode at the ring's end.
    ring, written, total = _fill([4, 5, 6], capacity, n_data)
    filled = n_data + min(total, capacity)
    data_ends = np.asarray(data["episode_end"])
    starts = jnp.arange(filled - H + 1)
    got = chunks_from(replay.joined(data, ring), starts, H, GAMMA, filled - 1)
    for s in np.asarray(starts):
        want = _reference_valid(int(s), written, n_data, capacity, filled, total - 1, data_ends)
        np.testing.assert_array_equal(np.asarray(got["valid"][s]), want, err_msg=f"start {s}")
        k = int(sum(want))
        np.testing.assert_allclose(got["discount"][s], GAMMA**k, rtol=1e-6)
        np.testing.assert_allclose(got["rewards"][s], sum(GAMMA**j for j in range(k)), rtol=1e-6)
    # The newest row (written last) is at ring position (total - 1) % capacity; a chunk there
    # is a single valid step, bootstrapping from its next observation.
    newest = n_data + (total - 1) % capacity
    if newest <= filled - H:
        assert got["valid"][newest].tolist() == [1.0, 0.0, 0.0]


def test_sample_draws_starts_over_filled_minus_h_and_only_filled_rows():
    n_data, capacity = 6, 10
    data = to_device(_dataset(n_data))
    ring, _, total = _fill([4], capacity, n_data)  # 4 online rows, episode still running
    filled = n_data + total
    batch = jax.jit(
        lambda k: replay.sample(data, ring, k, 4000, H, GAMMA, jnp.int32(filled)),
    )(jax.random.key(0))
    obs = np.asarray(batch["observations"])[:, 0]
    allowed = set(range(n_data)) | {100.0, 101.0}  # starts 0..filled-H = 0..7
    assert set(np.unique(obs)) == allowed
    # Nothing past the filled rows is ever read as a valid action (zeros there).
    acts = np.asarray(batch["actions"]).reshape(-1, H)
    valid = np.asarray(batch["valid"]) > 0
    assert np.all(acts[valid & (obs[:, None] >= 100)] >= 100)


def test_host_round_trip_restores_the_rings():
    ring = replay.empty_rings(2, 5, 3, 2)
    ring = jax.tree.map(lambda x: x + jnp.arange(x.size, dtype=x.dtype).reshape(x.shape), ring)
    host = replay.to_host(ring, 3)
    back = replay.rings_from_host(host, 5)
    for k in ring:
        np.testing.assert_array_equal(np.asarray(back[k])[:, :3], np.asarray(ring[k])[:, :3])
        assert back[k].dtype == ring[k].dtype and back[k].shape == ring[k].shape
