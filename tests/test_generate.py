"""Local dataset generation with OGBench's oracles: files OGBench loads, OGBench's settings,
determinism, the metadata record, and resume by shard after an interrupt.

Kept short (a few episodes of tens of steps; pointmaze where the domain does not matter).
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import ogbench
import pytest

from qam_lite.data import datasets, generate
from qam_lite.data.tasks import DOMAINS


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
    assert raw["terminals"].dtype == bool  # OGBench's dtype
    np.testing.assert_array_equal(np.flatnonzero(raw["terminals"]), [99, 199])
    assert np.load(val_path)["observations"].shape == (100, 28)  # max(1, 2 // 10) episodes
    # OGBench's own loader with a single-task name relabels rewards from qpos.
    _, train, val = ogbench.make_env_and_datasets(
        "cube-single-play-singletask-task1-v0", dataset_dir=str(cube_dir)
    )
    assert train["observations"].shape == (198, 28)  # each episode's final state is dropped
    assert set(np.unique(train["rewards"])) <= {-1.0, 0.0} and train["masks"].shape == (198,)


def test_metadata_records_every_generation_setting(cube_dir):
    meta = datasets.read_provenance(datasets.dataset_paths("cube-single-play-v0", cube_dir)[0])
    assert meta["episodes"] == 2 and meta["seed"] == 0 and meta["split"] == "train"
    assert meta["source"] == "generated" and meta["episode_length"] == 100
    assert meta["noise"] == 0.1 and meta["noise_smoothing"] == 0.5
    assert meta["env_kwargs"] == {
        "terminate_at_goal": False,
        "max_episode_steps": 100,
        "mode": "data_collection",
    }
    assert meta["p_stack"] == 0.0 and "reset" in meta["first_target"]
    assert meta["published_episodes"] == 1000 and meta["published_episode_length"] == 1001
    assert meta["discarded_episodes"] == 0 and meta["ogbench_version"] == ogbench_version()
    # Exactly the settings that determine the arrays, plus per-file facts.
    assert generate.settings_for("cube-single-play-v0", 2, episode_length=100).items() <= (
        meta.items()
    )
    # The data is smaller than the published dataset: runs on it say so.
    prov = datasets.provenance("cube-single-play-task1", cube_dir)
    assert (
        prov["paper_comparable"] is False
        and "2 episodes x 100 steps" in (prov["paper_comparable_reason"])
    )


def ogbench_version():
    from importlib import metadata

    return metadata.version("ogbench")


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


def test_first_target_is_the_one_set_at_reset(monkeypatch):
    """No new target before the oracle finishes its first sub-task (OGBench's script)."""
    env = generate._make_env("cube-double-v0", 5)
    calls = []
    original = type(env.unwrapped).set_new_target

    def spy(self, *args, **kwargs):
        calls.append(kwargs)
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(env.unwrapped), "set_new_target", spy)
    oracles = generate._manip_oracles(env, "cube-double-v0")
    generate._manip_episode(env, oracles, "cube-double-v0", 123, 5)  # too short to finish
    # Only reset's own call (default p_stack 0.5); no second target drawn with the episode's.
    assert calls == [{"return_info": False}]
    env.close()


def test_scene_health_check_matches_ogbench():
    ok = np.zeros((3, 20))
    ok[:, 14:17] = [0.4, 0.0, 0.02]
    assert generate.scene_cube_visible(ok)
    right = ok.copy()
    right[1, 15] = 0.29
    left_on_table = ok.copy()
    left_on_table[2, 15:17] = [-0.3, 0.02]
    in_drawer = ok.copy()
    in_drawer[2, 15:17] = [-0.35, 0.07]
    assert not generate.scene_cube_visible(right)
    assert not generate.scene_cube_visible(left_on_table)
    assert generate.scene_cube_visible(in_drawer)


