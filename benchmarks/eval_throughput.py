"""Evaluation throughput: environment steps/s with 1, 2, 4, ... worker processes, before/after.

*Before* is the previous evaluation loop (every episode stepped one step at a time in this process,
kept below as ``lockstep_evaluate``); *after* is :func:`qam_lite.training.evaluate.evaluate` with
its environments in ``W`` worker processes (``W = 1``: in this process). Both run the same untrained
QAM policy at the chosen network size (one batched policy call per chunk) on the same episodes, in
the same process run, so the numbers are side by side.

It also reports the share of a paper-protocol run spent evaluating (50 episodes every 50K
updates) from the update rate measured by ``benchmarks/throughput.py`` on each device found in
``results/throughput-*.json`` (seeds = 1, paper size): ``eval / (eval + 50K / updates_per_s)``,
with the evaluation time at the measured rate for an episode of the task's full length. On a
device other than the one measured here the evaluation rate is this machine's, so that share is
an estimate (labelled as such).

    python benchmarks/eval_throughput.py --workers 1 2 --episodes 8 --max-steps 100
    python benchmarks/eval_throughput.py --workers 1 2 4 8 16 --episodes 50   # a 16-core box
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from qam_lite.training.envpool import available_cpus, make_env, reset_env

# JAX and the agents are imported inside the functions: evaluation workers are started with
# `spawn`, which re-runs this script's top level in every worker.

ROOT = Path(__file__).resolve().parent.parent
SIZES = {
    "paper": dict(actor_hidden=(512,) * 4, critic_hidden=(512,) * 4),
    "small": dict(actor_hidden=(128,) * 2, critic_hidden=(128,) * 2),
}
PROTOCOL = {"eval_interval": 50_000, "eval_episodes": 50}


def lockstep_evaluate(act, state, envs, n: int, seed: int, max_steps: int | None) -> int:
    """The evaluation loop before worker processes (qam-lite up to commit 7412da8): every
    running episode stepped one step at a time in this process. Returns env steps taken."""
    import jax
    import jax.numpy as jnp

    from qam_lite.training.evaluate import episode_seed

    action_dim = int(np.prod(envs[0].action_space.shape))
    obs = np.stack([reset_env(env, episode_seed(seed, i))[0] for i, env in enumerate(envs[:n])])
    active = np.ones(n, dtype=bool)
    lengths = np.zeros(n, dtype=int)
    key = jax.random.fold_in(jax.random.PRNGKey(seed), 0x5EED)
    chunk = 0
    while active.any():
        actions = np.asarray(act(state, jnp.asarray(obs), jax.random.fold_in(key, chunk)))
        chunk += 1
        actions = actions.reshape(n, -1, action_dim)
        for j in range(actions.shape[1]):
            for i in np.flatnonzero(active):
                ob, _, terminated, truncated, _ = envs[i].step(actions[i, j])
                obs[i] = ob
                lengths[i] += 1
                if terminated or truncated or (max_steps is not None and lengths[i] >= max_steps):
                    active[i] = False
            if not active.any():
                break
    return int(lengths.sum())


def run_share(rate: float, episode_length: int) -> list[dict]:
    """Share of a paper-protocol run spent evaluating, per device with a throughput record."""
    out = []
    for path in sorted((ROOT / "results").glob("throughput-*.json")):
        rows = json.loads(path.read_text())["results"]
        paper = [r for r in rows if r["size"] == "paper" and r["num_seeds"] == 1]
        if not paper:
            continue
        ups = paper[0]["updates_per_second"]
        train_s = PROTOCOL["eval_interval"] / ups
        eval_s = PROTOCOL["eval_episodes"] * episode_length / rate
        out.append(
            {
                "device": path.stem.removeprefix("throughput-"),
                "updates_per_second": ups,
                "train_seconds_per_interval": round(train_s, 1),
                "eval_seconds_per_interval": round(eval_s, 1),
                "eval_share": round(eval_s / (eval_s + train_s), 4),
            }
        )
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--task", default="cube-double-play-singletask-task1-v0")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    parser.add_argument("--episodes", type=int, default=50)
    parser.add_argument("--max-steps", type=int, default=None, help="cap per episode")
    parser.add_argument("--size", choices=list(SIZES), default="paper")
    parser.add_argument("--repeats", type=int, default=1, help="timed evaluations per setting")
    parser.add_argument("--no-before", action="store_true", help="skip the previous loop")
    parser.add_argument("--out", default=str(ROOT / "results"))
    args = parser.parse_args(argv)

    import jax

    from qam_lite.agents import make_agent
    from qam_lite.training import logs
    from qam_lite.training.evaluate import evaluate, make_envs
    from qam_lite.training.settings import make_config

    cpus = available_cpus()
    probe = make_env(args.task)
    obs_dim = int(probe.observation_space.shape[-1])
    action_dim = int(np.prod(probe.action_space.shape))
    full_length = int(probe.spec.max_episode_steps)
    config = make_config(args.task, "qam", **SIZES[args.size])
    agent = make_agent(config, obs_dim, action_dim)
    state = jax.jit(agent.init)(jax.random.PRNGKey(0))
    act = jax.jit(agent.act)
    prov = logs.provenance(benchmark="benchmarks/eval_throughput.py", cpus_available=cpus)
    prov["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    print(f"{args.task}: {cpus} CPU(s) available, policy {args.size} size", flush=True)

    rows = []
    if not args.no_before:
        envs = [make_env(args.task) for _ in range(args.episodes)]
        lockstep_evaluate(act, state, envs, args.episodes, 0, 2)  # compile the policy call
        steps, start = 0, time.perf_counter()
        for r in range(args.repeats):
            steps += lockstep_evaluate(act, state, envs, args.episodes, r, args.max_steps)
        rate = steps / (time.perf_counter() - start)
        rows.append({"version": "before", "workers": 1, "env_steps_per_second": round(rate, 1)})
        print(f"before (lockstep, 1 process): {rate:.0f} env-steps/s", flush=True)
        for env in envs:
            env.close()
    for workers in args.workers:
        start = time.perf_counter()
        with make_envs(args.task, args.episodes, workers=workers) as envs:
            startup = time.perf_counter() - start
            evaluate(agent, state, None, args.episodes, 0, envs=envs, max_steps=2)  # warm
            steps, start = 0, time.perf_counter()
            for r in range(args.repeats):
                res = evaluate(
                    agent, state, None, args.episodes, r, envs=envs, max_steps=args.max_steps
                )
                steps += int(round(res["episode_length"] * res["episodes"]))
            rate = steps / (time.perf_counter() - start)
        rows.append(
            {
                "version": "after",
                "workers": workers,
                "env_steps_per_second": round(rate, 1),
                "startup_seconds": round(startup, 2),
                "oversubscribed": workers > cpus,
            }
        )
        note = " (more workers than CPUs)" if workers > cpus else ""
        print(
            f"after, {workers} worker(s): {rate:.0f} env-steps/s, start-up {startup:.1f} s{note}",
            flush=True,
        )
    base = rows[0]["env_steps_per_second"]
    for row in rows:
        row["speedup_vs_first"] = round(row["env_steps_per_second"] / base, 2)
    best = max(r["env_steps_per_second"] for r in rows)
    shares = {
        "before": run_share(base, full_length) if not args.no_before else None,
        "after_best": run_share(best, full_length),
    }
    for label, share in shares.items():
        for s in share or []:
            print(
                f"share of a paper run spent evaluating, {label}, {s['device']}: "
                f"{100 * s['eval_share']:.1f}% (eval {s['eval_seconds_per_interval']:.0f} s per "
                f"{s['train_seconds_per_interval']:.0f} s of updates)"
            )
    record = {
        "provenance": prov,
        "task": args.task,
        "episodes": args.episodes,
        "max_steps": args.max_steps,
        "full_episode_length": full_length,
        "policy_size": args.size,
        "repeats": args.repeats,
        "results": rows,
        "eval_share": shares,
        "note": "eval_share on a device other than this machine uses this machine's evaluation "
        "rate: an estimate",
    }
    out = Path(args.out) / f"eval-throughput-{cpus}cpu.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    logs.write_json(out, record)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
