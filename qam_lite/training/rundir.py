"""A run folder: what it holds, who may write it, and whether a new ``train`` call may continue it.

Files (all written atomically, see :mod:`qam_lite.atomic`)::

    config.json        the Config of the run (resuming requires the same one)
    provenance.json    command, commit, device, versions, data record and fingerprint, date;
                       each resumption is appended under "resumed"
    metrics.csv        step, seed, phase, losses and Q statistics
    eval.csv           step, seed, phase, success_rate, episode_return, episode_length, episodes
    curve.png          success rate against step
    checkpoint.npz     agent states, step, phase, config, data fingerprint, online state
    summary.json       the final numbers
    diverged.npz       the state at a NaN/inf loss (only after a divergence)
    .lock              held (``flock``) while a process trains in the folder

:func:`locked` takes the folder's lock for the duration of a ``train`` call (a second process gets
a :class:`RunFolderError` naming the holder's pid, host and command). :func:`prepare` decides what
a new call does with what is already there: resume the checkpoint of the same configuration,
start afresh a folder whose earlier attempt stopped before its first checkpoint (its rows are
discarded, not appended to), and refuse anything else (:class:`RunMismatch`) unless
``overwrite``. :func:`check_data` refuses to resume with a dataset other than the one the run
started with. :func:`load_run` reads a finished or running folder for evaluation.

This module sits below both ``qam_lite.training.train`` and ``qam_lite.training.evaluate``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import hashlib
import json
import os
import platform
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from qam_lite.atomic import WriteError, describe
from qam_lite.chunks import ROW_KEYS
from qam_lite.config import Config, from_dict, to_dict
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import logs

CHECKPOINT = "checkpoint.npz"
LOCK = ".lock"
LOCK_OWNER = ".lock-owner.json"
#: Every file a run writes (what ``--overwrite`` removes; nothing else in the folder is touched).
RUN_FILES = (
    CHECKPOINT,
    "config.json",
    "provenance.json",
    "metrics.csv",
    "eval.csv",
    "curve.png",
    "summary.json",
    "diverged.npz",
)
#: Config fields that say where data comes from, not what is trained: a run may resume with
#: them changed (e.g. the dataset folder moved); the data fingerprint still has to match.
WHERE_NOT_WHAT = frozenset({"dataset_dir", "download"})


class RunMismatch(ValueError):
    """``out_dir`` holds results of another configuration or dataset."""


class RunFolderError(Exception):
    """The run folder cannot be used: it is a file, not writable, or in use by another process."""


# --------------------------------------------------------------------------------------------
# The lock


def _check_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunFolderError(f"--out {out} is a file; accepted: a folder (new, or a run folder)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunFolderError(f"cannot create run folder {out}: {err.strerror}") from err
    if not os.access(out, os.W_OK | os.X_OK):
        raise RunFolderError(f"run folder {out} is not writable; accepted: a writable folder")


@contextlib.contextmanager
def locked(out: str | Path) -> Iterator[Path]:
    """Hold ``out``'s lock (creating the folder) while the block runs; yields the folder.

    The lock is an OS file lock (``filelock``): it is released when the process ends, however
    it ends, so a killed run never leaves a stale lock. Raises :class:`RunFolderError` if the
    folder is a file, cannot be created or written, or another process holds the lock.
    """
    import filelock

    out = Path(out)
    _check_folder(out)
    lock = filelock.FileLock(out / LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        raise RunFolderError(
            f"run folder {out} is in use by {_owner(out)}; wait for it to finish, or use "
            "another --out"
        ) from None
    except OSError as err:
        raise RunFolderError(describe(err, out / LOCK)) from err
    try:
        owner = {
            "pid": os.getpid(),
            "host": platform.node(),
            "command": " ".join([Path(sys.argv[0]).name, *sys.argv[1:]]) if sys.argv else "",
            "since": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        }
        logs.write_json(out / LOCK_OWNER, owner)
        _remove_temporaries(out)
        yield out
    finally:
        with contextlib.suppress(OSError):
            (out / LOCK_OWNER).unlink()
        lock.release()


def in_use(out: str | Path) -> str | None:
    """Who holds ``out``'s lock right now (``"pid N on host H (since ...: command)"``), or None.

    Takes and releases the lock at once: a folder that is free stays free."""
    import filelock

    out = Path(out)
    if not (out / LOCK).exists():
        return None
    lock = filelock.FileLock(out / LOCK, timeout=0)
    try:
        lock.acquire()
    except filelock.Timeout:
        return _owner(out)
    except OSError:
        return None  # unreadable: train itself will say why
    lock.release()
    return None


def _owner(out: Path) -> str:
    try:
        o = json.loads((out / LOCK_OWNER).read_text())
        return f"pid {o['pid']} on host {o['host']} (since {o['since']}: {o['command']})"
    except (OSError, ValueError, KeyError):
        return "another process"


def _remove_temporaries(out: Path) -> None:
    """Temporary files of writes that a kill interrupted (safe: we hold the lock)."""
    for name in (*RUN_FILES, LOCK_OWNER):
        for tmp in out.glob(f".{name}.*.tmp"):
            with contextlib.suppress(OSError):
                tmp.unlink()


# --------------------------------------------------------------------------------------------
# Continue, restart or refuse


def config_diff(saved: dict, wanted: dict, names: tuple[str, str] = ("saved", "now")) -> list[str]:
    """The settings in which two config dicts differ, where-not-what fields aside, as phrases
    ``"tau: saved 1.0 vs now 2.0"`` (``names`` label the two sides)."""
    keys = (set(saved) | set(wanted)) - WHERE_NOT_WHAT
    first, second = names
    return [
        f"{k}: {first} {saved.get(k)!r} vs {second} {wanted.get(k)!r}"
        for k in sorted(keys)
        if saved.get(k) != wanted.get(k)
    ]


def clear(out: Path) -> None:
    """Remove every file a run writes (:data:`RUN_FILES`) from ``out``."""
    for name in RUN_FILES:
        with contextlib.suppress(FileNotFoundError):
            (out / name).unlink()


def prepare(out: Path, config: Config, *, overwrite: bool = False) -> dict | None:
    """Make ``out`` ready for ``config``; return the checkpoint header to resume, or None.

    * ``overwrite``: every run file is removed; the run starts at step 0.
    * a checkpoint of the same configuration: its header is returned (the caller checks the data
      with :func:`check_data`, then cuts the CSVs back with :func:`cut_back`).
    * no checkpoint, and the folder's ``config.json`` is this configuration: an earlier attempt
      stopped before its first checkpoint; its files are removed and the run starts at step 0.
    * anything else holding results (another configuration, results without a config):
      :class:`RunMismatch` naming the differences.
    """
    if overwrite:
        clear(out)
        return None
    wanted = to_dict(config)
    if (out / CHECKPOINT).exists():
        meta = ckpt.read_meta(out / CHECKPOINT)
        diff = config_diff(meta.get("config", {}), wanted)
        if diff:
            raise RunMismatch(
                f"{out} holds a run with a different configuration ({'; '.join(diff)}); use "
                "another --out folder, the same settings to resume it, or --overwrite to discard it"
            )
        return meta
    present = [name for name in RUN_FILES if (out / name).exists()]
    if not present:
        return None
    saved = _read_json(out / "config.json")
    if saved is not None and not config_diff(saved, wanted):
        clear(out)  # the same run, killed before its first checkpoint: nothing to keep
        return None
    what = (
        f"a run with a different configuration ({'; '.join(config_diff(saved, wanted))})"
        if saved is not None
        else f"results of an unknown run ({', '.join(present)})"
    )
    raise RunMismatch(
        f"{out} holds {what} and no checkpoint; use another --out folder, or --overwrite to "
        "discard it"
    )


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------------------------
# The dataset a run trains on


def data_fingerprint(train: dict) -> dict[str, Any]:
    """``{'transitions', 'sha256'}`` of a dataset's arrays as training reads them (float32).

    Identifies the data whatever folder it sits in: a moved dataset resumes, a regenerated or
    different one does not (about 0.5 s per GB).
    """
    digest = hashlib.sha256()
    for key in ROW_KEYS:
        array = np.ascontiguousarray(np.asarray(train[key], np.float32))
        digest.update(f"{key}{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    return {"transitions": int(len(train["observations"])), "sha256": digest.hexdigest()}


def shards_fingerprint(first: dict, shards: list[Path], interval: int) -> dict[str, Any]:
    """The fingerprint of a run that cycles ``shards`` every ``interval`` updates.

    ``first``: :func:`data_fingerprint` of the first shard as training reads it. Every shard is
    identified by its name, size and the CRC-32 of each of its arrays, which a ``.npz`` (a zip
    file) records in its directory: read without reading the data, so a folder of 100 shards of
    1 GB costs milliseconds, and a changed, added, removed or renamed shard (or another interval)
    gives another fingerprint.

    Returns:
      ``{'transitions' (of the first shard), 'sha256', 'shards' (count), 'shard_interval'}``.

    Raises:
      ValueError: a shard is not a readable ``.npz`` file (the message names it).
    """
    digest = hashlib.sha256(f"{first['sha256']} interval {interval}".encode())
    for path in shards:
        try:
            with zipfile.ZipFile(path) as z:
                members = sorted((i.filename, i.file_size, i.CRC) for i in z.infolist())
        except (OSError, zipfile.BadZipFile) as err:
            raise ValueError(f"shard {path} is not a readable .npz file ({err})") from err
        digest.update(json.dumps([Path(path).name, Path(path).stat().st_size, members]).encode())
    return {
        "transitions": first["transitions"],
        "sha256": digest.hexdigest(),
        "shards": len(shards),
        "shard_interval": int(interval),
    }


def check_data(out: Path, meta: dict, fingerprint: dict, source: dict) -> None:
    """Refuse to resume ``meta``'s run with a dataset other than the one it started with."""
    saved = meta.get("data_fingerprint")
    if saved is None or saved == fingerprint:
        return
    where = meta.get("data_file") or meta.get("data_path") or "its original dataset"
    raise RunMismatch(
        f"{out} was trained on another dataset ({saved['transitions']} transitions, sha256 "
        f"{saved['sha256'][:12]}..., from {where}) than the one loaded now "
        f"({fingerprint['transitions']} transitions, sha256 {fingerprint['sha256'][:12]}..., "
        f"from {source.get('file', source.get('source'))}); resuming would mix two datasets in "
        "one result. Accepted: the original dataset (--dataset-dir), another --out folder, or "
        "--overwrite to start this folder over"
    )


