"""A sweep's plan: its spec (tasks x agents x seeds, preset, overrides, folders), the runs it
names, their status on disk, and their cost from measured throughput.

A *sweep spec* comes from the command line, from a small TOML file, or by name
(:data:`NAMED_SPECS`; ``paper`` is the paper's offline protocol). Every (task, agent) pair is one
job whose run folder is ``<out>/<task>/<agent>``. :func:`plan` resolves each pair's
:class:`~qam_lite.config.Config` (:func:`qam_lite.training.settings.resolve`) and reads whether
its run is new, partial or done; :func:`estimate` and :func:`describe` price it from the
throughput measured in ``results/`` (``qam-lite sweep --dry-run``).

This module imports neither JAX nor submitit, at import time or while planning a sweep's cost:
a dry run answers in a second on a machine without either, and the sweep's parent process stays
light (its jobs import JAX in their own processes).
"""

from __future__ import annotations

import dataclasses
import json
import tomllib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


class SweepError(ValueError):
    """A bad sweep spec or environment; the message names the value and what is accepted."""


@dataclasses.dataclass
class SweepSpec:
    """What to run: ``tasks x agents``, each job with ``num_seeds`` vmapped seeds.

    Attributes:
      name: a label (recorded in every job's ``job.json``).
      tasks: task or domain names (a domain expands to its tasks 1..5).
      agents: agent names (``qam_lite.config.AGENTS``).
      num_seeds: seeds per job, trained side by side; seed ``i`` is ``seed + i``.
      seed: first seed.
      preset: a ``qam-lite train --preset`` name, or None.
      overrides: Config fields to set (after the preset), e.g. ``{"offline_steps": 100000}``.
      out: folder holding the run folders.
      dataset_dir: dataset folder (None: OGBench's default).
      download: allow OGBench's official download of missing datasets.
    """

    name: str = "custom"
    tasks: list[str] = dataclasses.field(default_factory=list)
    agents: list[str] = dataclasses.field(default_factory=lambda: ["qam"])
    num_seeds: int = 1
    seed: int = 0
    preset: str | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    out: str = "runs/sweep"
    dataset_dir: str | None = None
    download: bool = False


def _paper_spec() -> SweepSpec:
    from qam_lite.config import AGENTS
    from qam_lite.data.tasks import PAPER_DOMAINS

    # The paper's table has QAM, its variants and the baselines; BC flow is not one of them.
    agents = [a for a in AGENTS if a != "bc"]
    return SweepSpec(
        name="paper",
        tasks=list(PAPER_DOMAINS),
        agents=agents,
        num_seeds=12,
        preset="paper",
        out="runs/paper",
        download=True,
    )


def _cpu_demo_spec() -> SweepSpec:
    return SweepSpec(
        name="cpu-demo",
        tasks=["cube-single-play-singletask-task1-v0", "cube-single-play-singletask-task2-v0"],
        agents=["qam", "bc"],
        num_seeds=2,
        preset="cpu-small",
        out="runs/cpu-demo",
    )


def _cpu_table_spec() -> SweepSpec:
    # Tasks where the paper's QAM curve is informative early (scene tasks 1-2: 99.8 % / 95.5 %
    # at 100K; puzzle-3x3 task 1: 39.8 %), from two locally generable paper domains.
    return SweepSpec(
        name="cpu-table",
        tasks=[
            "scene-play-singletask-task1-v0",
            "scene-play-singletask-task2-v0",
            "puzzle-3x3-play-singletask-task1-v0",
        ],
        agents=["qam", "fql", "bc", "bam"],
        num_seeds=3,
        preset="cpu-small",
        overrides={
            "offline_steps": 5_000,
            "eval_interval": 2_500,
            "eval_episodes": 10,
            "checkpoint_interval": 2_500,
        },
        out="runs/cpu-table",
    )


