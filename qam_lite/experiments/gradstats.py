"""The actor's gradient statistics *during training*: QAM's lean adjoint against BAM's BPTT.

Chapter 6 compared the two objectives on a 1-D toy; here both agents train on a real dataset with
the library's own update (``agents.make_agent``, :func:`qam_lite.training.update.make_multi_update`:
jit, ``lax.scan`` over update chunks, seeds vmapped) and every ``every`` updates we stop and
measure, on ``M`` fresh batches, the gradient of the agent's training loss with respect to the actor
``f_theta`` (``params['actor']``) alone: the same loss, the same batch preparation and the same key
split as :func:`qam_lite.agents.common.make_update` differentiates, *before* the optimiser's
global-norm clip.

Statistics of the ``M`` flattened actor gradients ``g_1 .. g_M`` (each of ``P`` numbers), see
:func:`vector_stats`:

- ``norm_mean``, ``norm_std``, ``norm_min``, ``norm_max``: of ``||g_m||`` over the batches;
- ``mean_norm``: ``||gbar||``, ``gbar = mean_m g_m`` (the gradient averaged over ``M`` batches);
- ``trace_cov``: ``sum_m ||g_m - gbar||^2 / (M - 1)``, the trace of the unbiased covariance of
  one batch's gradient (the total variance across batches);
- ``noise_to_signal``: ``trace_cov / ||gbar||^2``. ``||gbar||^2`` itself holds
  ``trace_cov / M`` of noise, so for pure noise (zero mean gradient) this ratio tends to ``M``,
  for a noiseless gradient to 0; compare agents at the same ``M``;
- ``cos_mean``: the mean cosine between the gradients of two different batches (about 0 for
  pure noise, 1 for a noiseless gradient);
- ``nonfinite``: how many of the ``M`` gradients hold a NaN or inf;

plus, from the full gradient (every network, as the optimiser sees it): ``global_norm_mean``,
``actor_share`` (mean of ``||g_actor|| / ||g_all||``) and ``clipped`` (fraction of batches whose
global norm exceeds ``config.grad_clip``, i.e. whose step the shared clip scales down).

Command line (the result the book reads is ``results/cpu-gradstats/``; ``python -m
qam_lite.experiments.gradstats`` is the same)::

    qam-lite gradstats --task scene-play-singletask-task1-v0 --dataset-dir data \\
        --agents qam bam --steps 4000 --every 250 --batches 8 --seeds 2 \\
        --out results/cpu-gradstats

writes ``gradstats.csv`` (one row per agent, seed and measured step), ``summary.json`` (per
agent: the statistics' medians over steps and seeds, timings) and ``provenance.json`` (command,
commit, device, the data's record and fingerprint, every agent's full config).

Training follows ``qam-lite train``'s key schedule (:func:`qam_lite.training.update.step_keys`,
stream 1,
one key per compiled call of ``n = gcd(train.call_size(config), every)`` updates): when ``every``
is a multiple of ``train.call_size(config)`` (then ``n`` is the call size), the updates are those
of a ``qam-lite train`` run with the same config, seeds and data. Measuring draws its own keys
(stream :data:`PROBE_STREAM`) and does not disturb training.
"""

from __future__ import annotations

import argparse
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from qam_lite.config import Config, ConfigError, parse_overrides, to_dict
from qam_lite.training import logs
from qam_lite.training.settings import PRESETS, resolve

if TYPE_CHECKING:
    import jax

# JAX and the agents are imported inside the functions: the ``qam-lite`` CLI imports this module
# to build its parser, and every other verb would pay for them.

