"""Generate OGBench-format datasets locally with OGBench's own scripted oracles.

Where the official download is unreachable, ``generate`` builds the same kind of ``play`` /
``navigate`` data the benchmark ships, with the published settings (DESIGN.md, "OGBench facts"):

* Manipulation (cube-*, scene, puzzle-*): the environment is made with
  ``terminate_at_goal=False, mode='data_collection'``; OGBench's plan oracles
  (``ogbench.manipspace.oracles.plan``) act with noise 0.1 and noise smoothing 0.5; whenever the
  oracle finishes its sub-task the environment sets a new random target. For cube domains each
  episode draws its stacking probability from U(0, 0.25) (double), U(0.05, 0.35) (triple) or
  U(0.1, 0.5) (quadruple), and the episode's first target is drawn with it too.
* Pointmaze navigate: no trained expert is needed. The oracle heads for the next waypoint of the
  maze's shortest path (``MazeEnv.get_oracle_subgoal``, the centre of the next cell, or the goal
  itself once in the goal's cell) at unit speed, plus Gaussian noise of std 0.5, clipped to
  [-1, 1]. Starts are random free cells, goals random *junction* cells (free cells that are not
  the middle of a straight corridor); reaching a goal draws a new one.

Every episode has ``episode_length`` steps (1001: 1000 transitions once OGBench's loader drops the
last observation of each episode). The validation file holds ``val_fraction`` more episodes from an
independent seed stream. Episodes are simulated in fixed shards of ``SHARD`` episodes, each with a
fresh environment and per-episode seeds, so the files depend only on ``seed`` and the episode
counts, never on the number of worker processes.

Files go exactly where ``ogbench.make_env_and_datasets`` looks: ``<dataset_dir>/<dataset>.npz``
and ``<dataset>-val.npz``, with ``observations, actions, terminals, qpos, qvel`` (and
``button_states`` for puzzle and scene) so single-task reward relabelling works, plus
``qam_lite_provenance``: a JSON string with the generator, settings, seed, counts, versions, date.
"""

from __future__ import annotations

import datetime
import json
import multiprocessing
import os
import warnings
from pathlib import Path

import numpy as np

from qam_lite.datasets import DataError, UnknownTaskError, dataset_paths
from qam_lite.tasks import DOMAINS, TaskError, parse_task

SHARD = 10  # episodes per fresh environment (fixed: it is part of what the seed determines)
PLAN_NOISE = 0.1  # std of the plan oracles' action noise, in units of the action range
PLAN_NOISE_SMOOTHING = 0.5  # std (in steps) of the Gaussian filter correlating that noise
MAZE_NOISE = 0.5  # std of the pointmaze oracle's Gaussian action noise
P_STACK = {"double": (0.0, 0.25), "triple": (0.05, 0.35), "quadruple": (0.1, 0.5)}
PROVENANCE_KEY = "qam_lite_provenance"


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
        # Puzzle is buttons only; pressing with a closed gripper avoids pointless gripper motion.
        return {"button": ButtonPlanOracle(gripper_always_closed=True, **kw)}
    return {
        "cube": CubePlanOracle(**kw),
        "button": ButtonPlanOracle(**kw),
        "drawer": DrawerPlanOracle(**kw),
        "window": WindowPlanOracle(**kw),
    }


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


def maze_oracle_action(env, rng: np.random.RandomState) -> np.ndarray:
    """Unit vector toward the next waypoint of the shortest path to the goal, plus noise."""
    u = env.unwrapped
    xy, goal = u.get_xy(), np.asarray(u.cur_goal_xy)
    if u.xy_to_ij(xy) == u.xy_to_ij(goal):
        target = goal  # already in the goal's cell: head for the goal itself
    else:
        target, _ = u.get_oracle_subgoal(xy, goal)
    direction = target - xy
    direction = direction / (np.linalg.norm(direction) + 1e-6)
    return np.clip(direction + rng.normal(0.0, MAZE_NOISE, size=2), -1.0, 1.0)


# --------------------------------------------------------------------------------------------------
# Episodes


def _episode_seed(seed: int, split: int, index: int) -> int:
    return int(np.random.SeedSequence([seed, split, index]).generate_state(1)[0])


def _make_env(env_id: str, episode_length: int):
    import gymnasium
    import ogbench  # noqa: F401  (registers the environments)

    kwargs = dict(terminate_at_goal=False, max_episode_steps=episode_length + 1)
    if not env_id.startswith("pointmaze"):
        kwargs["mode"] = "data_collection"
    with warnings.catch_warnings():
        # gymnasium notes that OGBench's float64 action bounds become float32: harmless noise.
        warnings.filterwarnings("ignore", message=".*precision lowered", category=UserWarning)
        return gymnasium.make(env_id, **kwargs)


