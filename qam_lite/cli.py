"""The ``qam-lite`` command line.

Verbs: ``book`` (execute the book), ``generate`` (build a dataset locally with OGBench's oracles),
``train`` (offline, optionally online; resumes automatically), ``evaluate`` (a saved run).
Errors a user can fix are reported in one line (exit 2), never as a traceback.

The small CPU demo (about 2 + 4 minutes on 2 cores; 10k updates is far too few for the task to
be solved, it shows the pipeline: data, training, evaluation, curve, checkpoint)::

    qam-lite generate cube-single-play-v0 --episodes 100
    qam-lite train cube-single-play-singletask-task1-v0 --preset cpu-small
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path


class UserError(Exception):
    """A problem with the user's input or environment; printed without a traceback."""


def _book(args: argparse.Namespace) -> None:
    from qam_lite import book

    if args.sync:
        changed = book.sync()
        print(f"synced {len(changed)} chapter(s)")
        return
    try:
        rows = book.build(
            Path(args.out),
            quick_mode=args.quick,
            only=args.only,
            force=args.force,
            site=not args.no_site,
        )
    except ValueError as err:
        raise UserError(str(err)) from err
    total = sum(secs for _, secs in rows)
    print(
        f"book: {len(rows)} chapter(s) executed in {total:.0f} s -> {Path(args.out) / 'index.html'}"
    )


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
    "paper": {},
}


@contextlib.contextmanager
def user_errors():
    """Turn every error class a user can fix (task, config, data, checkpoint, divergence) into a
    one-line :class:`UserError`; the one place the CLI maps library errors."""
    from qam_lite.checkpoint import CheckpointError
    from qam_lite.config import ConfigError
    from qam_lite.datasets import DataError
    from qam_lite.tasks import TaskError
    from qam_lite.train import RunMismatch, TrainingDiverged

    try:
        yield
    except (TaskError, ConfigError, DataError, CheckpointError, RunMismatch) as err:
        raise UserError(str(err)) from err
    except TrainingDiverged as err:  # logs and the last good checkpoint are already saved
        raise UserError(str(err)) from err


def _generate(args: argparse.Namespace) -> None:
    from qam_lite.generate import generate

    with user_errors():
        paths = generate(
            args.dataset,
            args.episodes,
            args.dataset_dir or _default_data_dir(),
            seed=args.seed,
            workers=args.workers,
            episode_length=args.episode_length,
            progress=not args.no_progress,
            overwrite=args.overwrite,
        )
    print("wrote " + " and ".join(str(p) for p in paths))


def _default_data_dir() -> str:
    from qam_lite.datasets import data_dir

    return str(data_dir(None))


def make_train_config(args: argparse.Namespace):
    """The run's Config from a ``train`` command line: task defaults, preset, then ``--set``."""
    from qam_lite.config import make_config, parse_overrides
    from qam_lite.tasks import parse_task

    task = parse_task(args.task)
    overrides = dict(PRESETS[args.preset]) if args.preset else {}
    overrides.update(parse_overrides(args.set or []))
    if args.dataset_dir is not None:
        overrides["dataset_dir"] = str(Path(args.dataset_dir).expanduser().resolve())
    if args.download:
        overrides["download"] = True
    return make_config(task.name, args.agent, **overrides)


def _train(args: argparse.Namespace) -> None:
    from qam_lite import train

    with user_errors():
        config = make_train_config(args)
        if args.generate:
            _generate_if_missing(config, args.generate)
        out = Path(args.out) if args.out else Path("runs") / _run_name(config, args.preset)
        summary = train.train(
            config, out, progress=not args.no_progress, stop_after=args.stop_after
        )
    print(train.summary_line(summary))


def _run_name(config, preset: str | None) -> str:
    from qam_lite.tasks import parse_task

    name = f"{parse_task(config.task).name}-{config.agent}-seed{config.seed}"
    return f"{name}-{preset}" if preset else name


def _generate_if_missing(config, episodes: int) -> None:
    from qam_lite import datasets
    from qam_lite.generate import generate
    from qam_lite.tasks import parse_task

    train_path, val_path = datasets.dataset_paths(config.task, config.dataset_dir)
    if train_path.exists() and val_path.exists():
        return
    print(f"generating {episodes} episodes of {parse_task(config.task).dataset} locally")
    generate(config.task, episodes, datasets.data_dir(config.dataset_dir), progress=True)


def _evaluate(args: argparse.Namespace) -> None:
    from qam_lite.evaluate import evaluate_run

    with user_errors():
        if not Path(args.run_dir).is_dir():
            raise UserError(f"{args.run_dir} is not a folder; accepted: a run folder from train")
        results = evaluate_run(args.run_dir, num_episodes=args.episodes, seed=args.seed)
    for r in results:
        print(
            f"seed {r['seed']} at step {r['step']}: success {100 * r['success_rate']:.1f}% "
            f"({r['episodes']} episodes, mean return {r['episode_return']:.1f})"
        )
    mean = sum(r["success_rate"] for r in results) / len(results)
    print(f"mean success {100 * mean:.1f}% over {len(results)} seed(s)")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is invalid; accepted: an integer >= 1")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="qam-lite", description=__doc__.splitlines()[0])
    verbs = parser.add_subparsers(dest="verb", required=True)

    p = verbs.add_parser("book", help="execute every chapter and save it with its outputs")
    p.add_argument("--out", default="_build/book", help="folder for executed notebooks + HTML")
    p.add_argument("--quick", action="store_true", help="QAM_LITE_QUICK=1 (CI-sized work)")
    p.add_argument("--only", nargs="*", help="run only chapters whose name contains these")
    p.add_argument("--force", action="store_true", help="re-run chapters already executed")
    p.add_argument("--no-site", action="store_true", help="skip the Jupyter Book 2 site build")
    p.add_argument("--sync", action="store_true", help="rewrite Colab cells and pair .ipynb files")
    p.set_defaults(func=_book)

    p = verbs.add_parser("generate", help="generate an OGBench dataset locally with its oracles")
    p.add_argument("dataset", help="dataset, domain or task name, e.g. cube-single-play-v0")
    p.add_argument("--episodes", type=_positive_int, required=True, help="training episodes")
    p.add_argument("--workers", type=_positive_int, default=None, help="processes (default: CPUs)")
    p.add_argument("--dataset-dir", default=None, help="output folder (default ~/.ogbench/data)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--episode-length", type=_positive_int, default=1001)
    p.add_argument("--overwrite", action="store_true", help="replace existing files")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_generate)

    from qam_lite.config import AGENTS

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
    p.add_argument("--stop-after", type=int, default=None, help="stop (resumably) at this step")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_train)

    p = verbs.add_parser("evaluate", help="evaluate a run folder's latest checkpoint")
    p.add_argument("run_dir")
    p.add_argument("--episodes", type=_positive_int, default=None, help="default: the run's")
    p.add_argument("--seed", type=int, default=10_000, help="evaluation seed")
    p.set_defaults(func=_evaluate)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except UserError as err:
        print(f"qam-lite {args.verb}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"qam-lite {args.verb}: interrupted; run the same command again to resume.")
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
