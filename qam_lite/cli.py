"""The ``qam-lite`` command line.

Verbs: ``book`` (execute the book), ``generate`` (build a dataset locally with OGBench's oracles),
``train`` (offline, optionally online; resumes automatically), ``evaluate`` (a saved run),
``sweep`` (tasks x agents x seeds on submitit, local or SLURM), ``table`` (runs beside the paper),
``render`` (frames of a trained policy acting), ``probe`` (shipped policy files at fixed states,
e.g. one per ``tau``), ``gradstats`` (the actor's gradient statistics during training).
Errors a user can fix are reported in one line (exit 2), never as a traceback.

Each verb imports what it runs inside its own function: loading JAX takes seconds and memory, so
``qam-lite --help``, ``table`` and a sweep's dry run (and the sweep's parent process, whose jobs
load JAX themselves) never do; tests/test_layout.py checks it.

The small CPU demo (about 2 + 4 minutes on 2 cores; 10k updates is far too few for the task to
be solved, it shows the pipeline: data, training, evaluation, curve, checkpoint)::

    qam-lite generate cube-single-play-v0 --episodes 100
    qam-lite train cube-single-play-singletask-task1-v0 --preset cpu-small
"""

from __future__ import annotations

import argparse
import contextlib
import shlex
import sys
from pathlib import Path

from qam_lite.data.datasets import quiet_env_warnings  # numpy only: no JAX for --help


class UserError(Exception):
    """A problem with the user's input or environment; printed without a traceback."""


def _book(args: argparse.Namespace) -> None:
    import os

    from qam_lite.book import build, site, sync

    if args.check:  # CI or a pre-commit hook: say what is stale, change nothing
        if not args.sync:
            raise UserError("--check goes with --sync: `qam-lite book --sync --check`")
        stale = sync.check()
        if stale:
            raise UserError("out of date:\n" + "\n".join(stale))
        print("book: chapters, notebooks and API page in sync")
        return
    if args.sync:
        changed = sync.sync()
        print(f"synced {len(changed)} file(s)")
        return
    from qam_lite.atomic import WriteError, make_folder

    try:
        make_folder(Path(args.out), "book --out")  # a file or read-only folder: say so first
        run = build.build(Path(args.out), quick_mode=args.quick, only=args.only, force=args.force)
    except (ValueError, WriteError) as err:  # no chapter matches; disk full, read-only --out
        raise UserError(str(err)) from err
    except build.ChapterFailed as err:
        raise UserError(f"{err}\nfix it and run the same command again") from err
    except build.Interrupted as err:
        print(f"qam-lite book: {err}")
        raise
    print(f"book: {run.summary()}")
    for chapter, problems in run.problems.items():
        print(f"book: warning: {chapter}: " + "; ".join(problems))
    # The site renders the executed chapters (nothing runs twice): by default only for a
    # whole-book run, and a failure (e.g. offline, where the theme cannot be downloaded) only
    # warns; --site makes it required.
    want = args.site if args.site is not None else not args.only
    if not want:
        return
    theme = args.theme or os.environ.get("QAM_LITE_BOOK_THEME") or None
    try:
        index = site.build_site(
            Path(args.out),
            quick_mode=args.quick,
            theme=Path(theme) if theme else None,
            force=args.force,
        )
    except site.SiteError as err:
        if args.site:
            raise UserError(f"site not built: {err}") from err
        print(
            f"book: site not built: {err}\nbook: the executed chapters above are complete; "
            "offline, pass --theme DIR (a local copy of the book-theme template)"
        )
        return
    print(f"book: site -> {index} (serve it: python -m http.server -d {index.parent})")


@contextlib.contextmanager
def user_errors():
    """Turn every error class a user can fix (task, config, data, checkpoint, divergence) into a
    one-line :class:`UserError`; the one place the CLI maps library errors."""
    from qam_lite.atomic import WriteError
    from qam_lite.config import ConfigError
    from qam_lite.data.datasets import DataError
    from qam_lite.data.tasks import TaskError
    from qam_lite.training.checkpoint import CheckpointError
    from qam_lite.training.rundir import RunFolderError, RunMismatch
    from qam_lite.training.session import TrainingDiverged

    try:
        yield
    except (TaskError, ConfigError, DataError, CheckpointError, RunMismatch, RunFolderError) as err:
        raise UserError(str(err)) from err
    except TrainingDiverged as err:  # logs and the last good checkpoint are already saved
        raise UserError(str(err)) from err
    except WriteError as err:  # the file it was replacing is intact, no temporary file is left
        raise UserError(
            f"{err}; files already written are intact: fix this and run the same command again "
            "(train resumes from its last checkpoint)"
        ) from err