def _manip_episode(env, oracles, env_id, seed, episode_length):
    np.random.seed(seed)  # the plan oracles draw from NumPy's global generator
    u = env.unwrapped
    ob, info = env.reset(seed=seed)
    kind = env_id.split("-")[1] if env_id.startswith("cube") else None
    target_kwargs = {}
    if kind in P_STACK:
        target_kwargs["p_stack"] = np.random.uniform(*P_STACK[kind])
        ob, info = u.set_new_target(**target_kwargs)  # first target with this episode's p_stack
    oracle = oracles[info["privileged/target_task"]]
    oracle.reset(ob, info)
    rec = {k: [] for k in ("observations", "actions", "qpos", "qvel")}
    buttons = "button_states" in info
    if buttons:
        rec["button_states"] = []
    for _ in range(episode_length):
        action = np.clip(oracle.select_action(ob, info), -1.0, 1.0)
        rec["observations"].append(ob)
        rec["actions"].append(action)
        rec["qpos"].append(info["qpos"])  # the state *of* `ob` (relabelling reads it per row)
        rec["qvel"].append(info["qvel"])
        if buttons:
            rec["button_states"].append(info["button_states"])
        ob, _, _, _, info = env.step(action)
        if oracle.done:
            ob, info = u.set_new_target(**target_kwargs)
            oracle = oracles[info["privileged/target_task"]]
            oracle.reset(ob, info)
    return rec


def _maze_episode(env, seed, episode_length):
    np.random.seed(seed)  # MazeEnv's position noise draws from NumPy's global generator
    rng = np.random.RandomState(seed)
    u = env.unwrapped
    free = [tuple(c) for c in np.argwhere(u.maze_map == 0)]
    goals = junction_cells(u.maze_map)
    start = free[rng.randint(len(free))]
    goal = goals[rng.randint(len(goals))]
    ob, _ = env.reset(seed=seed, options={"task_info": {"init_ij": start, "goal_ij": goal}})
    rec = {k: [] for k in ("observations", "actions", "qpos", "qvel")}
    for _ in range(episode_length):
        if u.compute_success():
            u.set_goal(goal_ij=goals[rng.randint(len(goals))])
        action = maze_oracle_action(env, rng)
        rec["observations"].append(ob)
        rec["actions"].append(action)
        rec["qpos"].append(u.data.qpos.copy())
        rec["qvel"].append(u.data.qvel.copy())
        ob, *_ = env.step(action)
    return rec


def _run_shard(job: tuple) -> tuple[int, dict]:
    """Simulate one shard of episodes with a fresh environment (runs in a worker process)."""
    shard, env_id, seeds, episode_length = job
    env = _make_env(env_id, episode_length)
    oracles = None if env_id.startswith("pointmaze") else _manip_oracles(env, env_id)
    episodes = []
    for s in seeds:
        if oracles is None:
            rec = _maze_episode(env, s, episode_length)
        else:
            rec = _manip_episode(env, oracles, env_id, s, episode_length)
        episodes.append({k: np.asarray(v, dtype=np.float32) for k, v in rec.items()})
    env.close()
    out = {k: np.concatenate([e[k] for e in episodes]) for k in episodes[0]}
    return shard, out


# --------------------------------------------------------------------------------------------------
# Public entry point


