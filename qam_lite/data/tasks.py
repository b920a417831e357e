"""Task names: which OGBench environment, dataset file and reward convention a name means.

A *task* is one single-task OGBench problem, named as OGBench names it::

    cube-double-play-singletask-task2-v0     domain 'cube-double-play', task 2
    cube-double-play-singletask-v0           the domain's default task (OGBench picks it)

``parse_task`` also accepts short forms: ``cube-double-play-task2``, ``cube-double-task2``,
``cube-double-play`` and ``cube-double`` (the last two mean the default task).

This module is a leaf: no JAX, no OGBench import, so the CLI can validate names instantly.
"""

from __future__ import annotations

import difflib
import re
from typing import NamedTuple

NUM_TASKS = 5  # every OGBench single-task domain defines tasks 1..5


class TaskError(ValueError):
    """An unknown or malformed task name (the message lists the closest valid names)."""


class Domain(NamedTuple):
    """One dataset family.

    Attributes:
      name: e.g. ``'cube-double-play'`` (environment + dataset type).
      env: the OGBench environment family, e.g. ``'cube-double'``.
      reward: ``'dense'`` (OGBench's per-sub-goal reward) or ``'sparse'`` (``r' = -1[r != 0]``).
      locally_generable: :mod:`qam_lite.data.generate` builds its dataset with OGBench's oracles.
      in_paper: one of the QAM paper's ten benchmark domains.
      episodes: training episodes of OGBench's published dataset (``qam-lite generate``'s
        default where ``locally_generable``); the validation file has a tenth as many.
      episode_length: steps per episode of the published dataset (OGBench's
        ``max_episode_steps`` in ``data_gen_scripts/commands.sh``).
      obs_dim: width of the environment's observation (``observation_space.shape[0]``).
      act_dim: width of its action (``action_space.shape[0]``); a test checks both against
        the real environments, so datasets can be checked without building one.
      paper_data: ``None`` where the paper trained on OGBench's standard files; otherwise the
        larger dataset it used (e.g. ``'cube-quadruple-play-100m-v0'``, 100M transitions in
        shards), so results on the standard files are not comparable with the paper's.
    """

    name: str
    env: str
    reward: str
    locally_generable: bool
    in_paper: bool
    episodes: int
    episode_length: int
    obs_dim: int
    act_dim: int
    paper_data: str | None = None


def _domain(name, reward, generable, in_paper, episodes, length, obs_dim, act_dim, big=False):
    env = name.rsplit("-", 1)[0]  # drop the dataset type ('play' / 'navigate')
    paper_data = f"{name}-100m-v0" if big else None
    return Domain(
        name, env, reward, generable, in_paper, episodes, length, obs_dim, act_dim, paper_data
    )


# Episode counts and lengths are OGBench's published 'play'/'navigate' dataset settings
# (OGBench's data_gen_scripts/commands.sh; DESIGN.md, "OGBench facts"). The paper trained
# cube-quadruple and puzzle-4x4 on 100M-transition datasets (`paper_data`), loaded in shards.
DOMAINS: dict[str, Domain] = {
    d.name: d
    for d in [
        # The QAM paper's ten domains.  name, reward, generable, in paper, episodes x length,
        # observation and action widths.
        _domain("antmaze-large-navigate", "dense", False, True, 1000, 1001, 29, 8),
        _domain("antmaze-giant-navigate", "dense", False, True, 500, 2001, 29, 8),
        _domain("humanoidmaze-medium-navigate", "dense", False, True, 1000, 2001, 69, 21),
        _domain("humanoidmaze-large-navigate", "dense", False, True, 1000, 2001, 69, 21),
        _domain("cube-double-play", "dense", True, True, 1000, 1001, 37, 5),
        _domain("cube-triple-play", "dense", True, True, 3000, 1001, 46, 5),
        _domain("cube-quadruple-play", "dense", True, True, 5000, 1001, 55, 5, big=True),
        _domain("scene-play", "sparse", True, True, 1000, 1001, 40, 5),
        _domain("puzzle-3x3-play", "sparse", True, True, 1000, 1001, 55, 5),
        _domain("puzzle-4x4-play", "sparse", True, True, 1000, 1001, 83, 5, big=True),
        # Locally generable extras: small, fast domains for CPU runs and the book.
        _domain("cube-single-play", "dense", True, False, 1000, 1001, 28, 5),
        _domain("pointmaze-medium-navigate", "dense", True, False, 1000, 1001, 2, 2),
        _domain("pointmaze-large-navigate", "dense", True, False, 1000, 1001, 2, 2),
        _domain("pointmaze-giant-navigate", "dense", True, False, 500, 2001, 2, 2),
        _domain("pointmaze-teleport-navigate", "dense", True, False, 1000, 1001, 2, 2),
    ]
}

