"""``qam-lite sweep``: tasks x agents (x seeds, vmapped inside each job) on submitit.

A *sweep spec* names the runs: tasks (a domain name means its five tasks), agents, how many seeds
each job trains side by side (``num_seeds``, vmapped on one device), a preset and ``--set``
overrides, the data folder and the output folder. It comes from the command line, from a small
TOML file, or by name (:data:`NAMED_SPECS`; ``paper`` is the paper's offline protocol). Every
(task, agent) pair is one job whose run folder is ``<out>/<task>/<agent>``.

Jobs run on `submitit <https://github.com/facebookincubator/submitit>`_: its ``LocalExecutor`` by
default (real processes on this machine; at most ``--max-parallel`` at once, each pinned to its
own share of the CPUs and, where GPUs exist, to a GPU it may share with ``--jobs-per-gpu - 1``
others), or SLURM with ``--cluster slurm`` (job arrays, ``--partition/--time/--gpus-per-job``).

Reliability: a finished run (its checkpoint says ``done``) is skipped; an unfinished one resumes
from its checkpoint (``train`` does that by itself). Jobs are submitit *checkpointable*: on a
pre-emption or time-out signal the job interrupts training (which saves the exact step), then
submitit requeues it, and the requeued job resumes. A job's stdout/stderr go to ``stdout.log`` /
``stderr.log`` in its run folder, beside ``job.json`` (sweep, executor, job id, host, every
attempt) and the training's own ``provenance.json`` (whose ``command`` is the equivalent
``qam-lite train`` line).

This module imports neither JAX nor OGBench at import time: submitit unpickles jobs in fresh
processes, which must be able to set the device environment before JAX starts.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import datetime as _dt
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

try:  # submitit is a runtime dependency; the planner (dry run) works without it
    import submitit
    from submitit.helpers import Checkpointable
except ImportError:  # pragma: no cover - only when the dependency is missing
    submitit = None
    Checkpointable = object

from qam_lite.atomic import make_folder
from qam_lite.experiments.plan import (
    NAMED_SPECS,
    ROOT,
    PlannedRun,
    SweepError,
    SweepSpec,
    describe,
    load_spec,
    plan,
)

CLUSTERS = ("local", "slurm")


# --------------------------------------------------------------------------------------------
# The spec


# --------------------------------------------------------------------------------------------
# The plan


# --------------------------------------------------------------------------------------------
# Cost: device-hours from the measured benchmarks


# --------------------------------------------------------------------------------------------
# A job


def train_command(config, run_dir: Path) -> list[str]:
    """The ``qam-lite train`` command line equivalent to one job (recorded as provenance).

    Where the data lives is given as ``--dataset-dir`` relative to the current folder when it is
    inside it (a committed run folder should not carry this machine's absolute paths)."""
    from qam_lite.config import FIELDS, to_dict

    values = to_dict(config)
    cmd = ["qam-lite", "train", config.task, "--agent", config.agent, "--out", str(run_dir)]
    if config.dataset_dir is not None:
        folder = Path(config.dataset_dir)
        with contextlib.suppress(ValueError):
            folder = folder.relative_to(Path.cwd())
        cmd += ["--dataset-dir", str(folder)]
    if config.download:
        cmd.append("--download")
    for name, value in values.items():
        if name in ("task", "agent", "dataset_dir", "download") or name not in FIELDS:
            continue
        if value is None or isinstance(value, bool):
            text = str(value).lower()
        elif isinstance(value, list | tuple):
            text = ",".join(str(v) for v in value)
        else:
            text = str(value)
        cmd += ["--set", f"{name}={text}"]
    return cmd


class SweepJob(Checkpointable):
    """One run of a sweep, as submitit executes it (picklable; requeue-safe).

    ``env`` is set before JAX is imported (CUDA_VISIBLE_DEVICES, memory fraction, evaluation
    workers); ``cpus`` pins the job (and its evaluation workers) to those CPUs.
    """

    def __init__(self, config_dict: dict, run_dir: str, sweep: str, env: dict, cpus=None):
        self.config_dict, self.run_dir, self.sweep = config_dict, run_dir, sweep
        self.env, self.cpus = dict(env), cpus

    def __call__(self) -> dict:
        os.environ.update(self.env)
        if self.cpus and hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, self.cpus)
        run_dir = Path(self.run_dir)
        run_dir.mkdir(parents=True, exist_ok=True)
        job_env = _job_environment()
        if job_env is not None:  # a submitit job: its output goes to the run folder
            _redirect_output(run_dir)
        if job_env is not None and job_env.cluster == "local":
            _own_interrupts()
        self._record_attempt(run_dir)  # after _own_interrupts: the sweep signals this pid
        preempted: list[int] = []
        try:  # from here on a forwarded Ctrl-C is answered, whenever it comes
            from qam_lite.config import from_dict
            from qam_lite.training.train import train

            config = from_dict(self.config_dict)
            sys.argv = train_command(config, run_dir)  # provenance.json records this command
            previous = signal.getsignal(_preempt_signal())

            def on_preempt(signum, frame):
                # Ask training to stop as on a first Ctrl-C (it finishes the current step and
                # saves a checkpoint, then returns); submitit's own handler then requeues the job.
                preempted.append(signum)
                os.kill(os.getpid(), signal.SIGINT)

            if callable(previous):  # under submitit: its checkpoint-and-requeue handler
                signal.signal(_preempt_signal(), on_preempt)
            summary = train(config, run_dir, progress=False)
        except KeyboardInterrupt:
            if not preempted:  # a second Ctrl-C, or one before training began: nothing saved now
                return {
                    "task": self.config_dict.get("task"),
                    "agent": self.config_dict.get("agent"),
                    "interrupted": True,
                    "stopped_by": "a second signal, or one before training began; "
                    "what it trained since its last checkpoint is not kept",
                }
            summary = None
        if preempted:
            print(f"pre-empted at {_now()}: checkpoint saved, requeuing", flush=True)
            previous(preempted[0], None)  # calls self.checkpoint(), then requeues and exits
        print(f"finished at {_now()}: success {summary.get('success_rate')}", flush=True)
        return summary

    def checkpoint(self, *args, **kwargs):
        """On pre-emption/time-out: resubmit the same job; ``train`` resumes its checkpoint."""
        return submitit.helpers.DelayedSubmission(
            SweepJob(self.config_dict, self.run_dir, self.sweep, self.env, self.cpus)
        )

    def _record_attempt(self, run_dir: Path) -> None:
        from qam_lite.training.logs import write_json

        path = run_dir / "job.json"
        record = json.loads(path.read_text()) if path.exists() else {"sweep": self.sweep}
        attempt = {"date": _now(), "host": socket.gethostname(), "pid": os.getpid()}
        job_env = _job_environment()
        attempt.update(
            executor=job_env.cluster if job_env else None,
            job_id=job_env.job_id if job_env else None,
        )
        attempt.update(env=self.env, cpus=list(self.cpus) if self.cpus else None)
        record.setdefault("attempts", []).append(attempt)
        write_json(path, record)


