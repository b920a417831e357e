"""Probe shipped policies at fixed states: how the action distribution moves with ``tau``.

For a list of policy files (:func:`qam_lite.training.policy.export_policy`'s, e.g. QAM trained at
``tau`` = 0, 1, 10 on the same task and data, and FQL or BC beside them), :func:`sample` draws
``N`` action chunks from every policy at one fixed set of states with the same noise, so the
clouds differ only because the networks do. A QAM policy at ``tau = 0`` acts with its behaviour
flow f_beta, trained on the data by flow matching: it is the cloning reference the others are
compared with. Each file also carries the success its run recorded at that step (episodes and
evaluation seed), which :func:`probe_policies` copies beside the samples.

States (``state_source``):

* ``'eval'``: the first observations of the evaluation episodes ``0 .. num_states - 1`` with the
  evaluation seed 10,000 (the states where ``qam-lite evaluate`` starts; needs only the
  environment, no dataset: what a reader in Colab has).
* ``'data'``: ``num_states`` transitions of the task's training dataset at fixed indices (drawn
  with ``seed`` among the steps where a whole chunk lies inside one episode); the chunk the data
  took there is kept too.

The file :func:`probe_policies` writes (``R`` policies in the order given, ``M`` states, ``N``
samples, ``D = H * A`` chunk width)::

    taus (R,)              float64   each policy's tau (NaN for agents without one)
    actions (R, M, N, D)   float16   the policies' samples (they lie in [-1, 1])
    states (M, obs_dim)    float32
    data_chunks (M, D)     float32   the data's own chunk at each state (NaN for 'eval')
    state_indices (M,)     int       dataset row (-1 for 'eval')
    success (R,)           float64   the success rate each file records
    success_step (R,)      int       the update at which it was recorded
    success_episodes (R,)  int       the episodes it was measured on
    horizon, action_dim    int

with a JSON beside it (provenance, and each policy's file, agent, run and commit).

Command line (``python -m qam_lite probe`` is the same)::

    qam-lite probe POLICY.npz [POLICY.npz ...] --out probe.npz \
        [--states eval|data] [--dataset-dir data] [--num-states 4] [--samples 64]

:func:`pca_2d` is the projection the book uses to draw the 25-dimensional chunks in a plane.
"""

from __future__ import annotations

import argparse
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STATE_SOURCES = ("eval", "data")
EVAL_SEED = 10_000
#: Agents whose policy is a tilt of the behaviour by ``tau`` (config.py's ``tau`` comment).
TAU_AGENTS = ("qam", "bam", "qam-e", "qam-f")


class ProbeMissing(FileNotFoundError):
    """A committed probe file is absent (the message gives the command that makes it)."""


def data_states(
    task, dataset_dir, num_states: int, *, seed: int = 0, horizon: int = 5, download: bool = False
):
    """``(indices (M,), observations (M, obs_dim), chunks (M, H * A))`` from the training data.

    Indices are drawn without replacement by ``numpy.random.default_rng(seed)`` among the rows
    whose ``horizon`` steps lie inside one episode, then sorted.
    """
    import jax.numpy as jnp

    from qam_lite import chunks
    from qam_lite.data import datasets

    _, train, _ = datasets.load(task, dataset_dir, download=download, verbose=False)
    data = chunks.to_device(train)
    n = len(train["observations"])
    candidates = np.arange(n - horizon)
    whole = np.asarray(chunks.chunks_at(data, jnp.asarray(candidates), horizon, 0.99)["valid"]).all(
        axis=1
    )
    candidates = candidates[whole]
    if len(candidates) < num_states:
        raise ValueError(
            f"the dataset has {len(candidates)} rows with a whole chunk, fewer than "
            f"num_states={num_states}"
        )
    rng = np.random.default_rng(seed)
    index = np.sort(rng.choice(candidates, size=num_states, replace=False))
    c = chunks.chunks_at(data, jnp.asarray(index), horizon, 0.99)
    return index, np.asarray(c["observations"]), np.asarray(c["actions"])


def eval_states(task, num_states: int, *, seed: int = EVAL_SEED) -> np.ndarray:
    """``(M, obs_dim)`` first observations of evaluation episodes ``0 .. M - 1`` with ``seed``."""
    from qam_lite.data.tasks import parse_task
    from qam_lite.training.envpool import make_env
    from qam_lite.training.evaluate import episode_seed, reset_env

    env = make_env(parse_task(task).name)
    try:
        return np.stack([reset_env(env, episode_seed(seed, i))[0] for i in range(num_states)])
    finally:
        env.close()


