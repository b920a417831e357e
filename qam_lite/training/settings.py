"""The paper's per-domain settings, the named presets, and the one resolution of a run's
settings: ``resolve(task, agent, preset, overrides) -> Config``.

Every entry point (``qam-lite train``, ``sweep``, ``gradstats``, the chapters) builds its
:class:`~qam_lite.config.Config` here, in one order: the domain's published values for the agent
(:data:`DOMAINS`, from the authors' public configuration, DESIGN.md "Per-domain settings"), then
the preset (:data:`PRESETS`), then the user's overrides.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from qam_lite.config import (
    AGENTS,
    Config,
    ConfigError,
    check_keys,
    parse_overrides,
    suggest,
    validate,
)
from qam_lite.data.tasks import TaskError, parse_task


class DomainSettings(NamedTuple):
    """One domain's row of :data:`DOMAINS`: shared settings, then each agent's own values."""

    horizon: int  # action-chunk length H
    gamma: float
    rho: float  # pessimism: subtract rho * ensemble std in the critic target
    sparse_reward: bool  # r' = -1[r != 0]
    qam_tau: float  # QAM inverse temperature
    fql_alpha: float  # FQL distillation weight
    bam_tau: float  # BAM inverse temperature (its own tuning)
    qam_e_tau: float  # QAM-E: QAM's inverse temperature ...
    qam_e_edit_scale: float  # ... and the edit size (0: no edit policy, the agent is QAM)
    qam_f_tau: float  # QAM-F: QAM's inverse temperature ...
    qam_f_alpha: float  # ... and the one-step distillation weight (0: no one-step policy, QAM)


# The authors' public configuration (ColinQiyangLi/qam experiments/reproduce.py: the QAM, FQL, BAM,
# QAM_EDIT and QAM_FQL entries; H, gamma and rho from its common arguments).
_D = DomainSettings


# fmt: off
#: The paper's per-domain settings of every agent, keyed by domain.
DOMAINS: dict[str, DomainSettings] = {
    #                                 H  gamma  rho  sparse QAM FQL   BAM QAM-E     QAM-F
    #                                                       tau alpha tau tau  edit tau  alpha
    "antmaze-large-navigate":       _D(1, 0.99,  0.5, False, 10, 3,   30, 1,   0.1, 3,   30),
    "antmaze-giant-navigate":       _D(1, 0.995, 0.5, False, 3,  3,   30, 10,  0.1, 3,   30),
    "humanoidmaze-medium-navigate": _D(1, 0.995, 0.0, False, 3,  30,  10, 3,   0.1, 1,   30),
    "humanoidmaze-large-navigate":  _D(1, 0.995, 0.0, False, 3,  30,  30, 3,   0.1, 0.3, 30),
    "cube-double-play":             _D(5, 0.99,  0.5, False, 1,  300, 10, 1,   0.0, 1,   0),
    "cube-triple-play":             _D(5, 0.99,  0.5, False, 3,  30,  30, 3,   0.1, 10,  300),
    "cube-quadruple-play":          _D(5, 0.99,  0.5, False, 1,  100, 10, 3,   0.1, 0.3, 30),
    "scene-play":                   _D(5, 0.99,  0.5, True,  1,  300, 10, 1,   0.0, 1,   300),
    "puzzle-3x3-play":              _D(5, 0.99,  0.5, True,  3,  300, 10, 1,   0.1, 3,   0),
    "puzzle-4x4-play":              _D(5, 0.99,  0.5, True,  30, 1,   30, 0.1, 0.9, 3,   3),
}


#: Settings for the locally generable domains the paper did not run (``cube-single-play``,
#: ``pointmaze-*-navigate``): NOT paper settings, just the closest paper domain's values
#: (cube-double for cube-single, antmaze-large for the point mazes) so small CPU tasks run.
EXTRA_DOMAINS: dict[str, DomainSettings] = {
    "cube-single-play": DOMAINS["cube-double-play"],
    "pointmaze-medium-navigate": DOMAINS["antmaze-large-navigate"],
    "pointmaze-large-navigate": DOMAINS["antmaze-large-navigate"],
    "pointmaze-giant-navigate": DOMAINS["antmaze-large-navigate"],
    "pointmaze-teleport-navigate": DOMAINS["antmaze-large-navigate"],
}


#: Which :class:`Config` field each agent takes from which :class:`DomainSettings` column. Every
#: agent also takes ``horizon``, ``gamma``, ``rho`` and ``sparse_reward``; an agent's ``tau`` /
#: ``alpha`` default to QAM's / FQL's column where the agent does not read them.
AGENT_COLUMNS: dict[str, dict[str, str]] = {
    "qam": {"tau": "qam_tau"},
    "bc": {},
    "fql": {"alpha": "fql_alpha"},
    "bam": {"tau": "bam_tau"},
    "qam-e": {"tau": "qam_e_tau", "edit_scale": "qam_e_edit_scale"},
    "qam-f": {"tau": "qam_f_tau", "alpha": "qam_f_alpha"},
}


#: Per-agent defaults that do not depend on the domain: the published FQL uses plain Adam.
AGENT_DEFAULTS: dict[str, dict[str, Any]] = {"fql": {"grad_clip": None}}


def domain_settings(task: str) -> DomainSettings:
    """The paper's :class:`DomainSettings` for ``task``'s domain (see :data:`EXTRA_DOMAINS`).

    ``task`` is any name :func:`~qam_lite.data.tasks.parse_task` accepts; the sparse-reward
    flag follows the task's reward convention.
    """
    try:
        parsed = parse_task(task)
    except TaskError as err:
        raise ConfigError(f"task={task!r}: {err}") from None
    table = {**DOMAINS, **EXTRA_DOMAINS}
    if parsed.domain not in table:
        raise ConfigError(
            f"task={task!r}: no hyperparameters for domain {parsed.domain!r}; accepted domains: "
            f"{', '.join(table)}"
        )
    return table[parsed.domain]._replace(sparse_reward=parsed.reward == "sparse")


#: Named bundles of ``--set`` overrides. ``cpu-small``: small networks and a short schedule that
#: train and evaluate on a 2-core CPU in a few minutes (not the paper's settings).
PRESETS: dict[str, dict] = {
    "cpu-small": {
        "actor_hidden": (128, 128),
        "critic_hidden": (128, 128),
        "batch_size": 128,
        "offline_steps": 10_000,
        "eval_interval": 2_500,
        "eval_episodes": 10,
        "log_interval": 500,
        "updates_per_call": 500,
        "checkpoint_interval": 2_500,
    },
    # The CPU ladder's first rung (results/cpu-ladder/d1000-2x256-b256, with its measured CPU
    # time): 2x256 MLPs, batch 256, 50K updates, 50 evaluation episodes every 10K; meant for data
    # generated at the published size (1000 episodes). K, T, H and the domain's gamma / rho /
    # tau / alpha stay the paper's.
    "laptop": {
        "actor_hidden": (256, 256),
        "critic_hidden": (256, 256),
        "batch_size": 256,
        "offline_steps": 50_000,
        "eval_interval": 10_000,
        "eval_episodes": 50,
        "log_interval": 1_000,
        "updates_per_call": 500,
        "checkpoint_interval": 5_000,
    },
    "paper": {},
}


def make_config(task: str, agent: str = "qam", **overrides: Any) -> Config:
    """The config for ``task``: domain settings from :data:`DOMAINS`, then ``overrides``.

    >>> make_config("puzzle-3x3-play-singletask-task1-v0", tau=10).tau
    10
    """
    check_keys(overrides)
    if agent not in AGENT_COLUMNS:
        raise ConfigError(
            f"agent={agent!r} is unknown; accepted: {', '.join(AGENTS)}" + suggest(agent, AGENTS)
        )
    row = domain_settings(task)
    base: dict[str, Any] = {
        "horizon": row.horizon,
        "gamma": float(row.gamma),
        "rho": float(row.rho),
        "sparse_reward": row.sparse_reward,
        "tau": float(row.qam_tau),
        "alpha": float(row.fql_alpha),
    }
    base.update({name: float(getattr(row, col)) for name, col in AGENT_COLUMNS[agent].items()})
    base.update(AGENT_DEFAULTS.get(agent, {}))
    return validate(Config(agent=agent, task=parse_task(task).name, **{**base, **overrides}))


def resolve(
    task: str,
    agent: str = "qam",
    preset: str | None = None,
    overrides: Mapping[str, Any] | Iterable[str] | None = None,
    **fields: Any,
) -> Config:
    """The one resolution of a run's settings, used by ``train``, ``sweep``, ``gradstats`` and
    the CLI: the domain's published values for ``agent``, then :data:`PRESETS` ``[preset]``, then
    ``overrides`` (a dict of typed values, or ``key=value`` strings as ``--set`` gives them), then
    ``fields`` (what the entry point itself decides, e.g. ``num_seeds`` or ``dataset_dir``).

    ``task`` and ``agent`` are arguments, not overrides: an override naming either is refused.
    A ``dataset_dir`` is made absolute, so the run folder records where the data was found.

    >>> resolve("scene-play-singletask-task1-v0", "fql", "cpu-small", ["alpha=10"]).alpha
    10.0
    """
    if preset is not None and preset not in PRESETS:
        raise ConfigError(f"preset={preset!r} is unknown; accepted: {', '.join(sorted(PRESETS))}")
    if overrides is not None and not isinstance(overrides, Mapping):
        overrides = parse_overrides(overrides)
    given = dict(overrides or {})
    for key in ("task", "agent"):
        if key in given:
            raise ConfigError(
                f"{key}={given[key]!r} cannot be overridden; give the {key} as its own argument"
            )
    settings = {**(PRESETS[preset] if preset else {}), **given, **fields}
    if settings.get("dataset_dir") is not None:
        settings["dataset_dir"] = str(Path(settings["dataset_dir"]).expanduser().resolve())
    return make_config(task, agent, **settings)
