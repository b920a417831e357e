"""The data path, from the ``.npz`` file to the batch an agent sees, equals the published one.

The references below are a plain NumPy transcription of what the authors' code
(``ColinQiyangLi/qam``) does with a single-task OGBench name, read at its HEAD:

* ``main.py:99`` -> ``envs/env_utils.py:105``: ``ogbench.make_env_and_datasets(env_name)`` with
  OGBench's defaults: the *regular* (not compact) dataset, float32 observations, keys
  ``observations, actions, next_observations, terminals, rewards, masks`` (``qpos`` etc. read
  for the relabelling, then dropped). No observation normalisation, no reward scaling.
* OGBench (installed 1.2.2, ``utils.load_dataset``): each episode's final observation is no start
  state; ``next_observations`` is the following row; ``terminals`` is 1 at each episode's last
  *transition* only (an episode boundary, never a success). ``relabel_utils.relabel_dataset``:
  reward ``= #solved sub-goals - #sub-goals`` and mask ``= 1 - all solved``, both from the
  ``qpos`` / ``button_states`` of the *start* state ``s`` of each row.
* ``envs/env_utils.py:138-146``: dataset actions clipped to ``±(1 - 1e-5)``.
* ``main.py:127-132`` (``--sparse``, on for puzzle and scene in ``experiments/reproduce.py``):
  ``r' = -1[r != 0]`` per transition, *before* chunking.
* ``main.py:223`` -> ``utils/datasets.py:45-83`` (``sample_sequence``): start indices uniform over
  ``[0, N - H]``; ``valid[j] = 1`` until a terminal has been passed; ``R_H`` sums
  ``gamma^j r_{i+j}`` over valid steps (it does not stop at a success); the mask is the minimum of
  the valid steps' masks; ``s'`` is the next observation of the last valid step.
* ``agents/qam.py:26-39``: the agent reads ``actions`` flattened to ``(B, H * A)``,
  ``rewards[..., -1]``, ``masks[..., -1]``, ``next_observations[..., -1, :]``, ``valid[..., -1]``
  and bootstraps with ``gamma ** H``.

Our side is the training path itself: ``qam_lite.training.train.load_data`` (which calls
``datasets.load`` and applies the config's sparse rewards), ``chunks.to_device`` and the
compiled sampler of ``qam_lite.training.update``. The data are a few hundred rows generated with
``qam_lite.data.generate``, with some rows' simulator state overwritten so that the task is solved
there (runs of successes, one at an episode's last transition, one at an episode's first row):
relabelling only reads ``qpos`` and ``button_states``, so this exercises masks and chunks that
reach a success without simulating a solving policy.
"""

from __future__ import annotations

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite import chunks
from qam_lite.agents import common
from qam_lite.data import generate
from qam_lite.training import train as training
from qam_lite.training import update
from qam_lite.training.settings import make_config

EPISODES, LENGTH = 2, 120  # file rows: episode 0 is rows 0..119, episode 1 rows 120..239
SOLVED = [*range(30, 38), 52, 117, 118, 119, 120, *range(200, 204)]  # file rows set solved
PARTLY = [*range(60, 65)]  # some sub-goals solved, not all (dense reward differs, sparse -1)
ACTION_EPS = 1e-5
TASKS = {
    "scene-play": "scene-play-singletask-task1-v0",
    "puzzle-3x3-play": "puzzle-3x3-play-singletask-task1-v0",
}


# ---- the task's goal, as OGBench's relabelling reads it from the environment ----


def task_goal(domain: str) -> dict:
    env = gymnasium.make(TASKS[domain].replace("-play", ""))
    env.reset()  # sets the single task's goal
    u = env.unwrapped
    goal = {"buttons": u._target_button_states.copy()}
    if domain == "scene-play":
        drawer = 14 + u._num_cubes * 7 + u._num_buttons  # qpos: arm (14), cubes (7 each), buttons
        goal.update(
            cube_xyz=u._data.mocap_pos.copy(),  # (num_cubes, 3)
            num_cubes=u._num_cubes,
            drawer_index=drawer,
            drawer=u._target_drawer_pos,
            window=u._target_window_pos,
        )
    env.close()
    return goal


def set_solved(domain, goal, qpos, buttons, rows, partly=False):
    """Overwrite the simulator state of ``rows`` so the task is solved there (``partly``: only
    the buttons are right, and for puzzle one of them is flipped)."""
    buttons[rows] = goal["buttons"]
    if domain == "puzzle-3x3-play":
        if partly:
            buttons[rows, 0] ^= 1
        return
    if partly:
        return
    for c in range(goal["num_cubes"]):
        qpos[rows, 14 + 7 * c : 17 + 7 * c] = goal["cube_xyz"][c]
    qpos[rows, goal["drawer_index"]] = goal["drawer"]
    qpos[rows, goal["drawer_index"] + 1] = goal["window"]


# ---- the published pipeline, transcribed ----


