"""Probe trained policies at fixed states: how the action distribution moves with ``tau``.

For a list of QAM run folders trained on the same task and data at different ``tau`` (say 0, 0.1,
1, 10, 100), :func:`probe_runs` samples ``N`` action chunks from every seed's policy ``f_theta``
and from the same checkpoint's behaviour flow ``f_beta`` (trained on the data by flow matching:
the cloning reference) at one fixed set of states, scores every sample with that run's target
critic, and reads each run's success rates from its ``eval.csv``. Everything goes into one small
``.npz`` (actions stored as float16: they lie in ``[-1, 1]``) and a JSON with the provenance and
the success rates, which the book reads (:func:`load_probe`).

States (``state_source``):

* ``'data'``: ``num_states`` transitions of the task's training dataset at fixed indices (drawn
  with ``seed`` among the steps where a whole chunk lies inside one episode); the chunk the data
  took there is kept too.
* ``'eval'``: the first observations of the evaluation episodes ``0 .. num_states - 1`` with the
  evaluation seed 10,000 (the states where ``qam-lite evaluate`` starts; no dataset needed).

Arrays in the ``.npz`` (``R`` runs sorted by ``tau``, ``S`` seeds, ``M`` states, ``N`` samples,
``D = H * A`` chunk width)::

    taus (R,)             float64    each run's tau
    seeds (R, S)          int        the seeds' numbers
    actor (R, S, M, N, D) float16    samples of f_theta (the policy that acts)
    behaviour (R, S, M, N, D) float16  samples of f_beta from the same checkpoint
    q_actor, q_behaviour (R, S, M, N) float32  target-critic ensemble mean of those samples
    states (M, obs_dim)   float32
    data_chunks (M, D)    float32    the data's own chunk at each state (NaN for 'eval')
    state_indices (M,)    int        dataset row (-1 for 'eval')
    success (R, S)        float64    success rate at the run's last evaluation
    success_step (R,)     int        that evaluation's step
    success_episodes (R,) int        its episodes per seed (0 if eval.csv does not say)
    horizon, action_dim   int

Command line (``python -m qam_lite probe`` is the same)::

    qam-lite probe RUN_DIR [RUN_DIR ...] --out results/cpu-tau/probe.npz \
        [--dataset-dir data] [--states data|eval] [--num-states 4] [--samples 64]

:func:`pca_2d` is the projection the book uses to draw the 25-dimensional chunks in a plane.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

STATE_SOURCES = ("data", "eval")
#: Agents whose checkpoints hold a behaviour flow ``bc_flow`` and a ``critic`` beside ``actor``.
PROBED_AGENTS = ("qam", "bam", "qam-e", "qam-f")
EVAL_SEED = 10_000


class ProbeMissing(FileNotFoundError):
    """A committed probe file is absent (the message gives the command that makes it)."""


def final_success(eval_csv: str | Path) -> tuple[int, dict[int, float]]:
    """``(step, {seed: success_rate})`` of the last evaluation in a run's ``eval.csv``
    (:func:`final_evaluation` also gives the number of episodes).

    Raises:
      FileNotFoundError: no ``eval.csv``; ValueError: it has no rows.
    """
    step, rates, _ = final_evaluation(eval_csv)
    return step, rates


def final_evaluation(eval_csv: str | Path) -> tuple[int, dict[int, float], int]:
    """``(step, {seed: success_rate}, episodes per seed)`` of a run's last evaluation."""
    from qam_lite.training.logs import read_rows

    path = Path(eval_csv)
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; accepted: a run folder with an eval.csv")
    rows = read_rows(path)
    if not rows:
        raise ValueError(f"{path} has no evaluation rows yet")
    last = max(int(r["step"]) for r in rows)
    rows = [r for r in rows if int(r["step"]) == last]
    episodes = min(int(float(r.get("episodes") or 0)) for r in rows)
    return last, {int(r["seed"]): float(r["success_rate"]) for r in rows}, episodes


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


def run_config(run_dir: str | Path):
    """The :class:`~qam_lite.config.Config` of a run folder's checkpoint (its header only)."""
    from qam_lite.config import from_dict
    from qam_lite.training.checkpoint import read_meta
    from qam_lite.training.rundir import CHECKPOINT, load_run

    path = Path(run_dir) / CHECKPOINT
    if not path.exists():
        load_run(run_dir)  # raises the error that names what is accepted
    return from_dict(read_meta(path)["config"])


