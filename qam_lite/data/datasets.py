"""Load an OGBench single-task dataset (official, downloaded, generated locally, or sharded).

``load`` never touches the network unless ``download=True``. Before OGBench reads anything it
checks that both files exist and look like datasets *of this task's environment* (keys, shapes
and the observation/action widths of ``qam_lite.data.tasks.DOMAINS``, read from the ``.npy`` headers
without loading the data); it then hands over to ``ogbench.make_env_and_datasets``, which
relabels rewards for the task, checks that every observation and action is finite, and applies
the QAM conventions (action clipping, sparse rewards). Every error names the file, the key and
the fix (for a damaged file: the ``qam-lite generate ... --overwrite`` or ``--download`` that
replaces it).

Large datasets (the paper's 100M-transition cube-quadruple and puzzle-4x4 data) come as a folder
of shards, ``<domain>-100m-v0/*.npz`` (each with its ``-val.npz``), as the authors' loader reads
them: the shards sorted by name, the training loop moving to the next shard every
``SHARD_INTERVAL`` updates and cycling (see :class:`ShardCycle`). ``load`` uses such a folder
when it is ``dataset_dir`` itself or a sub-folder of it.

This module only reads datasets (and downloads official ones); ``qam_lite.data.generate``
writes them and imports from here, never the reverse.
"""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np

from qam_lite.atomic import WriteError, fsync_dir, make_folder
from qam_lite.data.tasks import DOMAINS, Task, TaskError, parse_task

ACTION_CLIP = 1.0 - 1e-5  # keeps actions strictly inside (-1, 1), as the published code does
DATA_ENV = "QAM_LITE_DATA"  # environment variable overriding the default dataset folder
DEFAULT_DIR = "~/.ogbench/data"  # OGBench's own default, so official downloads are shared
PROVENANCE_KEY = "qam_lite_provenance"  # JSON string ``qam_lite.data.generate`` stores in its files
TIMEOUT_ENV = "QAM_LITE_DOWNLOAD_TIMEOUT"  # seconds a download may wait for the server's next byte
DEFAULT_TIMEOUT = 60.0
SHARD_INTERVAL = 1000  # updates per shard before moving to the next (the authors' default)
_SHARD_DIR = re.compile(r"^(?P<domain>.+)-(?P<size>\d+[mb])-v0$")  # 'cube-quadruple-play-100m-v0'


def quiet_env_warnings() -> None:
    """Hide two harmless warnings of making OGBench environments, in this process: MuJoCo's GLFW
    binding on a machine without a display ("The DISPLAY environment variable is missing"; no
    verb but ``render`` draws anything, and it uses EGL or OSMesa) and gymnasium's about
    OGBench's float64 action bounds ("precision lowered by casting to float32").

    Called by the CLI for every verb and first thing in every worker process (generation and
    evaluation workers are spawned: filters do not carry over), before MuJoCo is imported.
    """
    warnings.filterwarnings("ignore", message=".*DISPLAY environment variable is missing")
    warnings.filterwarnings("ignore", module="glfw")
    warnings.filterwarnings("ignore", message=".*precision lowered.*")


class DataError(Exception):
    """Any dataset problem a user can fix; the CLI prints it as one line."""


class DatasetMissingError(DataError):
    """The dataset files are not in the folder and downloading was not allowed."""


class DatasetError(DataError):
    """A dataset file is unreadable, has a missing or wrongly shaped key, or non-finite values."""


class DownloadError(DataError):
    """The official download failed: unreachable server, time-out or truncated file."""


class UnknownTaskError(DataError, TaskError):
    """An unknown task name (both a ``DataError`` and a ``tasks.TaskError``)."""


# --------------------------------------------------------------------------------------------------
# Folders and paths


