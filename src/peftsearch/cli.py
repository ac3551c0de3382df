"""``search``: the command line. A table of commands, each with its arguments and action.

Only argparse, the space schema and the error types are imported at start: ``search --help``
never imports torch. A command imports what it needs when it runs.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from peftsearch import __version__
from peftsearch.errors import UserError

EXIT_INTERRUPTED = 130


def _space_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as dotted overrides; paths given on the command line resolve against the cwd."""
    out: dict[str, Any] = {}
    if getattr(args, "n_trials", None) is not None:
        out["study.n_trials"] = args.n_trials
    if getattr(args, "seed", None) is not None:
        out["study.seed"] = args.seed
    if getattr(args, "storage", None) is not None:
        out["study.storage"] = args.storage
    if getattr(args, "output", None) is not None:
        out["output"] = str(Path(args.output).resolve())
    return out


def _quiet_libraries() -> None:
    import datasets
    import transformers

    datasets.disable_progress_bars()
    datasets.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()


class _Validate:
    help = "check a space file, its model and data, and render every template on a real row"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("space", help="the space YAML file")

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        from peftsearch.spaces import load_space

        space = load_space(args.space)
        from peftsearch.searcher import make_sampler

        make_sampler(space)
        _quiet_libraries()
        from peftsearch.objectives.validate import check_space

        for line in check_space(space):
            print(line)
        return 0


class _Run:
    help = "run (or resume) the search of a space file"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("space", help="the space YAML file")
        p.add_argument("--n-trials", type=int, help="override study.n_trials")
        p.add_argument("--output", help="override output (a directory)")
        p.add_argument("--storage", help="override study.storage (an Optuna storage URL)")
        p.add_argument("--seed", type=int, help="override study.seed")
        p.add_argument("--no-progress", action="store_true", help="no live display")

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        from peftsearch.spaces import load_space

        space = load_space(args.space, _space_overrides(args))
        _quiet_libraries()
        from peftsearch.searcher import run_study

        show = not args.no_progress
        outcome = run_study(space, show_progress=show)
        from rich.console import Console

        from peftsearch.reports import render_table

        console = Console(width=None if sys.stdout.isatty() else 160)
        console.print(render_table(outcome.pareto, space.objectives.metric))
        counts = ", ".join(f"{n} {state}" for state, n in sorted(outcome.counts.items()))
        print(f"study {outcome.study_name!r} in {outcome.storage}: {counts}")
        print(f"Pareto front: {outcome.output_dir / 'pareto.csv'} ({len(outcome.pareto)} trials)")
        print(f"browse: optuna-dashboard {outcome.storage}")
        if outcome.interrupted:
            print("interrupted: run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        return 0


COMMANDS: dict[str, Any] = {"validate": _Validate, "run": _Run}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="search",
        description="peftsearch: a multi-objective Optuna search over prompt templates, "
        "soft-prompt length, LoRA rank and learning rate.",
    )
    parser.add_argument("--version", action="version", version=f"peftsearch {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, command in COMMANDS.items():
        p = sub.add_parser(name, help=command.help, description=command.help)
        command.add_arguments(p)
        p.set_defaults(action=command.take_action)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    action: Callable[[argparse.Namespace], int] = args.action
    try:
        return action(args)
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
