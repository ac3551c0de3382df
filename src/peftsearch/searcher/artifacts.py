"""Per-trial and per-study files stored with Optuna's artifact API, so optuna-dashboard lists them.

The files live in an Optuna ``FileSystemArtifactStore`` under ``<output>/artifacts`` (one file
per artifact, named by its id); the study's storage records which artifact belongs to which
trial or study and under what file name.

- On each COMPLETE trial: ``trial_N_metrics.json`` (both objective values, the parameters and
  the trial's key attributes) and ``trial_N_loss_curve.csv`` (step, train loss).
- On the study: ``report.html`` (the latest report; refreshing it rewrites the same artifact)
  and ``trial_N_config.zip`` for each Pareto trial, the directory ``search export --trial N``
  writes (unzip it and run ``search train trial_N/config.yaml``).

Optuna refuses to change a finished trial, so a trial's own artifacts are uploaded while it
still runs: after its results are known, before ``study.tell``. Pareto membership is only known
after trials finish, so the exported configs are study artifacts named by trial number.

Every file is uploaded once per trial (or study) and name: the artifact list in the storage is
checked first, so calling these functions again uploads only what is missing. A failure here is
a note, never the end of the study.
"""

from __future__ import annotations

import csv
import functools
import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO

from peftsearch.reports.trials import front_trials
from peftsearch.spaces import Space

if TYPE_CHECKING:
    import optuna
    from optuna.artifacts import FileSystemArtifactStore

ARTIFACTS_DIR = "artifacts"  # under the run's output directory
REPORT_NAME = "report.html"
# The trial attributes copied into trial_N_metrics.json (those the trial recorded).
METRIC_ATTRS = (
    "template_text",
    "trainable_params",
    "trainable_pct",
    "base_params",
    "train_steps",
    "train_seconds",
    "eval_seconds",
    "trial_seconds",
    "eval_loss",
    "peak_gpu_memory_bytes",
    "device",
    "seed",
    "versions",
    "enqueued",
    "retry_of",
)

Note = Callable[[str], None]
Writer = Callable[[Path], object]  # writes one file at the path it is given


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def metrics_name(number: int) -> str:
    return f"trial_{number}_metrics.json"


def loss_curve_name(number: int) -> str:
    return f"trial_{number}_loss_curve.csv"


def config_name(number: int) -> str:
    return f"trial_{number}_config.zip"


def artifact_dir(space: Space) -> Path:
    """``<output>/artifacts``: where the artifact files of the space's study live."""
    return space.output_dir / ARTIFACTS_DIR


def artifact_store(space: Space) -> FileSystemArtifactStore:
    """The study's artifact store (the directory is made on the first upload)."""
    from optuna.artifacts import FileSystemArtifactStore

    class AtomicStore(FileSystemArtifactStore):
        """Optuna's file-system store, writing each file whole (temp file, then rename), so
        the dashboard never serves a half-written report while it is refreshed."""

        def write(self, artifact_id: str, content_body: BinaryIO) -> None:
            path = Path(self._get_filepath(artifact_id))
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            try:
                with os.fdopen(fd, "wb") as f:
                    shutil.copyfileobj(content_body, f)
                os.chmod(tmp, 0o644)
                os.replace(tmp, path)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise

    return AtomicStore(artifact_dir(space))


def _names(study_or_trial: Any, storage: Any) -> dict[str, str]:
    """File name -> artifact id of what is already attached."""
    from optuna.artifacts import get_all_artifact_meta

    return {
        m.filename: m.artifact_id for m in get_all_artifact_meta(study_or_trial, storage=storage)
    }


def _curve_rows(attrs: dict[str, Any]) -> list[tuple[int, float]]:
    """(step, train loss) of the stored curve; a point averages ``every`` steps up to its step,
    and the last one closes at the last step (as in the report)."""
    losses = [float(x) for x in attrs.get("train_loss_curve") or []]
    every = int(attrs.get("train_loss_curve_every") or 1)
    steps = [(i + 1) * every for i in range(len(losses))]
    total = attrs.get("train_steps")
    if steps and isinstance(total, int) and steps[-1] - every < total <= steps[-1]:
        steps[-1] = total
    return list(zip(steps, losses, strict=True))


def _metrics(study: Any, frozen: Any, space: Space, values: Sequence[float]) -> dict[str, Any]:
    attrs = frozen.user_attrs
    metric = space.objectives.metric
    return {
        "study": study.study_name,
        "trial": frozen.number,
        "metric": metric,
        "values": {metric: float(values[0]), "trainable_params": int(values[1])},
        "params": attrs.get("params", frozen.params),
        **{key: attrs[key] for key in METRIC_ATTRS if key in attrs},
    }


