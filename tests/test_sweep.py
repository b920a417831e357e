"""``qam-lite sweep``: specs, bad input, the dry run's cost, and a local sweep killed and rerun."""

import argparse
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from qam_lite.cli import main
from qam_lite.experiments import plan, sweep
from qam_lite.training.settings import make_config

TINY = {
    "actor_hidden": "16,16",
    "critic_hidden": "16,16",
    "num_critics": "2",
    "flow_steps": "3",
    "batch_size": "16",
    "offline_steps": "200",
    "eval_interval": "100",
    "eval_episodes": "1",
    "updates_per_call": "50",
    "log_interval": "50",
    "checkpoint_interval": "50",
}
TASKS = ["cube-single-play-singletask-task1-v0", "cube-single-play-singletask-task2-v0"]


def parse(argv):
    parser = argparse.ArgumentParser()
    sweep.add_arguments(parser)
    return parser.parse_args(argv)


def tiny_args(data_dir, out, *extra):
    sets = [x for k, v in TINY.items() for x in ("--set", f"{k}={v}")]
    return [
        "--tasks",
        *TASKS,
        "--agents",
        "qam",
        "bc",
        "--dataset-dir",
        str(data_dir),
        "--out",
        str(out),
        *sets,
        *extra,
    ]


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    from qam_lite.data.generate import generate

    root = tmp_path_factory.mktemp("data")
    generate("cube-single-play-v0", 4, root, seed=0, workers=1, episode_length=101, progress=False)
    return root


def test_spec_from_toml_and_command_line(tmp_path):
    path = tmp_path / "spec.toml"
    path.write_text(
        'name = "two"\ntasks = ["cube-double-play", "scene-task2"]\nagents = "fql"\n'
        "num_seeds = 3\n[set]\noffline_steps = 1000\n"
    )
    spec = sweep.spec_from_args(parse([str(path), "--agents", "qam", "fql", "--set", "tau=2"]))
    assert spec.name == "two" and spec.num_seeds == 3 and spec.agents == ["qam", "fql"]
    assert spec.overrides == {"offline_steps": 1000, "tau": 2.0}
    configs = plan.make_configs(spec)
    tasks = sorted({t for t, _, _ in configs})
    # A domain means its five tasks; short names are canonicalised.
    assert tasks == sorted(
        [f"cube-double-play-singletask-task{k}-v0" for k in range(1, 6)]
        + ["scene-play-singletask-task2-v0"]
    )
    assert len(configs) == 12
    c = configs[0][2]
    assert c.num_seeds == 3 and c.offline_steps == 1000 and c.tau == 2.0

    paper = plan.load_spec("paper")
    assert len(plan.expand_tasks(paper.tasks)) == 50 and paper.num_seeds == 12
    assert "bc" not in paper.agents and {"qam", "fql"} <= set(paper.agents)

    # Every named spec resolves: its tasks, agents and preset make configs.
    for name in plan.NAMED_SPECS:
        spec = plan.load_spec(name)
        assert spec.name == name and plan.make_configs(spec), name
    laptop = plan.load_spec("laptop-table")
    configs = [c for *_, c in plan.make_configs(laptop)]
    assert len(configs) == 15 and {c.num_seeds for c in configs} == {3}
    budgets = {(c.offline_steps, c.eval_episodes, c.batch_size) for c in configs}
    assert budgets == {(50_000, 50, 256)}
    assert {c.edit_scale for c in configs} == {0.0}  # QAM-E would be QAM here: not listed


def test_bad_input_names_what_is_accepted(tmp_path, data_dir, capsys, monkeypatch):
    def error(argv):
        assert main(["sweep", *argv]) == 2
        return capsys.readouterr().err

    base = ["--dataset-dir", str(data_dir), "--out", str(tmp_path / "o"), "--dry-run"]
    err = error(["--tasks", TASKS[0], "--agents", "qam", "sac", *base])
    assert "unknown agent(s) 'sac'" in err and "accepted: qam, bc, fql" in err
    err = error(["--tasks", "cube-sngle-task1", *base])
    assert "unknown task 'cube-sngle-task1'" in err and "cube-single-play" in err
    err = error(["--tasks", "cube-double-task1", *base])
    assert "missing data" in err and "cube-double-play-v0.npz" in err
    assert "qam-lite generate cube-double-play-v0" in err
    err = error(["--tasks", "antmaze-large-navigate-task1", *base])
    assert "official data only" in err and "--download" in err
    monkeypatch.setattr(sweep.shutil, "which", lambda name: None)
    err = error(["--tasks", TASKS[0], "--cluster", "slurm", "--out", str(tmp_path / "o")])
    assert "sbatch" in err and "--cluster local" in err
    err = error(["--tasks", TASKS[0], "--cluster", "pbs", *base])
    assert "accepted: local, slurm" in err
    err = error(["nope", *base])
    assert "accepted: paper, cpu-demo" in err
    bad = tmp_path / "bad.toml"
    bad.write_text('taskz = ["cube-single"]\n')
    err = error([str(bad), *base])
    assert "unknown key(s) taskz" in err and "tasks" in err


