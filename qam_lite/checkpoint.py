"""Checkpoints: a pytree of arrays plus a JSON header, written atomically to one ``.npz`` file.

No pickles: the tree's *structure* is never stored. :func:`load` rebuilds it from a template of
the same structure (e.g. a freshly initialised agent state), checking every leaf's shape and dtype,
so a checkpoint from a different configuration is refused instead of silently misread.
A half-written file can never replace a good one: :func:`save` writes ``<name>.tmp`` and renames.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

_META = "__meta__"


class CheckpointError(Exception):
    """A checkpoint is missing, unreadable or does not match the run it should resume."""


def _is_key(x: Any) -> bool:
    return isinstance(x, jax.Array) and jnp.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_numpy(x: Any) -> np.ndarray:
    # Typed PRNG keys cannot be saved as such: store their raw uint32 data.
    return np.asarray(jax.random.key_data(x) if _is_key(x) else x)


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` via a temporary file + rename (readers never see half a file)."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save(
    path: str | Path,
    tree: Any,
    meta: dict[str, Any],
    extras: dict[str, np.ndarray] | None = None,
) -> Path:
    """Save the leaves of ``tree``, the JSON-able ``meta`` and named ``extras`` arrays atomically.

    ``extras`` hold arrays whose shapes vary from run to run (e.g. the online replay rows); they
    are read back with :func:`load_extras`.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    leaves = jax.tree_util.tree_leaves(tree)
    arrays = {f"leaf_{i:05d}": _to_numpy(leaf) for i, leaf in enumerate(leaves)}
    arrays.update({f"extra_{k}": np.asarray(v) for k, v in (extras or {}).items()})
    arrays[_META] = np.frombuffer(json.dumps(meta).encode(), dtype=np.uint8)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    return path


def read_meta(path: str | Path) -> dict[str, Any]:
    """The JSON header of a checkpoint (cheap: the arrays are not read)."""
    try:
        with np.load(path) as z:
            return json.loads(z[_META].tobytes().decode())
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err


def load(path: str | Path, template: Any) -> tuple[Any, dict[str, Any]]:
    """Restore ``(tree, meta)`` from ``path``; ``template`` supplies the tree structure.

    Every stored leaf must match the template leaf's shape and dtype (PRNG keys are re-wrapped).
    """
    leaves, treedef = jax.tree_util.tree_flatten(template)
    try:
        with np.load(path) as z:
            meta = json.loads(z[_META].tobytes().decode())
            stored = [z[f"leaf_{i:05d}"] for i in range(len(leaves))]
            extra = sum(f.startswith("leaf_") for f in z.files) - len(leaves)
    except (OSError, ValueError, KeyError) as err:
        raise CheckpointError(
            f"cannot read checkpoint {path} (expected {len(leaves)} arrays): {err}"
        ) from err
    if extra:
        raise CheckpointError(
            f"checkpoint {path} holds {len(leaves) + extra} arrays, the run expects {len(leaves)}"
        )
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
        with np.load(path) as z:
            return {f[len("extra_") :]: z[f] for f in z.files if f.startswith("extra_")}
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read checkpoint {path}: {err}") from err
