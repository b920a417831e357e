"""Generate OGBench-format datasets locally with OGBench's own scripted oracles.

Where the official download is unreachable, ``generate`` builds the same kind of ``play`` /
``navigate`` data the benchmark ships, following OGBench's ``data_gen_scripts``
(``generate_manipspace.py``, ``generate_locomaze.py``, ``commands.sh``):

* Manipulation (cube-*, scene, puzzle-*): the environment is made with
  ``terminate_at_goal=False, mode='data_collection'``; OGBench's plan oracles
  (``ogbench.manipspace.oracles.plan``) act with noise 0.1 and noise smoothing 0.5 (puzzle:
  button presses with the gripper closed). The episode's first target is the one the
  environment sets at reset; whenever the oracle finishes its sub-task a new target is set with
  the episode's stacking probability ``p_stack``: U(0, 0.25) for cube-double, U(0.05, 0.35)
  triple, U(0.1, 0.5) quadruple, 0 for cube-single, 0.5 elsewhere (unused by puzzle).
  Scene episodes whose cube leaves the visible area (``y >= 0.29``, or ``y <= -0.3`` outside the
  drawer's height band ``0.06 <= z <= 0.08``) are discarded and re-run, as OGBench's script does.
* Pointmaze navigate: no trained expert is needed. The action is the unit direction to the next
  waypoint of the maze's shortest path (``MazeEnv.get_oracle_subgoal``) plus Gaussian noise of
  std 0.5, clipped to [-1, 1]. Starts are random free cells, goals random *junction* cells (free
  cells that are not the middle of a straight corridor); reaching a goal draws a new one.

Row ``i`` of a file holds the observation, the action taken in it, and the simulator state
(``qpos``, ``qvel``, ``button_states``) *of that observation* (OGBench's ``prev_*`` step infos),
so single-task reward relabelling works. Episode lengths and counts default to the published
ones (``qam_lite.data.tasks.DOMAINS``: 1001 steps, pointmaze-giant 500 episodes x 2001 steps); the
validation file holds a tenth as many episodes (at least one) from an independent seed stream.

Reproducible and resumable: episode ``k`` of split ``s`` (0 train, 1 val) is seeded with
``SeedSequence([seed, s, k])`` (re-runs of a discarded scene episode append the attempt number),
and episodes are simulated in fixed shards of ``SHARD`` episodes, each with a fresh environment.
Each finished shard is saved atomically in ``<dataset_dir>/<dataset>.parts/``; an interrupted
run (Ctrl-C, kill, crash) rerun with the same command simulates only the missing shards, and the
final files hold the same arrays as an uninterrupted run, whatever the number of worker
processes. The part folder is removed once both files are written.

Files go exactly where ``ogbench.make_env_and_datasets`` looks: ``<dataset_dir>/<dataset>.npz``
and ``<dataset>-val.npz``, with ``observations, actions, terminals, qpos, qvel`` (and
``button_states`` for puzzle and scene; dtypes as OGBench's), plus ``qam_lite_provenance``
(``qam_lite.data.datasets.PROVENANCE_KEY``): a JSON string recording every generation setting.
"""

from __future__ import annotations

import contextlib
import datetime
import json
import multiprocessing
import os
import platform
import shutil
import time
import warnings
from pathlib import Path

import numpy as np

from qam_lite.atomic import WriteError, write_bytes, write_with
from qam_lite.data.datasets import (
    PROVENANCE_KEY,
    DataError,
    UnknownTaskError,
    check_writable,
    data_dir,
    dataset_paths,
    quiet_env_warnings,
    read_provenance,
)
from qam_lite.data.tasks import DOMAINS, TaskError, parse_task

__all__ = ["PROVENANCE_KEY", "generate", "junction_cells", "read_provenance", "settings_for"]

SHARD = 10  # episodes per fresh environment (fixed: it is part of what the seed determines)
PLAN_NOISE = 0.1  # std of the plan oracles' action noise, in units of the action range
PLAN_NOISE_SMOOTHING = 0.5  # std (in steps) of the Gaussian filter correlating that noise
MAZE_NOISE = 0.5  # std of the pointmaze oracle's Gaussian action noise
# Per-episode stacking probability for new cube targets (OGBench's generate_manipspace.py).
P_STACK = {"single": 0.0, "double": (0.0, 0.25), "triple": (0.05, 0.35), "quadruple": (0.1, 0.5)}
P_STACK_OTHER = 0.5  # scene (its cube); puzzle ignores it
MAX_ATTEMPTS = 100  # re-runs of one discarded scene episode before giving up
GENERATOR_FORMAT = 2  # bump when the same settings would produce different arrays


