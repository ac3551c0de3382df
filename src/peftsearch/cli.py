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
from peftsearch.logs import quiet_libraries

EXIT_INTERRUPTED = 130


def _space_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """CLI flags as dotted overrides; paths given on the command line resolve against the cwd."""
    out: dict[str, Any] = {}
    if getattr(args, "n_trials", None) is not None:
        out["study.n_trials"] = args.n_trials
    if getattr(args, "seed", None) is not None:
        out["study.seed"] = args.seed
    if getattr(args, "pack", None) is not None:
        pack = args.pack.strip()
        out["study.pack"] = int(pack) if pack.lstrip("-").isdigit() else pack
    if getattr(args, "storage", None) is not None:
        out["study.storage"] = args.storage
    if getattr(args, "output", None) is not None:
        out["output"] = str(Path(args.output).resolve())
    return out


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
        quiet_libraries()
        from peftsearch.searcher.validate import check_space

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
        p.add_argument(
            "--pack",
            metavar="K|auto",
            help="override study.pack: trials trained together on one base model "
            "(auto: 16 on a GPU, 1 on CPU)",
        )
        p.add_argument(
            "--workers",
            type=int,
            default=1,
            help="worker processes on this host, each running trials of the same study",
        )
        p.add_argument(
            "--devices",
            help="comma-separated GPU ids, one worker per GPU (e.g. 0,1,2,3)",
        )

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        from peftsearch.spaces import load_space

        space = load_space(args.space, _space_overrides(args))
        quiet_libraries()
        from peftsearch.searcher import run_study

        show = not args.no_progress
        devices = [d.strip() for d in args.devices.split(",") if d.strip()] if args.devices else []
        if args.workers < 1:
            raise UserError(f"--workers must be >= 1 (got {args.workers})")
        if len(devices) > 1 or args.workers > 1:
            from peftsearch.searcher.workers import run_workers

            outcome = run_workers(
                space, workers=max(args.workers, len(devices)), devices=devices, show_progress=show
            )
        else:
            if devices:
                space.model.device = f"cuda:{devices[0]}"
            outcome = run_study(space, show_progress=show)
        from rich.console import Console

        from peftsearch.reports import render_table

        console = Console(width=None if sys.stdout.isatty() else 160)
        console.print(render_table(outcome.pareto, space.objectives.metric))
        counts = ", ".join(f"{n} {state}" for state, n in sorted(outcome.counts.items()))
        print(f"study {outcome.study_name!r} in {outcome.storage}: {counts}")
        print(f"Pareto front: {outcome.output_dir / 'pareto.csv'} ({len(outcome.pareto)} trials)")
        if outcome.report is not None:
            print(f"report: {outcome.report}")
        print(f"browse: optuna-dashboard {outcome.storage}")
        if outcome.interrupted:
            print("interrupted: run the same command again to resume", file=sys.stderr)
            return EXIT_INTERRUPTED
        return 0


def _study_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("space", help="the space YAML file of the study")
    p.add_argument("--output", help="override output (the run directory)")
    p.add_argument("--storage", help="override study.storage (an Optuna storage URL)")


def _load_study(args: argparse.Namespace) -> tuple[Any, Any]:
    from peftsearch.spaces import load_space

    space = load_space(args.space, _space_overrides(args))
    from peftsearch.searcher import open_study

    return space, open_study(space, create=False)


class _Report:
    help = "write the HTML report of a study (from its storage alone)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _study_arguments(p)
        p.add_argument("--to", help="the HTML file (default: <output>/report.html)")

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        space, study = _load_study(args)
        from peftsearch.reports.html import write_report

        to = Path(args.to).resolve() if args.to else space.output_dir / "report.html"
        print(f"report: {write_report(study, to)}")
        return 0


class _Confirm:
    help = "train the front's trials (or --trials N,M) again on other seeds; stored on the study"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _study_arguments(p)
        p.add_argument("--trials", default="front", help="front (default) or trial numbers N,M,..")
        p.add_argument("--seeds", type=int, default=3, help="extra seeds per trial (default 3)")
        p.add_argument(
            "--budget",
            choices=("search", "full"),
            default="search",
            help="search (default): the search's own budget and validation rows; full: as "
            "`search train` (whole train split), scored on the validation and test splits",
        )
        p.add_argument(
            "--epochs",
            type=int,
            help="with --budget full: passes over the train split instead of each trial's own",
        )
        p.add_argument("--no-progress", action="store_true", help="no progress bar")

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        quiet_libraries()
        from peftsearch.reports.confirmed import spearman
        from peftsearch.searcher.confirm import run_confirm
        from peftsearch.spaces import load_space

        space = load_space(args.space, _space_overrides(args))
        found = run_confirm(
            space,
            args.trials,
            args.seeds,
            show_progress=not args.no_progress,
            budget=args.budget,
            epochs=args.epochs,
        )
        metric = space.objectives.metric
        if args.budget == "full":
            print(
                f"trial  search {metric}  full budget: validation mean +- std  "
                "test mean +- std (n)  trainable params"
            )
            for f in sorted(found.values(), key=lambda c: c.trainable):
                (vm, vs), (tm, ts) = f.validation_mean_std, f.test_mean_std
                print(
                    f"{f.trial:5d}  {f.search:.4f}  {vm:.4f} +- {vs:.4f}  "
                    f"{tm:.4f} +- {ts:.4f} ({f.n})  {f.trainable:,}"
                )
            return 0
        print(f"trial  search {metric}  confirmed mean +- std (n)  trainable params")
        for c in sorted(found.values(), key=lambda c: c.trainable):
            spread = f"{c.mean:.4f} +- {c.std:.4f} ({c.n})"
            print(f"{c.trial:5d}  {c.search:.4f}  {spread}  {c.trainable:,}")
        rho = spearman([c.search for c in found.values()], [c.mean for c in found.values()])
        if rho is not None:
            print(f"rank correlation, search score vs confirmed mean (Spearman): {rho:.2f}")
        return 0


