"""Actor-gradient statistics: known vectors, the agents' own loss and gradient, the probe against a
plain loop, the training loop and its files (tiny networks and synthetic data)."""

from __future__ import annotations

import csv
import json

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from qam_lite import cli
from qam_lite.agents import make_agent
from qam_lite.agents.common import prepare_batch
from qam_lite.chunks import to_device
from qam_lite.experiments import gradstats as gs
from qam_lite.training.settings import make_config
from qam_lite.training.update import (
    chunk_sampler,
    init_states,
    make_multi_update,
    seed_keys,
    step_keys,
)

OBS, ACT = 3, 2
TASK = "scene-play-singletask-task1-v0"
SMALL = dict(
    horizon=2,
    actor_hidden=(8,),
    critic_hidden=(8,),
    num_critics=2,
    flow_steps=3,
    batch_size=6,
    updates_per_call=4,
    log_interval=4,
    eval_interval=8,
    checkpoint_interval=8,
    offline_steps=8,
)


def config(agent="qam", **changes):
    return make_config(TASK, agent, **{**SMALL, **changes})


def dataset(n=40, episode=10):
    rng = np.random.default_rng(0)
    return to_device(
        {
            "observations": rng.normal(size=(n, OBS)),
            "next_observations": rng.normal(size=(n, OBS)),
            "actions": rng.uniform(-1, 1, size=(n, ACT)),
            "rewards": -(rng.uniform(size=n) < 0.8).astype(np.float32),
            "masks": np.ones(n),
            "terminals": (np.arange(n) % episode == episode - 1).astype(np.float32),
        }
    )


def plain_stats(g: np.ndarray) -> dict[str, float]:
    """The statistics written out by hand in float64."""
    g = np.asarray(g, np.float64)
    m = len(g)
    norms = np.linalg.norm(g, axis=1)
    mean = g.mean(0)
    trace_cov = np.trace(np.atleast_2d(np.cov(g.T)))  # unbiased, (P, P)
    cos = [g[i] @ g[j] / (norms[i] * norms[j]) for i in range(m) for j in range(m) if i != j]
    return {
        "norm_mean": norms.mean(),
        "norm_std": norms.std(),
        "norm_min": norms.min(),
        "norm_max": norms.max(),
        "mean_norm": np.linalg.norm(mean),
        "trace_cov": trace_cov,
        "noise_to_signal": trace_cov / (mean @ mean),
        "cos_mean": np.mean(cos),
        "nonfinite": 0.0,
    }


def test_vector_stats_of_known_vectors():
    s = gs.vector_stats(jnp.array([[1.0, 0.0], [0.0, 1.0]]))
    # mean (1/2, 1/2); deviations (1/2, -1/2) and (-1/2, 1/2): sum of squares 1, over M - 1 = 1.
    expected = {"norm_mean": 1, "norm_std": 0, "mean_norm": 0.5**0.5, "trace_cov": 1.0,
                "noise_to_signal": 2.0, "cos_mean": 0.0, "nonfinite": 0}  # fmt: skip
    for k, v in expected.items():
        assert float(s[k]) == pytest.approx(v, abs=1e-6), k
    same = gs.vector_stats(jnp.tile(jnp.array([[3.0, 4.0]]), (4, 1)))
    assert float(same["trace_cov"]) == pytest.approx(0, abs=1e-6)
    assert float(same["cos_mean"]) == pytest.approx(1, abs=1e-6)
    assert float(same["mean_norm"]) == pytest.approx(5)


def test_vector_stats_match_numpy_and_pure_noise_gives_m():
    g = np.random.default_rng(1).normal(size=(6, 50)) + 0.3
    got = gs.vector_stats(jnp.asarray(g))
    for k, v in plain_stats(g).items():
        assert float(got[k]) == pytest.approx(v, rel=1e-4, abs=1e-6), k
    noise = np.random.default_rng(2).normal(size=(8, 20_000))  # E g = 0: ||gbar||^2 ~ tr/M
    got = gs.vector_stats(jnp.asarray(noise))
    assert float(got["noise_to_signal"]) == pytest.approx(8, rel=0.1)
    assert abs(float(got["cos_mean"])) < 0.02


