"""Checkpoints: a pytree of arrays, named extra arrays and a JSON header in one ``.npz`` file.

**Why our own format and not orbax-checkpoint.** Orbax is the Flax ecosystem's checkpointer and
is installed with flax; we measured it against this module on a 20 x (512, 512) float32 tree on
the 2-core CPU: save 0.27 s vs 0.79 s here (this module fsyncs the data, orbax's default save
does not wait for that), restore 0.49 s vs 0.27 s, plus 1.1 s to import orbax. Speed does not
decide it. What does: a run's resume state is *one file replaced by one rename*. The agent
states, the replay rows of the online phase and the header (step, phase, config, data
fingerprint) always come from the same moment, and a SIGKILL at any instant leaves either the
previous checkpoint or the new one, with nothing to clean up and no "latest step" to discover.
Orbax writes a directory tree per step (``manifest.ocdbt``, ``ocdbt.process_0/``,
``_METADATA``, ``commit_success.txt``, ...) committed by renaming a temporary directory, with
leftover temporary directories to remove and a step directory to find on resume; its value
(asynchronous and multi-host sharded saves of large models) does not apply to these
few-megabyte, single-host states. A single ``.npz`` is also easy to copy, attach or inspect
with NumPy alone.

No pickles: the tree's *structure* is never stored. :func:`load` rebuilds it from a template of
the same structure (e.g. a freshly initialised agent state), checking every leaf's shape and
dtype, so a checkpoint from a different configuration is refused instead of silently misread.
Writes go through :func:`qam_lite.atomic.write_with` (unique temporary name, fsync, rename,
folder fsync); a failed save (disk full) leaves the previous checkpoint and no temporary file.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from qam_lite.atomic import write_with

_META = "__meta__"
#: Everything reading a damaged or foreign file can raise (a truncated zip, a text file, ...).
_READ_ERRORS = (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile)


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or does not match the run it should resume."""


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_numpy(x: Any) -> np.ndarray:
    # Typed PRNG keys cannot be saved as such: store their raw uint32 data.
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def _unreadable(path: Path, err: BaseException) -> CheckpointError:
    # Never echo NumPy's "allow_pickle" advice: loading pickles from a damaged file is unsafe.
    kind = "truncated or damaged" if isinstance(err, zipfile.BadZipFile | EOFError) else "damaged"
    return CheckpointError(
        f"checkpoint {path} cannot be read: it is {kind}, or not a qam-lite checkpoint "
        f"({type(err).__name__}). To train again: move it away (the run restarts from step 0), "
        "or run `qam-lite train` with --overwrite to discard the folder's results"
    )


def save(
    path: str | Path,
    tree: Any,
    meta: dict[str, Any],
    extras: dict[str, np.ndarray] | None = None,
) -> Path:
    """Save the leaves of ``tree``, the JSON-able ``meta`` and named ``extras`` arrays atomically.

    ``extras`` hold arrays whose shapes vary from run to run (e.g. the online replay rows); they
    are read back with :func:`load_extras`. Raises :class:`qam_lite.atomic.WriteError` if the
    file cannot be written (the previous checkpoint is then unchanged).
    """
    path = Path(path)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": _to_numpy(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"extra_{k}": np.asarray(v) for k, v in (extras or {}).items()})
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    return write_with(path, lambda f: np.savez(f, **arrays))


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON header of a checkpoint (cheap: the arrays are not read)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return json.loads(z[_META].tobytes().decode())
    except _READ_ERRORS as err:
        raise _unreadable(Path(path), err) from err


def load(path: str | Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restore ``(tree, meta)`` from ``path``; ``template`` supplies the tree structure.

    Every stored leaf must match the template leaf's shape and dtype (PRNG keys are re-wrapped).
    """
    leaves, treedef = jax.tree_util.tree_flatten(template)
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z[_META].tobytes().decode())
            count = sum(f.startswith("leaf_") for f in z.files)
            if count != len(leaves):
                raise CheckpointError(
                    f"checkpoint {path} holds {count} arrays, the run expects {len(leaves)}"
                )
            stored = [z[f"leaf_{i:05d}"] for i in range(len(leaves))]
    except _READ_ERRORS as err:
        raise _unreadable(Path(path), err) from err
    restored = []
    for i, (ref, value) in enumerate(zip(leaves, stored, strict=True)):
        if _is_key(ref):
            value = jax.random.wrap_key_data(value, impl=jax.random.key_impl(ref))
            want = jax.random.key_data(ref)
            got = jax.random.key_data(value)
        else:
            want, got = ref, value
            if got.dtype.kind == "V" and got.dtype.itemsize == np.dtype(want.dtype).itemsize:
                # NumPy stores extension dtypes (bfloat16) as raw bytes: view them back.
                got = value = got.view(want.dtype)
        if tuple(want.shape) != got.shape or np.dtype(want.dtype) != got.dtype:
            raise CheckpointError(
                f"checkpoint {path}: array {i} has shape {got.shape} {got.dtype}, "
                f"the run expects {want.shape} {want.dtype}"
            )
        restored.append(jnp.asarray(value) if not _is_key(ref) else value)
    return jax.tree_util.tree_unflatten(treedef, restored), meta


def load_extras(path: str | Path) -> dict[str, np.ndarray]:
    """The ``extras`` arrays saved with a checkpoint (empty dict if none)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            return {f[len("extra_") :]: z[f] for f in z.files if f.startswith("extra_")}
    except _READ_ERRORS as err:
        raise _unreadable(Path(path), err) from err
