"""Checkpoints and run logs: exact round trips, refusal of mismatched files, atomic writes."""

import errno
import os
import pickle
import stat
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite import atomic
from qam_lite.training import checkpoint as ckpt
from qam_lite.training import logs


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
    with pytest.raises(ckpt.CheckpointError, match="arrays, the run expects"):
        ckpt.load(path, more)


def test_damaged_files_are_checkpoint_errors_that_never_suggest_pickles(tmp_path):
    good = ckpt.save(tmp_path / "good.npz", {"a": jnp.ones(3)}, {"step": 1}).read_bytes()
    cases = {
        "text.npz": b"not a zip file",
        "pickle.npz": pickle.dumps({"a": 1}),  # what makes NumPy suggest allow_pickle=True
        "truncated.npz": good[: len(good) // 2],
        "empty.npz": b"",
    }
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        for read in (ckpt.read_meta, lambda p: ckpt.load(p, {"a": jnp.zeros(3)})):
            with pytest.raises(ckpt.CheckpointError, match="cannot be read") as err:
                read(path)
            assert "allow_pickle" not in str(err.value), name
            assert "--overwrite" in str(err.value) and str(path) in str(err.value)
    with pytest.raises(ckpt.CheckpointError, match="truncated"):
        ckpt.read_meta(tmp_path / "truncated.npz")


def _disk_full_after(nbytes):
    """A ``write(file)`` that writes ``nbytes`` then fails as a full disk does."""

    def write(f):
        f.write(b"x" * nbytes)
        raise OSError(errno.ENOSPC, "No space left on device")

    return write


def test_disk_full_keeps_previous_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = ckpt.save(tmp_path / "c.npz", {"a": jnp.ones(2)}, {"step": 1})
    with pytest.raises(atomic.WriteError, match="no space left") as err:
        atomic.write_with(path, _disk_full_after(1000))
    assert err.value.errno == errno.ENOSPC and str(path) in str(err.value)
    assert ckpt.read_meta(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]

    # The same through checkpoint.save (NumPy's writer failing midway).
    real = np.savez

    def savez_then_full(f, **arrays):
        real(f, **arrays)
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "savez", savez_then_full)
    with pytest.raises(atomic.WriteError, match="no space left"):
        ckpt.save(path, {"a": jnp.zeros(2)}, {"step": 2})
    assert ckpt.read_meta(path) == {"step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.npz"]


def test_atomic_writes_use_unique_temporary_names(tmp_path, monkeypatch):
    """Two writers of one file never share a temporary file (each gets its own name)."""
    names = []
    real = atomic.os.replace

    def spy(src, dst):
        names.append(Path(src).name)
        return real(src, dst)

    monkeypatch.setattr(atomic.os, "replace", spy)
    atomic.write_bytes(tmp_path / "f.json", b"1")
    atomic.write_bytes(tmp_path / "f.json", b"2")
    assert len(set(names)) == 2 and all(n.startswith(".f.json.") for n in names)
    assert (tmp_path / "f.json").read_bytes() == b"2"


def test_torn_csv_rows_are_skipped_and_cut(tmp_path):
    path = tmp_path / "eval.csv"
    logs.append_rows(path, [{"step": s, "seed": 0, "success_rate": 0.5} for s in (100, 200)])
    whole = path.read_bytes()
    for torn in (b"300,0,0.", b"3", b"300,0"):
        path.write_bytes(whole + torn)  # killed mid-row by an older writer
        assert [r["step"] for r in logs.read_rows(path)] == ["100", "200"]
        assert logs.plot_curve(path, tmp_path / "c.png") is not None
        logs.append_rows(path, [{"step": 300, "seed": 0, "success_rate": 1.0}])
        assert [r["step"] for r in logs.read_rows(path)] == ["100", "200", "300"]
        path.write_bytes(whole + torn)
        assert logs.truncate_csv(path, 250) == 2 and path.read_bytes() == whole
    # A row with a field missing, even with its newline, is not a row.
    path.write_bytes(whole + b"300,0\r\n")
    assert len(logs.read_rows(path)) == 2


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
    assert logs.truncate_csv(path, 50) == 0 and not path.exists()  # nothing kept: no file


def test_curve_plot_written(tmp_path):
    path = tmp_path / "eval.csv"
    assert logs.plot_curve(path, tmp_path / "c.png") is None
    logs.append_rows(
        path,
        [{"step": s, "seed": k, "success_rate": 0.1 * k} for s in (10, 20) for k in (0, 1)],
    )
    out = logs.plot_curve(path, tmp_path / "c.png", title="t")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("umask, mode", [(0o022, 0o644), (0o027, 0o640), (0o077, 0o600)])
def test_atomic_files_get_the_mode_of_the_users_umask(tmp_path, umask, mode):
    # mkstemp makes 0600 files; results written atomically must be as readable as open() makes
    # them (colleagues on a shared cluster read each other's run folders).
    old = os.umask(umask)
    try:
        path = atomic.write_bytes(tmp_path / "x.json", b"{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == mode


def test_a_table_on_a_full_disk_keeps_the_previous_file(tmp_path, monkeypatch, capsys):
    from qam_lite.experiments import table

    (tmp_path / "table.md").write_text("old table\n")

    def full(fd):  # the data reaches the disk at fsync: there it does not fit
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)
    with pytest.raises(atomic.WriteError, match="no space left"):
        table._emit(tmp_path, "table.md", "new table\n" * 1000)
    monkeypatch.undo()
    assert (tmp_path / "table.md").read_text() == "old table\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["table.md"]


def test_a_run_folder_refuses_a_checkpoint_of_another_run(tmp_path):
    # A BC checkpoint copied into a QAM run folder must not be evaluated or rendered as QAM.
    from qam_lite.config import to_dict
    from qam_lite.training.rundir import RunMismatch, load_run
    from qam_lite.training.settings import make_config

    task = "cube-single-play-singletask-task1-v0"
    qam, bc = make_config(task, "qam"), make_config(task, "bc")
    logs.write_json(tmp_path / "config.json", to_dict(qam))
    meta = {"config": to_dict(bc), "obs_dim": 3, "action_dim": 2, "step": 10, "phase": "done"}
    ckpt.save(tmp_path / "checkpoint.npz", {"states": {"a": jnp.ones(2)}}, meta)
    with pytest.raises(RunMismatch, match=r"agent: checkpoint 'bc' vs config.json 'qam'"):
        load_run(tmp_path)