def test_vector_stats_count_nonfinite_and_need_two():
    g = jnp.array([[1.0, jnp.nan], [1.0, 2.0], [jnp.inf, 0.0]])
    assert float(gs.vector_stats(g)["nonfinite"]) == 2
    with pytest.raises(gs.GradStatsError, match="M >= 2"):
        gs.vector_stats(jnp.ones((1, 3)))


def test_flatten_is_ravel_pytree_order():
    tree = {"b": jnp.arange(6.0).reshape(2, 3), "a": jnp.arange(2.0)}
    flat, _ = jax.flatten_util.ravel_pytree(tree)
    np.testing.assert_array_equal(gs.flatten(tree), flat)
    stacked = jax.tree.map(lambda x: jnp.stack([x, 2 * x]), tree)
    np.testing.assert_array_equal(gs.flatten(stacked, batch_dims=1), jnp.stack([flat, 2 * flat]))


@pytest.mark.parametrize("agent", ["qam", "bam"])
def test_agent_loss_is_what_the_update_differentiates(agent):
    c = config(agent)
    ag = make_agent(c, OBS, ACT)
    state = ag.init(jax.random.key(0))
    batch = chunk_sampler(c)(dataset(), jax.random.key(1))
    key = jax.random.key(2)
    new_state, metrics = jax.jit(ag.update)(state, batch, key)
    loss_fn = gs.agent_loss(c, OBS, ACT)
    prepared = prepare_batch(batch, c.action_clip)

    @jax.jit
    def both(params, targets):
        full = jax.grad(lambda p: loss_fn(p, targets, prepared, key)[0])(params)
        return full, gs.actor_gradient(loss_fn, params, targets, prepared, key)

    grads, actor = both(state.params, state.targets)
    assert float(optax.tree.norm(grads)) == pytest.approx(float(metrics["grad_norm"]), rel=1e-5)
    opt = optax.chain(optax.clip_by_global_norm(c.grad_clip), optax.adam(c.lr))
    updates, _ = opt.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    for x, y in zip(jax.tree.leaves(params), jax.tree.leaves(new_state.params), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)
    # The actor-only gradient is the full gradient's actor leaves.
    for x, y in zip(jax.tree.leaves(actor), jax.tree.leaves(grads["actor"]), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=1e-5, atol=1e-7)


def test_probe_equals_a_plain_loop_over_batches():
    c, m, data = config("bam", num_seeds=2), 4, dataset()
    ag = make_agent(c, OBS, ACT)
    states = init_states(ag, c)
    keys = step_keys(seed_keys(c), gs.PROBE_STREAM, 0)
    got = jax.device_get(gs.make_probe(c, OBS, ACT, m)(states, data, keys))
    loss_fn, sample = gs.agent_loss(c, OBS, ACT), chunk_sampler(c)

    @jax.jit
    def one(state, k):  # one batch, written out plainly
        k_batch, k_loss = jax.random.split(k)
        batch = prepare_batch(sample(data, k_batch), c.action_clip)
        g = gs.actor_gradient(loss_fn, state.params, state.targets, batch, k_loss)
        full = jax.grad(lambda p: loss_fn(p, state.targets, batch, k_loss)[0])(state.params)
        return jax.flatten_util.ravel_pytree(g)[0], optax.tree.norm(full)

    for i in range(2):
        state = jax.tree.map(lambda x, i=i: x[i], states)
        flat, global_norms = [], []
        for k in jax.random.split(keys[i], m):
            g, norm = one(state, k)
            flat.append(np.asarray(g))
            global_norms.append(float(norm))
        expected = plain_stats(np.stack(flat))
        norms = np.linalg.norm(np.stack(flat), axis=1)
        expected |= {
            "global_norm_mean": np.mean(global_norms),
            "actor_share": np.mean(norms / np.array(global_norms)),
            "clipped": np.mean(np.array(global_norms) > c.grad_clip),
        }
        for k, v in expected.items():
            assert float(got[k][i]) == pytest.approx(v, rel=1e-4, abs=1e-6), (i, k)