def cut_back(out: Path, step: int) -> None:
    """Cut ``metrics.csv`` and ``eval.csv`` back to the rows of steps ``<= step`` (the resumed
    checkpoint's): rows a killed session wrote after it are written again, identically."""
    for name in ("metrics.csv", "eval.csv"):
        logs.truncate_csv(out / name, step)


def write_records(out: Path, config: Config, prov: dict, meta: dict | None) -> None:
    """Write ``config.json`` and ``provenance.json`` for a fresh run, or add a resumption.

    A resumed run keeps its first record; the new session (command, commit, device, date and
    the step it resumed from) is appended to its ``resumed`` list.
    """
    path = out / "provenance.json"
    first = _read_json(path) if meta is not None else None
    if first is None:
        logs.write_json(out / "config.json", to_dict(config))
        logs.write_json(path, prov)
        return
    resumes = first.setdefault("resumed", [])
    resumes.append(
        {"from_step": int(meta["step"])}
        | {k: prov.get(k) for k in ("command", "git_commit", "device", "host", "date")}
    )
    logs.write_json(path, first)


# --------------------------------------------------------------------------------------------
# Reading a run back (JAX and the agents are imported only here: the sweep's planner reads run
# folders, their status and data records, without loading JAX)


@dataclasses.dataclass
class Run:
    """A saved run: its config, agent and latest checkpointed states (for ``evaluate``)."""

    config: Config
    agent: Any
    states: Any
    step: int
    phase: str
    meta: dict
    path: Path | None = None  # the run folder it was loaded from

    def seed_state(self, i: int):
        """Seed ``i``'s state (``0 <= i < num_seeds``; anything else is refused by name)."""
        from qam_lite.training.update import take_seed

        n = self.config.num_seeds
        if not 0 <= i < n:
            raise ValueError(
                f"seed_index={i} is invalid for {self.path or 'this run'} ({n} seeds); "
                f"accepted: 0 .. {n - 1}"
            )
        return take_seed(self.states, i)