def sample_policies(run, states: np.ndarray, num_samples: int, *, key_seed: int = 0) -> dict:
    """Samples of every seed's ``f_theta`` and ``f_beta`` at ``states (M, obs_dim)``, with Q.

    Returns dict of ``actor``, ``behaviour`` ``(S, M, N, D)`` and ``q_actor``, ``q_behaviour``
    ``(S, M, N)`` (target-critic ensemble mean) as NumPy arrays. The noise is the same for
    every run and seed (``PRNGKey(key_seed)``), so differences come from the networks.
    """
    import jax
    import jax.numpy as jnp

    from qam_lite.agents.common import flow_actions
    from qam_lite.agents.qam import make_networks

    c = run.config
    if c.agent not in PROBED_AGENTS:
        raise ValueError(
            f"agent {c.agent!r} has no behaviour flow to compare with; accepted agents: "
            f"{', '.join(PROBED_AGENTS)}"
        )
    agent = run.agent
    networks = make_networks(c, agent.obs_dim, agent.chunk_dim)
    m = states.shape[0]
    obs = jnp.repeat(jnp.asarray(states, jnp.float32), num_samples, axis=0)  # (M * N, obs_dim)
    k_actor, k_bc = jax.random.split(jax.random.PRNGKey(key_seed))

    @jax.jit
    def one(state):
        actor = agent.act(state, obs, k_actor)
        bc = flow_actions(
            networks.apply["bc_flow"],
            state.params["bc_flow"],
            obs,
            k_bc,
            agent.chunk_dim,
            c.flow_steps,
        )
        critic = state.targets["critic"]
        q_a = networks.apply["critic"](critic, obs, actor).mean(0)
        q_b = networks.apply["critic"](critic, obs, bc).mean(0)
        return actor, bc, q_a, q_b

    outs = [one(run.seed_state(s)) for s in range(c.num_seeds)]
    shape = (c.num_seeds, m, num_samples)
    return {
        "actor": np.stack([np.asarray(o[0]) for o in outs]).reshape(*shape, -1),
        "behaviour": np.stack([np.asarray(o[1]) for o in outs]).reshape(*shape, -1),
        "q_actor": np.stack([np.asarray(o[2]) for o in outs]).reshape(shape),
        "q_behaviour": np.stack([np.asarray(o[3]) for o in outs]).reshape(shape),
    }


