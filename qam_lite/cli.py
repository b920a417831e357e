"""The ``qam-lite`` command line.

Verbs: ``book`` (execute the book), plus the training verbs registered below.
Errors a user can fix are reported in one line (exit 2), never as a traceback.
"""

from __future__ import annotations

import argparse
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