def write_throughput(results, num_seeds, updates_per_second):
    """A ``throughput-testdev.json`` with one measured row for 2x16 networks, batch 16."""
    row = {
        "num_seeds": num_seeds,
        "actor_hidden": [16, 16],
        "critic_hidden": [16, 16],
        "batch_size": 16,
        "updates_per_second": updates_per_second,
        "seed_updates_per_second": updates_per_second * num_seeds,
    }
    (results / "throughput-testdev.json").write_text(json.dumps({"results": [row]}))


def test_dry_run_cost_from_benchmark_results(tmp_path, data_dir, capsys):
    results = tmp_path / "results"
    results.mkdir()
    write_throughput(results, num_seeds=1, updates_per_second=100.0)
    evals = {"results": [{"version": "after", "workers": 2, "env_steps_per_second": 200.0}]}
    (results / "eval-throughput-2cpu.json").write_text(json.dumps(evals))
    argv = tiny_args(data_dir, tmp_path / "runs", "--set", "offline_steps=360000")
    argv += ["--set", "eval_interval=180000", "--set", "eval_episodes=900"]
    argv += ["--dry-run", "--results", str(results)]
    assert main(["sweep", *argv]) == 0
    out = capsys.readouterr().out
    assert "4 job(s) = 2 task(s) x 2 agent(s)" in out and "4 new" in out
    # Updates: 4 jobs x 360000 / 100 per s = 4 h. Evaluations: 2 per job (180K and 360K) x 900
    # episodes x 200 steps (cube-single's time limit) / 200 steps per s = 0.5 h per job.
    assert "estimated cost on testdev: 6.0 device-hours (updates 4.0, eval 2.0" in out
    assert not (tmp_path / "runs").exists()  # a dry run starts nothing


def test_estimate_counts_online_environment_steps(tmp_path):
    from qam_lite.training.settings import make_config

    results = tmp_path / "results"
    results.mkdir()
    write_throughput(results, num_seeds=2, updates_per_second=100.0)
    small = dict(actor_hidden=(16, 16), critic_hidden=(16, 16), batch_size=16, num_seeds=2)
    online = make_config(TASKS[0], offline_steps=360_000, online_steps=360_000, **small)
    offline = make_config(TASKS[1], offline_steps=360_000, **small)
    runs = [
        plan.PlannedRun(TASKS[0], "qam", online, tmp_path / "a", "new", 0),
        plan.PlannedRun(TASKS[0], "bc", online, tmp_path / "b", "partial", 540_000),
        plan.PlannedRun(TASKS[1], "qam", offline, tmp_path / "c", "new", 0),
    ]
    (cost,) = plan.estimate(runs, results)
    # No evaluation rate measured: the environment steps left cannot be priced.
    assert cost["eval_hours"] is None and cost["online_env_hours"] is None
    rows = [
        {"version": "after", "workers": 1, "env_steps_per_second": 200.0},
        {"version": "after", "workers": 2, "env_steps_per_second": 300.0},
        {"version": "before", "workers": 1, "env_steps_per_second": 900.0},
    ]
    (results / "eval-throughput-2cpu.json").write_text(json.dumps({"results": rows}))
    (cost,) = plan.estimate(runs, results)
    # Environment steps: 360K online steps x 2 seeds for the new run, the 180K left of the
    # partial one x 2, none for the offline run: 1.08M steps at one worker's 200 per s = 1.5 h
    # (the online loop steps its environments in its own process; evaluations use 300 per s).
    assert cost["online_env_hours"] == pytest.approx(1.5)
    # Updates: 720K + 180K + 360K steps at 100 per s = 3.5 h.
    assert cost["update_hours"] == pytest.approx(3.5)
    assert cost["total_hours"] == pytest.approx(3.5 + cost["eval_hours"] + 1.5)
    text = plan.describe(plan.load_spec("cpu-demo"), runs, results)
    assert ", online env steps 1.5" in text
    (cost,) = plan.estimate(runs[2:], results)
    assert cost["online_env_hours"] == 0.0
    assert "online env" not in plan.describe(plan.load_spec("cpu-demo"), runs[2:], results)