def data_dir(dataset_dir: str | os.PathLike | None = None) -> Path:
    """The dataset folder: ``dataset_dir``, else ``$QAM_LITE_DATA``, else ``~/.ogbench/data``.

    Raises:
      DataError: the path is an existing file, or a missing path named like a ``.npz`` file
        (``--dataset-dir`` takes the folder that holds the files).
    """
    chosen = dataset_dir if dataset_dir is not None else os.environ.get(DATA_ENV, DEFAULT_DIR)
    root = Path(chosen).expanduser()
    if root.exists() and not root.is_dir():
        raise DataError(
            f"dataset folder {root} is a file, not a folder; --dataset-dir (dataset_dir, "
            f"${DATA_ENV}) takes the folder holding <dataset>.npz and <dataset>-val.npz, "
            f"e.g. --dataset-dir {root.parent}"
        )
    if not root.exists() and root.suffix == ".npz":
        raise DataError(
            f"dataset folder {root} looks like a file name; --dataset-dir takes the folder "
            f"holding <dataset>.npz and <dataset>-val.npz, e.g. --dataset-dir {root.parent}"
        )
    return root


def check_writable(root: Path, purpose: str) -> None:
    """Create ``root`` if needed and check a file can be written in it.

    Raises:
      DataError: naming the folder, the reason (read-only, permission, a file on the path) and
        what needs the folder (``purpose``).
    """
    try:
        make_folder(root, purpose)
    except WriteError as err:
        why = os.strerror(err.errno) if err.errno else str(err)
        raise DataError(
            f"cannot write to dataset folder {root} ({why}) to {purpose}; choose "
            f"a writable folder with --dataset-dir (dataset_dir) or ${DATA_ENV}"
        ) from err


def dataset_paths(task_or_name: str | Task, dataset_dir=None) -> tuple[Path, Path]:
    """``(train, val)`` file paths of a task's standard dataset."""
    task = _task(task_or_name)
    root = data_dir(dataset_dir)
    return root / f"{task.dataset}.npz", root / f"{task.dataset}-val.npz"


def _dir_arg(root: Path) -> str:
    """`` --dataset-dir ROOT`` unless ``root`` is the default folder (for suggested commands)."""
    return "" if root == Path(DEFAULT_DIR).expanduser() else f" --dataset-dir {root}"


def fix_hint(task: Task, root: Path) -> str:
    """The commands that replace a damaged dataset of ``task`` in ``root``."""
    info = DOMAINS[task.domain]
    download = f"delete it and fetch the official file with --download (into {root})"
    if not info.locally_generable:
        return f"replace it: {download}; this domain cannot be generated locally"
    return (
        f"replace it: `qam-lite generate {task.dataset} --episodes {info.episodes}"
        f"{_dir_arg(root)} --overwrite` regenerates it locally, or {download}"
    )


# --------------------------------------------------------------------------------------------------
# Provenance: how the data was made, and whether results on it compare with the paper's


def read_provenance(path: str | os.PathLike) -> dict | None:
    """The settings :mod:`qam_lite.data.generate` stored in ``path``; None for official files."""
    with np.load(path, allow_pickle=False) as f:
        if PROVENANCE_KEY not in f.files:
            return None
        return json.loads(str(f[PROVENANCE_KEY]))


def comparability(task: Task, meta: dict) -> tuple[bool, str]:
    """Whether results on the data ``meta`` describes compare with the paper's, and why.

    The paper used OGBench's standard files, except 100M-transition sharded data for
    cube-quadruple and puzzle-4x4 (``DOMAINS[...].paper_data``). Locally generated data counts
    as comparable only at the published size (same oracles and settings, other random draws).
    """
    info = DOMAINS[task.domain]
    if info.paper_data is not None and not meta.get("shards_cycled"):
        if meta.get("source") == "official-sharded":
            return False, (
                f"only one shard of {info.paper_data} used; the paper cycles through all shards "
                f"every {SHARD_INTERVAL} updates"
            )
        return False, (
            f"the paper trained {task.domain} on {info.paper_data} (100M transitions in shards); "
            f"this is the standard-size dataset"
        )
    if meta.get("source") == "generated":
        episodes, length = meta.get("episodes"), meta.get("episode_length")
        if episodes != info.episodes or length != info.episode_length:
            return False, (
                f"generated locally with {episodes} episodes x {length} steps; OGBench's published "
                f"dataset has {info.episodes} x {info.episode_length}"
            )
        return True, "generated locally with OGBench's oracles at the published settings"
    if meta.get("source") == "official-sharded":
        return True, f"{meta.get('shards')} shards, cycled every {SHARD_INTERVAL} updates"
    return True, "OGBench's official dataset"