def _job_environment():
    """submitit's JobEnvironment inside a submitit job, else None (called directly)."""
    if submitit is None:
        return None
    try:
        return submitit.JobEnvironment()
    except RuntimeError:
        return None


def _own_interrupts() -> None:
    """Take this local job out of the terminal's Ctrl-C: the sweep forwards exactly one SIGINT.

    A terminal sends Ctrl-C to its whole foreground process group: the sweep, submitit's job
    controllers and their jobs. The controller (see :func:`run_local`) ignores it, since on
    SIGINT it would SIGINT its job once more and SIGKILL it a second later, mid-checkpoint. This
    job leaves the group, so it hears only the sweep's own forwarded signal, which ``train``
    answers by saving its checkpoint at the next step boundary; its SIGINT handler is Python's
    again (the ignored SIGINT was inherited from the controller). Out of the group, a job would
    outlive a sweep killed with its whole group (or a closed terminal): on Linux the kernel sends
    it SIGINT when its controller dies (``PR_SET_PDEATHSIG``), so it saves and stops then too.
    """
    os.setpgid(0, 0)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if sys.platform.startswith("linux"):
        import ctypes

        parent = os.getppid()
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGINT)  # 1: PR_SET_PDEATHSIG
        if os.getppid() != parent:  # the controller died before the request took effect
            os.kill(os.getpid(), signal.SIGINT)


def _preempt_signal():
    return getattr(signal, "SIG" + os.environ.get("SUBMITIT_PREEMPT_SIGNAL", "USR2"))