def _generate(args: argparse.Namespace) -> None:
    from qam_lite.data.generate import generate

    with user_errors():
        paths = generate(
            args.dataset,
            args.episodes,
            args.dataset_dir,
            seed=args.seed,
            workers=args.workers,
            episode_length=args.episode_length,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    print("wrote " + " and ".join(str(p) for p in paths))


def make_train_config(args: argparse.Namespace):
    """The run's Config from a ``train`` command line (:func:`~qam_lite.training.settings.resolve`:
    the task's published values, ``--preset``, then ``--set``)."""
    from qam_lite.config import parse_overrides
    from qam_lite.training.settings import resolve

    overrides = parse_overrides(args.set or [])
    for key, where in (("task", "the first argument: qam-lite train TASK"), ("agent", "--agent")):
        if key in overrides:
            raise UserError(f"--set {key}=... is not accepted; give the {key} with {where}")
    fields = {"download": True} if args.download else {}
    if args.dataset_dir is not None:
        fields["dataset_dir"] = args.dataset_dir
    return resolve(args.task, args.agent, args.preset, overrides, **fields)


def _train(args: argparse.Namespace) -> None:
    from qam_lite.training import train

    with user_errors():
        config = make_train_config(args)
        if args.generate:
            _generate_if_missing(config, args.generate)
        out = Path(args.out) if args.out else Path("runs") / _run_name(config, args.preset)
        summary = train.train(
            config,
            out,
            progress=not args.no_progress,
            stop_after=args.stop_after,
            overwrite=args.overwrite,
        )
    print(train.summary_line(summary))
    if summary["stopped_by"] == "signal":
        raise KeyboardInterrupt  # checkpoint saved: main() says how to resume, exit 130


def _run_name(config, preset: str | None) -> str:
    from qam_lite.data.tasks import parse_task

    name = f"{parse_task(config.task).name}-{config.agent}-seed{config.seed}"
    return f"{name}-{preset}" if preset else name


def _generate_if_missing(config, episodes: int) -> None:
    from qam_lite.data import datasets
    from qam_lite.data.generate import generate
    from qam_lite.data.tasks import parse_task

    train_path, val_path = datasets.dataset_paths(config.task, config.dataset_dir)
    if train_path.exists() and val_path.exists():
        return
    if datasets.shard_folder(parse_task(config.task), datasets.data_dir(config.dataset_dir)):
        return  # sharded (100M) data is used instead of the standard files
    print(f"generating {episodes} episodes of {parse_task(config.task).dataset} locally")
    generate(config.task, episodes, datasets.data_dir(config.dataset_dir), progress=True)


def _evaluate(args: argparse.Namespace) -> None:
    from qam_lite.training.evaluate import evaluate_run

    path = Path(args.run_dir)
    if path.is_file():
        return _evaluate_policy(args)
    with user_errors():
        if not path.is_dir():
            raise UserError(
                f"{path} is neither a run folder nor a policy file; accepted: a run folder "
                "from train, or a .npz policy file (results/policies/)"
            )
        results = evaluate_run(
            path, num_episodes=args.episodes, seed=10_000 if args.seed is None else args.seed
        )
    for r in results:
        print(
            f"seed {r['seed']} at step {r['step']}: success {100 * r['success_rate']:.1f}% "
            f"({r['episodes']} episodes, mean return {r['episode_return']:.1f})"
        )
    mean = sum(r["success_rate"] for r in results) / len(results)
    print(f"mean success {100 * mean:.1f}% over {len(results)} seed(s)")


def _evaluate_policy(args: argparse.Namespace) -> None:
    """A shipped policy: re-run its recorded evaluation (or another) and set it beside the
    recorded rate and that rate's 95 % interval."""
    from qam_lite.training.policy import binomial_interval, load_policy

    with user_errors():
        policy = load_policy(args.run_dir)
        result = policy.evaluate(args.episodes, args.seed)
    rec = policy.meta["recorded"]
    lo, hi = binomial_interval(rec["success_rate"], rec["episodes"])
    rate = result["success_rate"]
    print(
        f"{Path(args.run_dir).name}: {policy.config.agent} (tau {policy.config.tau:g}) on "
        f"{policy.config.task}, step {policy.meta['step']}, seed {policy.meta['seed']}"
    )
    print(
        f"recorded: success {100 * rec['success_rate']:.1f}% of {rec['episodes']} episodes "
        f"(95% interval {100 * lo:.1f}-{100 * hi:.1f}%, evaluation seed {rec['eval_seed']})"
    )
    inside = "inside" if lo <= rate <= hi else "OUTSIDE"
    print(
        f"now:      success {100 * rate:.1f}% of {result['episodes']} episodes "
        f"(evaluation seed {args.seed if args.seed is not None else rec['eval_seed']}): "
        f"{inside} the recorded interval"
    )


def _non_negative_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; accepted: an integer >= 0")
    return value


def _sweep(args: argparse.Namespace) -> None:
    from qam_lite.experiments import sweep
    from qam_lite.experiments.plan import SweepError

    with user_errors():
        try:
            failed = sweep.run_cli(args)
        except SweepError as err:
            raise UserError(str(err)) from err
    if failed:
        raise UserError(
            f"{failed} job(s) did not finish (the lines above say which): a failed job's "
            "stderr.log says why; a stopped one continues when the same command runs again"
        )


def _table(args: argparse.Namespace) -> None:
    from qam_lite.experiments import table
    from qam_lite.experiments.paper import TableError

    with user_errors():
        try:
            table.run_cli(args)
        except TableError as err:
            raise UserError(str(err)) from err


def _render(args: argparse.Namespace) -> None:
    from qam_lite.experiments import render

    with user_errors():
        try:
            render.run_cli(args)
        # ValueError: an argument out of range; OSError: a missing run folder, an --out that
        # cannot be created.
        except (render.RenderUnavailable, ValueError, OSError) as err:
            raise UserError(str(err)) from err


def _probe(args: argparse.Namespace) -> None:
    from qam_lite.experiments import probe

    with user_errors():
        try:
            probe.run_cli(args)
        # ValueError: policies of different tasks, an argument out of range; OSError: a missing
        # policy file, an --out that cannot be created.
        except (ValueError, OSError) as err:
            raise UserError(str(err)) from err


def _gradstats(args: argparse.Namespace) -> None:
    from qam_lite.experiments import gradstats

    with user_errors():
        try:
            gradstats.run_cli(args)
        except (gradstats.GradStatsError, OSError) as err:  # OSError: an --out it cannot create
            raise UserError(str(err)) from err


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; accepted: an integer >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    """The ``qam-lite`` parser, one sub-command per verb (building it loads no JAX)."""
    parser = argparse.ArgumentParser(prog="qam-lite", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("book", help="execute every chapter and save it with its outputs")
    p.add_argument("--out", default="_build/book", help="folder for executed notebooks + HTML")
    p.add_argument("--quick", action="store_true", help="QAM_LITE_QUICK=1 (CI-sized work)")
    p.add_argument(
        "--only", nargs="+", metavar="NAME", help="run only chapters whose name contains these"
    )
    p.add_argument("--force", action="store_true", help="re-run chapters already executed")
    p.add_argument(
        "--site",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="build the executed Jupyter Book 2 site in _build/html (default: tried, and only "
        "a warning if it fails, when no --only is given; --site makes it required)",
    )
    p.add_argument(
        "--theme",
        metavar="DIR",
        help="local copy of the book-theme site template, for offline site builds "
        "(default: $QAM_LITE_BOOK_THEME, else downloaded)",
    )
    p.add_argument("--sync", action="store_true", help="rewrite Colab cells and pair .ipynb files")
    p.add_argument(
        "--check",
        action="store_true",
        help="with --sync: only report what it would change (exit 2 if anything), write nothing",
    )
    p.set_defaults(func=_book)

    p = verbs.add_parser("generate", help="generate an OGBench dataset locally with its oracles")
    p.add_argument("dataset", help="dataset, domain or task name, e.g. cube-single-play-v0")
    p.add_argument(
        "--episodes",
        type=_positive_int,
        default=None,
        help="training episodes (default: published)",
    )
    p.add_argument("--workers", type=_positive_int, default=None, help="processes (default: CPUs)")
    p.add_argument("--dataset-dir", default=None, help="output folder (default ~/.ogbench/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument(
        "--episode-length", type=_positive_int, default=None, help="default: published (1001/2001)"
    )
    p.add_argument(
        "--overwrite", action="store_true", help="replace existing files (e.g. a damaged one)"
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_generate)

    from qam_lite.config import AGENTS
    from qam_lite.training.settings import PRESETS

    p = verbs.add_parser(
        "train", help="train an agent offline (then online with --set online_steps=N)"
    )
    p.add_argument("task", help="OGBench task, e.g. cube-double-play-singletask-task2-v0")
    p.add_argument("--agent", default="qam", help=f"one of {', '.join(AGENTS)} (default qam)")
    p.add_argument("--preset", choices=sorted(PRESETS), help="cpu-small: a few minutes on a CPU")
    p.add_argument(
        "--set", action="append", metavar="KEY=VALUE", help="override a Config field (repeatable)"
    )
    p.add_argument("--out", default=None, help="run folder (default runs/<task>-<agent>-seed<S>)")
    p.add_argument("--dataset-dir", default=None, help="dataset folder (default ~/.ogbench/data)")
    p.add_argument("--download", action="store_true", help="allow OGBench's official download")
    p.add_argument(
        "--generate",
        type=_positive_int,
        metavar="N",
        default=None,
        help="if the dataset is missing, generate N episodes locally first",
    )
    p.add_argument(
        "--stop-after",
        type=_non_negative_int,
        metavar="STEP",
        default=None,
        help="stop (resumably) once this step is reached",
    )
    p.add_argument(
        "--overwrite",
        action="store_true",
        help="discard the results already in --out (another configuration's, or this one's)",
    )
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)

    p = verbs.add_parser(
        "evaluate", help="evaluate a run folder's latest checkpoint, or a shipped policy file"
    )
    p.add_argument("run_dir", help="a run folder, or a policy .npz (results/policies/)")
    p.add_argument("--episodes", type=_positive_int, default=None, help="default: the run's")
    p.add_argument(
        "--seed",
        type=int,
        default=None,
        help="evaluation seed (a run folder: default 10000, one training never uses; a policy: "
        "default the recorded evaluation's, which repeats it)",
    )
    p.set_defaults(func=_evaluate)

    from qam_lite.experiments import sweep, table

    p = verbs.add_parser("sweep", help="run tasks x agents x seeds (local processes or SLURM)")
    sweep.add_arguments(p)
    p.set_defaults(func=_sweep)

    p = verbs.add_parser("table", help="our runs beside the paper's numbers (md, csv, tex, png)")
    table.add_arguments(p)
    p.set_defaults(func=_table)

    from qam_lite.experiments import gradstats, probe, render

    for verb, module, func, about in (
        ("render", render, _render, "frames of a solved and an unsolved evaluation episode"),
        ("probe", probe, _probe, "sample shipped policy files (e.g. one per tau) at fixed states"),
        ("gradstats", gradstats, _gradstats, "QAM's and BAM's actor gradients during training"),
    ):
        p = verbs.add_parser(verb, help=about, description=about)
        module.add_arguments(p)
        p.set_defaults(func=func)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run ``qam-lite argv`` (default: this process's arguments); returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    args = build_parser().parse_args(argv)
    quiet_env_warnings()
    # The command as the qam-lite CLI spells it, for the verbs that record it as provenance
    # (`python -m qam_lite render ...` comes here too, as `qam-lite render ...`).
    args.command_line = shlex.join(["qam-lite", *argv])
    try:
        args.func(args)
    except UserError as err:
        print(f"qam-lite {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qam-lite {args.verb}: interrupted; run the same command again to resume.")
        return 130
    return 0