def _laptop_table_spec() -> SweepSpec:
    # The tasks where the paper's QAM is ahead of FQL at 50K, the step the laptop preset reaches:
    # scene tasks 1-2 (90.3 / 80.2 % vs 15.7 / 9.5 %) and cube-double task 1 (17.8 % vs 3.3 %).
    # QAM-F is listed because scene's published QAM-F distils (alpha 300); QAM-E is not: its
    # published edit scale on scene and cube-double is 0, which makes it QAM.
    return SweepSpec(
        name="laptop-table",
        tasks=[
            "scene-play-singletask-task1-v0",
            "scene-play-singletask-task2-v0",
            "cube-double-play-singletask-task1-v0",
        ],
        agents=["qam", "fql", "bc", "bam", "qam-f"],
        num_seeds=3,
        preset="laptop",
        out="runs/laptop-table",
    )


#: Named specs: ``paper`` = the paper's offline protocol (10 domains x 5 tasks, every agent of
#: the table, 12 seeds, 1M updates, 50 episodes every 50K; official data); ``cpu-demo`` = two
#: cube-single tasks x QAM, BC at the CPU preset (locally generated data); ``cpu-table`` = the
#: book's CPU-sized table (chapter 10): 3 scene / puzzle-3x3 tasks x QAM, FQL, BC, BAM x 3 seeds
#: at the CPU preset (5K updates, 10 episodes per seed every 2.5K), on locally generated data;
#: ``laptop-table`` = scene tasks 1-2 and cube-double task 1 x QAM, FQL, BC, BAM, QAM-F x 3 seeds
#: at the ``laptop`` preset (50K updates, 50 episodes per seed every 10K), on data generated at
#: the published size.
NAMED_SPECS = {
    "paper": _paper_spec,
    "cpu-demo": _cpu_demo_spec,
    "cpu-table": _cpu_table_spec,
    "laptop-table": _laptop_table_spec,
}


_SPEC_KEYS = {f.name for f in dataclasses.fields(SweepSpec)} - {"overrides"} | {"set"}


def load_spec(source: str | None) -> SweepSpec:
    """A spec from a name in :data:`NAMED_SPECS`, a ``.toml`` file, or None (empty spec).

    The TOML file holds the :class:`SweepSpec` fields at top level and the overrides in a
    ``[set]`` table, e.g.::

        name = "two-cube-tasks"
        tasks = ["cube-double-play-singletask-task1-v0", "scene-play"]
        agents = ["qam", "fql"]
        num_seeds = 3
        preset = "paper"
        out = "runs/two"
        [set]
        offline_steps = 100000
    """
    if source is None:
        return SweepSpec()
    if source in NAMED_SPECS:
        return NAMED_SPECS[source]()
    path = Path(source).expanduser()
    if not path.is_file():
        raise SweepError(
            f"sweep spec {source!r} is neither a named spec nor a file; accepted: "
            f"{', '.join(NAMED_SPECS)}, or a path to a .toml file"
        )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError as err:
        raise SweepError(
            f"{path}: not UTF-8 text ({err.reason} at byte {err.start}); "
            "accepted: a UTF-8 TOML file"
        ) from None
    except tomllib.TOMLDecodeError as err:
        raise SweepError(f"{path}: not valid TOML ({err})") from None
    unknown = sorted(set(data) - _SPEC_KEYS)
    if unknown:
        raise SweepError(
            f"{path}: unknown key(s) {', '.join(unknown)}; "
            f"accepted: {', '.join(sorted(_SPEC_KEYS))}"
        )
    overrides = data.pop("set", {})
    if not isinstance(overrides, dict):
        raise SweepError(f"{path}: [set] must be a table of Config fields, got {overrides!r}")
    for key in ("tasks", "agents"):
        if key in data and isinstance(data[key], str):
            data[key] = [data[key]]
    for key, value in data.items():
        accepted = _SPEC_TYPES[key]
        if not _is_a(value, accepted[0]):
            raise SweepError(f"{path}: {key} = {value!r} is invalid; accepted: {accepted[1]}")
    return SweepSpec(**data, overrides=dict(overrides))


