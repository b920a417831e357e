"""Dataset loading: QAM conventions on top of OGBench's relabelling, and errors that say the fix."""

import gymnasium
import numpy as np
import ogbench.utils
import pytest

from qam_lite import datasets
from qam_lite.tasks import parse_task


def write_puzzle_files(root, button_states, n_episodes=2):
    """A tiny fake puzzle-3x3-play dataset: only button_states matter to its relabelling."""
    rng = np.random.default_rng(0)
    n = len(button_states)
    terminals = np.zeros(n, np.float32)
    terminals[np.linspace(0, n, n_episodes + 1).astype(int)[1:] - 1] = 1.0
    arrays = dict(
        observations=rng.normal(size=(n, 55)).astype(np.float32),
        actions=rng.uniform(-1, 1, size=(n, 5)).astype(np.float32),
        terminals=terminals,
        qpos=np.zeros((n, 23), np.float32),
        qvel=np.zeros((n, 23), np.float32),
        button_states=np.asarray(button_states, np.int64),
    )
    arrays["actions"][0] = [1.0, -1.0, 0.5, 1.0, -1.0]  # on the boundary: must be clipped
    root.mkdir(parents=True, exist_ok=True)
    for name in ("puzzle-3x3-play-v0.npz", "puzzle-3x3-play-v0-val.npz"):
        np.savez(root / name, **arrays)
    return arrays


@pytest.fixture(scope="module")
def puzzle_target():
    env = gymnasium.make("puzzle-3x3-singletask-task1-v0")
    env.reset()
    return env.unwrapped._target_button_states.copy()


def test_sparse_rewards_masks_and_clipping(tmp_path, puzzle_target, capsys):
    target = puzzle_target
    one_off, three_off = target.copy(), target.copy()
    one_off[0] ^= 1
    three_off[:3] ^= 1
    # Two episodes of 4 rows: solved, 1 button wrong, 3 wrong, (final row, dropped by OGBench).
    states = [target, one_off, three_off, target] * 2
    arrays = write_puzzle_files(tmp_path, states)
    env, train, val = datasets.load("puzzle-3x3-task1", tmp_path)
    assert "official" in capsys.readouterr().out  # no provenance entry -> official
    assert env.unwrapped._reward_task_id == 1
    np.testing.assert_array_equal(train["rewards"], [0.0, -1.0, -1.0] * 2)  # sparse: 3 wrong -> -1
    np.testing.assert_array_equal(train["masks"], [0.0, 1.0, 1.0] * 2)
    np.testing.assert_array_equal(train["terminals"], [0.0, 0.0, 1.0] * 2)
    np.testing.assert_array_equal(train["next_observations"][0], arrays["observations"][1])
    np.testing.assert_array_equal(train["next_observations"][3], arrays["observations"][5])
    assert np.abs(train["actions"]).max() == np.float32(1 - 1e-5)
    for d in (train, val):
        assert {k: v.dtype for k, v in d.items()} == {k: np.float32 for k in d}
        assert set(d) == {
            "observations",
            "actions",
            "rewards",
            "masks",
            "terminals",
            "next_observations",
        }


def test_dense_rewards_are_ogbenchs(tmp_path, puzzle_target, monkeypatch):
    """With the reward type switched to dense, the raw relabelled count of wrong buttons shows."""
    target = puzzle_target
    three_off = target.copy()
    three_off[:3] ^= 1
    write_puzzle_files(tmp_path, [target, three_off, three_off, target], n_episodes=1)
    info = datasets.DOMAINS["puzzle-3x3-play"]
    monkeypatch.setitem(datasets.DOMAINS, "puzzle-3x3-play", info._replace(reward="dense"))
    _, train, _ = datasets.load("puzzle-3x3-task1", tmp_path, verbose=False)
    np.testing.assert_array_equal(train["rewards"], [0.0, -3.0, -3.0])


def test_missing_files_never_download(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("tried to download")

    monkeypatch.setattr(ogbench.utils, "download_datasets", no_network)
    with pytest.raises(datasets.DatasetMissingError) as err:
        datasets.load("cube-double-play-singletask-task2-v0", tmp_path)
    msg = str(err.value)
    assert "cube-double-play-v0.npz" in msg and "--download" in msg
    assert f"qam-lite generate cube-double-play-v0 --episodes 1000 --dataset-dir {tmp_path}" in msg
    with pytest.raises(datasets.DatasetMissingError, match="cannot be generated locally"):
        datasets.load("antmaze-large-navigate-task1", tmp_path)


def test_default_folder_from_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(datasets.DATA_ENV, str(tmp_path))
    assert datasets.data_dir() == tmp_path
    assert datasets.dataset_paths("scene-task3")[1] == tmp_path / "scene-play-v0-val.npz"
    assert datasets.data_dir("/x") == datasets.Path("/x")


def test_corrupt_file_names_the_file(tmp_path):
    write_puzzle_files(tmp_path, [np.zeros(9)] * 4)
    bad = tmp_path / "puzzle-3x3-play-v0-val.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(datasets.DatasetError, match="puzzle-3x3-play-v0-val.npz"):
        datasets.load("puzzle-3x3-task1", tmp_path)


@pytest.mark.parametrize(
    "key, value, fragment",
    [
        (
            "actions",
            np.zeros((3, 5), np.float32),
            r"'actions' has shape \(3, 5\), expected \(N, act_dim\)",
        ),
        (
            "terminals",
            np.zeros((4, 1), np.float32),
            r"'terminals' has shape \(4, 1\), expected \(N,\)",
        ),
        ("button_states", None, r"missing key\(s\) \['button_states'\]"),
    ],
)
def test_bad_keys_name_key_and_shape(tmp_path, key, value, fragment):
    arrays = write_puzzle_files(tmp_path, [np.zeros(9)] * 4)
    if value is None:
        del arrays[key]
    else:
        arrays[key] = value
    np.savez(tmp_path / "puzzle-3x3-play-v0.npz", **arrays)
    with pytest.raises(datasets.DatasetError, match=fragment) as err:
        datasets.load(parse_task("puzzle-3x3-task1"), tmp_path)
    assert "puzzle-3x3-play-v0.npz" in str(err.value)


def test_unknown_task_is_one_error_class():
    with pytest.raises(datasets.DataError, match="Did you mean"):
        datasets.load("puzle-3x3-play-singletask-task1-v0")
    assert issubclass(datasets.DatasetMissingError, datasets.DataError)
    assert issubclass(datasets.DatasetError, datasets.DataError)


def test_generated_data_reports_provenance(tmp_path, capsys):
    from qam_lite import generate

    generate.generate("pointmaze-medium-navigate", 1, tmp_path, episode_length=20, progress=False)
    _, train, _ = datasets.load("pointmaze-medium-navigate-task2", tmp_path)
    out = capsys.readouterr().out
    assert "GENERATED LOCALLY" in out and "1 episodes x 20 steps, seed 0" in out
    assert datasets.provenance("pointmaze-medium-navigate", tmp_path)["episodes"] == 1
    assert train["observations"].shape == (19, 2)