def provenance(task_or_name: str | Task, dataset_dir=None, *, shards_cycled: bool = False) -> dict:
    """Where a task's training data came from and whether it matches the paper's.

    Returns:
      the generator's record (``source: 'generated'`` plus every generation setting) or
      ``{'source': 'official'}`` for files without one, or for a shard folder
      ``{'source': 'official-sharded', 'folder', 'shards', 'first_shard', 'shards_cycled'}``;
      always with ``paper_comparable`` (bool) and ``paper_comparable_reason`` (str).
      ``shards_cycled``: the caller trains on every shard in turn (:class:`ShardCycle`).
    """
    task = _task(task_or_name)
    root = data_dir(dataset_dir)
    folder = shard_folder(task, root)
    if folder is not None:
        shards = find_shards(folder)
        meta = {
            "source": "official-sharded",
            "folder": folder.name,  # relative to the dataset folder
            "shards": len(shards),
            "first_shard": shards[0].name,
            "shards_cycled": bool(shards_cycled),
        }
    else:
        train, _ = dataset_paths(task, root)
        try:
            meta = read_provenance(train)
        except (OSError, ValueError, zipfile.BadZipFile) as err:
            raise DatasetError(
                f"{train}: cannot read the file ({err}); {fix_hint(task, root)}"
            ) from err
        if meta is None:
            meta = {"source": "official"}
        meta.setdefault("source", "generated")
    ok, why = comparability(task, meta)
    return dict(meta, paper_comparable=ok, paper_comparable_reason=why)


# --------------------------------------------------------------------------------------------------
# Loading


def load(
    task_or_name: str | Task,
    dataset_dir=None,
    *,
    download: bool = False,
    verbose: bool = True,
    timeout: float | None = None,
):
    """The single-task environment and its train/validation datasets.

    Args:
      task_or_name: a ``Task`` or a task name (see ``qam_lite.data.tasks.parse_task``).
      dataset_dir: folder holding ``<dataset>.npz`` and ``<dataset>-val.npz``, or a shard folder
        ``<domain>-100m-v0`` (itself or as a sub-folder; then its first shard is loaded, see
        :class:`ShardCycle`). Default: ``$QAM_LITE_DATA`` or ``~/.ogbench/data``.
      download: allow downloading missing official files (the only network access).
      verbose: print one line saying which data is used (and its provenance if generated).
      timeout: seconds a download may wait for the server (default ``$QAM_LITE_DOWNLOAD_TIMEOUT``
        or 60).

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
      DatasetError: an unreadable file, a missing or wrongly shaped key, observations or actions
        of another width than the environment's, or non-finite values (the message names the
        file and key and how to replace the file).
      DownloadError: the download failed or timed out.
      DataError: an unknown task name, or ``dataset_dir`` is a file or not writable for a download.
    """
    task = _task(task_or_name)
    root = data_dir(dataset_dir)
    folder = shard_folder(task, root)
    if folder is not None:
        shards = find_shards(folder)
        env, train, val = load_shard(task, shards[0])
        if verbose:
            print(
                f"data: {folder} (sharded, {len(shards)} shards), first shard {shards[0].name}: "
                f"{len(train['rewards'])} transitions"
            )
        return env, train, val

    train_path, val_path = dataset_paths(task, root)
    missing = [p for p in (train_path, val_path) if not p.exists()]
    if missing and not download:
        raise DatasetMissingError(_missing_message(task, root, missing))
    if missing:
        check_writable(root, f"download {task.dataset}")
        fetch(missing, timeout=timeout)
    for path in (train_path, val_path):
        check_file(path, task, root)
    check_pair(train_path, val_path, task, root)
    env, train, val = _ogbench_load(task, root, None, None)
    out = [_finish(d, task, path, env, root) for d, path in ((train, train_path), (val, val_path))]
    if verbose:
        _say_source(task, root, train_path, len(out[0]["rewards"]))
    return env, out[0], out[1]


#: Generation settings that differ between a dataset's two files by design.
_PER_FILE = frozenset({"split", "episodes_in_file", "discarded_episodes", "resumed_shards", "date"})