#: What each spec key accepts (a TOML file can hold any type anywhere).
_SPEC_TYPES = {
    "name": ("str", "a string"),
    "tasks": ("list[str]", "a task or domain name, or a list of them"),
    "agents": ("list[str]", "an agent name, or a list of them"),
    "num_seeds": ("int>0", "an integer >= 1"),
    "seed": ("int>=0", "an integer >= 0"),
    "preset": ("str", "a preset name"),
    "out": ("str", "a folder path"),
    "dataset_dir": ("str", "a folder path"),
    "download": ("bool", "true or false"),
}


def _is_a(value: Any, kind: str) -> bool:
    if kind == "str":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "list[str]":
        return isinstance(value, list) and all(isinstance(v, str) for v in value)
    ok = isinstance(value, int) and not isinstance(value, bool)
    return ok and (value >= 1 if kind == "int>0" else value >= 0)


@dataclasses.dataclass
class PlannedRun:
    """One job: a Config, its run folder and how far it already is."""

    task: str
    agent: str
    config: Any  # qam_lite.config.Config
    run_dir: Path
    status: str  # 'new' | 'partial' | 'done'
    step: int  # steps already done (from the checkpoint)

    @property
    def total_steps(self) -> int:
        return self.config.offline_steps + self.config.online_steps


def expand_tasks(names: Sequence[str]) -> list[str]:
    """Canonical task names; a domain name (``cube-double-play``) means its tasks 1..5."""
    from qam_lite.data.tasks import DOMAINS, TaskError, all_task_names, parse_task

    out = []
    for name in names:
        if name in DOMAINS:
            out.extend(all_task_names([name]))
            continue
        try:
            out.append(parse_task(name).name)
        except TaskError as err:
            raise SweepError(f"in the sweep's tasks: {err}") from None
    return list(dict.fromkeys(out))


def make_configs(spec: SweepSpec) -> list[tuple[str, str, Any]]:
    """``(task, agent, Config)`` for every pair of the spec, validated."""
    from qam_lite.config import AGENTS, ConfigError
    from qam_lite.training.settings import resolve

    if not spec.tasks:
        raise SweepError("the sweep has no tasks; give --tasks or a spec with tasks = [...]")
    bad = [a for a in spec.agents if a not in AGENTS]
    if bad or not spec.agents:
        raise SweepError(
            f"unknown agent(s) {', '.join(map(repr, bad)) or '(none given)'} in the sweep; "
            f"accepted: {', '.join(AGENTS)}"
        )
    fields = {"num_seeds": spec.num_seeds, "seed": spec.seed, "download": spec.download}
    if spec.dataset_dir is not None:
        fields["dataset_dir"] = spec.dataset_dir
    out = []
    for task in expand_tasks(spec.tasks):
        for agent in spec.agents:
            try:
                config = resolve(task, agent, spec.preset, spec.overrides, **fields)
                out.append((task, agent, config))
            except ConfigError as err:
                raise SweepError(f"{task} x {agent}: {err}") from None
    return out


def run_status(config, run_dir: Path) -> tuple[str, int]:
    """``('done' | 'partial' | 'new', step)`` from ``run_dir``'s checkpoint (read only).

    Raises SweepError if the folder holds a checkpoint of another configuration.
    """
    from qam_lite.config import to_dict
    from qam_lite.training import checkpoint as ckpt
    from qam_lite.training.rundir import CHECKPOINT, config_diff

    path = run_dir / CHECKPOINT
    if not path.exists():
        return "new", 0
    meta = ckpt.read_meta(path)
    diff = config_diff(meta.get("config", {}), to_dict(config))
    if diff:
        changes = ", ".join(diff)
        raise SweepError(
            f"{run_dir} holds a run with a different configuration ({changes}); use another "
            "--out for this sweep, or the same settings to resume it"
        )
    step = int(meta["step"])
    total = config.offline_steps + config.online_steps
    return ("done" if meta.get("phase") == "done" and step >= total else "partial"), step