def probe_runs(
    run_dirs: Sequence[str | Path],
    out: str | Path,
    *,
    dataset_dir: str | Path | None = None,
    download: bool = False,
    state_source: str = "data",
    num_states: int = 4,
    num_samples: int = 64,
    seed: int = 0,
    command: str | None = None,
) -> dict[str, Any]:
    """Probe ``run_dirs`` (same task, one ``tau`` each) and write ``out`` (.npz) and its .json.

    Args:
      run_dirs: run folders with ``checkpoint.npz`` and ``eval.csv`` (``qam-lite train``'s), all
        of one task and one number of seeds, with distinct ``tau``.
      out: the ``.npz`` path; the JSON goes beside it (same name, ``.json``).
      dataset_dir: where the task's dataset is (``state_source='data'``).
      download: allow OGBench's official download of a missing dataset.
      state_source: ``'data'`` or ``'eval'`` (see the module's docstring).
      num_states, num_samples: ``M`` states, ``N`` samples per state, seed and policy.
      seed: picks the dataset rows; the sampling noise is ``PRNGKey(seed)``.
      command: the command recorded in the provenance (default: this process's).

    Returns:
      the JSON record (also written).
    """
    from qam_lite.atomic import make_folder, write_bytes
    from qam_lite.training import logs
    from qam_lite.training.rundir import load_run

    if state_source not in STATE_SOURCES:
        raise ValueError(
            f"state_source={state_source!r} is invalid; accepted: {', '.join(STATE_SOURCES)}"
        )
    if not run_dirs:
        raise ValueError("no run folders given; accepted: one or more run folders")
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
    configs = [run_config(d) for d in run_dirs]  # checked before the (slower) loading
    tasks = {c.task for c in configs}
    seeds = {c.num_seeds for c in configs}
    if len(tasks) > 1 or len(seeds) > 1:
        raise ValueError(
            f"runs must share one task and one number of seeds; got tasks {sorted(tasks)}, "
            f"seeds {sorted(seeds)}"
        )
    taus = sorted(c.tau for c in configs)
    if len(set(taus)) < len(taus):
        raise ValueError(f"two runs have the same tau ({taus}); accepted: one run per tau")
    bad = sorted({c.agent for c in configs} - set(PROBED_AGENTS))
    if bad:
        raise ValueError(
            f"agent(s) {bad} have no behaviour flow to compare with; accepted agents: "
            f"{', '.join(PROBED_AGENTS)}"
        )
    runs = sorted(((Path(d), load_run(d)) for d in run_dirs), key=lambda dr: dr[1].config.tau)
    task, first = runs[0][1].config.task, runs[0][1]
    horizon, action_dim = first.config.horizon, first.agent.action_dim
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
    samples = [sample_policies(r, states, num_samples, key_seed=seed) for _, r in runs]
    success, success_step, success_episodes = [], [], []
    for d, r in runs:
        step, per_seed, n_episodes = final_evaluation(d / "eval.csv")
        success_step.append(step)
        success_episodes.append(n_episodes)
        success.append([per_seed.get(r.config.seed + s, np.nan) for s in range(r.config.num_seeds)])
    arrays = {
        "taus": np.asarray(taus, float),
        "seeds": np.asarray(
            [[r.config.seed + s for s in range(r.config.num_seeds)] for _, r in runs]
        ),
        "actor": np.stack([s["actor"] for s in samples]).astype(np.float16),
        "behaviour": np.stack([s["behaviour"] for s in samples]).astype(np.float16),
        "q_actor": np.stack([s["q_actor"] for s in samples]).astype(np.float32),
        "q_behaviour": np.stack([s["q_behaviour"] for s in samples]).astype(np.float32),
        "states": np.asarray(states, np.float32),
        "data_chunks": np.asarray(data_chunks, np.float32),
        "state_indices": np.asarray(index, int),
        "success": np.asarray(success, float),
        "success_step": np.asarray(success_step, int),
        "success_episodes": np.asarray(success_episodes, int),
        "horizon": np.asarray(horizon),
        "action_dim": np.asarray(action_dim),
    }
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, **arrays)
    out.parent.mkdir(parents=True, exist_ok=True)
    write_bytes(out, buffer.getvalue())
    record = logs.provenance(
        task=task,
        runs=[
            {
                "run_dir": str(d),
                "tau": r.config.tau,
                "agent": r.config.agent,
                "step": int(r.step),
                "seeds": [r.config.seed + s for s in range(r.config.num_seeds)],
                "success_step": st,
                "success": su,
                "success_episodes": ne,
            }
            for (d, r), st, su, ne in zip(
                runs, success_step, success, success_episodes, strict=True
            )
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
    p.add_argument("run_dirs", nargs="+", help="run folders with checkpoint.npz and eval.csv")
    p.add_argument("--out", required=True, help="output .npz (the .json goes beside it)")
    p.add_argument("--dataset-dir", default=None, help="the task's dataset folder (--states data)")
    p.add_argument("--download", action="store_true", help="allow OGBench's official download")
    p.add_argument("--states", choices=STATE_SOURCES, default="data")
    p.add_argument("--num-states", type=int, default=4)
    p.add_argument("--samples", type=int, default=64, help="samples per state and policy")
    p.add_argument("--seed", type=int, default=0)


def run_cli(args: argparse.Namespace) -> None:
    """``qam-lite probe``: :func:`probe_runs` with the command line's arguments, then a summary.

    ``args`` comes from the ``qam-lite`` parser (``args.command_line`` is the provenance's
    command); errors propagate for the CLI to report.
    """
    record = probe_runs(
        args.run_dirs,
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
        f"tau {r['tau']:g}: {100 * np.nanmean(r['success']):.0f} %" for r in record["runs"]
    )
    print(f"probed {len(record['runs'])} runs in {record['seconds']:.0f} s ({rates}) -> {args.out}")