def authors_rows(path) -> dict:
    """OGBench's regular (non-compact) dataset: per episode, the start states are all rows but
    the last, each paired with the row after it; ``terminals`` marks the last transition."""
    f = np.load(path)
    ends = np.flatnonzero(f["terminals"])
    starts, follows, terminals = [], [], []
    for first, final in zip(np.r_[0, ends[:-1] + 1], ends, strict=True):
        starts += range(first, final)  # the final observation is never a start state
        follows += range(first + 1, final + 1)
        terminals += [0.0] * (final - first - 1) + [1.0]
    return {
        "observations": f["observations"].astype(np.float32)[starts],
        "actions": f["actions"].astype(np.float32)[starts],
        "next_observations": f["observations"].astype(np.float32)[follows],
        "terminals": np.asarray(terminals, np.float32),
        "qpos": f["qpos"][starts],  # the state of the *start* observation s
        "button_states": f["button_states"][starts],
    }


def authors_subgoals(domain, goal, qpos, buttons) -> np.ndarray:
    """``(N, G)`` booleans: which of the task's sub-goals row ``s`` satisfies."""
    if domain == "puzzle-3x3-play":
        return buttons == goal["buttons"]
    cubes = np.stack([qpos[:, 14 + 7 * c : 17 + 7 * c] for c in range(goal["num_cubes"])], 1)
    cube_ok = np.linalg.norm(cubes - goal["cube_xyz"], axis=-1) <= 0.04
    drawer_ok = np.abs(qpos[:, goal["drawer_index"]] - goal["drawer"]) <= 0.04
    window_ok = np.abs(qpos[:, goal["drawer_index"] + 1] - goal["window"]) <= 0.04
    return np.concatenate(
        [cube_ok, buttons == goal["buttons"], drawer_ok[:, None], window_ok[:, None]], axis=1
    )


def authors_dataset(path, domain, goal) -> dict:
    """What the authors' ``main.py`` trains on: relabelled, actions clipped, sparse rewards."""
    d = authors_rows(path)
    subgoals = authors_subgoals(domain, goal, d.pop("qpos"), d.pop("button_states"))
    dense = subgoals.sum(axis=1) - subgoals.shape[1]
    d["masks"] = 1.0 - subgoals.all(axis=1)
    d["rewards"] = np.where(dense != 0, -1.0, 0.0)  # --sparse: per transition, before chunking
    d["actions"] = np.clip(d["actions"], -1 + ACTION_EPS, 1 - ACTION_EPS)
    return d


def authors_batch(d, idxs, horizon, gamma) -> dict:
    """``sample_sequence`` for the given start indices, reduced to what ``agents/qam.py`` reads."""
    out = {k: [] for k in ("observations", "actions", "rewards", "masks", "valid")}
    out["next_observations"] = []
    for i in idxs:
        ret, mask, crossed, last = 0.0, 1.0, False, i
        valid, actions = [], []
        for j in range(horizon):
            valid.append(0.0 if crossed else 1.0)
            actions.append(d["actions"][i + j])  # taken even past the episode end
            if not crossed:
                ret += gamma**j * d["rewards"][i + j]  # continues after a success
                mask = min(mask, d["masks"][i + j])
                last = i + j
            crossed = crossed or d["terminals"][i + j] > 0
        out["observations"].append(d["observations"][i])
        out["actions"].append(np.concatenate(actions))
        out["rewards"].append(ret)
        out["masks"].append(mask)
        out["valid"].append(valid)
        out["next_observations"].append(d["next_observations"][last])
    return {k: np.asarray(v) for k, v in out.items()}


# ---- data ----


@pytest.fixture(scope="module", params=sorted(TASKS))
def case(request, tmp_path_factory):
    domain = request.param
    root = tmp_path_factory.mktemp(domain)
    train_path, val_path = generate.generate(
        domain, EPISODES, root, episode_length=LENGTH, workers=1, progress=False
    )
    goal = task_goal(domain)
    for path in (train_path, val_path):
        with np.load(path) as f:
            arrays = {k: f[k].copy() for k in f.files}
        n = len(arrays["observations"])
        set_solved(
            domain, goal, arrays["qpos"], arrays["button_states"], [r for r in SOLVED if r < n]
        )
        partly = [r for r in PARTLY if r < n]
        set_solved(domain, goal, arrays["qpos"], arrays["button_states"], partly, partly=True)
        np.savez(path, **arrays)
    config = make_config(TASKS[domain], "qam", dataset_dir=str(root))
    ours, _, _ = training.load_data(config)
    return {
        "domain": domain,
        "config": config,
        "ours": ours,
        "authors": authors_dataset(train_path, domain, goal),
    }


def ours_at(case, idxs):
    c = case["config"]
    return chunks.chunks_at(chunks.to_device(case["ours"]), jnp.asarray(idxs), c.horizon, c.gamma)


# ---- tests ----