def upload_trial_artifacts(
    study: optuna.Study,
    trial: optuna.Trial | optuna.trial.FrozenTrial,
    space: Space,
    values: Sequence[float] | None = None,
    note: Note = _stderr,
) -> list[str]:
    """Attach ``trial_N_metrics.json`` and ``trial_N_loss_curve.csv`` to a trial.

    Call it after the trial's user attributes are set and before ``study.tell``: Optuna refuses
    to attach anything to a finished trial (a finished trial that lacks them gets a note).

    Args:
        study: the trial's study.
        trial: the running ``Trial`` (or its ``FrozenTrial``).
        space: the study's space (output directory, metric name).
        values: the two objective values (metric, trainable parameters) about to be told;
            default: the trial's own values, if it has them.
        note: where a problem is reported; nothing here raises.

    Returns:
        The file names uploaded now (empty when all were there already).
    """
    try:
        storage = study._storage  # Optuna's artifact API takes the storage for a FrozenTrial
        frozen = storage.get_trial(trial._trial_id)
        have = _names(frozen, storage)
        values = list(values) if values is not None else frozen.values
        if values is None or len(values) != 2:
            note(f"trial {frozen.number}: no objective values; no artifacts attached")
            return []
        files: dict[str, Writer] = {}
        name = metrics_name(frozen.number)
        if name not in have:
            metrics = _metrics(study, frozen, space, values)
            files[name] = lambda p: p.write_text(json.dumps(metrics, indent=2) + "\n", "utf-8")
        curve = _curve_rows(frozen.user_attrs)
        name = loss_curve_name(frozen.number)
        if curve and name not in have:

            def write_curve(p: Path) -> None:
                with p.open("w", newline="", encoding="utf-8") as f:
                    w = csv.writer(f)
                    w.writerow(["step", "train_loss"])
                    w.writerows(curve)

            files[name] = write_curve
        if files and frozen.state.is_finished():
            note(
                f"trial {frozen.number} is already {frozen.state.name}: Optuna attaches nothing "
                f"to a finished trial ({', '.join(files)} not stored)"
            )
            return []
        return _upload_files(study, frozen, space, files)
    except Exception as exc:
        note(f"trial {trial.number}: artifacts not stored ({type(exc).__name__}: {exc})")
        return []


def _upload_files(study: Any, target: Any, space: Space, files: dict[str, Writer]) -> list[str]:
    """Write each file into a temp dir under its name and upload it to ``target``."""
    from optuna.artifacts import upload_artifact

    if not files:
        return []
    store = artifact_store(space)
    artifact_dir(space).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".upload-", dir=artifact_dir(space)) as tmp:
        for name, write in files.items():
            path = Path(tmp) / name
            write(path)
            upload_artifact(
                artifact_store=store,
                file_path=str(path),
                study_or_trial=target,
                storage=study._storage,
            )
    return list(files)


def _export_zip(study: Any, number: int, path: Path) -> None:
    """``search export --trial N`` as ``path`` (a zip holding ``trial_N/``); the export's own
    paths (in config.yaml and README.md) become ``trial_N``, where it unzips to."""
    from peftsearch.reports.export import export_trial

    top = f"trial_{number}"
    with tempfile.TemporaryDirectory(prefix=".export-", dir=path.parent) as tmp:
        to = export_trial(study, number, Path(tmp) / top)
        with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            for file in sorted(p for p in to.rglob("*") if p.is_file()):
                arcname = f"{top}/{file.relative_to(to).as_posix()}"
                if file.suffix in (".yaml", ".md"):
                    text = file.read_text(encoding="utf-8").replace(str(to), top)
                    zf.writestr(arcname, text)
                else:
                    zf.write(file, arcname)


def upload_study_artifacts(
    study: optuna.Study,
    space: Space,
    report_path: Path | None,
    note: Note = _stderr,
) -> list[str]:
    """Attach the HTML report and each Pareto trial's exported config to the study.

    Call it after each report write. The report is one artifact whose content each call
    replaces; a Pareto trial's ``trial_N_config.zip`` is uploaded once (a trial that later
    leaves the front keeps it).

    Args:
        study: the study.
        space: its space (output directory).
        report_path: the report just written, or None (not written: only the configs).
        note: where a problem is reported; nothing here raises.

    Returns:
        The file names uploaded or replaced now.
    """
    done: list[str] = []
    try:
        storage = study._storage
        have = _names(study, storage)
        if report_path is not None and Path(report_path).is_file():
            if REPORT_NAME in have:
                with open(report_path, "rb") as f:
                    artifact_store(space).write(have[REPORT_NAME], f)
                done.append(REPORT_NAME)
            else:
                done += _upload_files(
                    study,
                    study,
                    space,
                    {REPORT_NAME: lambda p: shutil.copyfile(report_path, p)},
                )
        for t in sorted(front_trials(study), key=lambda t: t.number):
            name = config_name(t.number)
            if name in have:
                continue
            try:
                zip_it = functools.partial(_export_zip, study, t.number)
                done += _upload_files(study, study, space, {name: zip_it})
            except Exception as exc:
                note(f"{name} not stored ({type(exc).__name__}: {exc})")
    except Exception as exc:
        note(f"study artifacts not stored ({type(exc).__name__}: {exc})")
    return done