# --------------------------------------------------------------------------------------------------
# Oracles


def _manip_oracles(env, env_id: str) -> dict:
    """One plan oracle per sub-task kind the environment can ask for."""
    from ogbench.manipspace.oracles.plan.button_plan import ButtonPlanOracle
    from ogbench.manipspace.oracles.plan.cube_plan import CubePlanOracle
    from ogbench.manipspace.oracles.plan.drawer_plan import DrawerPlanOracle
    from ogbench.manipspace.oracles.plan.window_plan import WindowPlanOracle

    # Keyword `env=`: ButtonPlanOracle's first positional parameter is its gripper flag.
    kw = dict(env=env, noise=PLAN_NOISE, noise_smoothing=PLAN_NOISE_SMOOTHING)
    if env_id.startswith("puzzle"):
        return {"button": ButtonPlanOracle(gripper_always_closed=True, **kw)}
    if env_id.startswith("cube"):
        return {"cube": CubePlanOracle(**kw)}
    return {
        "cube": CubePlanOracle(**kw),
        "button": ButtonPlanOracle(**kw),
        "drawer": DrawerPlanOracle(**kw),
        "window": WindowPlanOracle(**kw),
    }


def _draw_p_stack(env_id: str) -> float:
    """This episode's stacking probability (drawn from NumPy's global generator, as OGBench)."""
    if not env_id.startswith("cube"):
        return P_STACK_OTHER
    spec = P_STACK[env_id.split("-")[1]]
    return float(np.random.uniform(*spec)) if isinstance(spec, tuple) else spec


def scene_cube_visible(qpos: np.ndarray) -> bool:
    """OGBench's scene health check: the cube (``qpos[:, 14:17]``) stays visible all episode.

    It must never go too far right (``y >= 0.29``) nor too far left (``y <= -0.3``) unless it is
    inside the drawer (``0.06 <= z <= 0.08``); otherwise test-time goal images become ambiguous.
    """
    y, z = qpos[:, 15], qpos[:, 16]
    too_right = (y >= 0.29).any()
    too_left = ((y <= -0.3) & ((z < 0.06) | (z > 0.08))).any()
    return not (too_right or too_left)


def junction_cells(maze_map: np.ndarray) -> list[tuple[int, int]]:
    """Free cells that are not the middle of a straight corridor (dead ends, corners, forks)."""
    cells = []
    rows, cols = maze_map.shape
    for i in range(rows):
        for j in range(cols):
            if maze_map[i, j] != 0:
                continue
            free = [
                0 <= i + di < rows and 0 <= j + dj < cols and maze_map[i + di, j + dj] == 0
                for di, dj in ((-1, 0), (1, 0), (0, -1), (0, 1))
            ]
            straight = free == [True, True, False, False] or free == [False, False, True, True]
            if not straight:
                cells.append((i, j))
    return cells


def maze_oracle_direction(env) -> np.ndarray:
    """Unit vector toward the next waypoint of the shortest path to the current goal (no noise).

    ``get_oracle_subgoal`` returns the centre of the neighbouring cell closest to the goal, or
    the agent's own cell centre once it is in the goal's cell.
    """
    u = env.unwrapped
    xy = u.get_xy()
    target, _ = u.get_oracle_subgoal(xy, u.cur_goal_xy)
    direction = np.asarray(target) - xy
    return direction / (np.linalg.norm(direction) + 1e-6)


# --------------------------------------------------------------------------------------------------
# Episodes


def _episode_seed(seed: int, split: int, index: int, attempt: int = 0) -> int:
    key = [seed, split, index] if attempt == 0 else [seed, split, index, attempt]
    return int(np.random.SeedSequence(key).generate_state(1)[0])


def _make_env(env_id: str, episode_length: int):
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)

    with warnings.catch_warnings():
        # gymnasium notes that OGBench's float64 action bounds become float32: harmless noise.
        warnings.filterwarnings("ignore", message=".*precision lowered", category=UserWarning)
        return gymnasium.make(env_id, **_env_kwargs(env_id, episode_length))


def _env_kwargs(env_id: str, episode_length: int) -> dict:
    kwargs = dict(terminate_at_goal=False, max_episode_steps=episode_length)
    if not env_id.startswith("pointmaze"):
        kwargs["mode"] = "data_collection"
    return kwargs