PAPER_DOMAINS: tuple[str, ...] = tuple(d for d, info in DOMAINS.items() if info.in_paper)


class Task(NamedTuple):
    """A parsed single-task name.

    Attributes:
      name: canonical OGBench name, e.g. ``'cube-double-play-singletask-task2-v0'``.
      domain: ``'cube-double-play'``.
      dataset: the dataset name OGBench maps to files, e.g. ``'cube-double-play-v0'``
        (``<dataset>.npz`` and ``<dataset>-val.npz``).
      task_id: 1..5, or ``None`` for the domain's default task.
      reward: ``'dense'`` or ``'sparse'``.
      locally_generable: whether ``qam_lite.data.generate`` can build the dataset.
    """

    name: str
    domain: str
    dataset: str
    task_id: int | None
    reward: str
    locally_generable: bool

    @property
    def env_name(self) -> str:
        """The OGBench single-task environment id, e.g. ``'cube-double-singletask-task2-v0'``."""
        suffix = "" if self.task_id is None else f"-task{self.task_id}"
        return f"{DOMAINS[self.domain].env}-singletask{suffix}-v0"


def make_task(domain: str, task_id: int | None = None) -> Task:
    """The task ``task_id`` (1..5, ``None`` = default) of ``domain`` (a key of ``DOMAINS``)."""
    if domain not in DOMAINS:
        raise TaskError(_unknown(domain, list(DOMAINS)))
    if task_id is not None and not (isinstance(task_id, int) and 1 <= task_id <= NUM_TASKS):
        raise TaskError(f"task_id must be 1..{NUM_TASKS} or None (default task), got {task_id!r}")
    info = DOMAINS[domain]
    suffix = "" if task_id is None else f"-task{task_id}"
    return Task(
        name=f"{domain}-singletask{suffix}-v0",
        domain=domain,
        dataset=f"{domain}-v0",
        task_id=task_id,
        reward=info.reward,
        locally_generable=info.locally_generable,
    )


def all_task_names(domains: tuple[str, ...] | list[str] | None = None) -> list[str]:
    """Canonical names of tasks 1..5 of ``domains`` (default: every domain)."""
    domains = list(DOMAINS) if domains is None else domains
    return [make_task(d, k).name for d in domains for k in range(1, NUM_TASKS + 1)]


# <domain>[-singletask][-task<k>][-v0]; the domain may omit its dataset type ('cube-double').
_PATTERN = re.compile(r"^(?P<stem>[a-z0-9-]+?)(?:-singletask)?(?:-task(?P<k>\d+))?(?:-v0)?$")


def parse_task(name: str | Task) -> Task:
    """Parse a task name (canonical or short form) into a ``Task``.

    Raises:
      TaskError: unknown domain or task number; the message names the closest valid names and
        lists the domains.
    """
    if isinstance(name, Task):
        return name
    if not isinstance(name, str) or not name.strip():
        raise TaskError(f"a task name must be a non-empty string, got {name!r}")
    text = name.strip().lower()
    match = _PATTERN.match(text)
    if match is not None:
        stem, k = match["stem"], match["k"]
        by_env = {d.env: d.name for d in DOMAINS.values()}
        domain = stem if stem in DOMAINS else by_env.get(stem)
        if domain is not None:
            task_id = None if k is None else int(k)
            if task_id is not None and not 1 <= task_id <= NUM_TASKS:
                raise TaskError(
                    f"unknown task {name!r}: {domain} has tasks 1..{NUM_TASKS} "
                    f"(e.g. '{make_task(domain, 1).name}'), got task{task_id}"
                )
            return make_task(domain, task_id)
    raise TaskError(_unknown(name, all_task_names() + list(DOMAINS)))


def _unknown(name: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(str(name).lower(), candidates, n=3, cutoff=0.5)
    hint = f" Did you mean: {', '.join(close)}?" if close else ""
    return (
        f"unknown task {name!r}.{hint} Names look like 'cube-double-play-singletask-task2-v0' "
        f"(or short 'cube-double-task2'); domains: {', '.join(DOMAINS)}."
    )
