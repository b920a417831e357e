"""Update throughput of the compiled QAM step: updates/s, seed-updates/s, compile time, FLOPs.

Runs on synthetic data (no dataset needed) at two sizes:

* ``paper``: the paper's configuration: MLPs 4 x 512, batch 256, K = 10 critics, T = 10 flow
  steps, chunks of H = 5, cube-double-like dimensions (observation 40, action 5);
* ``small``: the CLI's ``cpu-small`` preset networks (2 x 128, batch 128), same K, T, H, dims.

For each size and each number of vmapped seeds it reports compile time, updates/s (per seed),
seed-updates/s (all seeds together) and XLA's FLOP count of one update, and merges the numbers
into ``results/throughput-<device>.json`` with provenance. Reference point: the authors' JAX
implementation does 61 GFLOP per update at the paper's sizes; its speed on the same machine is
measured side by side with ``--reference`` (below), never taken from another run.

    python benchmarks/throughput.py --size small --seeds 1 4 8
    python benchmarks/throughput.py --size paper --seeds 1 --updates-per-call 5 --calls 2

Side by side with the authors' implementation (``--reference PATH``): PATH is a checkout of
their public repository (github.com/ColinQiyangLi/qam; nothing of it is copied here). Its QAM
agent is imported at run time from PATH (it needs their dependencies: ``ml_collections``,
``distrax``, ``tensorflow_probability``), built with the same sizes and the cube-double settings,
and its jitted ``update`` is timed in this process, in rounds alternating with ours (so both see
the same machine load); the ratio ours / theirs is reported per round and as the median::

    python benchmarks/throughput.py --size paper --seeds 1 --reference ~/src/qam --rounds 3
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from flops import flops_per_update  # benchmarks/flops.py, beside this script

from qam_lite.agents import make_agent
from qam_lite.chunks import to_device
from qam_lite.training import logs
from qam_lite.training.settings import make_config
from qam_lite.training.update import init_states, make_multi_update, step_keys

ROOT = Path(__file__).resolve().parent.parent
OBS_DIM, ACTION_DIM = 40, 5
TASK = "cube-double-play-singletask-task2-v0"  # H = 5, tau = 1, rho = 0.5
SIZES = {
    "paper": dict(actor_hidden=(512,) * 4, critic_hidden=(512,) * 4, batch_size=256),
    "small": dict(actor_hidden=(128,) * 2, critic_hidden=(128,) * 2, batch_size=128),
}


def synthetic_dataset(num_rows: int, episode_length: int = 1000, seed: int = 0) -> dict:
    """A dataset dict of the loader's layout with random values (throughput only)."""
    rng = np.random.default_rng(seed)
    obs = rng.normal(size=(num_rows + 1, OBS_DIM)).astype(np.float32)
    terminals = np.zeros(num_rows, np.float32)
    terminals[episode_length - 1 :: episode_length] = 1.0
    return {
        "observations": obs[:-1],
        "next_observations": obs[1:],
        "actions": rng.uniform(-1, 1, size=(num_rows, ACTION_DIM)).astype(np.float32),
        "rewards": -rng.integers(0, 3, size=num_rows).astype(np.float32),
        "masks": np.ones(num_rows, np.float32),
        "terminals": terminals,
    }


def measure(size: str, num_seeds: int, updates_per_call: int, calls: int, data) -> dict:
    """Compile once, run ``calls`` timed calls of ``updates_per_call`` updates; return numbers."""
    config = make_config(TASK, "qam", **SIZES[size], num_seeds=num_seeds)
    agent = make_agent(config, OBS_DIM, ACTION_DIM)
    states = init_states(agent, config)
    fn = make_multi_update(agent, config, updates_per_call, seeds=True)
    bases = jnp.stack([jax.random.PRNGKey(i) for i in range(num_seeds)])

    start = time.perf_counter()
    compiled = fn.lower(states, data, step_keys(bases, 1, 0), None).compile()
    compile_s = time.perf_counter() - start

    # One untimed call (first-run allocations), then the timed ones.
    states, metrics = compiled(states, data, step_keys(bases, 1, 0), None)
    jax.block_until_ready(metrics)
    start = time.perf_counter()
    for i in range(calls):
        states, metrics = compiled(states, data, step_keys(bases, 1, i + 1), None)
    jax.block_until_ready((states, metrics))
    seconds = time.perf_counter() - start
    updates_per_s = calls * updates_per_call / seconds
    return {
        "size": size,
        "num_seeds": num_seeds,
        "actor_hidden": list(config.actor_hidden),
        "critic_hidden": list(config.critic_hidden),
        "batch_size": config.batch_size,
        "num_critics": config.num_critics,
        "flow_steps": config.flow_steps,
        "horizon": config.horizon,
        "obs_dim": OBS_DIM,
        "action_dim": ACTION_DIM,
        "updates_per_call": updates_per_call,
        "timed_calls": calls,
        "timed_seconds": round(seconds, 3),
        "compile_seconds": round(compile_s, 2),
        "updates_per_second": round(updates_per_s, 3),
        "seed_updates_per_second": round(updates_per_s * num_seeds, 3),
        "finite": bool(np.all(np.isfinite(np.asarray(metrics["critic_loss"])))),
    }