#: Agents whose actor is the fine-tuned flow ``f_theta`` trained from the critic (what this
#: module compares): QAM (lean adjoint) and BAM (back-propagation through the SDE sample).
ACTOR_AGENTS = ("qam", "bam")
#: ``update.step_keys`` stream of the measuring batches (0 init, 1 updates, 2 acting).
PROBE_STREAM = 7
#: Columns of :func:`vector_stats`, then those that need the full gradient.
VECTOR_STATS = (
    "norm_mean",
    "norm_std",
    "norm_min",
    "norm_max",
    "mean_norm",
    "trace_cov",
    "noise_to_signal",
    "cos_mean",
    "nonfinite",
)
STATS = (*VECTOR_STATS, "global_norm_mean", "actor_share", "clipped")
#: Training metrics (mean over the update chunk that ends at the measured step) kept per row.
TRAIN_METRICS = ("critic_loss", "q_mean", "bc_loss", "grad_norm", "nonfinite")


class GradStatsError(ValueError):
    """A bad argument: the message names it and what is accepted."""


# --------------------------------------------------------------------------------------------
# Pure functions


def vector_stats(g: jax.Array) -> dict[str, jax.Array]:
    """Statistics of ``M >= 2`` vectors ``g (M, P)`` (the module docstring defines each).

    Returns:
      dict of float32 scalars named :data:`VECTOR_STATS`.
    """
    import jax.numpy as jnp

    m = g.shape[0]
    if m < 2:
        raise GradStatsError(f"{m} gradient(s); accepted: M >= 2 batches (a variance needs two)")
    g = g.astype(jnp.float32)
    norms = jnp.linalg.norm(g, axis=1)  # (M,)
    mean = jnp.mean(g, axis=0)  # (P,)
    mean_sq = jnp.sum(mean**2)
    trace_cov = jnp.sum((g - mean) ** 2) / (m - 1)
    unit = g / jnp.maximum(norms, 1e-30)[:, None]
    cos = unit @ unit.T  # (M, M)
    cos_mean = (jnp.sum(cos) - jnp.trace(cos)) / (m * (m - 1))
    return {
        "norm_mean": jnp.mean(norms),
        "norm_std": jnp.std(norms),
        "norm_min": jnp.min(norms),
        "norm_max": jnp.max(norms),
        "mean_norm": jnp.sqrt(mean_sq),
        "trace_cov": trace_cov,
        "noise_to_signal": trace_cov / mean_sq,
        "cos_mean": cos_mean,
        "nonfinite": jnp.sum(~jnp.all(jnp.isfinite(g), axis=1)).astype(jnp.float32),
    }


def flatten(tree: Any, batch_dims: int = 0) -> jax.Array:
    """The leaves of ``tree`` flattened and joined: ``(*batch, P)`` for ``batch_dims`` leading
    axes shared by every leaf (``ravel_pytree``'s order)."""
    import jax
    import jax.numpy as jnp

    leaves = jax.tree.leaves(tree)
    lead = leaves[0].shape[:batch_dims]
    return jnp.concatenate([x.reshape(*lead, -1) for x in leaves], axis=-1)


def agent_loss(config: Config, obs_dim: int, action_dim: int) -> Callable:
    """``loss(params, targets, batch, key) -> (loss, metrics)``: what ``agents.make_agent(config,
    ...).update`` differentiates for ``config.agent`` in :data:`ACTOR_AGENTS` (the same networks,
    terms and key split; give it a batch already passed through ``prepare_batch``)."""
    from qam_lite.agents import qam as qam_agent
    from qam_lite.agents.bam import bptt_terms

    if config.agent not in ACTOR_AGENTS:
        raise GradStatsError(
            f"agent={config.agent!r}; accepted: {', '.join(ACTOR_AGENTS)} (a flow actor f_theta "
            "trained from the critic)"
        )
    terms = {"qam": qam_agent.adjoint_terms, "bam": bptt_terms}[config.agent]
    chunk_dim = config.horizon * action_dim
    networks = qam_agent.make_networks(config, obs_dim, chunk_dim)
    return qam_agent.make_loss(config, networks, chunk_dim, terms)