class _Export:
    help = "write a chosen trial's config for production training"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _study_arguments(p)
        which = p.add_mutually_exclusive_group(required=True)
        which.add_argument("--trial", type=int, help="the trial number")
        which.add_argument(
            "--pick",
            nargs="+",
            metavar="HOW",
            help="knee | best | max-params P (the best Pareto trial with <= P parameters)",
        )
        p.add_argument("--to", help="the export directory (default: <output>/export/trial_N)")

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        space, study = _load_study(args)
        from peftsearch.reports.export import export_trial
        from peftsearch.reports.select import pick_trial

        if args.trial is not None:
            number = args.trial
        else:
            how, rest = args.pick[0], args.pick[1:]
            if (how == "max-params") != (len(rest) == 1) or len(rest) > 1:
                raise UserError("--pick takes knee, best, or max-params P")
            try:
                budget = int(float(rest[0])) if rest else None
                number = pick_trial(study, how, budget).number
            except ValueError as exc:
                raise UserError(f"--pick {' '.join(args.pick)}: {exc}") from None
        to = Path(args.to).resolve() if args.to else space.output_dir / "export" / f"trial_{number}"
        print(f"exported trial {number}: {export_trial(study, number, to)}")
        return 0


class _Train:
    help = "train an exported config on the full train split; evaluate on the test split"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("config", help="EXPORT/config.yaml written by `search export`")
        p.add_argument("--epochs", type=int, help="override the config's epochs")
        p.add_argument("--to", help="where to save the model (default: beside the config, model/)")
        p.add_argument(
            "--checkpoint-every",
            type=int,
            default=None,
            metavar="N",
            help="write a checkpoint every N steps and on Ctrl-C (default 100; 0: none); "
            "the same command resumes from it",
        )

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        quiet_libraries()
        from peftsearch.objectives.production import train_exported

        to = Path(args.to).resolve() if args.to else None
        every = {} if args.checkpoint_every is None else {"checkpoint_every": args.checkpoint_every}
        result = train_exported(Path(args.config), epochs=args.epochs, to=to, **every)
        for key, value in result.items():
            print(f"{key}: {value}")
        return 0


class _Predict:
    help = "predict labels (or write answers) with a model saved by `search train`"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        p.add_argument("model_dir", help="the directory `search train` saved")
        src = p.add_mutually_exclusive_group(required=True)
        src.add_argument(
            "--text", action="append", help="a text to classify or answer (repeatable)"
        )
        src.add_argument("--file", help="a file with one text per line")

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        import json

        if args.file:
            try:
                texts = [x for x in Path(args.file).read_text(encoding="utf-8").splitlines() if x]
            except OSError as exc:
                raise UserError(f"{args.file}: {exc.strerror}") from None
        else:
            texts = args.text
        quiet_libraries()
        from peftsearch.objectives.production import predict

        for row in predict(Path(args.model_dir), texts):
            print(json.dumps(row, ensure_ascii=False))
        return 0


class _Dashboard:
    help = "browse a study in optuna-dashboard (trials, attributes, artifacts)"

    @staticmethod
    def add_arguments(p: argparse.ArgumentParser) -> None:
        _study_arguments(p)
        p.add_argument("--host", default="127.0.0.1", help="address to listen on")
        p.add_argument("--port", type=int, default=8080, help="port to listen on")

    @staticmethod
    def take_action(args: argparse.Namespace) -> int:
        from peftsearch.spaces import load_space

        space = load_space(args.space, _space_overrides(args))
        from peftsearch.searcher.dashboard import serve

        serve(space, host=args.host, port=args.port)
        return 0


COMMANDS: dict[str, Any] = {
    "validate": _Validate,
    "run": _Run,
    "report": _Report,
    "confirm": _Confirm,
    "export": _Export,
    "train": _Train,
    "predict": _Predict,
    "dashboard": _Dashboard,
}


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
