"""Checkpoints and run logs: exact round trips, refusal of mismatched files, atomic writes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite import checkpoint as ckpt
from qam_lite import logs


def _tree():
    return {
        "params": {"w": jnp.arange(6.0).reshape(2, 3), "b": jnp.array([1.5, -2.0])},
        "step": jnp.int32(7),
        "key": jax.random.key(3),
        "raw_key": jax.random.PRNGKey(4),
        "tuple": (jnp.ones((2, 2), jnp.bfloat16), jnp.array([True, False])),
    }


def _zeros_like(tree):
    def zero(x):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            return jax.random.key(0)
        return jnp.zeros_like(x)

    return jax.tree.map(zero, tree)


def test_round_trip_is_exact_including_keys_and_extras(tmp_path):
    tree = _tree()
    extras = {"rows": np.arange(12, dtype=np.float32).reshape(4, 3)}
    path = ckpt.save(tmp_path / "c.npz", tree, {"step": 7, "phase": "offline"}, extras)
    assert not list(tmp_path.glob("*.tmp"))  # the temporary file was renamed away
    restored, meta = ckpt.load(path, _zeros_like(tree))
    assert meta == {"step": 7, "phase": "offline"} == ckpt.read_meta(path)
    flat_a, tree_a = jax.tree_util.tree_flatten(tree)
    flat_b, tree_b = jax.tree_util.tree_flatten(restored)
    assert tree_a == tree_b
    for a, b in zip(flat_a, flat_b, strict=True):
        if jnp.issubdtype(a.dtype, jax.dtypes.prng_key):
            a, b = jax.random.key_data(a), jax.random.key_data(b)
        assert a.dtype == b.dtype
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # A restored typed key draws the same numbers as the original.
    np.testing.assert_array_equal(
        jax.random.normal(tree["key"], (3,)), jax.random.normal(restored["key"], (3,))
    )
    np.testing.assert_array_equal(ckpt.load_extras(path)["rows"], extras["rows"])


def test_mismatched_template_is_refused(tmp_path):
    tree = _tree()
    path = ckpt.save(tmp_path / "c.npz", tree, {})
    wrong_shape = {**_zeros_like(tree), "params": {"w": jnp.zeros((3, 3)), "b": jnp.zeros(2)}}
    with pytest.raises(ckpt.CheckpointError, match=r"shape \(2, 3\).*expects \(3, 3\)"):
        ckpt.load(path, wrong_shape)
    fewer = {k: v for k, v in _zeros_like(tree).items() if k != "tuple"}
    with pytest.raises(ckpt.CheckpointError, match="arrays, the run expects"):
        ckpt.load(path, fewer)
    more = {**_zeros_like(tree), "extra": jnp.zeros(1)}
    with pytest.raises(ckpt.CheckpointError, match="cannot read"):
        ckpt.load(path, more)


def test_corrupt_file_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "c.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ckpt.CheckpointError, match="cannot read checkpoint"):
        ckpt.read_meta(path)
    with pytest.raises(ckpt.CheckpointError):
        ckpt.load(path, {"a": jnp.zeros(1)})


def test_failed_save_keeps_previous_checkpoint(tmp_path, monkeypatch):
    path = ckpt.save(tmp_path / "c.npz", {"a": jnp.ones(2)}, {"step": 1})

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(np, "savez", boom)
    with pytest.raises(OSError):
        ckpt.save(path, {"a": jnp.zeros(2)}, {"step": 2})
    assert ckpt.read_meta(path) == {"step": 1}


def test_csv_append_and_truncate(tmp_path):
    path = tmp_path / "m.csv"
    logs.append_rows(path, [{"step": s, "seed": 0, "loss": s / 10} for s in (100, 200)])
    logs.append_rows(path, [{"step": 300, "seed": 0, "loss": 0.125, "ignored": 1}])
    rows = logs.read_rows(path)
    assert [r["step"] for r in rows] == ["100", "200", "300"]
    assert set(rows[0]) == {"step", "seed", "loss"}  # header fixed by the first rows
    assert float(rows[2]["loss"]) == 0.125
    assert logs.truncate_csv(path, 200) == 2
    assert [r["step"] for r in logs.read_rows(path)] == ["100", "200"]
    logs.append_rows(path, [{"step": 250, "seed": 0, "loss": 1.0}])
    assert [r["step"] for r in logs.read_rows(path)] == ["100", "200", "250"]
    assert logs.truncate_csv(tmp_path / "absent.csv", 5) == 0


def test_curve_plot_written(tmp_path):
    path = tmp_path / "eval.csv"
    assert logs.plot_curve(path, tmp_path / "c.png") is None
    logs.append_rows(
        path,
        [{"step": s, "seed": k, "success_rate": 0.1 * k} for s in (10, 20) for k in (0, 1)],
    )
    out = logs.plot_curve(path, tmp_path / "c.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
