"""Local dataset generation with OGBench's oracles: files OGBench loads, determinism, oracles work.

Kept short (a few episodes of tens of steps); the whole file runs in well under a minute.
"""

import numpy as np
import ogbench
import pytest

from qam_lite import datasets, generate


@pytest.fixture(scope="module")
def cube_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("cube")
    generate.generate("cube-single-play-v0", 2, root, episode_length=100, workers=1, progress=False)
    return root


def test_cube_files_load_through_ogbench(cube_dir):
    train_path, val_path = datasets.dataset_paths("cube-single-play-v0", cube_dir)
    raw = np.load(train_path)
    assert raw["observations"].shape == (200, 28) and raw["actions"].shape == (200, 5)
    assert raw["qpos"].shape[0] == raw["qvel"].shape[0] == 200
    np.testing.assert_array_equal(np.flatnonzero(raw["terminals"]), [99, 199])
    assert np.load(val_path)["observations"].shape == (100, 28)  # max(1, round(0.1 * 2)) episodes
    # OGBench's own loader with a single-task name relabels rewards from qpos.
    _, train, val = ogbench.make_env_and_datasets(
        "cube-single-play-singletask-task1-v0", dataset_dir=str(cube_dir)
    )
    assert train["observations"].shape == (198, 28)  # each episode's final state is dropped
    assert set(np.unique(train["rewards"])) <= {-1.0, 0.0} and train["masks"].shape == (198,)
    meta = generate.read_provenance(train_path)
    assert meta["episodes"] == 2 and meta["seed"] == 0 and meta["split"] == "train"
    assert meta["noise"] == 0.1 and meta["noise_smoothing"] == 0.5
    assert meta["env_kwargs"] == {"terminate_at_goal": False, "mode": "data_collection"}


def test_cube_oracle_lifts_the_cube(cube_dir):
    qpos = np.load(datasets.dataset_paths("cube-single-play-v0", cube_dir)[0])["qpos"]
    cube_z = qpos[:100, 16]  # qpos[14:17] is the cube's position (OGBench's relabelling layout)
    assert cube_z[0] < 0.03  # resting on the table (half-size 0.02)
    assert cube_z.max() > 0.06  # grasped and lifted within 100 steps (5 s)


def test_dataset_qpos_matches_observation_rows(cube_dir):
    raw = np.load(datasets.dataset_paths("cube-single-play-v0", cube_dir)[0])
    # The observation stores the cube position as (xyz - (0.425, 0, 0)) * 10 at index 19:22.
    cube_from_obs = raw["observations"][:, 19:22] / 10 + np.array([0.425, 0.0, 0.0])
    np.testing.assert_allclose(cube_from_obs, raw["qpos"][:, 14:17], atol=1e-5)


def test_pointmaze_deterministic_and_independent_of_workers(tmp_path):
    kw = dict(episode_length=40, progress=False)
    a = generate.generate("pointmaze-medium-navigate-v0", 12, tmp_path / "a", workers=1, **kw)
    b = generate.generate("pointmaze-medium-navigate-v0", 12, tmp_path / "b", workers=2, **kw)
    c = generate.generate("pointmaze-medium-navigate-v0", 12, tmp_path / "c", seed=1, **kw)
    for pa, pb in zip(a, b, strict=True):
        fa, fb = np.load(pa), np.load(pb)
        for k in ("observations", "actions", "qpos", "qvel", "terminals"):
            np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
    assert not np.allclose(np.load(a[0])["actions"], np.load(c[0])["actions"])
    _, train, _ = ogbench.make_env_and_datasets(
        "pointmaze-medium-navigate-singletask-task1-v0", dataset_dir=str(tmp_path / "a")
    )
    assert train["observations"].shape == (12 * 39, 2) and train["rewards"].shape == (12 * 39,)


def test_maze_oracle_reaches_a_far_goal_without_noise(monkeypatch):
    import gymnasium

    monkeypatch.setattr(generate, "MAZE_NOISE", 0.0)
    env = gymnasium.make("pointmaze-medium-v0", terminate_at_goal=False, max_episode_steps=10**4)
    env.reset(seed=0, options={"task_info": {"init_ij": (1, 1), "goal_ij": (6, 6)}})
    u, rng = env.unwrapped, np.random.RandomState(0)
    steps = 0
    while not u.compute_success() and steps < 600:
        env.step(generate.maze_oracle_action(env, rng))
        steps += 1
    assert u.compute_success(), f"not at the goal after {steps} steps: {u.get_xy()}"
    assert steps > 50  # the goal is several cells away: it really travelled


def test_junction_cells_exclude_straight_corridors():
    maze = np.array([[1, 1, 1, 1, 1], [1, 0, 0, 0, 1], [1, 0, 1, 1, 1], [1, 1, 1, 1, 1]])
    # (1, 2) is the middle of a horizontal corridor; (1, 1) a corner, (1, 3) and (2, 1) dead ends.
    assert generate.junction_cells(maze) == [(1, 1), (1, 3), (2, 1)]


def test_puzzle_files_carry_button_states(tmp_path):
    train_path, _ = generate.generate(
        "puzzle-3x3-play", 1, tmp_path, episode_length=30, workers=1, progress=False
    )
    raw = np.load(train_path)
    assert raw["button_states"].shape == (30, 9)
    _, train, _ = ogbench.make_env_and_datasets(
        "puzzle-3x3-play-singletask-task1-v0", dataset_dir=str(tmp_path)
    )
    assert train["rewards"].min() <= -1.0  # unsolved buttons counted from button_states


def test_bad_requests_are_clear(tmp_path):
    with pytest.raises(datasets.DataError, match="cannot be generated locally"):
        generate.generate("antmaze-large-navigate-v0", 1, tmp_path)
    with pytest.raises(datasets.DataError, match="num_episodes"):
        generate.generate("cube-single-play-v0", 0, tmp_path)
    with pytest.raises(datasets.UnknownTaskError, match="domains"):
        generate.generate("cube-sngle-play-v0", 1, tmp_path)
    (tmp_path / "cube-single-play-v0.npz").write_bytes(b"")
    with pytest.raises(datasets.DataError, match="already exist"):
        generate.generate("cube-single-play-v0", 1, tmp_path)
