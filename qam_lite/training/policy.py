"""Trained policies to ship: one seed's acting parameters out of a run, and back to a policy.

A run's checkpoint holds everything training needs to continue (critics, target networks,
Adam's moments: about 16 MB for one seed of 2x256 networks); acting needs only the networks
``act`` reads (for QAM at ``tau > 0`` the fine actor f_theta, at ``tau = 0`` the behaviour flow
f_beta; FQL's one-step policy; the BC flow), well under 1 MB. :func:`export_policy` writes those
parameters with the run's config and the success its last evaluation recorded;
:func:`load_policy` is the one call from such a file to an acting :class:`Policy`.

Which parameter groups ``act`` reads is not listed per agent: it is read off ``act``'s traced
program (the inputs its jaxpr uses), so a new agent or head exports correctly without an edit
here, and a group ``act`` does not read is never shipped.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
from pathlib import Path
from typing import Any

import jax
import numpy as np
from jax.extend import core as jax_core

from qam_lite.config import Config, from_dict, to_dict
from qam_lite.training import checkpoint as ckpt

#: Format of the files written by :func:`export_policy` (read back by :func:`load_policy`).
FORMAT = 1


@dataclasses.dataclass(frozen=True)
class Policy:
    """An acting policy: ``act(obs (B, obs_dim), key) -> (B, H * A)`` chunks in ``[-1, 1]``.

    Attributes:
      agent: the ``Agent`` (its ``act``, sizes and config).
      state: a ``TrainState`` holding only the acting parameters.
      meta: where it came from: ``run`` (folder name), ``commit``, ``step``, ``seed`` and
        ``recorded`` (the run's evaluation at that step: ``success_rate``, ``episodes``,
        ``eval_seed``).
    """

    agent: Any
    state: Any
    meta: dict

    @property
    def config(self) -> Config:
        return self.agent.config

    @functools.cached_property
    def _act(self):
        return jax.jit(self.agent.act)  # compiled once per policy and batch shape

    def act(self, obs, key) -> jax.Array:
        """Action chunks for a batch of observations (one key for the batch)."""
        return self._act(self.state, obs, key)

    def evaluate(self, num_episodes: int | None = None, seed: int | None = None, **kwargs):
        """:func:`qam_lite.training.evaluate.evaluate` of this policy on its task.

        ``num_episodes`` and ``seed`` default to the recorded evaluation's (same episodes, same
        noise: on the machine that trained it the numbers repeat; elsewhere MuJoCo's floating
        point may differ, and the rate should fall inside :func:`binomial_interval`).
        """
        from qam_lite.training.evaluate import evaluate

        recorded = self.meta["recorded"]
        n = recorded["episodes"] if num_episodes is None else num_episodes
        s = recorded["eval_seed"] if seed is None else seed
        return evaluate(self.agent, self.state, self.config.task, n, s, **kwargs)


def binomial_interval(rate: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """Wilson's 95 % interval for a success rate measured on ``n`` episodes."""
    centre = (rate + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(rate * (1 - rate) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def acting_groups(agent, state) -> list[str]:
    """The names of ``state.params`` groups that ``agent.act`` reads (from its jaxpr)."""
    obs = jax.ShapeDtypeStruct((1, agent.obs_dim), np.float32)
    key = jax.random.PRNGKey(0)
    names = sorted(state.params)
    groups = [state.params[n] for n in names]

    def act(groups, obs, key):
        return agent.act(state._replace(params=dict(zip(names, groups, strict=True))), obs, key)

    closed = jax.make_jaxpr(act)(groups, obs, key)
    used = set()
    for eqn in closed.jaxpr.eqns:
        used.update(v for v in eqn.invars if isinstance(v, jax_core.Var))
    used.update(v for v in closed.jaxpr.outvars if isinstance(v, jax_core.Var))
    invars = closed.jaxpr.invars
    out, start = [], 0
    for name, group in zip(names, groups, strict=True):
        count = len(jax.tree_util.tree_leaves(group))
        if any(v in used for v in invars[start : start + count]):
            out.append(name)
        start += count
    return out


def _recorded(run_dir: Path, seed: int, step: int) -> dict:
    """The run's evaluation of ``seed`` at ``step`` (its eval.csv row)."""
    from qam_lite.training.logs import read_rows

    rows = [
        r
        for r in read_rows(run_dir / "eval.csv")
        if int(r["step"]) == step and int(r["seed"]) == seed
    ]
    if not rows:
        raise ValueError(
            f"{run_dir}/eval.csv has no evaluation of seed {seed} at step {step}; accepted: a "
            "run whose last checkpoint was evaluated (train with an eval_interval dividing the "
            "number of updates)"
        )
    return rows[-1]


def export_policy(run_dir: str | Path, out: str | Path, seed_index: int = 0) -> Path:
    """Write seed ``seed_index``'s acting parameters of ``run_dir``'s checkpoint to ``out``.

    The file (an ``.npz``, read with :func:`load_policy`) holds the parameters ``act`` reads, the
    run's config, sizes, step, commit, and the success its evaluation at that step recorded.
    """
    from qam_lite.training.rundir import load_run
    from qam_lite.training.session import eval_seed

    run_dir = Path(run_dir)
    run = load_run(run_dir)
    state = run.seed_state(seed_index)
    groups = acting_groups(run.agent, state)
    seed = run.config.seed + seed_index
    row = _recorded(run_dir, seed, run.step)
    prov_path = run_dir / "provenance.json"
    prov = json.loads(prov_path.read_text()) if prov_path.is_file() else {}
    config = dataclasses.replace(run.config, seed=seed, num_seeds=1, dataset_dir=None)
    meta = {
        "format": FORMAT,
        "config": to_dict(config),
        "obs_dim": run.agent.obs_dim,
        "action_dim": run.agent.action_dim,
        "groups": groups,
        "run": run_dir.name if run_dir.name not in ("", ".") else str(run_dir),
        "commit": prov.get("git_commit"),
        "step": run.step,
        "seed": seed,
        "recorded": {
            "success_rate": float(row["success_rate"]),
            "episodes": int(row["episodes"]),
            "eval_seed": eval_seed(run.config, seed_index, run.step),
        },
    }
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    return ckpt.save(out, {g: state.params[g] for g in groups}, meta)


def load_policy(path: str | Path) -> Policy:
    """The acting :class:`Policy` saved by :func:`export_policy` at ``path``."""
    from qam_lite.agents import make_agent

    path = Path(path)
    if not path.is_file():
        problem = "is a folder" if path.is_dir() else "does not exist"
        raise FileNotFoundError(
            f"{path} {problem}; accepted: a policy file written by export_policy "
            "(the shipped ones are in results/policies/)"
        )
    meta = ckpt.read_meta(path)
    if meta.get("format") != FORMAT or "groups" not in meta:
        raise ckpt.CheckpointError(
            f"{path} is not a qam-lite policy file (format {FORMAT}); a run's checkpoint.npz is "
            "read with qam_lite.training.rundir.load_run"
        )
    config = from_dict(meta["config"])
    agent = make_agent(config, meta["obs_dim"], meta["action_dim"])
    template = agent.init(jax.random.PRNGKey(0))
    params, meta = ckpt.load(path, {g: template.params[g] for g in meta["groups"]})
    state = template._replace(params=params, targets={}, opt_state=None)
    return Policy(agent, state, meta)


__all__ = ["FORMAT", "Policy", "acting_groups", "binomial_interval", "export_policy", "load_policy"]