def policy_tau(policy) -> float:
    """The policy's ``tau`` (NaN for an agent whose acting does not depend on one)."""
    return float(policy.config.tau) if policy.config.agent in TAU_AGENTS else math.nan


def sample(
    policies: Sequence, states: np.ndarray, num_samples: int, *, seed: int = 0
) -> np.ndarray:
    """``(R, M, N, D)`` action chunks of ``R`` policies at ``states (M, obs_dim)``, as float32.

    Every policy gets the same noise (``PRNGKey(seed)``, one batch of ``M * N`` rows: each state
    repeated ``N`` times), so two policies with equal networks give equal samples.
    """
    import jax
    import jax.numpy as jnp

    if not policies:
        raise ValueError("no policies given; accepted: one or more loaded policies")
    if num_samples < 2:
        raise ValueError(f"num_samples={num_samples} is invalid; accepted: num_samples >= 2")
    states = np.asarray(states, np.float32)
    dims = {p.agent.obs_dim for p in policies}
    if states.ndim != 2 or dims != {states.shape[1]}:
        raise ValueError(
            f"states must be (M, obs_dim) with the policies' obs_dim {sorted(dims)}; got "
            f"{states.shape}"
        )
    m = states.shape[0]
    obs = jnp.repeat(jnp.asarray(states), num_samples, axis=0)  # (M * N, obs_dim)
    key = jax.random.PRNGKey(seed)
    return np.stack(
        [np.asarray(p.act(obs, key), np.float32).reshape(m, num_samples, -1) for p in policies]
    )


def probe_policies(
    policy_paths: Sequence[str | Path],
    out: str | Path,
    *,
    dataset_dir: str | Path | None = None,
    download: bool = False,
    state_source: str = "eval",
    num_states: int = 4,
    num_samples: int = 64,
    seed: int = 0,
    command: str | None = None,
) -> dict[str, Any]:
    """Probe the policy files ``policy_paths`` (one task) and write ``out`` (.npz) and its .json.

    Args:
      policy_paths: files written by ``export_policy`` (e.g. ``results/policies/*.npz``), all of
        one task.
      out: the ``.npz`` path; the JSON goes beside it (same name, ``.json``).
      dataset_dir: where the task's dataset is (``state_source='data'`` only).
      download: allow OGBench's official download of a missing dataset.
      state_source: ``'eval'`` or ``'data'`` (see the module's docstring).
      num_states, num_samples: ``M`` states, ``N`` samples per state and policy.
      seed: picks the dataset rows; the sampling noise is ``PRNGKey(seed)``.
      command: the command recorded in the provenance (default: none).

    Returns:
      the JSON record (also written).
    """
    from qam_lite.atomic import make_folder, write_bytes
    from qam_lite.training import logs
    from qam_lite.training.policy import load_policy

    if state_source not in STATE_SOURCES:
        raise ValueError(
            f"state_source={state_source!r} is invalid; accepted: {', '.join(STATE_SOURCES)}"
        )
    if not policy_paths:
        raise ValueError("no policy files given; accepted: one or more export_policy files")
    if num_states < 1 or num_samples < 2:
        raise ValueError(
            f"num_states={num_states}, num_samples={num_samples} are invalid; accepted: "
            "num_states >= 1, num_samples >= 2"
        )
    out = Path(out)
    if out.suffix != ".npz":
        raise ValueError(f"--out {out} is invalid; accepted: a path ending in .npz")
    make_folder(out.parent, "probe --out")  # before the work, not after it
    start = time.perf_counter()
    paths = [Path(p) for p in policy_paths]
    policies = [load_policy(p) for p in paths]
    tasks = sorted({p.config.task for p in policies})
    if len(tasks) > 1:
        raise ValueError(f"policies must share one task; got {tasks}")
    task, horizon = tasks[0], policies[0].config.horizon
    action_dim = policies[0].agent.action_dim
    if state_source == "data":
        from qam_lite.data import datasets

        index, states, data_chunks = data_states(
            task, dataset_dir, num_states, seed=seed, horizon=horizon, download=download
        )
        data_record = datasets.provenance(task, dataset_dir)
    else:
        states = eval_states(task, num_states)
        index = np.full(num_states, -1)
        data_chunks = np.full((num_states, horizon * action_dim), np.nan, np.float32)
        data_record = None
    recorded = [p.meta["recorded"] for p in policies]
    arrays = {
        "taus": np.asarray([policy_tau(p) for p in policies], float),
        "actions": sample(policies, states, num_samples, seed=seed).astype(np.float16),
        "states": np.asarray(states, np.float32),
        "data_chunks": np.asarray(data_chunks, np.float32),
        "state_indices": np.asarray(index, int),
        "success": np.asarray([r["success_rate"] for r in recorded], float),
        "success_step": np.asarray([p.meta["step"] for p in policies], int),
        "success_episodes": np.asarray([r["episodes"] for r in recorded], int),
        "horizon": np.asarray(horizon),
        "action_dim": np.asarray(action_dim),
    }
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    write_bytes(out, buffer.getvalue())
    record = logs.provenance(
        task=task,
        policies=[
            {
                "file": path.name,
                "agent": p.config.agent,
                "tau": p.config.tau,
                "run": p.meta["run"],
                "commit": p.meta["commit"],
                "step": p.meta["step"],
                "seed": p.meta["seed"],
                "recorded": p.meta["recorded"],
            }
            for path, p in zip(paths, policies, strict=True)
        ],
        state_source=state_source,
        num_states=num_states,
        num_samples=num_samples,
        sampling_seed=seed,
        state_indices=np.asarray(index).tolist(),
        data=data_record,
        file=out.name,
        seconds=round(time.perf_counter() - start, 1),
    )
    if command is not None:
        record["command"] = command
    logs.write_json(out.with_suffix(".json"), record)
    return record