def generate(
    dataset_name: str,
    num_episodes: int,
    dataset_dir: str | os.PathLike,
    *,
    seed: int = 0,
    workers: int | None = None,
    episode_length: int = 1001,
    val_fraction: float = 0.1,
    progress: bool = True,
    overwrite: bool = False,
) -> tuple[Path, Path]:
    """Generate ``<dataset>.npz`` and ``<dataset>-val.npz`` in ``dataset_dir``.

    Args:
      dataset_name: a dataset (``'cube-single-play-v0'``), domain or task name of a locally
        generable domain (``qam_lite.tasks.DOMAINS[...].locally_generable``).
      num_episodes: training episodes; the validation file gets ``max(1, round(val_fraction *
        num_episodes))`` more from an independent seed stream.
      dataset_dir: output folder (created if missing).
      seed: base seed; episode ``k`` of split ``s`` uses ``SeedSequence([seed, s, k])``.
      workers: processes (default: CPU count, at most one per shard); 1 runs in this process.
      episode_length: steps per episode (observations stored per episode).
      val_fraction: size of the validation file relative to ``num_episodes``.
      progress: show a tqdm progress bar over episodes.
      overwrite: replace existing files (otherwise existing files are an error).

    Returns:
      ``(train_path, val_path)``.

    Raises:
      DataError: the domain cannot be generated locally, bad arguments, or files already exist.
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
    for arg, value, low in (
        ("num_episodes", num_episodes, 1),
        ("episode_length", episode_length, 2),
    ):
        if not isinstance(value, int) or value < low:
            raise DataError(f"{arg} must be an integer >= {low}, got {value!r}")
    if not 0.0 <= val_fraction <= 1.0:
        raise DataError(f"val_fraction must be in [0, 1], got {val_fraction!r}")
    train_path, val_path = dataset_paths(task, Path(dataset_dir))
    existing = [str(p) for p in (train_path, val_path) if p.exists()]
    if existing and not overwrite:
        raise DataError(f"{' and '.join(existing)} already exist; pass overwrite=True to replace")
    train_path.parent.mkdir(parents=True, exist_ok=True)

    env_id = f"{info.env}-v0"
    num_val = max(1, round(val_fraction * num_episodes))
    jobs = []
    for split, count in ((0, num_episodes), (1, num_val)):
        seeds = [_episode_seed(seed, split, k) for k in range(count)]
        for start in range(0, count, SHARD):
            jobs.append((split, start // SHARD, seeds[start : start + SHARD]))
    results = _run_jobs(env_id, jobs, episode_length, workers, progress)

    import ogbench

    from qam_lite import __version__

    maze = env_id.startswith("pointmaze")
    settings = {
        "generator": "qam_lite.generate",
        "qam_lite_version": __version__,
        "dataset": task.dataset,
        "env": env_id,
        "env_kwargs": {"terminate_at_goal": False, **({} if maze else {"mode": "data_collection"})},
        "seed": seed,
        "episode_length": episode_length,
        "shard": SHARD,
        "oracle": "pointmaze waypoint" if maze else "ogbench plan",
        "noise": MAZE_NOISE if maze else PLAN_NOISE,
        "noise_smoothing": None if maze else PLAN_NOISE_SMOOTHING,
        "p_stack": P_STACK.get(env_id.split("-")[1]) if env_id.startswith("cube") else None,
        "ogbench_version": getattr(ogbench, "__version__", None) or _dist_version("ogbench"),
        "mujoco_version": _dist_version("mujoco"),
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    for split, path, count in ((0, train_path, num_episodes), (1, val_path, num_val)):
        shards = [results[(split, k)] for k in range((count + SHARD - 1) // SHARD)]
        arrays = {k: np.concatenate([s[k] for s in shards]) for k in shards[0]}
        terminals = np.zeros(count * episode_length, np.float32)
        terminals[episode_length - 1 :: episode_length] = 1.0
        arrays["terminals"] = terminals
        meta = dict(settings, split="train" if split == 0 else "val", episodes=count)
        arrays[PROVENANCE_KEY] = np.array(json.dumps(meta))
        _save_atomic(path, arrays)
    return train_path, val_path


def _run_jobs(env_id, jobs, episode_length, workers, progress) -> dict:
    from tqdm.auto import tqdm

    tasks = [(i, env_id, seeds, episode_length) for i, (_, _, seeds) in enumerate(jobs)]
    total = sum(len(seeds) for *_, seeds in jobs)
    workers = min(os.cpu_count() or 1, len(jobs)) if workers is None else max(1, int(workers))
    out = {}
    with tqdm(total=total, desc=f"generate {env_id}", unit="ep", disable=not progress) as bar:
        if workers == 1:
            done = map(_run_shard, tasks)
            pool = None
        else:
            # 'spawn' works everywhere (and avoids forking a process that may hold JAX threads).
            pool = multiprocessing.get_context("spawn").Pool(workers)
            done = pool.imap_unordered(_run_shard, tasks)
        try:
            for index, rec in done:
                split, shard, seeds = jobs[index]
                out[(split, shard)] = rec
                bar.update(len(seeds))
        finally:
            if pool is not None:
                pool.terminate()
    return out


def _save_atomic(path: Path, arrays: dict) -> None:
    """Write ``path`` via a temporary file and a rename, so a crash never leaves a partial file."""
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
    os.replace(tmp, path)


def _dist_version(name: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return None


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The provenance dict ``generate`` stored in ``path``, or ``None`` (e.g. official files)."""
    with np.load(path, allow_pickle=False) as f:
        if PROVENANCE_KEY not in f.files:
            return None
        return json.loads(str(f[PROVENANCE_KEY]))
