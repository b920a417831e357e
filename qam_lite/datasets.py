"""Load an OGBench single-task dataset (official or generated locally) as plain NumPy arrays.

``load`` never touches the network unless ``download=True``: it first checks that both files exist
and look like OGBench datasets (keys and shapes read from the ``.npy`` headers, without loading
the data), then hands over to ``ogbench.make_env_and_datasets``, which relabels rewards for the
task, and finally applies the QAM conventions (action clipping, sparse rewards).
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path

import numpy as np

from qam_lite.tasks import DOMAINS, Task, TaskError, parse_task

ACTION_CLIP = 1.0 - 1e-5  # keeps actions strictly inside (-1, 1), as the published code does
DATA_ENV = "QAM_LITE_DATA"  # environment variable overriding the default dataset folder
DEFAULT_DIR = "~/.ogbench/data"  # OGBench's own default, so official downloads are shared


class DataError(Exception):
    """Any dataset problem a user can fix; the CLI prints it as one line."""


class DatasetMissingError(DataError):
    """The dataset files are not in the folder and downloading was not allowed."""


class DatasetError(DataError):
    """A dataset file is unreadable, or has a missing or wrongly shaped key."""


class UnknownTaskError(DataError, TaskError):
    """An unknown task name (both a ``DataError`` and a ``tasks.TaskError``)."""


def data_dir(dataset_dir: str | os.PathLike | None = None) -> Path:
    """The dataset folder: ``dataset_dir``, else ``$QAM_LITE_DATA``, else ``~/.ogbench/data``."""
    chosen = dataset_dir if dataset_dir is not None else os.environ.get(DATA_ENV, DEFAULT_DIR)
    return Path(chosen).expanduser()


def dataset_paths(task_or_name: str | Task, dataset_dir=None) -> tuple[Path, Path]:
    """``(train, val)`` file paths of a task's dataset."""
    task = _task(task_or_name)
    root = data_dir(dataset_dir)
    return root / f"{task.dataset}.npz", root / f"{task.dataset}-val.npz"


