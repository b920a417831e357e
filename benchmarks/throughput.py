"""Update throughput of the compiled QAM step: updates/s, seed-updates/s, compile time, FLOPs.

Runs on synthetic data (no dataset needed) at two sizes:

* ``paper``: the paper's configuration: MLPs 4 x 512, batch 256, K = 10 critics, T = 10 flow
  steps, chunks of H = 5, cube-double-like dimensions (observation 40, action 5);
* ``small``: the CLI's ``cpu-small`` preset networks (2 x 128, batch 128), same K, T, H, dims.

For each size and each number of vmapped seeds it reports compile time, updates/s (per seed),
seed-updates/s (all seeds together) and XLA's FLOP count of one update, and merges the numbers
into ``results/throughput-<device>.json`` with provenance. Reference point: the authors' JAX
implementation does 61 GFLOP per update at the paper's sizes and about 1.2 updates/s on a 2-core
CPU.

    python benchmarks/throughput.py --size small --seeds 1 4 8
    python benchmarks/throughput.py --size paper --seeds 1 --updates-per-call 5 --calls 2
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

from qam_lite import logs
from qam_lite.agents import make_agent
from qam_lite.chunks import to_device
from qam_lite.config import make_config
from qam_lite.train import init_states, step_keys
from qam_lite.update import flops_per_update, make_multi_update

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
    args = parser.parse_args(argv)

    prov = logs.provenance(benchmark="benchmarks/throughput.py", data="synthetic", rows=args.rows)
    data = to_device(synthetic_dataset(args.rows))
    sizes = list(SIZES) if args.size == "both" else [args.size]
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
        "provenance": prov,
        "reference": "authors' JAX implementation: 61 GFLOP/update (paper sizes), about "
        "1.2 updates/s on a 2-core CPU",
        "results": merged,
    }
    logs.write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
