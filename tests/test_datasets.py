"""Dataset loading: QAM conventions on top of OGBench's relabelling, and errors that say the fix."""

import tempfile

import gymnasium
import numpy as np
import ogbench.utils
import pytest

from qam_lite.data import datasets
from qam_lite.data.tasks import parse_task


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
            r"'actions' has shape \(3, 5\), expected \(N, 5\)",
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
    from qam_lite.data import generate

    generate.generate("pointmaze-medium-navigate", 1, tmp_path, episode_length=20, progress=False)
    _, train, _ = datasets.load("pointmaze-medium-navigate-task2", tmp_path)
    out = capsys.readouterr().out
    assert "GENERATED LOCALLY" in out and "1 episodes x 20 steps, seed 0" in out
    assert datasets.provenance("pointmaze-medium-navigate", tmp_path)["episodes"] == 1
    assert train["observations"].shape == (19, 2)


# ------------------------------------------------------------------------------------------------
# Checked against the environment; corrupt data names the file, the key and the fix


@pytest.mark.parametrize(
    "key, shape, fragment",
    [
        ("actions", (4, 3), r"'actions' has shape \(4, 3\), but puzzle-3x3-singletask-task1-v0 "),
        ("observations", (4, 20), r"'observations' has shape \(4, 20\), but .* width 55"),
    ],
)
def test_widths_are_checked_against_the_environment(tmp_path, key, shape, fragment):
    arrays = write_puzzle_files(tmp_path, [np.zeros(9)] * 4)
    arrays[key] = np.zeros(shape, np.float32)
    np.savez(tmp_path / "puzzle-3x3-play-v0.npz", **arrays)
    with pytest.raises(datasets.DatasetError, match=fragment) as err:
        datasets.load("puzzle-3x3-task1", tmp_path, verbose=False)
    msg = str(err.value)
    assert str(tmp_path / "puzzle-3x3-play-v0.npz") in msg
    assert f"qam-lite generate puzzle-3x3-play-v0 --episodes 1000 --dataset-dir {tmp_path} " in msg
    assert "--overwrite" in msg and "--download" in msg


@pytest.mark.parametrize("key", ["observations", "actions"])
def test_non_finite_values_name_file_and_key(tmp_path, key):
    arrays = write_puzzle_files(tmp_path, [np.zeros(9)] * 8)
    arrays[key][2, 1] = np.nan
    np.savez(tmp_path / "puzzle-3x3-play-v0-val.npz", **arrays)
    with pytest.raises(datasets.DatasetError, match=f"'{key}' holds NaN or inf") as err:
        datasets.load("puzzle-3x3-task1", tmp_path, verbose=False)
    assert "puzzle-3x3-play-v0-val.npz" in str(err.value) and "--overwrite" in str(err.value)


def test_corrupt_file_suggests_the_regenerate_command(tmp_path):
    write_puzzle_files(tmp_path, [np.zeros(9)] * 4)
    (tmp_path / "puzzle-3x3-play-v0.npz").write_bytes(b"PK\x03\x04 truncated")
    with pytest.raises(datasets.DatasetError) as err:
        datasets.load("puzzle-3x3-task1", tmp_path)
    assert "qam-lite generate puzzle-3x3-play-v0 --episodes 1000" in str(err.value)
    assert "--overwrite" in str(err.value)
    # A domain that cannot be generated locally points to the download only.
    hint = datasets.fix_hint(parse_task("antmaze-large-task1"), tmp_path)
    assert "generate" not in hint.replace("generated", "") and "--download" in hint


def test_dataset_dir_pointing_at_a_file(tmp_path):
    write_puzzle_files(tmp_path, [np.zeros(9)] * 4)
    file = tmp_path / "puzzle-3x3-play-v0.npz"
    with pytest.raises(
        datasets.DataError, match=f"is a file, not a folder.*--dataset-dir {tmp_path}"
    ):
        datasets.load("puzzle-3x3-task1", file)
    with pytest.raises(datasets.DataError, match="looks like a file name"):
        datasets.load("puzzle-3x3-task1", tmp_path / "missing" / "cube-double-play-v0.npz")
    # The missing-data advice never points --dataset-dir at a file.
    with pytest.raises(datasets.DatasetMissingError) as err:
        datasets.load("cube-double-task1", tmp_path)
    assert f"--dataset-dir {tmp_path}`" in str(err.value)


def test_read_only_folder_with_download(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(30, "Read-only file system")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # the write test
    with pytest.raises(datasets.DataError, match="Read-only file system.*download cube-double"):
        datasets.load("cube-double-task1", tmp_path / "sub", download=True)


# ------------------------------------------------------------------------------------------------
# Download: bounded by a timeout, atomic (loopback servers only, never the real network)


def test_download_from_a_silent_server_times_out(tmp_path, monkeypatch):
    import socket
    import time

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)  # the kernel completes the handshake; nobody ever answers
    url = f"http://127.0.0.1:{server.getsockname()[1]}/datasets"
    monkeypatch.setattr(ogbench.utils, "DATASET_URL", url)
    monkeypatch.setenv(datasets.TIMEOUT_ENV, "0.5")
    start = time.perf_counter()
    try:
        with pytest.raises(datasets.DownloadError, match="timed out") as err:
            datasets.load("cube-double-task1", tmp_path, download=True)
    finally:
        server.close()
    assert time.perf_counter() - start < 10
    assert f"{url}/cube-double-play-v0.npz" in str(err.value)
    assert datasets.TIMEOUT_ENV in str(err.value)
    assert list(tmp_path.iterdir()) == []  # no partial file left behind