def load_run(run_dir: str | Path) -> Run:
    """Load ``run_dir/checkpoint.npz`` with its config (raises ``CheckpointError`` if absent)."""
    from qam_lite.agents import make_agent
    from qam_lite.training.update import init_states

    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        raise ckpt.CheckpointError(
            f"{run_dir} has no {CHECKPOINT}; accepted: a run folder written by `qam-lite train`"
        )
    meta = ckpt.read_meta(path)
    recorded = _read_json(Path(run_dir) / "config.json")
    if recorded is not None:
        # A checkpoint copied in from another run would otherwise be evaluated (or rendered)
        # under this folder's name as if it were this run's.
        diff = config_diff(meta["config"], recorded, ("checkpoint", "config.json"))
        if diff:
            raise RunMismatch(
                f"{path} is not the checkpoint of the run in {run_dir}: it differs from "
                f"config.json in {'; '.join(diff)}; accepted: the run folder's own checkpoint"
            )
    config = from_dict(meta["config"])
    agent = make_agent(config, meta["obs_dim"], meta["action_dim"])
    states, meta = ckpt.load(path, {"states": init_states(agent, config)})
    return Run(config, agent, states["states"], meta["step"], meta["phase"], meta, Path(run_dir))


__all__ = [
    "CHECKPOINT",
    "RUN_FILES",
    "Run",
    "RunFolderError",
    "RunMismatch",
    "WriteError",
    "check_data",
    "clear",
    "config_diff",
    "cut_back",
    "data_fingerprint",
    "in_use",
    "load_run",
    "locked",
    "prepare",
    "shards_fingerprint",
    "write_records",
]
