"""Action-chunk sampling: the JAX sampler against a plain NumPy reading of the definition."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite import chunks

GAMMA = 0.9


def toy_dataset(lengths=(4, 3, 5), obs_dim=2, act_dim=3, seed=0):
    """Episodes of the given lengths, every field distinct so any index mix-up shows."""
    rng = np.random.default_rng(seed)
    n = sum(lengths)
    terminals = np.zeros(n, np.float32)
    terminals[np.cumsum(lengths) - 1] = 1.0
    masks = np.ones(n, np.float32)
    masks[[2, 9]] = 0.0  # task terminals inside episodes 1 and 3
    return {
        "observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
        "actions": rng.uniform(-1, 1, size=(n, act_dim)).astype(np.float32),
        "rewards": -np.arange(1, n + 1, dtype=np.float32),  # distinct per index
        "masks": masks,
        "terminals": terminals,
        "next_observations": rng.normal(size=(n, obs_dim)).astype(np.float32),
    }


def test_episode_ends():
    data = chunks.to_device(toy_dataset())
    np.testing.assert_array_equal(data["episode_end"], [3, 3, 3, 3, 6, 6, 6, 11, 11, 11, 11, 11])
    # A buffer filled to 9 rows: the running episode ends at the last filled row.
    ends = chunks.episode_ends(data["terminals"].at[11].set(0.0), size=9)
    np.testing.assert_array_equal(ends[:9], [3, 3, 3, 3, 6, 6, 6, 8, 8])


@pytest.mark.parametrize("horizon", [1, 2, 5])
def test_jax_matches_numpy_reference(horizon):
    train = toy_dataset()
    data = chunks.to_device(train)
    idxs = np.arange(len(train["observations"]))  # every start, incl. crossings and the end
    got = jax.jit(chunks.chunks_at, static_argnums=(2,))(data, idxs, horizon, GAMMA)
    want = chunks.reference_chunks(train, idxs, horizon, GAMMA)
    assert set(got) == set(want)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-6, err_msg=k)


def test_hand_checked_chunk_crossing_an_episode_end():
    train = toy_dataset()
    got = chunks.chunks_at(chunks.to_device(train), jnp.array([2, 10]), 3, GAMMA)
    # Start 2 (episode 0 ends at 3): steps 2, 3 valid; step 4 is episode 1, filled but invalid.
    np.testing.assert_array_equal(got["valid"][0], [1, 1, 0])
    np.testing.assert_allclose(got["rewards"][0], -3 + GAMMA * -4, rtol=1e-6)
    assert got["masks"][0] == 0.0  # index 2 is a task terminal
    np.testing.assert_allclose(got["next_observations"][0], train["next_observations"][3])
    np.testing.assert_allclose(got["discount"][0], GAMMA**2, rtol=1e-6)
    np.testing.assert_allclose(got["actions"][0], train["actions"][2:5].reshape(-1))
    # Start 10 runs off the dataset end: the last row is repeated and marked invalid.
    np.testing.assert_array_equal(got["valid"][1], [1, 1, 0])
    np.testing.assert_allclose(got["actions"][1][6:], train["actions"][11])
    np.testing.assert_allclose(got["next_observations"][1], train["next_observations"][11])
    assert got["masks"][1] == 1.0


def test_horizon_one_is_plain_transitions():
    train = toy_dataset()
    idxs = jnp.arange(12)
    got = chunks.chunks_at(chunks.to_device(train), idxs, 1, GAMMA)
    for k in ("observations", "actions", "rewards", "masks", "next_observations"):
        np.testing.assert_allclose(got[k], train[k], err_msg=k)
    np.testing.assert_allclose(got["discount"], GAMMA)
    np.testing.assert_array_equal(got["valid"], 1.0)


def test_sample_chunks_uniform_jittable_and_deterministic():
    train = toy_dataset()
    data = chunks.to_device(train)
    batch = chunks.sample_chunks(data, jax.random.key(0), 6000, 5, GAMMA)
    assert batch["actions"].shape == (6000, 15) and batch["valid"].shape == (6000, 5)
    assert batch["observations"].shape == (6000, 2) and batch["rewards"].shape == (6000,)
    # Recover start indices from the (distinct) observations: uniform over rows 0..N-H = 0..7
    # (the authors' sample_sequence: every chunk's H rows exist), never 8..11.
    starts = np.argmin(
        np.abs(np.asarray(batch["observations"])[:, None, 0] - train["observations"][None, :, 0]),
        axis=1,
    )
    counts = np.bincount(starts, minlength=12)
    assert not counts[8:].any(), counts
    expected = 6000 / 8
    chi2 = np.sum((counts[:8] - expected) ** 2 / expected)
    assert chi2 < 24.3, counts  # 99.9% quantile of chi^2 with 7 dof
    again = chunks.sample_chunks(data, jax.random.key(0), 6000, 5, GAMMA)
    np.testing.assert_array_equal(batch["actions"], again["actions"])


def test_size_limits_sampling_to_filled_rows():
    train = toy_dataset()
    data = chunks.to_device(train)
    batch = chunks.sample_chunks(data, jax.random.key(1), 512, 2, GAMMA, size=6)
    sampled = np.asarray(batch["observations"])
    allowed = train["observations"][:5]  # starts 0..size-H = 0..4
    assert all(np.any(np.all(np.isclose(s, allowed), axis=1)) for s in sampled)
    # A buffer filled to 6 rows behaves exactly like a dataset of those 6 rows.
    head = {k: v[:6] for k, v in train.items()}
    got = chunks.chunks_at(data, jnp.arange(6), 3, GAMMA, size=6)
    want = chunks.reference_chunks(head, np.arange(6), 3, GAMMA)
    for k in want:
        np.testing.assert_allclose(np.asarray(got[k]), want[k], rtol=1e-6, err_msg=k)


def test_to_device_rejects_bad_data():
    train = toy_dataset()
    del train["masks"]
    with pytest.raises(KeyError, match="masks"):
        chunks.to_device(train)
    train = toy_dataset()
    train["rewards"] = train["rewards"][:-1]
    with pytest.raises(ValueError, match="rewards"):
        chunks.to_device(train)