def check_pair(train_path: Path, val_path: Path, task: Task, root: Path) -> None:
    """Refuse a training file and a validation file made by two different ``generate`` runs
    (e.g. ``--overwrite --seed 1`` killed between the two files, leaving a seed-1 training
    file beside a seed-0 validation file). Official files (no record) are not checked."""
    try:
        records = [read_provenance(p) for p in (train_path, val_path)]
    except (OSError, ValueError, zipfile.BadZipFile):
        return  # check_file has read both; a damaged record is not this check's business
    if None in records:
        return
    first, second = ({k: v for k, v in r.items() if k not in _PER_FILE} for r in records)
    differ = sorted(k for k in set(first) | set(second) if first.get(k) != second.get(k))
    if differ:
        said = "; ".join(f"{k}: {first.get(k)!r} vs {second.get(k)!r}" for k in differ)
        raise DatasetError(
            f"{train_path.name} and {val_path.name} in {root} come from two different generate "
            f"runs ({said}); {fix_hint(task, root)}"
        )


def _say_source(task: Task, root: Path, train_path: Path, n: int) -> None:
    meta = provenance(task, root)
    if meta["source"] == "official":
        print(f"data: {train_path} (official OGBench), {n} transitions")
    else:
        print(
            f"data: {train_path} GENERATED LOCALLY by {meta.get('generator')} on "
            f"{meta.get('date')}: {meta.get('episodes')} episodes x "
            f"{meta.get('episode_length')} steps, seed {meta.get('seed')}, "
            f"ogbench {meta.get('ogbench_version')}"
        )
    if not meta["paper_comparable"]:
        print(f"data: NOT COMPARABLE with the paper's results: {meta['paper_comparable_reason']}")


def _ogbench_load(task: Task, root: Path, shard: Path | None, env):
    """OGBench's loader and single-task relabelling (standard files, or one shard file)."""
    import ogbench

    kwargs = {} if shard is None else {"dataset_path": str(shard)}
    if env is not None:
        kwargs.update(dataset_only=True, cur_env=env)
    try:
        with warnings.catch_warnings():
            # gymnasium notes that OGBench's float64 action bounds become float32: harmless noise.
            warnings.filterwarnings("ignore", message=".*precision lowered", category=UserWarning)
            out = ogbench.make_env_and_datasets(
                task.name, dataset_dir=str(root), compact_dataset=False, **kwargs
            )
    except (OSError, KeyError, ValueError, EOFError, IndexError, zipfile.BadZipFile) as err:
        what = shard if shard is not None else f"{task.dataset} in {root}"
        raise DatasetError(
            f"{what}: OGBench could not load it ({err}); {fix_hint(task, root)}"
        ) from err
    return (env, *out) if env is not None else out


def check_file(path: Path, task: Task, root: Path | None = None) -> dict[str, tuple]:
    """Check an OGBench ``.npz`` file's keys and shapes from its headers; return ``{key: shape}``.

    Observation and action widths must be the task environment's (``DOMAINS[...].obs_dim`` and
    ``act_dim``, the widths of its gymnasium spaces).

    Raises:
      DatasetError: naming the file, the key, the expected shape and how to replace the file.
    """
    root = path.parent if root is None else root
    info = DOMAINS[task.domain]
    shapes = _npz_shapes(path, task, root)
    needed = ["observations", "actions", "terminals", "qpos", "qvel"]
    if task.domain.startswith(("puzzle", "scene")):
        needed.append("button_states")
    absent = [k for k in needed if k not in shapes]
    if absent:
        raise DatasetError(
            f"{path}: missing key(s) {absent}; an OGBench {task.domain} dataset needs {needed} "
            f"(found {sorted(shapes)}); {fix_hint(task, root)}"
        )
    n = shapes["observations"][0] if shapes["observations"] else None
    expect = {
        "observations": f"(N, {info.obs_dim})",
        "actions": f"(N, {info.act_dim})",
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
                f"N = {n} rows as 'observations' (N > 0); {fix_hint(task, root)}"
            )
    for key, width, what in (
        ("observations", info.obs_dim, "observations"),
        ("actions", info.act_dim, "actions"),
    ):
        if shapes[key][1] != width:
            raise DatasetError(
                f"{path}: key {key!r} has shape {shapes[key]}, but {task.env_name} has "
                f"{what} of width {width} (expected {expect[key]}): the file is not a "
                f"{task.dataset} dataset; {fix_hint(task, root)}"
            )
    return shapes


def _npz_shapes(path: Path, task: Task, root: Path) -> dict[str, tuple]:
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
        raise DatasetError(
            f"{path}: not a readable .npz dataset ({err}); {fix_hint(task, root)}"
        ) from err
    return shapes