def actor_gradient(loss_fn: Callable, params: dict, targets: dict, batch, key) -> Any:
    """The gradient of ``loss_fn`` with respect to ``params['actor']`` only (same pytree)."""
    import jax

    def of_actor(actor):
        return loss_fn({**params, "actor": actor}, targets, batch, key)[0]

    return jax.grad(of_actor)(params["actor"])


def make_probe(config: Config, obs_dim: int, action_dim: int, num_batches: int) -> Callable:
    """A jitted ``probe(states, data, keys) -> stats``: :data:`STATS` of ``num_batches`` fresh
    batches for every seed.

    Args (of ``probe``):
      states: seed-stacked :class:`~qam_lite.agents.TrainState` (leading ``(S,)``).
      data: the dataset on the device (``chunks.to_device``).
      keys: ``(S,)`` keys; seed ``i`` splits its key into ``num_batches`` keys, each into
        ``k_batch, k_loss`` (the update's schedule): batch ``sample(data, k_batch)``, loss key
        ``k_loss``.

    Returns:
      dict of ``(S,)`` float32 arrays named :data:`STATS`.
    """
    import jax
    import jax.numpy as jnp
    import optax

    from qam_lite.agents.common import prepare_batch
    from qam_lite.training.update import chunk_sampler

    if isinstance(num_batches, bool) or not isinstance(num_batches, int) or num_batches < 2:
        raise GradStatsError(f"num_batches={num_batches!r}; accepted: an integer >= 2")
    loss_fn = agent_loss(config, obs_dim, action_dim)
    sample = chunk_sampler(config)

    def one_batch(state, data, key):
        k_batch, k_loss = jax.random.split(key)
        batch = prepare_batch(sample(data, k_batch), config.action_clip)
        grads = jax.grad(lambda p: loss_fn(p, state.targets, batch, k_loss)[0])(state.params)
        return grads["actor"], optax.tree.norm(grads)

    def one_seed(state, data, key):
        actor, global_norm = jax.vmap(lambda k: one_batch(state, data, k))(
            jax.random.split(key, num_batches)
        )
        g = flatten(actor, batch_dims=1)  # (M, P)
        stats = vector_stats(g)
        norms = jnp.linalg.norm(g, axis=1)
        clip = jnp.inf if config.grad_clip is None else config.grad_clip
        stats.update(
            global_norm_mean=jnp.mean(global_norm),
            actor_share=jnp.mean(norms / global_norm),
            clipped=jnp.mean((global_norm > clip).astype(jnp.float32)),
        )
        return stats

    return jax.jit(jax.vmap(one_seed, in_axes=(0, None, 0)))


# --------------------------------------------------------------------------------------------
# Training with measurements