@pytest.mark.slow
def test_run_trains_as_train_does_and_writes_files(tmp_path):
    c, data = config("qam", num_seeds=2), dataset()
    summary = gs.run([c], tmp_path, every=4, num_batches=3,
                     data=(data, {"source": "synthetic"}), progress=None)  # fmt: skip
    assert summary["agents"] == ["qam"] and summary["stopped_at"] == {"qam": None}
    with open(tmp_path / "gradstats.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["step"]) for r in rows] == [0, 0, 4, 4, 8, 8] and set(gs.STATS) <= set(rows[0])
    assert all(np.isfinite(float(r["norm_mean"])) and float(r["nonfinite"]) == 0 for r in rows)
    assert rows[0]["train/critic_loss"] == "" and rows[-1]["train/critic_loss"] != ""
    # The training is qam-lite train's: calls of call_size updates on stream-1 keys.
    ag = make_agent(c, OBS, ACT)
    multi, states = make_multi_update(ag, c, 4, seeds=True), init_states(ag, c)
    for step in (0, 4):
        states, metrics = multi(states, data, step_keys(seed_keys(c), 1, step), None)
    np.testing.assert_allclose(
        [float(r["train/critic_loss"]) for r in rows[-2:]], metrics["critic_loss"], rtol=1e-5
    )
    prov = json.loads((tmp_path / "provenance.json").read_text())
    assert prov["data"] == {"source": "synthetic"} and set(prov["configs"]) == {"qam"}
    assert prov["command"] and "git_commit" in prov
    assert json.loads((tmp_path / "summary.json").read_text())["every"] == 4


def test_bad_arguments_are_named():
    with pytest.raises(gs.GradStatsError, match="accepted: qam, bam"):
        gs.agent_loss(config("fql"), OBS, ACT)
    with pytest.raises(gs.GradStatsError, match="num_batches"):
        gs.make_probe(config(), OBS, ACT, 1)
    with pytest.raises(gs.GradStatsError, match="agents"):
        gs.build_configs(TASK, ["bc"], steps=10, seeds=1)
    with pytest.raises(gs.GradStatsError, match="preset"):
        gs.build_configs(TASK, ["qam"], steps=10, seeds=1, preset="huge")
    assert (
        cli.main(["gradstats", "--task", TASK, "--agents", "fql", "--out", "/nonexistent/x"]) == 2
    )


def test_cli_verb_records_its_command(monkeypatch):
    """``qam-lite gradstats`` records its command as
    qam-lite spells it."""
    # No capsys here: the CLI imports submitit, whose logging set-up closes absl's handler (this
    # module imports optax, hence absl), and that handler writes to pytest's capture.
    seen = {}

    def fake_run(configs, out, **kw):
        seen.update(kw, configs=configs, out=out)
        stats = {"norm_mean": 1.0, "noise_to_signal": 2.0, "cos_mean": 0.5}
        return {"median_over_steps_and_seeds": {"qam": stats}, "seconds": {"qam": {"train": 1.0}}}

    monkeypatch.setattr(gs, "run", fake_run)
    argv = ["--task", TASK, "--agents", "qam", "--steps", "8", "--set", "tau=3", "--out", "o d"]
    assert cli.main(["gradstats", *argv]) == 0
    typed = f"qam-lite gradstats --task {TASK} --agents qam --steps 8 --set tau=3 --out 'o d'"
    assert seen["command"] == typed
    (c,) = seen["configs"]
    assert (c.agent, c.offline_steps, c.tau, seen["out"]) == ("qam", 8, 3.0, "o d")