def test_scene_episodes_failing_the_check_are_rerun(tmp_path, monkeypatch):
    seen = []

    def first_attempt_fails(qpos):
        seen.append(qpos[0].copy())
        return len(seen) % 2 == 0  # each episode's first attempt is discarded

    monkeypatch.setattr(generate, "scene_cube_visible", first_attempt_fails)
    train, val = generate.generate(
        "scene-play", 1, tmp_path, episode_length=15, workers=1, progress=False
    )
    meta = datasets.read_provenance(train)
    assert meta["discarded_episodes"] == 1 and datasets.read_provenance(val)["discarded_episodes"]
    assert "y >= 0.29" in meta["health_check"]
    kept = np.load(train)["qpos"]
    # The re-run (attempt 1) was kept.
    np.testing.assert_array_equal(kept[0], seen[1].astype(np.float32))
    assert not np.array_equal(seen[0], seen[1])  # ... and it is a different episode


def test_published_sizes_are_the_defaults(tmp_path, monkeypatch):
    seen = {}

    def stop(env_id, jobs, seed, episode_length, *args):
        seen.update(
            env=env_id,
            length=episode_length,
            eps=[sum(j[2] for j in jobs if j[0] == s) for s in (0, 1)],
        )
        raise KeyboardInterrupt

    monkeypatch.setattr(generate, "_run_jobs", stop)
    with pytest.raises(KeyboardInterrupt):
        generate.generate("pointmaze-giant-navigate", dataset_dir=tmp_path, progress=False)
    # OGBench's commands.sh: pointmaze-giant-navigate-v0 is 500 episodes x 2001 steps.
    assert seen == {"env": "pointmaze-giant-v0", "length": 2001, "eps": [500, 50]}
    assert DOMAINS["cube-quadruple-play"].episodes == 5000


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
    # qpos is the state of the row's observation (pointmaze observes its position).
    raw = np.load(a[0])
    np.testing.assert_allclose(raw["qpos"][:, :2], raw["observations"], atol=1e-6)


def _same_files(a, b):
    for pa, pb in zip(a, b, strict=True):
        fa, fb = np.load(pa), np.load(pb)
        assert sorted(fa.files) == sorted(fb.files)
        for k in fa.files:
            if k != datasets.PROVENANCE_KEY:
                np.testing.assert_array_equal(fa[k], fb[k], err_msg=k)
        ma, mb = datasets.read_provenance(pa), datasets.read_provenance(pb)
        for m in (ma, mb):
            del m["date"], m["resumed_shards"]
        assert ma == mb


def test_interrupted_generation_resumes_by_shard(tmp_path, monkeypatch):
    args = ("pointmaze-medium-navigate", 25)
    kw = dict(episode_length=30, workers=1, progress=False)
    reference = generate.generate(*args, tmp_path / "ref", **kw)

    real, calls = generate._run_shard, []

    def interrupted(job):
        calls.append(job)
        if len(calls) == 3:
            raise KeyboardInterrupt  # Ctrl-C while simulating the third shard
        return real(job)

    monkeypatch.setattr(generate, "_run_shard", interrupted)
    with pytest.raises(KeyboardInterrupt):
        generate.generate(*args, tmp_path / "run", **kw)
    parts = tmp_path / "run" / "pointmaze-medium-navigate-v0.parts"
    assert sorted(p.name for p in parts.glob("*.npz")) == ["train-00000.npz", "train-00001.npz"]
    assert not (tmp_path / "run" / "pointmaze-medium-navigate-v0.npz").exists()
    # A stale temp file from a save killed mid-write is cleaned up, never used.
    (parts / ".train-00002.npz.999.dead.tmp").write_bytes(b"partial")

    calls.clear()
    resumed = generate.generate(*args, tmp_path / "run", **kw)
    assert len(calls) == 2  # only the missing shards: train episodes 20..24 and the val shard
    assert datasets.read_provenance(resumed[0])["resumed_shards"] == 2
    assert not parts.exists()
    _same_files(reference, resumed)