def write_dashboard_note(study: optuna.Study, space: Space, note: Note = _stderr) -> bool:
    """The study's note and figure in optuna-dashboard: what was searched, the trials by state,
    the Pareto front (trial, metric, parameters, template, prompt, rank) and its knee, and the
    report's Pareto figure (graph object ``pareto``). Rewritten at the end of each run; user
    text goes into Markdown table cells with ``|`` escaped (the dashboard renders no raw HTML).
    Returns whether both were stored; a failure is reported through ``note``, never raised."""
    try:
        import optuna_dashboard

        from peftsearch.reports.confirmed import confirmations
        from peftsearch.reports.figures import pareto_info
        from peftsearch.reports.html import pareto_figure

        metric = space.objectives.metric
        info = pareto_info(study)
        confirmed = confirmations(study)
        optuna_dashboard.save_note(study, _note_text(study, space, info.knee, confirmed))
        optuna_dashboard.save_plotly_graph_object(
            study,
            pareto_figure(info, metric, sorted(confirmed.values(), key=lambda c: c.trainable)),
            graph_object_id="pareto",
        )
        return True
    except Exception as exc:
        note(f"dashboard note not stored ({type(exc).__name__}: {exc})")
        return False


def _cell(value: Any) -> str:
    return str(value).replace("|", "\\|").replace("\n", " ")


def _note_text(study: Any, space: Space, knee: Any, confirmed: dict[int, Any]) -> str:
    """The dashboard note's Markdown: the study, its front (``knee`` starred) and the runs
    at the full budget."""
    from peftsearch.objectives import adapters
    from peftsearch.reports.pareto import pareto_rows
    from peftsearch.reports.select import pick_trial

    metric = space.objectives.metric
    rows = pareto_rows(study)
    sizes = adapters.size_params()  # prompt_length, lora_r, ...: one column per adapter
    states: dict[str, int] = {}
    for t in study.get_trials(deepcopy=False):
        states[t.state.name.lower()] = states.get(t.state.name.lower(), 0) + 1
    searched = ", ".join(_cell(n) for n in sorted(space.params or {}) if n) or "default space"
    lines = [
        f"## peftsearch: {_cell(space.study_name)}",
        "",
        f"Model `{_cell(space.model.path)}`; templates: "
        + ", ".join(f"`{_cell(n)}`" for n in space.templates)
        + f"; searched: {searched}.",
        "",
        "Trials: " + ", ".join(f"{n} {s}" for s, n in sorted(states.items())) + ".",
        "",
        f"### Pareto front ({metric} against trainable parameters)",
        "",
        f"| trial | {_cell(metric)} | confirmed mean +- std (runs) | trainable params "
        "| template | " + "".join(f"{name} | " for name in sizes).rstrip(),
        "|---:|---:|---:|---:|---|" + "---:|" * len(sizes),
    ]
    for r in rows:
        star = " (knee)" if r["trial"] == knee else ""
        c = confirmed.get(r["trial"])
        conf = f"{c.mean:.4f} +- {c.std:.4f} ({c.n})" if c is not None else "-"
        lines.append(
            f"| {r['trial']}{star} | {r['metric']:.4f} | {conf} | {r['trainable_params']:,} | "
            f"{_cell(r['template'])} | " + "".join(f"{r.get(name)} | " for name in sizes).rstrip()
        )
    if confirmed and rows:
        knee_number = pick_trial(study, "knee").number
        lines += [
            "",
            f"Knee by confirmed means (`search export --pick knee`): trial {knee_number}.",
        ]
    lines += _full_budget_lines(study, metric)
    lines += [
        "",
        "The full report (`report.html`) and each front trial's exported config are this "
        "study's artifacts; `search export --pick knee` writes the knee's.",
    ]
    return "\n".join(lines)


def _full_budget_lines(study: Any, metric: str) -> list[str]:
    """A table of the ``search confirm --budget full`` runs (none: no lines)."""
    from peftsearch.reports.confirmed import full_confirmations, full_epochs

    full = [f for e in full_epochs(study) for f in full_confirmations(study, e).values()]
    if not full:
        return []
    lines = [
        "",
        "### At the full budget (`search confirm --budget full`)",
        "",
        f"| trial | epochs | validation {_cell(metric)} mean +- std | test mean +- std "
        "| runs | trainable params |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for f in sorted(full, key=lambda f: (f.trainable, f.trial, f.epochs or 0)):
        (vm, vs), (tm, ts) = f.validation_mean_std, f.test_mean_std
        lines.append(
            f"| {f.trial} | {'own' if f.epochs is None else f.epochs} | {vm:.4f} +- "
            f"{vs:.4f} | {tm:.4f} +- {ts:.4f} | {f.n} | {f.trainable:,} |"
        )
    return lines