def check_data(runs: Sequence[PlannedRun]) -> None:
    """Every dataset the runs need is on disk (or may be downloaded); else one clear error."""
    from qam_lite.data import datasets
    from qam_lite.data.tasks import parse_task

    missing: dict[str, tuple[Any, list[Path]]] = {}
    for run in runs:
        if run.status == "done" or run.config.download:
            continue
        root = datasets.data_dir(run.config.dataset_dir)
        if datasets.shard_folder(parse_task(run.task), root) is not None:
            continue  # sharded (100M) data: training cycles through its shards
        paths = datasets.dataset_paths(run.task, run.config.dataset_dir)
        absent = [p for p in paths if not p.exists()]
        if absent:
            missing.setdefault(parse_task(run.task).dataset, (parse_task(run.task), absent))
    if not missing:
        return
    lines = []
    for name, (task, absent) in missing.items():
        folder = absent[0].parent
        fix = (
            f"qam-lite generate {name} --episodes N --dataset-dir {folder}"
            if task.locally_generable
            else "official data only: add --download (or download = true in the spec)"
        )
        lines.append(f"  {name}: missing {', '.join(p.name for p in absent)} in {folder} ({fix})")
    raise SweepError("missing data for the sweep:\n" + "\n".join(lines))


def plan(spec: SweepSpec) -> list[PlannedRun]:
    """Every job of ``spec`` with its run folder and status (nothing is started)."""
    runs = []
    for task, agent, config in make_configs(spec):
        run_dir = Path(spec.out) / task / agent
        status, step = run_status(config, run_dir)
        runs.append(PlannedRun(task, agent, config, run_dir, status, step))
    check_data(runs)
    return runs


def _measured(results: Path) -> tuple[dict[str, list[dict]], float | None, float | None]:
    """Update-throughput rows per device (``throughput-*.json``), the best measured evaluation
    rate in env-steps/s and the best rate of one worker process (``eval-throughput-*.json``)."""
    rates = {}
    for path in sorted(results.glob("throughput-*.json")):
        try:
            rates[path.stem.removeprefix("throughput-")] = json.loads(path.read_text())["results"]
        except (OSError, ValueError, KeyError):
            continue
    eval_rate = serial_rate = None
    for path in sorted(results.glob("eval-throughput-*.json")):
        try:
            rows = [r for r in json.loads(path.read_text())["results"] if r["version"] == "after"]
        except (OSError, ValueError, KeyError):
            continue
        best = max((r["env_steps_per_second"] for r in rows), default=0)
        eval_rate = max(eval_rate or 0.0, best) or None
        one = max((r["env_steps_per_second"] for r in rows if r.get("workers") == 1), default=0)
        serial_rate = max(serial_rate or 0.0, one) or None
    return rates, eval_rate, serial_rate


def _updates_per_second(rows: list[dict], config) -> tuple[float, str] | None:
    """Per-seed updates/s for ``config`` from benchmark rows of the same network size, at the
    nearest measured seed count not above ``num_seeds`` (seed-updates/s held constant above
    it, which is optimistic for a compute-bound device)."""
    same = [
        r
        for r in rows
        if tuple(r["actor_hidden"]) == tuple(config.actor_hidden)
        and tuple(r["critic_hidden"]) == tuple(config.critic_hidden)
        and r["batch_size"] == config.batch_size
    ]
    if not same:
        return None
    below = [r for r in same if r["num_seeds"] <= config.num_seeds] or same
    row = max(below, key=lambda r: r["num_seeds"])
    if row["num_seeds"] == config.num_seeds:
        return row["updates_per_second"], "measured"
    return row["seed_updates_per_second"] / config.num_seeds, f"from {row['num_seeds']} seed(s)"


def episode_length(task: str) -> int | None:
    """The task environment's time limit (OGBench's registration)."""
    try:
        import gymnasium
        import ogbench  # noqa: F401  (registers the environments)

        from qam_lite.data.tasks import parse_task

        return gymnasium.envs.registry[parse_task(task).env_name].max_episode_steps
    except (ImportError, KeyError):
        return None