def test_download_fetches_both_files_atomically(tmp_path, monkeypatch):
    import functools
    import http.server
    import threading

    served = tmp_path / "server"
    arrays = write_puzzle_files(served, [np.zeros(9)] * 4)
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(served))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setattr(ogbench.utils, "DATASET_URL", f"http://127.0.0.1:{httpd.server_port}")
    try:
        _, train, _ = datasets.load("puzzle-3x3-task1", tmp_path / "data", download=True)
    finally:
        httpd.shutdown()
    names = sorted(p.name for p in (tmp_path / "data").iterdir())
    assert names == ["puzzle-3x3-play-v0-val.npz", "puzzle-3x3-play-v0.npz"]
    np.testing.assert_array_equal(train["observations"][0], arrays["observations"][0])


def test_download_of_a_missing_file_is_a_clear_error(tmp_path):
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *args: None
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        with pytest.raises(datasets.DownloadError, match="HTTP 404"):
            datasets.fetch(
                [tmp_path / "out" / "x.npz"], base_url=f"http://127.0.0.1:{httpd.server_port}"
            )
    finally:
        httpd.shutdown()


# ------------------------------------------------------------------------------------------------
# 100M-transition data in shards (cube-quadruple, puzzle-4x4) and the paper-comparable mark


def write_puzzle44_shard(path, marker, n=6):
    """A tiny fake puzzle-4x4 shard (+ its -val file); ``marker`` fills the actions."""
    terminals = np.zeros(n, bool)
    terminals[[n // 2 - 1, n - 1]] = True
    arrays = dict(
        observations=np.zeros((n, 83), np.float32),
        actions=np.full((n, 5), marker, np.float32),
        terminals=terminals,
        qpos=np.zeros((n, 30), np.float32),
        qvel=np.zeros((n, 30), np.float32),
        button_states=np.zeros((n, 16), np.int64),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez(path, **arrays)
    np.savez(path.with_name(path.name.replace(".npz", "-val.npz")), **arrays)


def test_sharded_data_loads_and_cycles(tmp_path, capsys):
    folder = tmp_path / "puzzle-4x4-play-100m-v0"
    for k in range(3):
        write_puzzle44_shard(folder / f"puzzle-4x4-play-v0-{k:03d}.npz", marker=0.1 * k)
    env, train, _ = datasets.load("puzzle-4x4-task1", tmp_path)
    assert "sharded, 3 shards" in capsys.readouterr().out
    assert train["actions"][0, 0] == 0.0 and train["observations"].shape == (4, 83)
    assert datasets.load("puzzle-4x4-task1", folder, verbose=False)[1]["actions"][0, 0] == 0.0

    prov = datasets.provenance("puzzle-4x4-task1", tmp_path)
    assert prov["source"] == "official-sharded" and prov["shards"] == 3
    assert prov["paper_comparable"] is False and "one shard" in prov["paper_comparable_reason"]
    assert datasets.provenance("puzzle-4x4-task1", tmp_path, shards_cycled=True)["paper_comparable"]

    cycle = datasets.ShardCycle("puzzle-4x4-task1", folder, interval=10, env=env)
    assert [cycle.index(i) for i in (1, 9, 10, 19, 20, 30, 31)] == [0, 0, 1, 1, 2, 0, 0]
    for update, marker in ((1, 0.0), (10, 0.1), (25, 0.2), (30, 0.0)):
        train, val = cycle.data(update)
        assert train["actions"][0, 0] == pytest.approx(marker) == val["actions"][0, 0]


def test_shard_folder_without_shards_or_val(tmp_path):
    folder = tmp_path / "cube-quadruple-play-100m-v0"
    folder.mkdir()
    with pytest.raises(datasets.DatasetMissingError, match="holds no .npz shard"):
        datasets.load("cube-quadruple-task1", tmp_path)
    write_puzzle44_shard(tmp_path / "p" / "puzzle-4x4-play-100m-v0" / "a.npz", 0.0)
    (tmp_path / "p" / "puzzle-4x4-play-100m-v0" / "a-val.npz").unlink()
    with pytest.raises(datasets.DatasetMissingError, match="a-val.npz"):
        datasets.load("puzzle-4x4-task1", tmp_path / "p")


def test_standard_files_of_100m_domains_are_not_comparable(tmp_path):
    write_puzzle_files(tmp_path, [np.zeros(9)] * 4)
    assert datasets.provenance("puzzle-3x3-task1", tmp_path)["paper_comparable"] is True
    for name, big in (("puzzle-4x4", "puzzle-4x4-play-100m-v0"), ("cube-quadruple", None)):
        task = parse_task(f"{name}-task1")
        ok, why = datasets.comparability(task, {"source": "official"})
        assert ok is False and "100M" in why and (big is None or big in why)