def test_slurm_submission_with_a_stand_in_sbatch(tmp_path, data_dir, monkeypatch, capsys):
    """Where `sbatch` exists, the sweep is submitted as job arrays of at most --array-size with
    the requested partition, time, GPUs and array parallelism (a stand-in sbatch records the
    scripts submitit writes and answers like SLURM)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls.txt"
    fake = bin_dir / "sbatch"
    fake.write_text(
        "#!/bin/sh\n"
        f'echo "$@" >> {calls}\n'
        "for last; do true; done\n"  # the script is the last argument
        f'cat "$last" >> {calls}\n'
        'echo "Submitted batch job 4242"\n'
    )
    fake.chmod(0o755)
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 0\n")  # submitit checks it exists
    (bin_dir / "srun").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    argv = tiny_args(data_dir, tmp_path / "runs", "--cluster", "slurm", "--partition", "gpu")
    argv += ["--time", "90", "--gpus-per-job", "1", "--array-parallelism", "3"]
    argv += ["--array-size", "3", "--cpus-per-job", "4"]
    assert main(["sweep", *argv]) == 0
    out = capsys.readouterr().out
    assert out.count("submitted ") == 4 and "4242_" in out
    text = calls.read_text()
    assert text.count("Submitted") == 0 and text.count("#SBATCH --partition=gpu") == 2
    # 4 runs with --array-size 3: an array of 3, then the last one alone (submitit submits a
    # batch of one as a plain job); pre-emption signal for the requeue.
    assert "#SBATCH --array=0-2%3" in text and text.count("--array=") == 1
    assert text.count("#SBATCH --signal=USR2@") == 2
    assert "#SBATCH --time=90" in text and "#SBATCH --gpus-per-node=1" in text
    assert "#SBATCH --cpus-per-task=4" in text


def test_preempted_job_saves_then_requeues(tmp_path, monkeypatch):
    """On the pre-emption signal a job asks training to stop as on a first Ctrl-C (training then
    finishes its step and saves), and only then hands over to submitit's requeue handler, whose
    `checkpoint` resubmits the same job."""
    import qam_lite.training.train
    from qam_lite.config import to_dict
    from qam_lite.training.settings import make_config

    events = []

    def fake_train(config, out, progress=True):
        stop = []
        previous = signal.signal(signal.SIGINT, lambda *a: stop.append(1))
        try:
            os.kill(os.getpid(), sweep._preempt_signal())  # the cluster pre-empts the job
            deadline = time.time() + 10
            while not stop and time.time() < deadline:
                time.sleep(0.01)
            events.append("saved" if stop else "not interrupted")
            return {"interrupted": bool(stop), "success_rate": None}
        finally:
            signal.signal(signal.SIGINT, previous)

    def submitit_handler(signum, frame):  # what submitit installs: checkpoint, then requeue
        events.append(("requeue", signum, type(job.checkpoint().function).__name__))
        raise SystemExit(144)

    monkeypatch.setattr(qam_lite.training.train, "train", fake_train)
    previous = signal.signal(sweep._preempt_signal(), submitit_handler)
    argv = list(sys.argv)
    try:
        config = make_config(TASKS[0], "bc", offline_steps=10)
        job = sweep.SweepJob(to_dict(config), str(tmp_path / "run"), "test", {})
        with pytest.raises(SystemExit, match="144"):
            job()
    finally:
        signal.signal(sweep._preempt_signal(), previous)
        sys.argv[:] = argv
    assert events == ["saved", ("requeue", sweep._preempt_signal(), "SweepJob")]
    record = json.loads((tmp_path / "run" / "job.json").read_text())
    assert record["sweep"] == "test" and record["attempts"][0]["executor"] is None


@pytest.mark.slow
def test_local_sweep_killed_and_rerun_finishes_every_run_once(tmp_path, data_dir):
    """2 tasks x 2 agents on submitit's local executor; the whole sweep (jobs included) is
    SIGKILLed once a checkpoint exists, then rerun: every run ends done, each evaluation step
    logged once per run, finished runs are not started again."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "qam_lite", "sweep", *tiny_args(data_dir, out)]
    cmd += ["--max-parallel", "2"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run_dirs = [out / t / a for t in TASKS for a in ("qam", "bc")]

    first = subprocess.Popen(
        cmd,
        env=env,
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    deadline = time.time() + 240
    while time.time() < deadline and first.poll() is None:
        if any((d / "checkpoint.npz").exists() for d in run_dirs):
            break
        time.sleep(0.5)
    assert first.poll() is None, first.stdout.read().decode()[-3000:]
    os.killpg(first.pid, signal.SIGKILL)  # the sweep and its submitit controllers
    first.wait()
    # Each running job (its own process group) hears of its controller's death (SIGINT) and
    # saves and stops: wait until no job holds its run folder before the rerun.
    from qam_lite.training.rundir import in_use

    deadline = time.time() + 240
    while any(d.exists() and in_use(d) for d in run_dirs) and time.time() < deadline:
        time.sleep(0.5)
    done_before = [d for d in run_dirs if _done(d)]
    attempts_before = {d: len(_attempts(d)) for d in run_dirs}
    assert len(done_before) < 4

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert f"{len(done_before)} done (skipped)" in second.stdout
    for d in run_dirs:
        assert _done(d), d
        rows = [line.split(",")[:2] for line in (d / "eval.csv").read_text().splitlines()[1:]]
        assert rows == [["100", "0"], ["200", "0"]], (d, rows)
        metric_steps = [line.split(",")[0] for line in (d / "metrics.csv").read_text().split()[1:]]
        assert metric_steps == ["50", "100", "150", "200"], (d, metric_steps)
        # A job finished before the kill ran once; every other job runs once more.
        attempts = _attempts(d)
        assert len(attempts) == attempts_before[d] + (d not in done_before), (d, attempts)
        assert attempts[-1]["executor"] == "local"
        assert (d / "stdout.log").exists() and (d / "stderr.log").exists()
        prov = json.loads((d / "provenance.json").read_text())
        assert prov["command"].startswith("qam-lite train cube-single-play-singletask-task")
    resumed = [d for d in run_dirs if "resumed" in json.loads((d / "provenance.json").read_text())]
    assert resumed, "no run was resumed from a checkpoint"

    third = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert third.returncode == 0 and "nothing to do" in third.stdout


@pytest.mark.slow
def test_ctrl_c_on_a_local_sweep_saves_every_running_job_and_the_rerun_finishes(tmp_path, data_dir):
    """Ctrl-C as a terminal sends it (SIGINT to the sweep's whole process group): each running
    job saves a checkpoint at the step it reached (checkpoints are otherwise written only at the
    end here), nothing prints a traceback, the sweep exits 130; the same command then finishes
    every run with each evaluation and metrics row once."""
    out = tmp_path / "runs"
    cmd = [sys.executable, "-m", "qam_lite", "sweep", *tiny_args(data_dir, out)]
    cmd += [
        "--max-parallel",
        "2",
        "--set",
        "checkpoint_interval=200",
        "--set",
        "updates_per_call=25",
    ]
    cmd += ["--set", "log_interval=25"]
    env = dict(os.environ, JAX_PLATFORMS="cpu")
    run_dirs = [out / t / a for t in TASKS for a in ("qam", "bc")]
    first = subprocess.Popen(
        cmd, env=env, start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    deadline = time.time() + 600  # a busy CI machine compiles slowly
    started = []
    while time.time() < deadline and first.poll() is None and len(started) < 2:
        # Both running jobs are training (a Ctrl-C while one compiles stops it with no step)
        started = [d for d in run_dirs if len(_rows(d / "metrics.csv")) >= 1]
        time.sleep(0.2)
    assert first.poll() is None, first.stdout.read().decode()[-3000:]
    os.killpg(first.pid, signal.SIGINT)  # the sweep, its submitit controllers (not the jobs)
    said = first.communicate(timeout=240)[0].decode()
    assert first.returncode == 130, said[-3000:]
    assert "interrupted: 2 running job(s) save a checkpoint and stop" in said, said
    assert "Traceback" not in said and "BrokenPipeError" not in said, said
    from qam_lite.training import checkpoint as ckpt

    # The two jobs running at the Ctrl-C each say they stopped (a short bc job may have finished
    # before it, and the next job then started: one stopped before training began keeps no step)
    assert said.count("\nstopped ") == 2 and "FAILED" not in said, said
    stopped = [d for d in run_dirs if (d / "checkpoint.npz").exists() and not _done(d)]
    assert len(stopped) == said.count("checkpoint saved): rerun the sweep") >= 1, said
    for d in stopped:
        meta = ckpt.read_meta(d / "checkpoint.npz")
        logged = [int(r[0]) for r in _rows(d / "metrics.csv")]
        assert meta["phase"] == "offline" and 0 < meta["step"] < 200, meta
        assert meta["step"] == logged[-1], (meta, logged)  # saved where it stopped: nothing lost
        err = (d / "stderr.log").read_text()
        assert "Traceback" not in err and "BrokenPipeError" not in err, err

    second = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=400)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    for d in run_dirs:
        assert _done(d), d
        assert [r[0] for r in _rows(d / "eval.csv")] == ["100", "200"], d
        assert [r[0] for r in _rows(d / "metrics.csv")] == [str(25 * k) for k in range(1, 9)], d


def _rows(path: Path) -> list[list[str]]:
    """A CSV log's rows after its header ([] before the file exists)."""
    if not path.exists():
        return []
    return [line.split(",") for line in path.read_text().splitlines()[1:] if line]


def _attempts(run_dir: Path) -> list:
    path = run_dir / "job.json"
    return json.loads(path.read_text())["attempts"] if path.exists() else []


def _done(run_dir: Path) -> bool:
    from qam_lite.training import checkpoint as ckpt

    path = run_dir / "checkpoint.npz"
    return path.exists() and ckpt.read_meta(path).get("phase") == "done"


@pytest.mark.parametrize(
    "text, said",
    [
        (b"tasks = 5\n", "tasks = 5 is invalid; accepted: a task or domain name"),
        (b'tasks = ["scene-play"]\nout = 42\n', "out = 42 is invalid; accepted: a folder path"),
        (b'tasks = ["scene-play"]\nnum_seeds = 0\n', "num_seeds = 0 is invalid"),
        (b'name = "caf\xe9"\n', "not UTF-8 text"),
    ],
)
def test_a_spec_file_of_the_wrong_kind_is_one_line(tmp_path, capsys, text, said):
    spec = tmp_path / "spec.toml"
    spec.write_bytes(text)
    assert main(["sweep", str(spec), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert said in err and "Traceback" not in err and len(err.strip().splitlines()) == 1


def fake_local_executor(monkeypatch, submit):
    """submitit's LocalExecutor replaced by one whose ``submit(fn)`` is ``submit``: the sweep's
    own bookkeeping runs in this process, with no job process."""

    class Executor:
        def __init__(self, folder):
            pass

        def update_parameters(self, **kw):
            pass

        def submit(self, fn):
            return submit(fn)

    monkeypatch.setattr(sweep.submitit, "LocalExecutor", Executor)


def test_a_job_stopped_by_a_signal_is_not_reported_done(tmp_path, data_dir, capsys, monkeypatch):
    # SIGINT to a job's training: train saves and returns interrupted; the sweep must say the
    # job stopped (and exit non-zero), not "done ... 2 job(s) done, 0 failed".
    class Job:
        job_id = "1"

        def __init__(self, fn):
            self.fn = fn

        def done(self):
            return True

        def result(self):
            agent = self.fn.config_dict["agent"]
            return {"interrupted": agent == "bc", "stopped_by": "signal", "step": 300,
                    "total_steps": 600, "success_rate": 0.0}  # fmt: skip

    fake_local_executor(monkeypatch, Job)
    argv = ["sweep", *tiny_args(data_dir, tmp_path / "runs"), "--max-parallel", "1"]
    assert main(argv) == 2
    out, err = capsys.readouterr()
    assert "stopped" in out and "at step 300 of 600 (signal; checkpoint saved)" in out
    assert "job(s) done, 2 stopped before the end, 0 failed" in out
    assert "did not finish" in err


def test_a_run_folder_held_by_an_orphaned_job_is_one_line(tmp_path, data_dir, capsys, monkeypatch):
    # The sweep's parent was SIGKILLed and its job runs on: a rerun must not start a duplicate
    # that dies in a traceback; it says which process holds the folder.
    out = tmp_path / "runs"
    held = out / TASKS[0] / "qam"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom qam_lite.training.rundir import locked\n"
         f"with locked({str(held)!r}):\n    print('held', flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        submitted = []

        def submit(fn):
            submitted.append(fn.run_dir)
            raise RuntimeError("only the free runs get here")

        fake_local_executor(monkeypatch, submit)
        with pytest.raises(RuntimeError, match="only the free runs"):
            spec = plan.SweepSpec(tasks=[TASKS[0]], agents=["qam", "bc"], out=str(out))
            configs = {a: make_config(TASKS[0], a) for a in ("qam", "bc")}
            sweep.run_local(
                spec,
                [plan.PlannedRun(TASKS[0], "qam", configs["qam"], held, "new", 0),
                 plan.PlannedRun(TASKS[0], "bc", configs["bc"], out / TASKS[0] / "bc", "new", 0)],
                sweep.Resources(cluster="local", max_parallel=1),
                poll_s=0.01,
            )  # fmt: skip
    finally:
        holder.kill()
    printed = capsys.readouterr().out
    said = f"FAILED {TASKS[0]} x qam: its run folder {held} is in use by pid {holder.pid}"
    assert said in printed
    assert submitted == [str(out / TASKS[0] / "bc")]  # the held one was not started again
