"""Every hyperparameter of a run in one frozen dataclass.

CleanRL style: :class:`Config` is the single place a run's knobs live; the agents, the training
loop, the logs and the checkpoints all read the same object. :func:`parse_overrides` turns
``key=value`` strings from the command line into typed values; :func:`validate` rejects bad values
with a message that names the field, the value and what is accepted. The paper's per-domain values
and the presets are filled in by :func:`qam_lite.training.settings.resolve` (the one place a run's
settings are resolved); this module knows no task or domain, so the agents can import it alone.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from collections.abc import Iterable, Mapping
from typing import Any

AGENTS = ("qam", "bc", "fql", "bam", "qam-e", "qam-f")


class ConfigError(ValueError):
    """A bad hyperparameter: the message names the field, the value and the accepted values."""


@dataclasses.dataclass(frozen=True)
class Config:
    """All hyperparameters of one run. Defaults are the paper's QAM on cube-double-play; build
    configs with :func:`make_config`, which fills the agent's per-domain values from
    :data:`DOMAINS` (``replace(agent=...)`` keeps the other agent's values)."""

    # What to run.
    agent: str = "qam"  # one of AGENTS
    task: str = "cube-double-play-singletask-task2-v0"
    # Per-domain (filled from DOMAINS by make_config).
    horizon: int = 5  # action-chunk length H; the policy outputs H * action_dim numbers
    gamma: float = 0.99
    rho: float = 0.5
    tau: float = 1.0  # inverse temperature of qam, bam, qam-e, qam-f; 0 = behaviour cloning
    alpha: float = 300.0  # distillation weight of fql's and qam-f's one-step policy
    edit_scale: float = 0.0  # qam-e: size of the edit on the flow's action (0: no edit policy)
    sparse_reward: bool = False  # r' = -1[r != 0] (puzzle and scene)
    # Networks and sampling.
    num_critics: int = 10
    flow_steps: int = 10  # Euler / SDE steps T
    actor_hidden: tuple[int, ...] = (512, 512, 512, 512)
    critic_hidden: tuple[int, ...] = (512, 512, 512, 512)
    # Optimisation.
    batch_size: int = 256
    lr: float = 3e-4
    grad_clip: float | None = 1.0  # global gradient-norm clip over all networks; None: plain Adam
    polyak: float = 0.005  # target-network rate
    action_clip: float = 1.0 - 1e-5  # dataset actions clipped to +-action_clip
    # Departures from the published agents (off by default).
    normalize_q_loss: bool = False  # fql: divide the Q term by mean |Q| (an option of the FQL
    # code, off in the QAM paper's runs: its per-domain alpha was tuned without it)
    bam_path_kl: bool = False  # bam: weight 2h/sigma^2 (the exact path KL, tilt tau) instead of
    # the published 2/sigma^2 (effective tilt tau * h)
    # Schedule.
    offline_steps: int = 1_000_000
    online_steps: int = 0
    online_buffer_size: int = 1_000_000  # online transitions kept per seed (oldest overwritten)
    start_training: int = 5_000  # online: first update at this environment step (warm-up)
    eval_interval: int = 50_000
    eval_episodes: int = 50
    updates_per_call: int = 1000  # gradient steps fused into one compiled call (lax.scan)
    log_interval: int = 5_000
    checkpoint_interval: int = 50_000
    # Seeds and data.
    seed: int = 0
    num_seeds: int = 1  # independent seeds vmapped on one device
    dataset_dir: str | None = None  # None -> OGBench's default (~/.ogbench/data)
    download: bool = False  # allow OGBench to download a missing dataset

    def replace(self, **changes: Any) -> Config:
        """A validated copy with ``changes`` applied."""
        check_keys(changes)
        return validate(dataclasses.replace(self, **changes))


FIELDS: dict[str, dataclasses.Field] = {f.name: f for f in dataclasses.fields(Config)}
_HINTS = typing.get_type_hints(Config)


#: Common names for fields that difflib cannot match (``learning_rate`` is far from ``lr``).
_SYNONYMS = {"learning_rate": "lr", "discount": "gamma", "horizon_length": "horizon"}


def suggest(name: str, options: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the option closest to ``name`` (empty when none is)."""
    close = difflib.get_close_matches(name, list(options), n=1)
    if name in _SYNONYMS and _SYNONYMS[name] in options:
        close = [_SYNONYMS[name]]
    return f"; did you mean {close[0]!r}?" if close else ""


def check_keys(keys: Iterable[str]) -> None:
    """Raise :class:`ConfigError` naming the first key that is no :class:`Config` field."""
    for key in keys:
        if key not in FIELDS:
            raise ConfigError(
                f"unknown hyperparameter {key!r}{suggest(key, FIELDS)} "
                f"(accepted: {', '.join(FIELDS)})"
            )


def _err(name: str, value: Any, accepted: str) -> ConfigError:
    return ConfigError(f"{name}={value!r} is invalid; accepted: {accepted}")


def validate(config: Config) -> Config:
    """Return ``config`` unchanged if every field is valid, else raise :class:`ConfigError`."""
    c = config
    if c.agent not in AGENTS:
        raise ConfigError(
            f"agent={c.agent!r} is unknown; accepted: {', '.join(AGENTS)}"
            + suggest(c.agent, AGENTS)
        )
    if not isinstance(c.task, str) or not c.task:
        raise _err(
            "task", c.task, "an OGBench task name, e.g. 'cube-double-play-singletask-task2-v0'"
        )
    positive_ints = (
        "horizon",
        "num_critics",
        "flow_steps",
        "batch_size",
        "eval_episodes",
        "updates_per_call",
        "num_seeds",
        "log_interval",
        "checkpoint_interval",
        "eval_interval",
        "online_buffer_size",
    )
    for name in positive_ints:
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _err(name, value, "an integer >= 1")
    for name in ("offline_steps", "online_steps", "seed", "start_training"):
        value = getattr(c, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise _err(name, value, "an integer >= 0")
    if c.offline_steps + c.online_steps == 0:
        raise _err("offline_steps", c.offline_steps, "offline_steps + online_steps >= 1")
    for name in ("actor_hidden", "critic_hidden"):
        value = getattr(c, name)
        if (
            not isinstance(value, tuple)
            or not value
            or not all(isinstance(v, int) and not isinstance(v, bool) and v >= 1 for v in value)
        ):
            raise _err(name, value, "a non-empty tuple of layer widths >= 1, e.g. (512, 512)")
    if c.num_critics < 2 and c.rho != 0:
        # The ensemble std is undefined for one critic.
        raise _err("num_critics", c.num_critics, ">= 2 when rho != 0 (rho uses the ensemble std)")

    def real_in(name: str, lo: float, hi: float, lo_open: bool, hi_open: bool, text: str) -> None:
        value = getattr(c, name)
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if ok:
            ok = (value > lo if lo_open else value >= lo) and (
                value < hi if hi_open else value <= hi
            )
        if not ok:
            raise _err(name, value, text)

    inf = float("inf")
    real_in("gamma", 0.0, 1.0, True, True, "a number in (0, 1)")
    real_in("tau", 0.0, inf, False, True, "a number >= 0 (0 = behaviour cloning)")
    real_in("rho", 0.0, inf, False, True, "a number >= 0")
    real_in("alpha", 0.0, inf, False, True, "a number >= 0")
    real_in("edit_scale", 0.0, inf, False, True, "a number >= 0 (0 = no edit policy)")
    real_in("lr", 0.0, inf, True, True, "a number > 0")
    if c.grad_clip is not None:
        real_in("grad_clip", 0.0, inf, True, True, "a number > 0, or none for no clipping")
    real_in("polyak", 0.0, 1.0, True, False, "a number in (0, 1]")
    real_in("action_clip", 0.0, 1.0, True, False, "a number in (0, 1]")
    for name in ("sparse_reward", "download", "normalize_q_loss", "bam_path_kl"):
        if not isinstance(getattr(c, name), bool):
            raise _err(name, getattr(c, name), "true or false")
    if c.dataset_dir is not None and not isinstance(c.dataset_dir, str):
        raise _err("dataset_dir", c.dataset_dir, "a folder path or none")
    return c


_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _parse_value(name: str, text: str) -> Any:
    """Convert ``text`` to the type of field ``name``."""
    hint = _HINTS[name]
    text = text.strip()
    try:
        if hint is bool:
            if text.lower() in _TRUE:
                return True
            if text.lower() in _FALSE:
                return False
            raise ValueError
        if hint is int:
            return int(text.replace("_", ""))
        if hint is float:
            return float(text)
        if hint is str:
            return text
        if typing.get_origin(hint) is tuple:
            parts = [p for p in re.split(r"[,x ]+", text.strip("()[] ")) if p]
            return tuple(int(p) for p in parts)
        if isinstance(hint, types.UnionType):  # str | None, float | None
            if text.lower() in {"none", "null", ""}:
                return None
            (kind,) = (a for a in typing.get_args(hint) if a is not type(None))
            return kind(text)
    except ValueError:
        pass
    kind = {
        bool: "true/false",
        int: "an integer",
        float: "a number",
        float | None: "a number or none",
    }.get(hint, "comma-separated integers, e.g. 512,512")
    raise ConfigError(f"{name}={text!r} cannot be parsed; accepted: {kind}")


def parse_overrides(items: Iterable[str]) -> dict[str, Any]:
    """``["tau=3", "actor_hidden=256,256", "sparse_reward=true"]`` -> typed dict.

    Unknown keys raise :class:`ConfigError` with the closest field name; values are typed from
    the :class:`Config` field annotations (ranges are checked later by :func:`validate`).
    """
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form key=value (e.g. tau=3)")
        key, text = item.split("=", 1)
        key = key.strip().replace("-", "_")
        check_keys([key])
        out[key] = _parse_value(key, text)
    return out


def to_dict(config: Config) -> dict[str, Any]:
    """JSON-ready dict (tuples become lists)."""
    return {
        k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(config).items()
    }


def from_dict(data: Mapping[str, Any]) -> Config:
    """Inverse of :func:`to_dict`; unknown keys raise :class:`ConfigError`."""
    check_keys(data)
    values = {k: tuple(v) if typing.get_origin(_HINTS[k]) is tuple else v for k, v in data.items()}
    return validate(Config(**values))