# --------------------------------------------------------------------------------------------
# The authors' implementation, side by side


def load_reference(path: str):
    """The authors' ``agents.qam`` module (and ``get_config``) imported from checkout ``path``."""
    import importlib

    root = Path(path).expanduser().resolve()
    if not (root / "agents" / "qam.py").is_file():
        raise SystemExit(
            f"--reference {path}: no agents/qam.py there; accepted: a checkout of "
            "github.com/ColinQiyangLi/qam (git clone https://github.com/ColinQiyangLi/qam)"
        )
    sys.path.insert(0, str(root))
    try:
        return importlib.import_module("agents.qam")
    except ImportError as err:
        raise SystemExit(
            f"--reference {path}: importing its agents.qam failed ({err}); install its "
            "requirements (ml_collections, distrax, tensorflow_probability with a JAX substrate "
            "matching this JAX, e.g. tfp-nightly for JAX >= 0.8)"
        ) from None


def reference_commit(path: str) -> str | None:
    import subprocess

    try:
        out = subprocess.run(
            ["git", "-C", str(path), "rev-parse", "HEAD"], capture_output=True, text=True
        )
    except OSError:
        return None
    return out.stdout.strip() or None


def reference_update(module, size: str, seed: int = 0):
    """``(step, agent, batch)``: the authors' QAM agent at ``size`` with the cube-double settings
    used for ours (tau = 1, rho = 0.5, gamma = 0.99, H = 5, K = 10, T = 10), a device-resident
    random batch of their layout, and ``step(agent, batch) -> (agent, info)`` (their jitted
    ``update``)."""
    ours = make_config(TASK, "qam", **SIZES[size])
    config = module.get_config()
    config["actor_hidden_dims"] = tuple(ours.actor_hidden)
    config["value_hidden_dims"] = tuple(ours.critic_hidden)
    config["batch_size"] = ours.batch_size
    config["horizon_length"] = ours.horizon
    config["action_chunking"] = True
    config["inv_temp"] = ours.tau
    config["rho"] = ours.rho
    config["discount"] = ours.gamma
    config["num_qs"] = ours.num_critics
    config["flow_steps"] = ours.flow_steps
    ex_obs = np.zeros(OBS_DIM, np.float32)
    ex_act = np.zeros(ACTION_DIM, np.float32)
    agent = module.QAMAgent.create(seed, ex_obs, ex_act, config)
    rng = np.random.default_rng(seed)
    b, h = ours.batch_size, ours.horizon
    batch = {
        "observations": rng.normal(size=(b, OBS_DIM)),
        "actions": rng.uniform(-1, 1, size=(b, h, ACTION_DIM)),
        "next_observations": rng.normal(size=(b, h, OBS_DIM)),
        "rewards": -rng.integers(0, 3, size=(b, h)).astype(float),
        "masks": np.ones((b, h)),
        "terminals": np.zeros((b, h)),
        "valid": np.ones((b, h)),
    }
    batch = {k: jnp.asarray(v, jnp.float32) for k, v in batch.items()}
    return type(agent).update, agent, batch


def side_by_side(path: str, size: str, updates: int, rounds: int, data) -> dict:
    """Rounds of ``updates`` updates of ours (one compiled call) then of theirs (``updates``
    calls of their jitted update on a fixed batch), after compiling both."""
    import os
    import statistics

    module = load_reference(path)
    step, agent, batch = reference_update(module, size)
    start = time.perf_counter()
    agent, info = step(agent, batch)
    jax.block_until_ready(info)
    ref_compile = time.perf_counter() - start

    config = make_config(TASK, "qam", **SIZES[size])
    ours = make_agent(config, OBS_DIM, ACTION_DIM)
    states = init_states(ours, config)
    bases = jnp.stack([jax.random.PRNGKey(0)])
    start = time.perf_counter()
    fn = make_multi_update(ours, config, updates, seeds=True)
    compiled = fn.lower(states, data, step_keys(bases, 1, 0), None).compile()
    states, metrics = compiled(states, data, step_keys(bases, 1, 0), None)
    jax.block_until_ready(metrics)
    our_compile = time.perf_counter() - start

    rows = []
    for r in range(rounds):
        load = os.getloadavg()[0]
        start = time.perf_counter()
        states, metrics = compiled(states, data, step_keys(bases, 1, r + 1), None)
        jax.block_until_ready((states, metrics))
        ours_ups = updates / (time.perf_counter() - start)
        start = time.perf_counter()
        for _ in range(updates):
            agent, info = step(agent, batch)
        jax.block_until_ready((agent, info))
        theirs_ups = updates / (time.perf_counter() - start)
        rows.append(
            {
                "ours_updates_per_second": round(ours_ups, 3),
                "theirs_updates_per_second": round(theirs_ups, 3),
                "ratio": round(ours_ups / theirs_ups, 3),
                "load_average_1min": round(load, 2),
            }
        )
        print(
            f"round {r + 1}: ours {ours_ups:.2f}, theirs {theirs_ups:.2f} updates/s, ratio "
            f"{ours_ups / theirs_ups:.2f} (load average {load:.1f})",
            flush=True,
        )
    return {
        "size": size,
        "updates_per_round": updates,
        "rounds": rows,
        "median_ratio": round(statistics.median(r["ratio"] for r in rows), 3),
        "ours_compile_seconds": round(our_compile, 1),
        "theirs_compile_seconds": round(ref_compile, 1),
        "reference_commit": reference_commit(path),
        "note": "theirs: their jitted update() per step on a fixed device batch (their main.py "
        "also samples each batch on the host); ours: one compiled call of `updates` scanned "
        "updates sampling on the device",
    }