def load_probe(path: str | Path, command: str = "") -> tuple[dict[str, np.ndarray], dict]:
    """``(arrays, record)`` of a probe ``.npz`` and its JSON.

    Raises:
      ProbeMissing: the file is absent; the message names ``command`` (the one that makes it).
    """
    path = Path(path)
    if not path.exists() or not path.with_suffix(".json").exists():
        hint = f"; make it with:\n  {command}" if command else ""
        raise ProbeMissing(f"{path} (and its .json) are not there{hint}")
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    return arrays, json.loads(path.with_suffix(".json").read_text())


def pca_2d(points: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The plane that holds most of the spread of ``points (n, D)``.

    Returns ``(mean (D,), components (2, D), explained (2,))``: project with
    ``(x - mean) @ components.T``; ``explained`` is each axis's share of the total variance.
    Each component's sign is fixed (its largest-magnitude entry positive), so the picture does
    not flip between runs.
    """
    points = np.asarray(points, float)
    if points.ndim != 2 or points.shape[0] < 2 or points.shape[1] < 2:
        raise ValueError(f"points must be (n >= 2, D >= 2), got {points.shape}")
    mean = points.mean(0)
    _, s, vt = np.linalg.svd(points - mean, full_matrices=False)
    comps = vt[:2]
    signs = np.sign(comps[np.arange(2), np.argmax(np.abs(comps), axis=1)])
    comps = comps * np.where(signs == 0, 1.0, signs)[:, None]
    var = s**2
    return mean, comps, var[:2] / var.sum()


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qam-lite probe`` arguments (the CLI calls this)."""
    p.add_argument("policies", nargs="+", help="policy files written by export_policy")
    p.add_argument("--out", required=True, help="output .npz (the .json goes beside it)")
    p.add_argument("--dataset-dir", default=None, help="the task's dataset folder (--states data)")
    p.add_argument("--download", action="store_true", help="allow OGBench's official download")
    p.add_argument("--states", choices=STATE_SOURCES, default="eval")
    p.add_argument("--num-states", type=int, default=4)
    p.add_argument("--samples", type=int, default=64, help="samples per state and policy")
    p.add_argument("--seed", type=int, default=0)


def run_cli(args: argparse.Namespace) -> None:
    """``qam-lite probe``: :func:`probe_policies` with the command line's arguments, then a summary.

    ``args`` comes from the ``qam-lite`` parser (``args.command_line`` is the provenance's
    command); errors propagate for the CLI to report.
    """
    record = probe_policies(
        args.policies,
        args.out,
        dataset_dir=args.dataset_dir,
        download=args.download,
        state_source=args.states,
        num_states=args.num_states,
        num_samples=args.samples,
        seed=args.seed,
        command=args.command_line,
    )
    rates = ", ".join(
        f"{r['file']}: {100 * r['recorded']['success_rate']:.0f} %" for r in record["policies"]
    )
    n = len(record["policies"])
    print(f"probed {n} policies in {record['seconds']:.0f} s ({rates}) -> {args.out}")
