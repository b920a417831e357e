"""The compiled multi-update: scan == loop, vmapped seeds, NaN flag; the FLOP count."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from qam_lite.agents import make_agent
from qam_lite.chunks import to_device
from qam_lite.training.settings import make_config
from qam_lite.training.update import (
    chunk_sampler,
    init_states,
    make_multi_update,
    summarise,
)

OBS, ACT = 3, 2
CONFIG = make_config(
    "cube-double-play-singletask-task1-v0",
    horizon=2,
    actor_hidden=(16,),
    critic_hidden=(16,),
    num_critics=2,
    flow_steps=2,
    batch_size=8,
)


def dataset(n=60, episode=15):
    rng = np.random.default_rng(0)
    terminals = (np.arange(n) % episode == episode - 1).astype(np.float32)
    return to_device(
        {
            "observations": rng.normal(size=(n, OBS)),
            "next_observations": rng.normal(size=(n, OBS)),
            "actions": rng.uniform(-1, 1, size=(n, ACT)),
            "rewards": rng.normal(size=n),
            "masks": np.ones(n),
            "terminals": terminals,
        }
    )


def assert_trees_close(a, b, **tol):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **tol)


def test_scan_of_n_updates_equals_n_sequential_updates():
    agent, data, n = make_agent(CONFIG, OBS, ACT), dataset(), 3
    sample, update = chunk_sampler(CONFIG), jax.jit(make_agent(CONFIG, OBS, ACT).update)
    key = jax.random.key(5)
    state = agent.init(jax.random.key(0))
    losses = []
    for k in jax.random.split(key, n):  # the documented key schedule
        k_batch, k_update = jax.random.split(k)
        state, metrics = update(state, sample(data, k_batch), k_update)
        losses.append(float(metrics["critic_loss"]))
    fused, summary = make_multi_update(agent, CONFIG, n)(agent.init(jax.random.key(0)), data, key)
    assert int(fused.step) == n
    assert_trees_close(fused.params, state.params, rtol=2e-4, atol=1e-5)
    assert_trees_close(fused.targets, state.targets, rtol=2e-4, atol=1e-5)
    assert float(summary["critic_loss"]) == pytest.approx(np.mean(losses), rel=1e-4)
    assert float(summary["last/critic_loss"]) == pytest.approx(losses[-1], rel=1e-4)
    assert float(summary["nonfinite"]) == 0.0


def test_vmapped_seeds_are_independent_and_seed_zero_matches_a_single_run():
    agent, data, seeds = make_agent(CONFIG, OBS, ACT), dataset(), 2
    run_key = jax.random.key(2)
    config = CONFIG.replace(seed=1, num_seeds=seeds)
    states = init_states(agent, config)
    states, metrics = make_multi_update(agent, CONFIG, 2, seeds=True)(
        states, data, jax.random.split(run_key, seeds)
    )
    assert metrics["critic_loss"].shape == (seeds,)
    first = jax.tree.map(lambda x: x[0], states)
    second = jax.tree.map(lambda x: x[1], states)
    leaf0, leaf1 = jax.tree.leaves(first.params)[0], jax.tree.leaves(second.params)[0]
    assert not np.allclose(leaf0, leaf1)
    # Seed i of a multi-seed run is a one-seed run with seed config.seed + i.
    single = jax.tree.map(lambda x: x[0], init_states(agent, CONFIG.replace(seed=1)))
    single, _ = make_multi_update(agent, CONFIG, 2)(
        single, data, jax.random.split(run_key, seeds)[0]
    )
    assert_trees_close(first.params, single.params, rtol=2e-4, atol=1e-5)


def test_summary_flags_non_finite_metrics():
    ok = summarise({"a": jnp.array([1.0, 3.0])})
    assert float(ok["a"]) == 2.0 and float(ok["last/a"]) == 3.0 and float(ok["nonfinite"]) == 0.0
    assert float(summarise({"a": jnp.array([1.0, jnp.nan]), "b": jnp.zeros(2)})["nonfinite"]) == 1
    with pytest.raises(ValueError, match="num_updates=0"):
        make_multi_update(make_agent(CONFIG, OBS, ACT), CONFIG, 0)


def test_the_benchmarks_flop_count_counts_every_flow_step():
    # benchmarks/flops.py (kept out of the library): XLA counts a while loop's body once, so the
    # count must grow with the number of flow steps.
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "flops.py"
    spec = importlib.util.spec_from_file_location("flops", path)
    flops = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(flops)
    small = flops.flops_per_update(make_agent(CONFIG, OBS, ACT), CONFIG, OBS, ACT)
    config = CONFIG.replace(flow_steps=6)
    large = flops.flops_per_update(make_agent(config, OBS, ACT), config, OBS, ACT)
    assert 0 < small < large