def _manip_episode(env, oracles, env_id, seed, episode_length):
    np.random.seed(seed)  # the plan oracles and p_stack draw from NumPy's global generator
    u = env.unwrapped
    ob, info = env.reset(seed=seed)  # sets the episode's first target (the env's own p_stack)
    p_stack = _draw_p_stack(env_id)  # used for every later target
    agent = oracles[info["privileged/target_task"]]
    agent.reset(ob, info)
    rec = {k: [] for k in ("observations", "actions", "qpos", "qvel")}
    buttons = "prev_button_states" in info or "button_states" in info
    if buttons:
        rec["button_states"] = []
    for _ in range(episode_length):
        action = np.clip(np.asarray(agent.select_action(ob, info)), -1.0, 1.0)
        next_ob, _, _, _, info = env.step(action)
        if agent.done:  # sub-task finished: the environment sets a new target
            agent_ob, agent_info = u.set_new_target(p_stack=p_stack)
            agent = oracles[agent_info["privileged/target_task"]]
            agent.reset(agent_ob, agent_info)
        rec["observations"].append(ob)
        rec["actions"].append(action)
        rec["qpos"].append(info["prev_qpos"])  # the state *of* `ob` (relabelling reads it)
        rec["qvel"].append(info["prev_qvel"])
        if buttons:
            rec["button_states"].append(info["prev_button_states"])
        ob = next_ob
    return rec


def _maze_episode(env, seed, episode_length):
    np.random.seed(seed)  # cell draws, start noise and action noise use NumPy's global generator
    u = env.unwrapped
    free = [tuple(int(x) for x in c) for c in np.argwhere(u.maze_map == 0)]
    goals = junction_cells(u.maze_map)
    start = free[np.random.randint(len(free))]
    goal = goals[np.random.randint(len(goals))]
    ob, _ = env.reset(seed=seed, options={"task_info": {"init_ij": start, "goal_ij": goal}})
    rec = {k: [] for k in ("observations", "actions", "qpos", "qvel")}
    for _ in range(episode_length):
        direction = maze_oracle_direction(env)
        action = np.clip(direction + np.random.normal(0.0, MAZE_NOISE, size=2), -1.0, 1.0)
        next_ob, _, _, _, info = env.step(action)
        if info["success"]:  # goal reached: navigate to a new one
            u.set_goal(goals[np.random.randint(len(goals))])
        rec["observations"].append(ob)
        rec["actions"].append(action)
        rec["qpos"].append(info["prev_qpos"])
        rec["qvel"].append(info["prev_qvel"])
        ob = next_ob
    return rec


def _run_shard(job: tuple) -> tuple[int, dict]:
    """Simulate one shard of episodes with a fresh environment (runs in a worker process).

    Returns ``(job index, arrays)``; ``arrays['discarded']`` counts discarded scene episodes.
    """
    index, env_id, split, first, count, seed, episode_length = job
    env = _make_env(env_id, episode_length)
    oracles = None if env_id.startswith("pointmaze") else _manip_oracles(env, env_id)
    episodes, discarded = [], 0
    for k in range(first, first + count):
        for attempt in range(MAX_ATTEMPTS):
            s = _episode_seed(seed, split, k, attempt)
            if oracles is None:
                rec = _maze_episode(env, s, episode_length)
            else:
                rec = _manip_episode(env, oracles, env_id, s, episode_length)
            if not env_id.startswith("scene") or scene_cube_visible(np.asarray(rec["qpos"])):
                break
            discarded += 1
        else:
            raise RuntimeError(f"{env_id}: episode {k} discarded {MAX_ATTEMPTS} times in a row")
        episodes.append(rec)
    env.close()
    out = {}
    for key in episodes[0]:
        dtype = np.int64 if key == "button_states" else np.float32  # OGBench's dtypes
        out[key] = np.concatenate([np.asarray(e[key], dtype=dtype) for e in episodes])
    out["discarded"] = np.array(discarded, np.int64)
    return index, out


# --------------------------------------------------------------------------------------------------
# Settings: what determines the arrays, and the full record stored with them


