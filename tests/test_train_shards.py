"""Training on sharded data (the layout of the 100M-transition datasets): the offline phase
cycles the shards as the authors' loader does, resumes exactly, and records the shard folder,
the comparability mark and a fingerprint of every shard."""

import json

import jax
import numpy as np
import pytest
from test_datasets import write_puzzle44_shard
from test_train import compile_once  # noqa: F401  (compile each program once)

from qam_lite.data import datasets
from qam_lite.training import logs
from qam_lite.training import train as train_module
from qam_lite.training.rundir import CHECKPOINT, RunMismatch, load_run
from qam_lite.training.settings import make_config
from qam_lite.training.train import train

TASK = "puzzle-4x4-task1"
INTERVAL = 20  # updates per shard (datasets.SHARD_INTERVAL is 1000)
MARKERS = (0.1, 0.2, 0.3)  # shard k's actions are all MARKERS[k]
SETTINGS = dict(
    actor_hidden=(8,),
    critic_hidden=(8,),
    num_critics=2,
    flow_steps=2,
    batch_size=8,
    offline_steps=100,
    online_steps=0,
    num_seeds=1,
    updates_per_call=10,
    log_interval=10,
    eval_interval=100,
    eval_episodes=1,
    checkpoint_interval=50,
)


@pytest.fixture
def shards(tmp_path, monkeypatch):
    """A shard folder of three tiny puzzle-4x4 shards; every compiled call's shard is recorded
    (the marker of the data it was given)."""
    monkeypatch.setattr(datasets, "SHARD_INTERVAL", INTERVAL)
    folder = tmp_path / "data" / "puzzle-4x4-play-100m-v0"
    for k, marker in enumerate(MARKERS):
        write_puzzle44_shard(folder / f"puzzle-4x4-play-v0-{k:03d}.npz", marker, n=40)
    used = []
    real = train_module.make_multi_update

    def recording(*args, **kwargs):
        multi = real(*args, **kwargs)

        def call(states, data, keys, size=None):
            used.append(MARKERS.index(round(float(data["actions"][0, 0]), 6)))
            return multi(states, data, keys, size)

        return call

    monkeypatch.setattr(train_module, "make_multi_update", recording)
    config = make_config(TASK, "qam", dataset_dir=str(folder.parent), **SETTINGS)
    return config, folder, used


def test_shards_cycle_resume_exactly_and_are_recorded(shards, tmp_path):
    config, folder, used = shards
    # Call j runs updates 10j+1 .. 10j+10 on the shard of its first update.
    expected = [((10 * j + 1) // INTERVAL) % len(MARKERS) for j in range(10)]
    assert expected == [0, 0, 1, 1, 2, 2, 0, 0, 1, 1]

    full = tmp_path / "full"
    train(config, full, progress=False)
    assert used == expected

    # Stopped mid-shard (step 50: shard 2 since update 41) and resumed: the same shards, files
    # and states as the uninterrupted run.
    used.clear()
    out = tmp_path / "resumed"
    assert train(config, out, progress=False, stop_after=50)["step"] == 50
    assert used == expected[:5]
    train(config, out, progress=False)
    assert used == expected
    for name in ("metrics.csv", "eval.csv"):
        assert (out / name).read_bytes() == (full / name).read_bytes(), name
    a, b = load_run(full), load_run(out)
    for x, y in zip(jax.tree.leaves(a.states), jax.tree.leaves(b.states), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))

    prov = json.loads((full / "provenance.json").read_text())
    data = prov["data"]
    assert data["source"] == "official-sharded" and data["file"] == folder.name
    assert data["shards_cycled"] is True and data["paper_comparable"] is True
    assert data["shards"] == data["shards_used"] == 3 and data["shard_interval"] == INTERVAL
    assert prov["data_fingerprint"]["shards"] == 3
    assert len(logs.read_rows(full / "metrics.csv")) == 10

    # The fingerprint covers every shard, not only the first (the one training loads at start).
    write_puzzle44_shard(folder / "puzzle-4x4-play-v0-002.npz", MARKERS[2], n=42)
    with pytest.raises(RunMismatch, match="another dataset"):
        train(config, full, progress=False)
    assert (full / CHECKPOINT).exists()


def test_too_few_updates_to_reach_every_shard_is_not_comparable(shards, tmp_path):
    """Also: a shard of another size is trained on (one more compilation, no error)."""
    config, folder, used = shards
    write_puzzle44_shard(folder / "puzzle-4x4-play-v0-001.npz", MARKERS[1], n=50)
    train(
        config.replace(offline_steps=40, checkpoint_interval=40, eval_interval=40),
        tmp_path,
        progress=False,
    )
    assert used == [0, 0, 1, 1]
    assert np.isfinite(
        [float(r["critic_loss"]) for r in logs.read_rows(tmp_path / "metrics.csv")]
    ).all()
    data = json.loads((tmp_path / "provenance.json").read_text())["data"]
    assert data["shards_used"] == 2 and data["shards_cycled"] is False
    assert data["paper_comparable"] is False
    assert "reach 2 of the 3 shards" in data["paper_comparable_reason"]