def test_damaged_shard_or_changed_settings_are_redone(tmp_path, monkeypatch):
    kw = dict(episode_length=30, workers=1, progress=False)
    parts = tmp_path / "pointmaze-medium-navigate-v0.parts"
    real = generate._run_shard

    def stop_after_first(job):
        if job[3] > 0:  # second train shard
            raise KeyboardInterrupt
        return real(job)

    monkeypatch.setattr(generate, "_run_shard", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        generate.generate("pointmaze-medium-navigate", 20, tmp_path, **kw)
    (parts / "train-00000.npz").write_bytes(b"truncated")  # e.g. a disk that lied about fsync
    monkeypatch.setattr(generate, "_run_shard", real)
    out = generate.generate("pointmaze-medium-navigate", 20, tmp_path, **kw)
    assert datasets.read_provenance(out[0])["resumed_shards"] == 0
    reference = generate.generate("pointmaze-medium-navigate", 20, tmp_path / "ref", **kw)
    _same_files(reference, out)

    # Other settings: the old shards are discarded, not mixed in.
    monkeypatch.setattr(generate, "_run_shard", stop_after_first)
    with pytest.raises(KeyboardInterrupt):
        generate.generate("pointmaze-medium-navigate", 20, tmp_path / "s", seed=1, **kw)
    monkeypatch.setattr(generate, "_run_shard", real)
    out = generate.generate("pointmaze-medium-navigate", 20, tmp_path / "s", **kw)
    assert datasets.read_provenance(out[0])["resumed_shards"] == 0
    _same_files(reference, out)


def test_ctrl_c_in_the_cli_keeps_shards_and_says_so(tmp_path):
    """A real SIGINT to `qam-lite generate` (worker pool): exit 130, the message, shards kept."""
    cmd = [sys.executable, "-m", "qam_lite", "generate", "pointmaze-medium-navigate"]
    cmd += ["--episodes", "200", "--episode-length", "50", "--workers", "2", "--no-progress"]
    cmd += ["--dataset-dir", str(tmp_path)]
    parts = tmp_path / "pointmaze-medium-navigate-v0.parts"
    proc = subprocess.Popen(
        cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    deadline = time.time() + 120
    while not list(parts.glob("train-*.npz")) and time.time() < deadline:
        assert proc.poll() is None, proc.communicate()[0]  # it must still be running
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGINT)  # as a terminal's Ctrl-C: the whole process group
    out, _ = proc.communicate(timeout=60)
    assert proc.returncode == 130, out
    assert "shards are kept in" in out and "run the same command again" in out.lower()
    assert "Traceback" not in out  # workers ignore Ctrl-C; the main process handles it
    kept = list(parts.glob("train-*.npz"))
    assert kept and not (tmp_path / "pointmaze-medium-navigate-v0.npz").exists()
    assert not list(parts.glob(".*.tmp"))


def test_two_generates_of_one_dataset_do_not_interleave(tmp_path):
    lock = tmp_path / ".pointmaze-medium-navigate-v0.generate.lock"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            f"import filelock, time\nlock = filelock.FileLock({str(lock)!r})\nlock.acquire()\n"
            "print('held', flush=True)\ntime.sleep(60)",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(datasets.DataError, match="another `qam-lite generate"):
            generate.generate("pointmaze-medium-navigate", 1, tmp_path, progress=False)
    finally:
        holder.kill()
        holder.wait()
    assert not (tmp_path / "pointmaze-medium-navigate-v0.parts").exists()


def test_maze_oracle_reaches_a_far_goal():
    import gymnasium

    env = gymnasium.make("pointmaze-medium-v0", terminate_at_goal=False, max_episode_steps=10**4)
    env.reset(seed=0, options={"task_info": {"init_ij": (1, 1), "goal_ij": (6, 6)}})
    u = env.unwrapped
    steps = 0
    while not u.compute_success() and steps < 600:
        env.step(generate.maze_oracle_direction(env))
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
    assert raw["button_states"].shape == (30, 9) and raw["button_states"].dtype == np.int64
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
    with pytest.raises(datasets.DataError, match="already exist; pass --overwrite"):
        generate.generate("cube-single-play-v0", 1, tmp_path)
    with pytest.raises(datasets.DataError, match="is a file, not a folder"):
        generate.generate("cube-single-play-v0", 1, tmp_path / "cube-single-play-v0.npz")


def test_read_only_folder_is_a_clear_error(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkstemp", refuse)  # the write test
    with pytest.raises(datasets.DataError, match="cannot write to dataset folder .*--dataset-dir"):
        generate.generate("pointmaze-medium-navigate", 1, tmp_path, progress=False)


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="root ignores permissions")
def test_read_only_folder_for_real(tmp_path):
    tmp_path.chmod(0o555)
    try:
        with pytest.raises(datasets.DataError, match="cannot write to dataset folder"):
            generate.generate("pointmaze-medium-navigate", 1, tmp_path, progress=False)
    finally:
        tmp_path.chmod(0o755)


def test_generate_does_not_import_back():
    """Layering: generate imports datasets, never the reverse (no import cycle)."""
    import ast
    import inspect

    tree = ast.parse(inspect.getsource(datasets))
    names = [
        n.module if isinstance(n, ast.ImportFrom) else a.name
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom)
        for a in (n.names if isinstance(n, ast.Import) else [None])
    ]
    assert not [m for m in names if m and "generate" in m], names
    assert json.loads(json.dumps(generate.settings_for("scene-play", 3)))["health_check"]


