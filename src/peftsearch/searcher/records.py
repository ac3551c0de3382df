"""What a study records once, beside its trials: the search space, data split and model
(study attributes and ``<output>/splits.json``), the label words found for
``verbalizers: {auto: ...}``, and the untrained (zero-shot) scores of a verbalizer head."""

from __future__ import annotations

import json
import os
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from peftsearch.errors import UserError
from peftsearch.searcher._runner import Runner, finds_words, scores_zero_shot
from peftsearch.searcher.storage import mask_url
from peftsearch.searcher.suggest import fixed_params
from peftsearch.spaces import CategoricalDist, IntDist, Space


def _warn(line: str) -> None:
    print(f"warning: {line}", file=sys.stderr)


def _write_json_atomic(path: Path, data: Any) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _record_study(
    study: Any, space: Space, runner: Runner, out: Path, warn: Callable[[str], None] = _warn
) -> None:
    """Study-level attributes (once), the split record, and a warning if the space changed."""
    searched = {
        k: (v.model_dump(mode="json") if hasattr(v, "model_dump") else v)
        for k, v in space.search_params().items()
    }
    attrs = study.user_attrs
    if "search_space" in attrs and attrs["search_space"] != json.loads(json.dumps(searched)):
        warn(
            f"{space.file}: params differ from the search space this study started "
            "with; its earlier trials stay, so compare them with care"
        )
    if "search_space" not in attrs:
        _record_space(study, space, runner, searched)
    record = out / "splits.json"
    if not record.exists():
        _write_json_atomic(record, runner.splits.record)
    elif json.loads(record.read_text(encoding="utf-8")).get("rows") != runner.splits.record["rows"]:
        warn(
            f"{space.file}: the data split differs from the one recorded in {record}; "
            "earlier trials were scored on other rows"
        )


def _record_space(study: Any, space: Space, runner: Runner, searched: dict[str, Any]) -> None:
    """The study attributes of a new study: what it searches and on which model and data."""
    splits = runner.splits
    study.set_user_attr("search_space", searched)
    study.set_user_attr("fixed_params", fixed_params(space))
    study.set_user_attr("metric", space.objectives.metric)
    study.set_user_attr("model", space.model.path)
    study.set_user_attr(
        "data",
        {
            "source": splits.record["source"],
            "sha256": splits.record["sha256"],
            "sizes": splits.summary(),
            "split": splits.record["split"],
            "labels": list(space.data.labels),
        },
    )
    study.set_user_attr("base_params", runner.base_params)
    dump = space.model_dump(mode="json", exclude={"params"})
    if dump["study"].get("storage"):  # readable by anyone with the database: no password
        dump["study"]["storage"] = mask_url(dump["study"]["storage"])
    study.set_user_attr("space", {**dump, "params": searched})


def found_words(
    study: Any, space: Space, runner: Runner | None = None, warn: Callable[[str], None] = _warn
) -> Space:
    """``verbalizers: {auto: ...}``: ``space`` with the found verbalizers' words, found once
    per study by ``runner`` and stored as the ``auto_verbalizers`` study attribute (several
    workers that find them at once find the same words: the search is deterministic).
    Without a runner, the stored words only (an error when there are none yet)."""
    if space.auto_verbalizers is None:
        return space
    stored = study.user_attrs.get("auto_verbalizers")
    if stored is None:
        if runner is None or not finds_words(runner):
            raise UserError(
                f"study {space.study_name!r} holds no found label words yet "
                "(verbalizers.auto): `search run` finds them first"
            )
        stored = {**runner.find_label_words(), "config": space.auto_verbalizers.model_dump()}
        study.set_user_attr("auto_verbalizers", stored)
    elif stored.get("config", space.auto_verbalizers.model_dump()) != (
        space.auto_verbalizers.model_dump()
    ):
        warn(
            f"{space.file}: verbalizers.auto differs from the one this study found its words "
            f"with ({stored['config']}); the stored words stay"
        )
    space = space.with_words(stored["words"])
    if runner is not None:
        runner.space = space
    return space


def demo_counts(space: Space) -> list[int]:
    """The demonstration counts per class (above 0) that the space searches or fixes."""
    spec = space.search_params().get("n_demos") or 0
    if isinstance(spec, CategoricalDist):
        values: Any = spec.choices
    elif isinstance(spec, IntDist):
        values = range(spec.low, spec.high + 1, spec.step)
    else:
        values = [spec]
    return sorted({int(v) for v in values if v})


def _record_zero_shot(study: Any, space: Space, runner: Runner) -> list[str]:
    """Score every template (x verbalizer) untrained, once per study (stored as the
    ``zero_shot`` study attribute), so the report can show what training adds (a task with
    no zero-shot score, a new random head's, stores nothing);
    with demonstrations searched (``n_demos``), also with each searched count per class
    (``zero_shot_demos``: {count: {template: {verbalizer: score}}}).
    Returns lines to show (none when already stored)."""
    if not scores_zero_shot(runner) or study.user_attrs.get("zero_shot"):
        return []
    scores = runner.zero_shot()
    if not scores:  # the task has no zero-shot score (a new random head)
        return []
    metric = space.objectives.metric
    lines = []
    counts = demo_counts(space)
    by_count: dict[str, Any] = {}
    for k in counts:
        by_count[str(k)] = runner.zero_shot(k)
        lines += [
            f"zero-shot {metric} with {k} demonstration(s) per class: template {t}{_by(v)}: "
            f"{value:.4f}"
            for t, by_v in by_count[str(k)].items()
            for v, value in by_v.items()
        ]
    if by_count:
        study.set_user_attr("zero_shot_demos", by_count)
    examples = getattr(runner, "zero_shot_examples", None)
    if examples:  # a task that writes text: what the untrained model wrote, per template
        study.set_user_attr("zero_shot_examples", examples)
    study.set_user_attr("zero_shot", scores)
    return [
        f"zero-shot {metric} (no training): template {t}{_by(v)}: {value:.4f}"
        for t, by_v in scores.items()
        for v, value in by_v.items()
    ] + lines


def _by(verbalizer: str) -> str:
    """`` x verbalizer V`` (nothing for a task without verbalizers: the key ``None``)."""
    return "" if verbalizer == "None" else f" x verbalizer {verbalizer}"