def check_finite(array: np.ndarray, path: Path, key: str, hint: str, chunk: int = 1 << 16):
    """Raise ``DatasetError`` naming ``path``, ``key`` and the first row holding NaN or inf.

    Checked in chunks of rows, so a 1M-row array never needs a second full-size temporary.
    """
    for start in range(0, len(array), chunk):
        block = array[start : start + chunk]
        ok = np.isfinite(block).reshape(len(block), -1).all(axis=1)
        if not ok.all():
            row = start + int(np.argmin(ok))
            raise DatasetError(
                f"{path}: key {key!r} holds NaN or inf (first at row {row} of OGBench's loaded "
                f"dataset, {int((~ok).sum())} bad row(s) in rows {start}..{start + len(block) - 1}"
                f"); {hint}"
            )


def _finish(data: dict, task: Task, path: Path, env, root: Path) -> dict:
    """Check what OGBench loaded against the environment, then apply the QAM conventions."""
    n = len(data["observations"])
    hint = fix_hint(task, root)
    for key in ("rewards", "masks", "next_observations"):
        if key not in data or len(data[key]) != n:
            raise DatasetError(f"{path}: OGBench returned no usable {key!r} for {task.name}")
    for key, space in (("observations", env.observation_space), ("actions", env.action_space)):
        if tuple(data[key].shape[1:]) != tuple(space.shape):
            raise DatasetError(
                f"{path}: key {key!r} has rows of shape {data[key].shape[1:]}, but "
                f"{task.env_name}'s {key[:-1]} space has shape {space.shape}; {hint}"
            )
    for key in ("observations", "actions", "next_observations"):
        check_finite(data[key], path, key, hint)
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
        f"{_dir_arg(root)}` (fewer --episodes for a quick try), or {download}."
    )


def _task(task_or_name) -> Task:
    try:
        return parse_task(task_or_name)
    except TaskError as err:
        raise UnknownTaskError(str(err)) from err


# --------------------------------------------------------------------------------------------------
# Download (OGBench's own downloader has no time-out: a silent server would hang it forever)


def fetch(paths: list[Path], *, timeout: float | None = None, base_url: str | None = None):
    """Download official files ``paths`` (named ``<dataset>[-val].npz``) from OGBench's server.

    ``urllib`` with a ``timeout``: connecting and every read wait at most that long for the
    server, so a server that accepts and never answers (or stalls mid-file) ends in a clear
    error instead of a hang. Each file is written to a unique temporary name, synced and renamed
    into place, so an interrupted download never leaves a partial ``.npz``.

    Raises:
      DownloadError: unreachable server, HTTP error, time-out or truncated transfer.
    """
    if base_url is None:
        from ogbench.utils import DATASET_URL as base_url
    if timeout is None:
        timeout = float(os.environ.get(TIMEOUT_ENV, DEFAULT_TIMEOUT))
    for path in paths:
        _fetch_one(f"{base_url.rstrip('/')}/{path.name}", path, timeout)


def _fetch_one(url: str, path: Path, timeout: float) -> None:
    from tqdm.auto import tqdm

    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.part")
    advice = (
        f"retry later, raise the limit with {TIMEOUT_ENV}=SECONDS, or generate the data "
        f"locally (qam-lite generate)"
    )
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(tmp, "wb") as f:
            total = response.length
            with tqdm(total=total, unit="B", unit_scale=True, desc=path.name) as bar:
                while chunk := response.read(1 << 20):
                    f.write(chunk)
                    bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
            size = f.tell()
        if total is not None and size != total:
            raise DownloadError(f"download of {url} stopped at {size} of {total} bytes; {advice}")
        os.replace(tmp, path)
        fsync_dir(path.parent)
    except TimeoutError as err:
        raise DownloadError(
            f"download of {url} timed out: the server sent nothing for {timeout:g} s; {advice}"
        ) from err
    except urllib.error.HTTPError as err:
        raise DownloadError(f"download of {url} failed: HTTP {err.code} {err.reason}") from err
    except urllib.error.URLError as err:
        if isinstance(err.reason, TimeoutError):
            raise DownloadError(
                f"download of {url} timed out: no connection within {timeout:g} s; {advice}"
            ) from err
        raise DownloadError(f"cannot reach {url} ({err.reason}); {advice}") from err
    except OSError as err:
        raise DownloadError(f"download of {url} into {path} failed ({err}); {advice}") from err
    finally:
        tmp.unlink(missing_ok=True)