def settings_for(dataset_name: str, num_episodes: int, *, seed: int = 0, episode_length=None):
    """Every setting that determines a generated dataset's arrays (recorded in its metadata).

    Two runs with equal settings produce equal arrays; ``generate`` resumes an interrupted run
    only when the settings match.
    """
    task = parse_task(dataset_name)
    info = DOMAINS[task.domain]
    env_id = f"{info.env}-v0"
    length = info.episode_length if episode_length is None else episode_length
    maze = env_id.startswith("pointmaze")
    common = {
        "generator": "qam_lite.data.generate",
        "format": GENERATOR_FORMAT,
        "dataset": task.dataset,
        "env": env_id,
        "env_kwargs": _env_kwargs(env_id, length),
        "seed": seed,
        "episodes": num_episodes,
        "val_episodes": max(1, num_episodes // 10),
        "episode_length": length,
        "published_episodes": info.episodes,
        "published_episode_length": info.episode_length,
        "shard": SHARD,
        "seeding": "episode k of split s (0 train, 1 val): SeedSequence([seed, s, k]) for "
        "env.reset(seed=...) and np.random.seed; discarded re-runs append the attempt number",
        "ogbench_version": _dist_version("ogbench"),
        "mujoco_version": _dist_version("mujoco"),
        "numpy_version": np.__version__,
    }
    if maze:
        specific = {
            "ogbench_script": "data_gen_scripts/generate_locomaze.py --dataset_type=navigate",
            "oracle": "unit direction to MazeEnv.get_oracle_subgoal (next BFS waypoint)",
            "noise": MAZE_NOISE,
            "starts": "uniform over free cells",
            "goals": "uniform over junction cells (not mid-corridor); redrawn on success",
        }
    else:
        kind = env_id.split("-")[1] if env_id.startswith("cube") else None
        p_stack = P_STACK[kind] if kind is not None else P_STACK_OTHER
        specific = {
            "ogbench_script": "data_gen_scripts/generate_manipspace.py --dataset_type=play",
            "oracle": "ogbench plan oracles"
            + (" (button, gripper always closed)" if env_id.startswith("puzzle") else ""),
            "noise": PLAN_NOISE,
            "noise_smoothing": PLAN_NOISE_SMOOTHING,
            "first_target": "set by env.reset (the environment's default p_stack 0.5)",
            "p_stack": list(p_stack) if isinstance(p_stack, tuple) else p_stack,
            "p_stack_rule": "drawn per episode (uniform over the range) after reset; used "
            "for every target set when the oracle finishes its sub-task",
            "health_check": "scene: discard and re-run episodes whose cube has y >= 0.29, or "
            "y <= -0.3 outside 0.06 <= z <= 0.08"
            if env_id.startswith("scene")
            else None,
        }
    return {**common, **specific}


# --------------------------------------------------------------------------------------------------
# Public entry point


def generate(
    dataset_name: str,
    num_episodes: int | None = None,
    dataset_dir: str | os.PathLike | None = None,
    *,
    seed: int = 0,
    workers: int | None = None,
    episode_length: int | None = None,
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Generate ``<dataset>.npz`` and ``<dataset>-val.npz`` in ``dataset_dir``.

    Args:
      dataset_name: a dataset (``'cube-single-play-v0'``), domain or task name of a locally
        generable domain (``qam_lite.data.tasks.DOMAINS[...].locally_generable``).
      num_episodes: training episodes (default: the published dataset's); the validation file
        gets ``max(1, num_episodes // 10)`` more from an independent seed stream.
      dataset_dir: output folder (created if missing; default
        :func:`qam_lite.data.datasets.data_dir`).
      seed: base seed; episode ``k`` of split ``s`` uses ``SeedSequence([seed, s, k])``.
      workers: processes (default: CPU count, at most one per shard); 1 runs in this process.
      episode_length: steps per episode (default: the published one, 1001 or 2001).
      progress: show a tqdm progress bar over episodes.
      overwrite: replace existing files (otherwise existing files are an error).

    Returns:
      ``(train_path, val_path)``.

    Raises:
      DataError: the domain cannot be generated locally, bad arguments, files already exist, or
        the folder is not writable.
      KeyboardInterrupt: after keeping every finished shard (rerun the same call to continue).
    """
    try:
        task = parse_task(dataset_name)
    except TaskError as err:
        raise UnknownTaskError(str(err)) from err
    info = DOMAINS[task.domain]
    if not info.locally_generable:
        generable = [d for d, i in DOMAINS.items() if i.locally_generable]
        raise DataError(
            f"{task.dataset} cannot be generated locally (it needs trained low-level experts that "
            f"OGBench does not ship); download it instead (--download). Generable: "
            f"{', '.join(generable)}"
        )
    num_episodes = info.episodes if num_episodes is None else num_episodes
    episode_length = info.episode_length if episode_length is None else episode_length
    for arg, value, low in (
        ("num_episodes (--episodes)", num_episodes, 1),
        ("episode_length (--episode-length)", episode_length, 2),
        ("seed (--seed)", seed, 0),
    ):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise DataError(f"{arg} must be an integer >= {low}, got {value!r}")
    root = data_dir(dataset_dir)
    train_path, val_path = dataset_paths(task, root)
    settings = settings_for(task.dataset, num_episodes, seed=seed, episode_length=episode_length)
    existing = [str(p) for p in (train_path, val_path) if p.exists()]
    # Shards of this very run still on disk mean it has not finished (they are removed only
    # once both files are written): a rerun continues it, whatever files it had already made.
    unfinished = _Parts.holds(root / f"{task.dataset}.parts", settings)
    if existing and not overwrite and not unfinished:
        raise DataError(
            f"{' and '.join(existing)} already exist; pass --overwrite (overwrite=True) to "
            f"replace them" + ("" if len(existing) == 2 else " (both files are made again)")
        )
    check_writable(root, f"generate {task.dataset}")
    with _exclusive(root, task.dataset):
        return _generate(settings, root, workers, progress, train_path, val_path)


@contextlib.contextmanager
def _exclusive(root: Path, dataset: str):
    """One ``generate`` per dataset and folder at a time (an OS lock, released however we end)."""
    import filelock

    lock = filelock.FileLock(root / f".{dataset}.generate.lock", timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise DataError(
            f"another `qam-lite generate {dataset}` is writing into {root}; wait for it to finish "
            "(or stop it), then run this command again"
        ) from None
    try:
        yield
    finally:
        # The empty lock file stays: deleting it would let a process that opened it before the
        # deletion and one that creates a new one both hold "the" lock.
        lock.release()


def _generate(settings, root, workers, progress, train_path, val_path) -> tuple[Path, Path]:
    """Simulate the missing shards, then assemble the two files (the lock is held)."""
    dataset, seed = settings["dataset"], settings["seed"]
    episode_length = settings["episode_length"]
    parts = _Parts(root / f"{dataset}.parts", settings)
    # Temporary files of a final write that a kill interrupted (ours: the lock is held).
    for stale in (*root.glob(f".{dataset}.npz.*.tmp"), *root.glob(f".{dataset}-val.npz.*.tmp")):
        stale.unlink(missing_ok=True)
    jobs = []
    for split, count in ((0, settings["episodes"]), (1, settings["val_episodes"])):
        for first in range(0, count, SHARD):
            jobs.append((split, first, min(SHARD, count - first)))
    try:
        _run_jobs(settings["env"], jobs, seed, episode_length, workers, progress, parts)
    except KeyboardInterrupt:
        done = len(parts.finished(jobs))
        print(
            f"generate: interrupted; {done} of {len(jobs)} shards are kept in {parts.folder}. "
            "Run the same command again to continue from there."
        )
        raise
    try:
        _write_final(settings, jobs, parts, train_path, val_path)
    except WriteError as err:
        raise DataError(
            f"generate {dataset}: {err}; the shards are kept in {parts.folder}: fix this, "
            "then run the same command again to assemble them"
        ) from err
    parts.remove()
    return train_path, val_path


def _write_final(settings: dict, jobs: list, parts, train_path: Path, val_path: Path) -> None:
    """Concatenate the shards into the two dataset files, with the provenance record."""
    episode_length = settings["episode_length"]
    date = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    extra = {"qam_lite_version": _qam_lite_version(), "python": platform.python_version()}
    for split, path in ((0, train_path), (1, val_path)):
        shards = [parts.load(job) for job in jobs if job[0] == split]
        arrays = {k: np.concatenate([s[k] for s in shards]) for k in shards[0] if k != "discarded"}
        count = settings["episodes"] if split == 0 else settings["val_episodes"]
        terminals = np.zeros(count * episode_length, bool)  # OGBench stores them as bool
        terminals[episode_length - 1 :: episode_length] = True
        arrays["terminals"] = terminals
        meta = dict(
            settings,
            **extra,
            source="generated",
            split="train" if split == 0 else "val",
            episodes_in_file=count,
            discarded_episodes=int(sum(int(s["discarded"]) for s in shards)),
            resumed_shards=parts.reused,
            date=date,
        )
        arrays[PROVENANCE_KEY] = np.array(json.dumps(meta))
        save_atomic(path, arrays)


class _Parts:
    """Finished shards of one generation run, kept in a folder until the final files exist.

    ``settings.json`` holds the run's settings; shards from a run with other settings (or a
    damaged shard file) are discarded rather than mixed in.
    """

    @staticmethod
    def holds(folder: Path, settings: dict) -> bool:
        """Whether ``folder`` holds shards of a run with exactly these settings."""
        try:
            return json.loads((folder / "settings.json").read_text()) == settings
        except (OSError, ValueError):
            return False

    def __init__(self, folder: Path, settings: dict):
        self.folder, self.settings, self.reused = folder, settings, 0
        record = folder / "settings.json"
        if folder.exists() and not self.holds(folder, settings):
            print(f"generate: discarding {folder} (shards from a run with other settings)")
            shutil.rmtree(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for stale in folder.glob(".*.tmp"):  # a save killed mid-write
            stale.unlink(missing_ok=True)
        if not record.exists():
            write_bytes(record, json.dumps(settings, indent=1, sort_keys=True).encode())

    def path(self, job: tuple) -> Path:
        split, first, _ = job
        return self.folder / f"{('train', 'val')[split]}-{first // SHARD:05d}.npz"

    def finished(self, jobs: list[tuple]) -> list[tuple]:
        return [job for job in jobs if self.path(job).exists()]

    def save(self, job: tuple, arrays: dict) -> None:
        save_atomic(self.path(job), arrays)

    def load(self, job: tuple) -> dict:
        with np.load(self.path(job), allow_pickle=False) as f:
            return {k: f[k] for k in f.files}

    def valid(self, job: tuple) -> bool:
        """The shard file exists and reads back with the expected number of rows."""
        try:
            arrays = self.load(job)
        except (OSError, ValueError, EOFError, KeyError):
            return False
        rows = job[2] * self.settings["episode_length"]
        return all(len(v) == rows for k, v in arrays.items() if k != "discarded")

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _run_jobs(env_id, jobs, seed, episode_length, workers, progress, parts: _Parts) -> None:
    """Simulate every shard not already in ``parts``; each is saved as soon as it finishes."""
    from tqdm.auto import tqdm

    todo = []
    for job in jobs:
        if parts.path(job).exists() and parts.valid(job):
            parts.reused += 1
            continue
        todo.append(job)
    total = sum(count for *_, count in jobs)
    done = total - sum(count for *_, count in todo)
    if parts.reused:
        print(f"generate: resuming, {parts.reused} of {len(jobs)} shards already done")
    tasks = [
        (i, env_id, split, first, count, seed, episode_length)
        for i, (split, first, count) in enumerate(todo)
    ]
    if not tasks:
        return
    workers = min(os.cpu_count() or 1, len(tasks)) if workers is None else max(1, int(workers))
    with tqdm(
        total=total, initial=done, desc=f"generate {env_id}", unit="ep", disable=not progress
    ) as bar:
        pool = None
        if workers == 1:
            results = map(_run_shard, tasks)
        else:
            # 'spawn' works everywhere (and avoids forking a process that may hold JAX threads).
            # Workers ignore Ctrl-C: the main process handles it (keeps shards, stops the pool)
            # instead of every worker printing its own traceback.
            pool = multiprocessing.get_context("spawn").Pool(workers, _worker_start)
            results = pool.imap_unordered(_run_shard, tasks)
        try:
            for index, arrays in results:
                try:
                    parts.save(todo[index], arrays)
                except WriteError as err:  # disk full, folder made read-only meanwhile
                    raise DataError(
                        f"{err}; finished shards are kept in {parts.folder}: fix this, then run "
                        "the same command again to continue"
                    ) from err
                bar.update(todo[index][2])
        finally:
            if pool is not None:
                pool.terminate()
                pool.join()


def _worker_start() -> None:
    """A worker's start: Ctrl-C is the main process's to handle, no warnings on import, and the
    worker ends within a fraction of a second if the main process dies (a SIGKILL leaves no one
    to stop the pool: an orphan would simulate on for nothing)."""
    import signal
    import threading

    signal.signal(signal.SIGINT, signal.SIG_IGN)
    quiet_env_warnings()
    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


def save_atomic(path: Path, arrays: dict) -> None:
    """Write an ``.npz`` atomically (``qam_lite.atomic``): never a partial file at ``path``."""
    write_with(path, lambda f: np.savez(f, **arrays))


def _qam_lite_version() -> str:
    from qam_lite import __version__

    return __version__


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None