def _redirect_output(run_dir: Path) -> None:
    """Append this process's stdout/stderr (Python and C level) to the run folder's logs."""
    sys.stdout.flush()
    sys.stderr.flush()
    for fd, name in ((1, "stdout.log"), (2, "stderr.log")):
        log = os.open(run_dir / name, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(log, fd)
        os.close(log)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds")


# --------------------------------------------------------------------------------------------
# Executors


@dataclasses.dataclass
class Resources:
    """How jobs share the machine (local) or what each asks of the cluster (slurm)."""

    cluster: str = "local"
    max_parallel: int | None = None  # local: jobs at once
    cpus_per_job: int | None = None
    gpus: list[int] | None = None  # local: GPU ids to use (None: detect)
    jobs_per_gpu: int = 1  # local: jobs sharing one GPU
    partition: str | None = None  # slurm
    time_min: int = 24 * 60  # slurm: wall time per job (then requeued from its checkpoint)
    gpus_per_job: int = 1  # slurm
    mem_gb: int | None = None  # slurm
    array_parallelism: int = 64  # slurm: array tasks running at once
    array_size: int = 1000  # slurm: most jobs per array (the cluster's MaxArraySize)
    slurm_setup: list[str] = dataclasses.field(default_factory=list)  # e.g. module loads


def detect_gpus() -> list[int]:
    """GPU ids on this machine: ``CUDA_VISIBLE_DEVICES`` if set, else ``nvidia-smi -L``."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return [int(x) for x in visible.split(",") if x.strip().isdigit()]
    if shutil.which("nvidia-smi") is None:
        return []
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.SubprocessError):
        return []
    return list(range(sum(line.startswith("GPU ") for line in out.stdout.splitlines())))


def _need_submitit() -> None:
    if submitit is None:
        raise SweepError("submitit is not installed; accepted fix: pip install submitit")


def local_slots(res: Resources) -> list[tuple[dict, list[int] | None]]:
    """``(env, cpus)`` of each concurrent local job slot."""
    from qam_lite.training.envpool import WORKERS_ENV, available_cpus

    gpus = detect_gpus() if res.gpus is None else list(res.gpus)
    default = len(gpus) * res.jobs_per_gpu if gpus else 1
    parallel = res.max_parallel or default
    if res.max_parallel is not None and res.max_parallel < 1:
        raise SweepError(f"--max-parallel {res.max_parallel} is invalid; accepted: >= 1")
    try:
        cpus = sorted(os.sched_getaffinity(0))
    except AttributeError:
        cpus = list(range(available_cpus()))
    per_job = res.cpus_per_job or max(1, len(cpus) // parallel)
    slots = []
    for k in range(parallel):
        env = {WORKERS_ENV: str(per_job)}
        if gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(gpus[k % len(gpus)])
            sharing = -(-parallel // len(gpus))
            if sharing > 1:  # JAX preallocates 75 % of a GPU by default
                env["XLA_PYTHON_CLIENT_MEM_FRACTION"] = f"{0.9 / sharing:.2f}"
        else:
            env["JAX_PLATFORMS"] = "cpu"
        share = [cpus[(k * per_job + j) % len(cpus)] for j in range(per_job)]
        slots.append((env, share if len(cpus) >= per_job * parallel else None))
    return slots


def compile_cache_env(spec: SweepSpec) -> dict:
    """JAX's persistent compilation cache in ``<out>/.jax-cache`` (unless one is set): a sweep's
    jobs compile the same update for every task of a size, and a requeued job again."""
    if os.environ.get("JAX_COMPILATION_CACHE_DIR"):
        return {}
    return {"JAX_COMPILATION_CACHE_DIR": str((Path(spec.out) / ".jax-cache").resolve())}


def run_local(spec: SweepSpec, runs: Sequence[PlannedRun], res: Resources, poll_s=1.0) -> list:
    """Run the unfinished runs with submitit's LocalExecutor, at most one job per slot.

    Ctrl-C (SIGINT) asks every running job to save its checkpoint and stop, waits for them,
    reports each, then raises ``KeyboardInterrupt``; a second Ctrl-C stops them at once.
    """
    _need_submitit()
    from qam_lite.config import to_dict
    from qam_lite.training.rundir import in_use  # here: rundir's imports load JAX

    slots = [(env | compile_cache_env(spec), cpus) for env, cpus in local_slots(res)]
    folder = Path(spec.out) / ".submitit"
    executor = submitit.LocalExecutor(folder=str(folder))
    # A local job never times out (30 days); pre-emption does not happen locally. The job's
    # controller ignores SIGINT (see _own_interrupts); its shell is submitit's "setup" hook.
    executor.update_parameters(timeout_min=30 * 24 * 60, setup=["trap '' INT"])
    todo = [r for r in runs if r.status != "done"]
    free = list(range(len(slots)))
    running: list[tuple[Any, int, PlannedRun]] = []
    results: list[dict] = []
    print(f"running {len(todo)} job(s), at most {len(slots)} at once (submitit local)", flush=True)
    try:
        while todo or running:
            while todo and free:
                slot, run = free.pop(0), todo.pop(0)
                holder = in_use(run.run_dir)
                if holder is not None:  # e.g. a job of an earlier sweep whose parent was killed
                    free.append(slot)
                    why = f"its run folder {run.run_dir} is in use by {holder}"
                    results.append({"task": run.task, "agent": run.agent, "error": why})
                    print(
                        f"FAILED {run.task} x {run.agent}: {why}; wait for that process "
                        "to finish (or stop it), then run the same command again",
                        flush=True,
                    )
                    continue
                env, cpus = slots[slot]
                job = executor.submit(
                    SweepJob(to_dict(run.config), str(run.run_dir), spec.name, env, cpus)
                )
                running.append((job, slot, run))
                print(f"started {run.task} x {run.agent} (job {job.job_id})", flush=True)
            time.sleep(poll_s)
            for item in [item for item in running if item[0].done()]:
                running.remove(item)
                free.append(item[1])
                results.append(_report(item[0], item[2]))
    except KeyboardInterrupt:
        _stop_jobs([(job, run) for job, _, run in running], results, poll_s)
        raise
    return results


def _stop_jobs(running: list, results: list, poll_s: float) -> None:
    """Forward one SIGINT to each running job (its pid as it recorded it in ``job.json``; a job
    that has not recorded it yet is signalled once it has), wait for all, report each."""
    print(
        f"interrupted: {len(running)} running job(s) save a checkpoint and stop "
        "(Ctrl-C again to stop them at once, losing what they trained since their last one)",
        flush=True,
    )
    signalled: dict[str, int] = {}  # job id -> SIGINTs sent
    wanted = 1
    while running:
        try:
            for job, run in running:
                pid = _job_pid(run.run_dir, job.job_id)
                if pid is not None and signalled.get(job.job_id, 0) < wanted:
                    with contextlib.suppress(ProcessLookupError):  # it has just ended
                        os.kill(pid, signal.SIGINT)
                    signalled[job.job_id] = signalled.get(job.job_id, 0) + 1
            time.sleep(poll_s)
            for item in [item for item in running if item[0].done()]:
                running.remove(item)
                results.append(_report(*item))
        except KeyboardInterrupt:
            wanted = 2  # train's answer to a second SIGINT: stop now


def _job_pid(run_dir: Path, job_id: str) -> int | None:
    """The pid that submitit job ``job_id`` recorded in ``<run_dir>/job.json``, if it has."""
    try:
        attempts = json.loads((Path(run_dir) / "job.json").read_text())["attempts"]
    except (OSError, ValueError, KeyError):  # not written yet (or mid-replace)
        return None
    pids = [a["pid"] for a in attempts if str(a.get("job_id")) == str(job_id)]
    return pids[-1] if pids else None


def _report(job, run: PlannedRun) -> dict:
    """Print one finished job's outcome; return its summary (or ``{task, agent, error}``)."""
    try:
        summary = job.result()
    except Exception as err:  # noqa: BLE001 - reported per job, sweep continues
        cause = _cause(Path(run.run_dir) / "stderr.log") or (
            str(err).strip().splitlines()[-1] if str(err).strip() else repr(err)
        )
        print(
            f"FAILED {run.task} x {run.agent}: {cause} (the whole traceback: "
            f"{run.run_dir}/stderr.log)",
            flush=True,
        )
        return {"task": run.task, "agent": run.agent, "error": str(err)}
    if summary.get("interrupted"):  # a signal stopped it: saved, not done
        at = f" at step {summary['step']} of {summary['total_steps']}" if "step" in summary else ""
        saved = "; checkpoint saved" if "step" in summary else ""
        print(
            f"stopped {run.task} x {run.agent}{at} ({summary.get('stopped_by')}{saved}): "
            "rerun the sweep to continue it",
            flush=True,
        )
        return summary
    rate = summary.get("success_rate")
    shown = "n/a" if rate is None else f"{100 * rate:.1f}%"
    print(f"done {run.task} x {run.agent}: success {shown}", flush=True)
    return summary


_EXCEPTION_LINE = re.compile(
    r"^(?:[A-Za-z_][\w.]*\.)?([A-Z]\w*(?:Error|Exception|Interrupt)): (.*)$"
)


def _cause(stderr_log: Path) -> str | None:
    """The last ``SomeError: message`` line of a job's stderr (the traceback's own summary)."""
    try:
        lines = stderr_log.read_text(errors="replace").splitlines()
    except OSError:
        return None
    for line in reversed(lines):
        match = _EXCEPTION_LINE.match(line.strip())
        if match and match[1] not in ("FailedJobError", "UncompletedJobError"):
            return f"{match[1]}: {match[2]}"
    return None


def slurm_executor(spec: SweepSpec, res: Resources):
    """A submitit SLURM executor for the spec (raises SweepError where ``sbatch`` is absent)."""
    _need_submitit()
    missing = [cmd for cmd in ("sbatch", "srun") if shutil.which(cmd) is None]
    if missing:
        raise SweepError(
            f"--cluster slurm needs SLURM's `sbatch` and `srun` on PATH; not found on this "
            f"machine: {', '.join(missing)}; accepted: --cluster local (runs here), or the same "
            "command on the cluster's login node"
        )
    executor = submitit.AutoExecutor(
        folder=str(Path(spec.out) / ".submitit" / "%j"), cluster="slurm"
    )
    params = dict(
        timeout_min=res.time_min,
        gpus_per_node=res.gpus_per_job,
        tasks_per_node=1,
        cpus_per_task=res.cpus_per_job or 8,
        slurm_array_parallelism=res.array_parallelism,
        name=f"qam-{spec.name}",
    )
    if res.partition:
        params["slurm_partition"] = res.partition
    if res.mem_gb:
        params["mem_gb"] = res.mem_gb
    if res.slurm_setup:
        params["slurm_setup"] = list(res.slurm_setup)
    executor.update_parameters(**params)
    return executor


def submit_slurm(spec: SweepSpec, runs: Sequence[PlannedRun], res: Resources) -> list:
    """Submit the unfinished runs as SLURM job arrays of at most ``array_size``; returns jobs."""
    from qam_lite.config import to_dict

    executor = slurm_executor(spec, res)
    todo = [r for r in runs if r.status != "done"]
    env = {"QAM_LITE_EVAL_WORKERS": str(res.cpus_per_job or 8)} | compile_cache_env(spec)
    jobs = []
    for start in range(0, len(todo), res.array_size):
        with executor.batch():
            for run in todo[start : start + res.array_size]:
                job = executor.submit(
                    SweepJob(to_dict(run.config), str(run.run_dir), spec.name, env)
                )
                jobs.append((job, run))
    for job, run in jobs:
        print(f"submitted {run.task} x {run.agent}: job {job.job_id}", flush=True)
    return jobs


# --------------------------------------------------------------------------------------------
# Command line


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The ``qam-lite sweep`` options (the CLI calls this)."""
    p.add_argument(
        "spec",
        nargs="?",
        default=None,
        help=f"named spec ({', '.join(NAMED_SPECS)}) or a .toml file; options below override it",
    )
    p.add_argument("--tasks", nargs="+", help="task or domain names (a domain = its 5 tasks)")
    p.add_argument("--agents", nargs="+", help="agent names, e.g. qam fql")
    p.add_argument("--seeds", type=int, help="seeds per job, vmapped (num_seeds)")
    p.add_argument("--seed", type=int, help="first seed")
    p.add_argument("--preset", help="a `qam-lite train` preset, e.g. cpu-small or paper")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a Config field (repeatable)"
    )
    p.add_argument("--out", help="folder for the run folders (<out>/<task>/<agent>)")
    p.add_argument("--dataset-dir", help="dataset folder (default ~/.ogbench/data)")
    p.add_argument("--download", action="store_true", help="allow OGBench's official download")
    p.add_argument("--dry-run", action="store_true", help="print the plan and its cost only")
    p.add_argument("--results", default=str(ROOT / "results"), help="benchmark results folder")
    p.add_argument("--cluster", default="local", help=f"one of {', '.join(CLUSTERS)}")
    g = p.add_argument_group("local executor")
    g.add_argument("--max-parallel", type=int, help="jobs at once (default: GPUs x jobs/GPU, or 1)")
    g.add_argument("--cpus-per-job", type=int, help="CPUs per job (default: CPUs / max-parallel)")
    g.add_argument("--gpus", type=int, nargs="*", help="GPU ids to use (default: all visible)")
    g.add_argument("--jobs-per-gpu", type=int, default=1, help="jobs sharing one GPU")
    g = p.add_argument_group("slurm")
    g.add_argument("--partition", help="SLURM partition")
    g.add_argument("--time", type=int, default=24 * 60, help="minutes per job (then requeued)")
    g.add_argument("--gpus-per-job", type=int, default=1)
    g.add_argument("--mem-gb", type=int, help="memory per job")
    g.add_argument("--array-parallelism", type=int, default=64, help="array tasks at once")
    g.add_argument("--array-size", type=int, default=1000, help="most jobs per array")
    g.add_argument("--slurm-setup", action="append", help="shell line run before each job")


def spec_from_args(args: argparse.Namespace) -> SweepSpec:
    """The spec named/loaded by ``args.spec`` with the command line's values on top."""
    from qam_lite.config import ConfigError, parse_overrides

    spec = load_spec(args.spec)
    for field, value in (
        ("tasks", args.tasks),
        ("agents", args.agents),
        ("num_seeds", args.seeds),
        ("seed", args.seed),
        ("preset", args.preset),
        ("out", args.out),
        ("dataset_dir", args.dataset_dir),
    ):
        if value is not None:
            setattr(spec, field, value)
    if args.download:
        spec.download = True
    if args.set:
        try:
            spec.overrides.update(parse_overrides(args.set))
        except ConfigError as err:
            raise SweepError(str(err)) from None
    return spec


def resources_from_args(args: argparse.Namespace) -> Resources:
    """The executor's :class:`Resources` from the command line, each value checked."""
    if args.cluster not in CLUSTERS:
        raise SweepError(f"--cluster {args.cluster!r} is unknown; accepted: {', '.join(CLUSTERS)}")
    for name in ("max_parallel", "cpus_per_job", "jobs_per_gpu", "gpus_per_job", "array_size"):
        value = getattr(args, name)
        if value is not None and value < (0 if name == "gpus_per_job" else 1):
            flag = "--" + name.replace("_", "-")
            raise SweepError(f"{flag} {value} is invalid; accepted: an integer >= 1")
    return Resources(
        cluster=args.cluster,
        max_parallel=args.max_parallel,
        cpus_per_job=args.cpus_per_job,
        gpus=args.gpus,
        jobs_per_gpu=args.jobs_per_gpu,
        partition=args.partition,
        time_min=args.time,
        gpus_per_job=args.gpus_per_job,
        mem_gb=args.mem_gb,
        array_parallelism=args.array_parallelism,
        array_size=args.array_size,
        slurm_setup=args.slurm_setup or [],
    )


def run_cli(args: argparse.Namespace) -> int:
    """``qam-lite sweep``: plan, print, then run (local) or submit (slurm); returns the number
    of jobs that did not finish (failed, or stopped by a signal with their checkpoint saved)."""
    spec = spec_from_args(args)
    res = resources_from_args(args)
    if res.cluster == "slurm" and not args.dry_run:
        slurm_executor(spec, res)  # fail early (no sbatch) before planning
    runs = plan(spec)
    print(describe(spec, runs, Path(args.results)), flush=True)
    if args.dry_run:
        return 0
    if all(r.status == "done" for r in runs):
        print("every run is finished; nothing to do")
        return 0
    make_folder(spec.out, "sweep --out")  # a file, read-only or full: said before any job starts
    if res.cluster == "slurm":
        submit_slurm(spec, runs, res)
        print("submitted; rerun the same command later to resubmit unfinished runs")
        return 0
    results = run_local(spec, runs, res)
    failed = [r for r in results if "error" in r]
    stopped = [r for r in results if r.get("interrupted")]
    done = len(results) - len(failed) - len(stopped)
    print(
        f"sweep {spec.name!r}: {done} job(s) done, {len(stopped)} stopped before the end, "
        f"{len(failed)} failed"
    )
    return len(failed) + len(stopped)