def provenance(task_or_name: str | Task, dataset_dir=None) -> dict:
    """Where a task's training file came from: the generator's record or ``{'source': 'official'}``.

    Files without a ``qam_lite_provenance`` entry are assumed to be OGBench's official downloads.
    """
    from qam_lite.generate import read_provenance

    train, _ = dataset_paths(task_or_name, dataset_dir)
    try:
        meta = read_provenance(train)
    except (OSError, ValueError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{train}: cannot read the file ({err})") from err
    return meta if meta is not None else {"source": "official"}


def load(
    task_or_name: str | Task, dataset_dir=None, *, download: bool = False, verbose: bool = True
):
    """The single-task environment and its train/validation datasets.

    Args:
      task_or_name: a ``Task`` or a task name (see ``qam_lite.tasks.parse_task``).
      dataset_dir: folder holding ``<dataset>.npz`` and ``<dataset>-val.npz`` (default:
        ``$QAM_LITE_DATA`` or ``~/.ogbench/data``).
      download: allow OGBench to download missing files (the only network access).
      verbose: print one line saying which data is used (and its provenance if generated).

    Returns:
      ``(env, train, val)``: ``env`` is OGBench's single-task gymnasium environment for the task;
      ``train`` and ``val`` are dicts of float32 NumPy arrays, ``N`` transitions each:

      * ``observations (N, obs_dim)``, ``next_observations (N, obs_dim)``: ``s_i`` and ``s_{i+1}``
        (OGBench drops each episode's final observation as a start state).
      * ``actions (N, act_dim)``: clipped to ``±(1 - 1e-5)``.
      * ``rewards (N,)``: OGBench's single-task relabelling, computed from the state ``s_i``:
        dense domains ``-(number of unsolved sub-goals)`` (0 when solved); sparse domains (puzzle,
        scene) ``-1[r != 0]``, i.e. -1 until solved, then 0.
      * ``masks (N,)``: 0.0 where ``s_i`` solves the task (no bootstrapping past it), else 1.0.
      * ``terminals (N,)``: 1.0 at the last transition of each episode (an episode boundary, a
        time-out, not a task terminal), else 0.0.

    Raises:
      DatasetMissingError: files absent and ``download=False`` (the message says how to generate
        them locally or allow the download).
      DatasetError: an unreadable file or a missing/wrongly shaped key.
      DataError: an unknown task name.
    """
    task = _task(task_or_name)
    root = data_dir(dataset_dir)
    train_path, val_path = dataset_paths(task, root)
    missing = [p for p in (train_path, val_path) if not p.exists()]
    if missing and not download:
        raise DatasetMissingError(_missing_message(task, root, missing))
    if not missing:
        for path in (train_path, val_path):
            check_file(path, task)

    import ogbench

    try:
        with warnings.catch_warnings():
            # gymnasium notes that OGBench's float64 action bounds become float32: harmless noise.
            warnings.filterwarnings("ignore", message=".*precision lowered", category=UserWarning)
            env, train, val = ogbench.make_env_and_datasets(
                task.name, dataset_dir=str(root), compact_dataset=False
            )
    except (OSError, KeyError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{task.dataset} in {root}: OGBench could not load it ({err})") from err

    if missing:  # just downloaded: validate what arrived
        for path in (train_path, val_path):
            check_file(path, task)
    out = [_finish(d, task, path) for d, path in ((train, train_path), (val, val_path))]
    if verbose:
        meta = provenance(task, root)
        if meta.get("source") == "official":
            print(f"data: {train_path} (official OGBench), {len(out[0]['rewards'])} transitions")
        else:
            print(
                f"data: {train_path} GENERATED LOCALLY by {meta.get('generator')} on "
                f"{meta.get('date')}: {meta.get('episodes')} episodes x "
                f"{meta.get('episode_length')} steps, seed {meta.get('seed')}, "
                f"ogbench {meta.get('ogbench_version')}"
            )
    return env, out[0], out[1]


def check_file(path: Path, task: Task) -> dict[str, tuple]:
    """Check an OGBench ``.npz`` file's keys and shapes from its headers; return ``{key: shape}``.

    Raises:
      DatasetError: naming the file, the key and the expected shape.
    """
    shapes = _npz_shapes(path)
    needed = ["observations", "actions", "terminals", "qpos", "qvel"]
    if task.domain.startswith(("puzzle", "scene")):
        needed.append("button_states")
    absent = [k for k in needed if k not in shapes]
    if absent:
        raise DatasetError(
            f"{path}: missing key(s) {absent}; an OGBench {task.domain} dataset needs {needed} "
            f"(found {sorted(shapes)})"
        )
    n = shapes["observations"][0] if shapes["observations"] else None
    expect = {
        "observations": "(N, obs_dim)",
        "actions": "(N, act_dim)",
        "terminals": "(N,)",
        "qpos": "(N, nq)",
        "qvel": "(N, nv)",
        "button_states": "(N, num_buttons)",
    }
    for key in needed:
        shape = shapes[key]
        ndim = 1 if key == "terminals" else 2
        if len(shape) != ndim or shape[0] != n or n == 0:
            raise DatasetError(
                f"{path}: key {key!r} has shape {shape}, expected {expect[key]} with the same "
                f"N = {n} rows as 'observations' (N > 0)"
            )
    return shapes


def _npz_shapes(path: Path) -> dict[str, tuple]:
    """Array shapes in an ``.npz`` read from each member's ``.npy`` header (no data loaded)."""
    try:
        shapes = {}
        with zipfile.ZipFile(path) as archive:
            for member in archive.namelist():
                if not member.endswith(".npy"):
                    continue
                with archive.open(member) as f:
                    version = np.lib.format.read_magic(f)
                    if version == (1, 0):
                        shape, _, _ = np.lib.format.read_array_header_1_0(f)
                    elif version == (2, 0):
                        shape, _, _ = np.lib.format.read_array_header_2_0(f)
                    else:  # rare (3.0: unicode field names); read the array itself
                        shape = np.load(f, allow_pickle=False).shape
                shapes[member[: -len(".npy")]] = tuple(shape)
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as err:
        raise DatasetError(f"{path}: not a readable .npz dataset ({err})") from err
    return shapes


def _finish(data: dict, task: Task, path: Path) -> dict:
    """Apply the QAM conventions to OGBench's relabelled dataset."""
    n = len(data["observations"])
    for key in ("rewards", "masks", "next_observations"):
        if key not in data or len(data[key]) != n:
            raise DatasetError(f"{path}: OGBench returned no usable {key!r} for {task.name}")
    rewards = np.asarray(data["rewards"], np.float32)
    if DOMAINS[task.domain].reward == "sparse":
        rewards = -(rewards != 0).astype(np.float32)
    return {
        "observations": np.asarray(data["observations"], np.float32),
        "actions": np.clip(np.asarray(data["actions"], np.float32), -ACTION_CLIP, ACTION_CLIP),
        "rewards": rewards,
        "masks": np.asarray(data["masks"], np.float32),
        "terminals": np.asarray(data["terminals"], np.float32),
        "next_observations": np.asarray(data["next_observations"], np.float32),
    }


def _missing_message(task: Task, root: Path, missing: list[Path]) -> str:
    files = " and ".join(str(p) for p in missing)
    info = DOMAINS[task.domain]
    dir_arg = "" if str(root) == str(Path(DEFAULT_DIR).expanduser()) else f" --dataset-dir {root}"
    download = (
        f"allow the official download with --download (download=True) to fetch it into {root}"
    )
    if not info.locally_generable:
        return (
            f"dataset {task.dataset} not found ({files} missing). It cannot be generated locally "
            f"(it needs trained experts OGBench does not ship): {download}."
        )
    return (
        f"dataset {task.dataset} not found ({files} missing). Either generate it locally with "
        f"OGBench's oracles: `qam-lite generate {task.dataset} --episodes {info.episodes}"
        f"{dir_arg}` (fewer --episodes for a quick try), or {download}."
    )


def _task(task_or_name) -> Task:
    try:
        return parse_task(task_or_name)
    except TaskError as err:
        raise UnknownTaskError(str(err)) from err