def device_name() -> str:
    d = jax.devices()[0]
    kind = d.platform if d.platform == "cpu" else getattr(d, "device_kind", d.platform)
    return re.sub(r"[^a-z0-9]+", "-", kind.lower()).strip("-")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=[*SIZES, "both"], default="small")
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--updates-per-call", type=int, default=50)
    parser.add_argument("--calls", type=int, default=3)
    parser.add_argument("--rows", type=int, default=100_000, help="synthetic dataset rows")
    parser.add_argument("--no-flops", action="store_true", help="skip the FLOP count")
    parser.add_argument("--out", default=str(ROOT / "results"))
    parser.add_argument("--reference", metavar="PATH", help="the authors' checkout, side by side")
    parser.add_argument("--rounds", type=int, default=3, help="side-by-side rounds")
    args = parser.parse_args(argv)

    prov = logs.provenance(benchmark="benchmarks/throughput.py", data="synthetic", rows=args.rows)
    data = to_device(synthetic_dataset(args.rows))
    sizes = list(SIZES) if args.size == "both" else [args.size]
    if args.reference:
        out = Path(args.out) / f"throughput-{device_name()}.json"
        record = json.loads(out.read_text()) if out.exists() else {"results": []}
        runs = record.get("side_by_side", [])
        for size in sizes:
            row = side_by_side(args.reference, size, args.updates_per_call, args.rounds, data)
            row["provenance"] = {k: prov[k] for k in ("command", "git_commit", "device", "date")}
            print(f"{size}: median ratio ours/theirs {row['median_ratio']:.2f}", flush=True)
            runs = [r for r in runs if r["size"] != size] + [row]
        record["side_by_side"] = runs
        out.parent.mkdir(parents=True, exist_ok=True)
        logs.write_json(out, record)
        print(f"wrote {out}")
        return 0
    rows = []
    for size in sizes:
        flops = None
        if not args.no_flops:
            config = make_config(TASK, "qam", **SIZES[size])
            agent = make_agent(config, OBS_DIM, ACTION_DIM)
            start = time.perf_counter()
            flops = flops_per_update(agent, config, OBS_DIM, ACTION_DIM)
            print(
                f"{size}: {flops / 1e9:.2f} GFLOP/update (counted in "
                f"{time.perf_counter() - start:.0f} s)",
                flush=True,
            )
        for seeds in args.seeds:
            row = measure(size, seeds, args.updates_per_call, args.calls, data)
            row["gflop_per_update"] = None if flops is None else round(flops / 1e9, 3)
            row["provenance"] = {k: prov[k] for k in ("command", "git_commit", "device", "date")}
            if flops is not None:
                row["achieved_gflop_per_second"] = round(
                    flops / 1e9 * row["seed_updates_per_second"], 2
                )
            rows.append(row)
            print(
                f"{size} seeds={seeds}: compile {row['compile_seconds']:.1f} s, "
                f"{row['updates_per_second']:.2f} updates/s, "
                f"{row['seed_updates_per_second']:.2f} seed-updates/s",
                flush=True,
            )

    out = Path(args.out) / f"throughput-{device_name()}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    previous = json.loads(out.read_text())["results"] if out.exists() else []
    fresh = {(r["size"], r["num_seeds"]) for r in rows}
    merged = [r for r in previous if (r["size"], r["num_seeds"]) not in fresh] + rows
    merged.sort(key=lambda r: (r["size"], r["num_seeds"]))
    record = {
        **(json.loads(out.read_text()) if out.exists() else {}),
        "provenance": prov,
        "reference": "authors' JAX implementation: 61 GFLOP/update (paper sizes); its speed "
        "beside ours in the same process: see side_by_side (--reference)",
        "results": merged,
    }
    logs.write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