def estimate(runs: Sequence[PlannedRun], results: Path) -> list[dict]:
    """Estimated device-hours of the runs' remaining work, per benchmarked device.

    Updates at the measured rate for the config's network size and seeds; evaluations (every
    ``eval_interval``, each seed) at the best measured evaluation rate with every episode at its
    full length (an upper bound: solved episodes end early). Online steps are counted at the
    offline update rate (optimistic: online updates are one per call), and their environment
    steps (one per seed per online step) at the measured rate of *one* evaluation worker, since
    the online loop steps its seeds' environments in its own process (``online_env_hours``: 0
    without online steps, None when they remain but no rate is measured).
    """
    rates, eval_rate, serial_rate = _measured(results)
    lengths: dict[str, int | None] = {}
    out = []
    for device, rows in rates.items():
        hours, evals, env_steps, unknown, notes = 0.0, 0.0, 0, [], set()
        for run in runs:
            if run.status == "done":
                continue
            c = run.config
            got = _updates_per_second(rows, c)
            if got is None:
                unknown.append(f"{run.task} x {run.agent}")
                continue
            ups, note = got
            notes.add(note)
            left = run.total_steps - run.step
            hours += left / ups / 3600
            # `step` counts offline updates, then environment steps: the online steps left are
            # the steps left, at most online_steps.
            env_steps += min(left, c.online_steps) * c.num_seeds
            if eval_rate:
                # Evaluations at every multiple of eval_interval after `step`, and at the end.
                total, every = run.total_steps, c.eval_interval
                n_evals = total // every - run.step // every + (1 if total % every else 0)
                if run.task not in lengths:
                    lengths[run.task] = episode_length(run.task)
                length = lengths[run.task] or 1000
                evals += n_evals * c.num_seeds * c.eval_episodes * length / eval_rate / 3600
        env_hours = env_steps / serial_rate / 3600 if serial_rate else None
        out.append(
            {
                "device": device,
                "update_hours": hours,
                "eval_hours": evals if eval_rate else None,
                "online_env_hours": env_hours if env_steps else 0.0,
                "total_hours": hours + (evals if eval_rate else 0.0) + (env_hours or 0.0),
                "unmeasured_runs": unknown,
                "notes": sorted(notes),
            }
        )
    return out


def describe(spec: SweepSpec, runs: Sequence[PlannedRun], results: Path) -> str:
    """The plan as text: one line per job, then the estimated cost."""
    counts = {s: sum(r.status == s for r in runs) for s in ("new", "partial", "done")}
    c0 = runs[0].config
    lines = [
        f"sweep {spec.name!r}: {len(runs)} job(s) = {len(expand_tasks(spec.tasks))} task(s) x "
        f"{len(spec.agents)} agent(s), {spec.num_seeds} seed(s) per job (vmapped) -> {spec.out}",
        f"  {counts['new']} new, {counts['partial']} to resume, {counts['done']} done (skipped)",
        f"  per job: {c0.offline_steps} offline + {c0.online_steps} online steps, "
        f"{c0.eval_episodes} episodes every {c0.eval_interval}, networks actor "
        f"{list(c0.actor_hidden)} critic {list(c0.critic_hidden)}, batch {c0.batch_size}",
    ]
    for r in runs:
        where = f"at step {r.step}/{r.total_steps}" if r.status == "partial" else ""
        lines.append(f"  [{r.status:7}] {r.task} x {r.agent} {where}".rstrip())
    costs = estimate(runs, results)
    if not costs:
        lines.append(f"estimated cost: no benchmark results in {results} (run benchmarks/*.py)")
    for c in costs:
        evals = "eval not measured" if c["eval_hours"] is None else f"eval {c['eval_hours']:.1f}"
        if c["online_env_hours"] is None:
            evals += ", online env steps not measured"
        elif c["online_env_hours"]:
            evals += f", online env steps {c['online_env_hours']:.1f}"
        note = f"; rate {', '.join(c['notes'])}" if c["notes"] else ""
        lines.append(
            f"estimated cost on {c['device']}: {c['total_hours']:.1f} device-hours "
            f"(updates {c['update_hours']:.1f}, {evals}{note})"
        )
        if c["unmeasured_runs"]:
            lines.append(
                f"  (no throughput measured for this network size on {c['device']}: "
                f"{len(c['unmeasured_runs'])} job(s) not counted)"
            )
    return "\n".join(lines)