def test_killed_between_the_two_files_the_same_command_finishes(tmp_path, monkeypatch):
    # Killed (or out of disk) after <dataset>.npz and before <dataset>-val.npz: the rerun the
    # message asks for must assemble the files, not refuse because one already exists.
    args = ("pointmaze-medium-navigate", 12)
    kw = dict(episode_length=30, workers=1, progress=False)
    reference = generate.generate(*args, tmp_path / "ref", **kw)
    real, root = generate.save_atomic, tmp_path / "run"

    def killed_at_the_val_file(path, arrays):
        if path.name.endswith("-val.npz"):
            (path.parent / f".{path.name}.123.tmp").write_bytes(b"half")  # SIGKILL mid-write
            raise KeyboardInterrupt
        return real(path, arrays)

    monkeypatch.setattr(generate, "save_atomic", killed_at_the_val_file)
    with pytest.raises(KeyboardInterrupt):
        generate.generate(*args, root, **kw)
    monkeypatch.undo()
    assert (root / "pointmaze-medium-navigate-v0.npz").exists()
    assert not (root / "pointmaze-medium-navigate-v0-val.npz").exists()
    finished = generate.generate(*args, root, **kw)  # the same command, no --overwrite
    _same_files(reference, finished)
    left = sorted(p.name for p in root.iterdir())
    assert left == [
        ".pointmaze-medium-navigate-v0.generate.lock",
        "pointmaze-medium-navigate-v0-val.npz",
        "pointmaze-medium-navigate-v0.npz",
    ]
    # Without unfinished shards of the same run, an existing file is still protected.
    with pytest.raises(datasets.DataError, match="already exist; pass --overwrite"):
        generate.generate(*args, root, **kw)


def test_a_train_and_val_file_of_two_runs_are_refused(tmp_path):
    kw = dict(episode_length=30, workers=1, progress=False)
    a = generate.generate("pointmaze-medium-navigate", 3, tmp_path / "a", **kw)
    b = generate.generate("pointmaze-medium-navigate", 3, tmp_path / "b", seed=1, **kw)
    os.replace(b[0], a[0])  # seed 1's training file beside seed 0's validation file
    with pytest.raises(datasets.DatasetError, match=r"two different generate runs \(seed: 1 vs 0"):
        datasets.load("pointmaze-medium-navigate-singletask-task1-v0", tmp_path / "a")


def test_workers_of_a_killed_generate_stop_at_once(tmp_path):
    # SIGKILL to the main process leaves no one to stop the pool: each worker notices its
    # parent is gone and exits instead of simulating on for nothing.
    cmd = [sys.executable, "-m", "qam_lite", "generate", "pointmaze-medium-navigate"]
    # Shards of 10 x 3000 steps: each takes seconds, far longer than the 1.5 s allowed below.
    cmd += ["--episodes", "100", "--episode-length", "3000", "--workers", "2", "--no-progress"]
    cmd += ["--dataset-dir", str(tmp_path)]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    parts = tmp_path / "pointmaze-medium-navigate-v0.parts"
    deadline = time.time() + 120
    while not list(parts.glob("train-*.npz")) and time.time() < deadline:
        time.sleep(0.2)
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    workers = [int(c) for c in children]
    assert len(workers) >= 2  # the pool's workers (and multiprocessing's resource tracker)
    proc.kill()
    proc.wait()
    deadline = time.time() + 1.5
    while any(_running(w) for w in workers) and time.time() < deadline:
        time.sleep(0.1)
    alive = [w for w in workers if _running(w)]
    assert alive == [], f"workers still computing after their parent was killed: {alive}"


def _running(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")  # a zombie has stopped