def measure(
    config: Config,
    data: dict,
    *,
    every: int,
    num_batches: int,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train ``config`` for ``config.offline_steps`` updates (``config.num_seeds`` seeds vmapped)
    on ``data`` (on the device, rewards as training reads them), measuring at step 0 and every
    ``every`` updates.

    Returns:
      ``{'rows': [...], 'seconds': {'train', 'probe', 'compile'}, 'stopped_at': step or None}``;
      a row is ``{'agent', 'seed', 'step', *STATS, 'train/<metric>' ...}`` (training metrics of
      the update call ending at ``step``; empty at step 0). Training stops early, with
      ``stopped_at`` set, once a training metric is NaN/inf.
    """
    import jax

    from qam_lite.agents import make_agent
    from qam_lite.training.session import call_size
    from qam_lite.training.update import init_states, make_multi_update, seed_keys, step_keys

    c = config
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise GradStatsError(f"every={every!r}; accepted: an integer >= 1")
    n = math.gcd(call_size(c), every)
    obs_dim, action_dim = int(data["observations"].shape[1]), int(data["actions"].shape[1])
    agent = make_agent(c, obs_dim, action_dim)
    multi = make_multi_update(agent, c, n, seeds=True)
    probe = make_probe(c, obs_dim, action_dim, num_batches)
    bases = seed_keys(c)
    states = init_states(agent, c)
    rows: list[dict] = []
    seconds = {"train": 0.0, "probe": 0.0, "compile": 0.0}
    say = progress or (lambda text: None)

    def record(step: int, train_metrics: dict) -> None:
        t0 = time.perf_counter()
        stats = jax.device_get(probe(states, data, step_keys(bases, PROBE_STREAM, step)))
        seconds["probe" if rows else "compile"] += time.perf_counter() - t0
        for i in range(c.num_seeds):
            row = {"agent": c.agent, "seed": c.seed + i, "step": step}
            row |= {k: float(stats[k][i]) for k in STATS}
            row |= {f"train/{k}": float(np.asarray(train_metrics[k])[i]) for k in train_metrics}
            rows.append(row)

    record(0, {})
    step, stopped_at = 0, None
    first = True
    while step < c.offline_steps:
        t0 = time.perf_counter()
        states, metrics = multi(states, data, step_keys(bases, 1, step), None)
        metrics = jax.device_get(metrics)
        seconds["compile" if first else "train"] += time.perf_counter() - t0
        first = False
        step += n
        bad = float(np.max(metrics["nonfinite"])) > 0
        if step % every == 0 or step == c.offline_steps or bad:
            record(step, {k: metrics[k] for k in TRAIN_METRICS if k in metrics})
            last = [r for r in rows if r["step"] == step]
            say(
                f"{c.agent} step {step}: |g_actor| {np.mean([r['norm_mean'] for r in last]):.3g}, "
                f"noise/signal {np.mean([r['noise_to_signal'] for r in last]):.3g}"
            )
        if bad:
            stopped_at = step
            say(f"{c.agent}: a training metric became NaN/inf by step {step}; stopped")
            break
    return {"rows": rows, "seconds": seconds, "stopped_at": stopped_at}


def summarise(rows: Sequence[dict], skip_first: bool = True) -> dict[str, dict[str, float]]:
    """Per agent: the median over rows (seeds x steps; without step 0 if ``skip_first``) of every
    statistic, and ``rows``."""
    out: dict[str, dict[str, float]] = {}
    for agent in dict.fromkeys(r["agent"] for r in rows):
        mine = [r for r in rows if r["agent"] == agent and not (skip_first and r["step"] == 0)]
        out[agent] = {k: float(np.median([r[k] for r in mine])) for k in STATS}
        out[agent]["rows"] = len(mine)
    return out


def build_configs(
    task: str,
    agents: Sequence[str],
    *,
    steps: int,
    seeds: int,
    preset: str = "cpu-small",
    overrides: dict | None = None,
    dataset_dir: str | None = None,
) -> list[Config]:
    """Each agent's config: the domain's settings, ``preset``, ``overrides``, ``steps`` updates,
    ``seeds`` seeds."""
    bad = [a for a in agents if a not in ACTOR_AGENTS]
    if bad or not agents:
        raise GradStatsError(
            f"agents={list(agents)!r}; accepted: some of {', '.join(ACTOR_AGENTS)}"
        )
    fields = {"offline_steps": steps, "num_seeds": seeds, "dataset_dir": dataset_dir}
    try:
        return [resolve(task, agent, preset, overrides, **fields) for agent in agents]
    except ConfigError as err:
        raise GradStatsError(str(err)) from None


def load_data(config: Config) -> tuple[dict, dict]:
    """``(data on the device, source record)``: the task's training data exactly as ``train``
    reads it (:func:`qam_lite.training.train.load_data`), with its fingerprint."""
    from qam_lite.chunks import to_device
    from qam_lite.training.rundir import data_fingerprint
    from qam_lite.training.train import load_data as training_data

    train, source, _ = training_data(config)
    return to_device(train), dict(source, fingerprint=data_fingerprint(train))


def run(
    configs: Sequence[Config],
    out: str | Path,
    *,
    every: int,
    num_batches: int,
    data: tuple[dict, dict] | None = None,
    progress: Callable[[str], None] | None = print,
    command: str | None = None,
) -> dict[str, Any]:
    """Measure every config in turn; write ``gradstats.csv``, ``summary.json`` and
    ``provenance.json`` to ``out`` (replacing them); return the summary.

    ``data``: ``(data on the device, source record)``; default :func:`load_data` of the first
    config (all configs must share the task). ``command``: the command line recorded in the
    provenance (default: this process's).
    """
    if len({c.task for c in configs}) != 1:
        raise GradStatsError("every config must have the same task (the same data)")
    device_data, source = data if data is not None else load_data(configs[0])
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rows, timing, stopped = [], {}, {}
    for c in configs:
        result = measure(c, device_data, every=every, num_batches=num_batches, progress=progress)
        rows += result["rows"]
        timing[c.agent] = {k: round(v, 2) for k, v in result["seconds"].items()}
        stopped[c.agent] = result["stopped_at"]
    csv_path = out / "gradstats.csv"
    if csv_path.exists():
        csv_path.unlink()
    fields = ["agent", "seed", "step", *STATS, *(f"train/{k}" for k in TRAIN_METRICS)]
    logs.append_rows(csv_path, [{k: r.get(k, "") for k in fields} for r in rows])
    summary = {
        "task": configs[0].task,
        "agents": [c.agent for c in configs],
        "steps": configs[0].offline_steps,
        "every": every,
        "num_batches": num_batches,
        "seeds": [configs[0].seed + i for i in range(configs[0].num_seeds)],
        "median_over_steps_and_seeds": summarise(rows),
        "seconds": timing,
        "stopped_at": stopped,
    }
    logs.write_json(out / "summary.json", summary)
    prov = logs.provenance(
        task=configs[0].task,
        data=source,
        every=every,
        num_batches=num_batches,
        configs={c.agent: to_dict(c) for c in configs},
    )
    if command is not None:
        prov["command"] = command
    logs.write_json(out / "provenance.json", prov)
    return summary


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qam-lite gradstats`` arguments (the CLI calls this)."""
    p.add_argument("--task", required=True, help="e.g. scene-play-singletask-task1-v0")
    p.add_argument("--dataset-dir", default=None, help="folder of the dataset (.npz)")
    p.add_argument("--agents", nargs="+", default=list(ACTOR_AGENTS), help="qam and/or bam")
    p.add_argument("--steps", type=int, default=4000, help="training updates per agent")
    p.add_argument("--every", type=int, default=250, help="measure every this many updates")
    p.add_argument("--batches", type=int, default=8, help="fresh batches per measurement (M)")
    p.add_argument("--seeds", type=int, default=2, help="seeds, vmapped")
    p.add_argument("--preset", default="cpu-small", help=f"one of {', '.join(PRESETS)}")
    p.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE", help="config overrides")
    p.add_argument("--out", default="results/cpu-gradstats", help="output folder")


def run_cli(args: argparse.Namespace) -> None:
    """``qam-lite gradstats``: :func:`build_configs` and :func:`run` with the command line's
    arguments, then each agent's medians.

    ``args`` comes from the ``qam-lite`` parser (``args.command_line`` is the provenance's
    command); errors propagate for the CLI to report.
    """
    configs = build_configs(
        args.task,
        args.agents,
        steps=args.steps,
        seeds=args.seeds,
        preset=args.preset,
        overrides=parse_overrides(args.set),
        dataset_dir=args.dataset_dir,
    )
    summary = run(
        configs, args.out, every=args.every, num_batches=args.batches, command=args.command_line
    )
    for agent, stats in summary["median_over_steps_and_seeds"].items():
        print(
            f"{agent}: median |g_actor| {stats['norm_mean']:.3g}, noise/signal "
            f"{stats['noise_to_signal']:.3g}, cos {stats['cos_mean']:.3f}, "
            f"train {summary['seconds'][agent]['train']:.0f} s"
        )
    print(f"wrote {args.out}/gradstats.csv, summary.json, provenance.json")