def test_the_transcription_sees_successes(case):
    """The fixture is what it claims: solved rows, partly solved rows, and chunks reaching them."""
    a = case["authors"]
    assert 0 < (a["masks"] == 0).sum() < len(a["masks"])
    assert set(np.unique(a["rewards"])) == {-1.0, 0.0}
    # One start state dropped per episode: file row r of episode e is row r - e.
    solved = [r - r // LENGTH for r in SOLVED if (r + 1) % LENGTH]
    np.testing.assert_array_equal(np.flatnonzero(a["masks"] == 0), solved)


def test_rows_equal_the_authors(case):
    """Points 1-4 and 6: keys, dtypes, next observations, episode ends, relabelling from ``s``
    (a relabelling from ``s'`` would shift every mask by one row), the sparse transform, and the
    action clipping; no normalisation or scaling anywhere."""
    ours, want = case["ours"], case["authors"]
    assert set(ours) == set(want)
    for k, v in want.items():
        assert ours[k].dtype == np.float32, k
        np.testing.assert_array_equal(ours[k], v.astype(np.float32), err_msg=k)
    # Episodes end only at the file's episode boundaries, never at a success.
    assert ours["terminals"].sum() == EPISODES
    assert np.abs(ours["actions"]).max() == np.float32(1 - ACTION_EPS)


def test_chunks_at_every_start_equal_the_authors(case):
    """Point 5: every start index the authors may draw, including chunks that cross an episode
    end and chunks that reach a success (mask 0, return still summed to the chunk's end)."""
    c = case["config"]
    n = len(case["authors"]["observations"])
    idxs = np.arange(n - c.horizon + 1)
    got = ours_at(case, idxs)
    want = authors_batch(case["authors"], idxs, c.horizon, c.gamma)
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-6, atol=1e-6, err_msg=k)
    # The cases that matter are really there.
    full = want["valid"][:, -1] == 1
    assert (full & (want["masks"] == 0)).any() and (~full).any()
    assert (full & (want["masks"] == 0) & (want["rewards"] < 0)).any()  # solved mid-chunk


def test_training_sampler_draws_the_authors_start_range(case):
    """The compiled sampler of the training loop: starts uniform over ``[0, N - H]`` (both ends
    reached), and its batch is the authors' batch at those starts."""
    c = case["config"].replace(batch_size=4096)
    data = chunks.to_device(case["ours"])
    n = len(case["authors"]["observations"])
    key = jax.random.key(0)
    idxs = np.asarray(chunks.start_indices(key, c.batch_size, c.horizon, n))
    assert idxs.min() == 0 and idxs.max() == n - c.horizon
    got = update.chunk_sampler(c)(data, key)
    want = authors_batch(case["authors"], idxs, c.horizon, c.gamma)
    for k, v in want.items():
        np.testing.assert_allclose(np.asarray(got[k]), v, rtol=1e-6, atol=1e-6, err_msg=k)


def test_bootstrap_discount_differs_only_where_the_loss_ignores_it(case):
    """A documented difference (``qam_lite/chunks.py`` docstring): our batch carries
    ``discount = gamma ** (valid steps)``, the authors always use ``gamma ** H``. They differ only
    for chunks cut by an episode end, whose TD error both weight by ``valid[..., -1] = 0``: the
    critic loss on our batch equals the authors' formula on their batch."""
    c = case["config"]
    n = len(case["authors"]["observations"])
    idxs = np.arange(n - c.horizon + 1)
    got = ours_at(case, idxs)
    want = authors_batch(case["authors"], idxs, c.horizon, c.gamma)
    full = want["valid"][:, -1] == 1
    discount = np.asarray(got["discount"])
    np.testing.assert_allclose(discount[full], c.gamma**c.horizon, rtol=1e-6)
    assert (discount[~full] > c.gamma**c.horizon).all()

    k = 3  # a toy linear critic ensemble, different for the online and the target copy
    obs_dim, chunk_dim = want["observations"].shape[1], want["actions"].shape[1]
    rng = np.random.default_rng(0)

    def qf(p, obs, act):
        return jnp.einsum("kd,bd->kb", p, jnp.concatenate([obs, act], axis=-1))

    online, target = (jnp.asarray(rng.normal(size=(k, obs_dim + chunk_dim))) for _ in range(2))
    next_actions = jnp.asarray(rng.uniform(-1, 1, size=(len(idxs), chunk_dim)))
    ours_loss, _ = common.critic_update_terms(
        qf, {"critic": online}, {"critic": target}, got, next_actions, c
    )
    b = {key: jnp.asarray(v) for key, v in want.items()}
    next_qs = qf(target, b["next_observations"], next_actions)
    y = b["rewards"] + c.gamma**c.horizon * b["masks"] * (
        next_qs.mean(axis=0) - c.rho * next_qs.std(axis=0)
    )
    authors_loss = jnp.mean(
        jnp.square(qf(online, b["observations"], b["actions"]) - y) * b["valid"][:, -1]
    )
    np.testing.assert_allclose(float(ours_loss), float(authors_loss), rtol=1e-5)