# --------------------------------------------------------------------------------------------------
# Sharded (100M-transition) datasets


def shard_folder(task: Task, root: Path) -> Path | None:
    """The shard folder for ``task`` under ``root`` (or ``root`` itself), or ``None``.

    A shard folder is named ``<domain>-<size>-v0`` with a size such as ``100m`` or ``1b``
    (``cube-quadruple-play-100m-v0``). The paper's own size (``DOMAINS[...].paper_data``) is
    preferred when several exist.
    """
    match = _SHARD_DIR.match(root.name)
    if match is not None and match["domain"] == task.domain:
        return root
    if not root.is_dir():
        return None
    candidates = sorted(
        p
        for p in root.iterdir()
        if p.is_dir() and (m := _SHARD_DIR.match(p.name)) and m["domain"] == task.domain
    )
    preferred = DOMAINS[task.domain].paper_data
    for p in candidates:
        if p.name == preferred:
            return p
    return candidates[0] if candidates else None


def find_shards(folder: Path) -> list[Path]:
    """Training shards of a shard folder: its ``*.npz`` files except ``*-val.npz``, sorted by name.

    Raises:
      DatasetMissingError: the folder holds no shard.
    """
    shards = sorted(p for p in folder.glob("*.npz") if not p.name.endswith("-val.npz"))
    if not shards:
        raise DatasetMissingError(
            f"shard folder {folder} holds no .npz shard; expected files such as "
            f"{folder.name.replace('-v0', '')}-000.npz with their -val.npz (as the large OGBench "
            f"datasets are published), or remove the folder to use the standard dataset"
        )
    return shards


def load_shard(task_or_name: str | Task, shard: Path, env=None):
    """``(env, train, val)`` for one shard file (its validation file is ``<shard>-val.npz``).

    Same checks and conventions as :func:`load`; ``env`` reuses an environment already made.
    """
    task = _task(task_or_name)
    shard = Path(shard)
    val = shard.with_name(shard.name[: -len(".npz")] + "-val.npz")
    missing = [p for p in (shard, val) if not p.exists()]
    if missing:
        raise DatasetMissingError(
            f"shard {shard.name} of {shard.parent}: {' and '.join(map(str, missing))} missing; "
            f"every shard needs its -val.npz beside it"
        )
    for path in (shard, val):
        check_file(path, task, shard.parent)
    env, train, val_data = _ogbench_load(task, shard.parent, shard, env)
    out = [_finish(d, task, p, env, shard.parent) for d, p in ((train, shard), (val_data, val))]
    return env, out[0], out[1]


class ShardCycle:
    """The authors' schedule over a shard folder: shard ``(update // interval) % num_shards``.

    Update ``i`` counts from 1, as the authors' loop does: updates ``1..interval-1`` train on
    shard 0, the next ``interval`` on shard 1, and so on, cycling. One shard (train and val) is
    held at a time.

    Example::

        cycle = ShardCycle("cube-quadruple-play-task2", "/data/cube-quadruple-play-100m-v0")
        train, val = cycle.data(update)       # loads only when the shard changes
    """

    def __init__(self, task_or_name, folder, interval: int = SHARD_INTERVAL, env=None):
        if not isinstance(interval, int) or interval < 1:
            raise DataError(f"shard interval must be an integer >= 1, got {interval!r}")
        self.task = _task(task_or_name)
        self.folder = Path(folder).expanduser()
        self.shards = find_shards(self.folder)
        self.interval = interval
        self.env = env
        self._index, self._data = None, None

    def index(self, update: int) -> int:
        """The shard used at update ``update`` (1-based)."""
        return (update // self.interval) % len(self.shards)

    def data(self, update: int) -> tuple[dict, dict]:
        """``(train, val)`` of the shard for update ``update``."""
        k = self.index(update)
        if k != self._index:
            self._data = None  # release the previous shard before loading the next
            self.env, train, val = load_shard(self.task, self.shards[k], self.env)
            self._index, self._data = k, (train, val)
        return self._data
