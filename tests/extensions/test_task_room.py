"""The task room is real: a toy task registered from outside ``src/`` (label smoothing, in
``tests/extensions/smooth.py``) is chosen by ``task:`` in a space file, and its loss is what
the search's packed engine and ``search train``'s loop minimize; the study reports, exports
and trains it like any classifier."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import yaml

from peftsearch.errors import SpaceError
from peftsearch.objectives import tasks
from peftsearch.spaces import _params, load_space
from tests.conftest import space_dict
from tests.extensions.smooth import EPS, Smoothed

pytestmark = pytest.mark.usefixtures("one_thread")

# With label smoothing the loss cannot fall below the entropy of the smoothed target.
FLOOR = -((1 - EPS / 2) * math.log(1 - EPS / 2) + (EPS / 2) * math.log(EPS / 2))


@pytest.fixture
def smooth():
    saved = (dict(tasks.TASKS), dict(_params.TASKS))
    task = tasks.register(Smoothed())
    yield task
    tasks.TASKS.clear()
    tasks.TASKS.update(saved[0])
    _params.TASKS.clear()
    _params.TASKS.update(saved[1])


def _space(tmp_path: Path, model: Path, data: Path, name: str, **extra) -> Path:
    raw = space_dict(
        model,
        data,
        tmp_path / name,
        study={"name": name, "n_trials": 1, "seed": 0},
        **extra,
    )
    raw["params"].update(lora_r=0, prompt_length=0, learning_rate=0.1, epochs=6)
    path = tmp_path / f"{name}.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    return path


def test_an_unknown_task_is_one_line_naming_the_key(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    path = _space(tmp_path, tiny_model, sentiment_csv, "bad", task="smooth")
    with pytest.raises(SpaceError, match=r"task.*no task 'smooth'; tasks: classify, verbalize"):
        load_space(path)


def test_a_toy_task_trains_with_its_own_loss_and_goes_to_production(
    smooth, tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    from peftsearch.objectives.production import train_exported
    from peftsearch.reports.export import export_trial
    from peftsearch.searcher import open_study, run_study

    curves = {}
    for task in ("classify", "smooth"):
        space = load_space(_space(tmp_path, tiny_model, sentiment_csv, task, task=task))
        assert space.task_name == task
        assert run_study(space, show_progress=False).counts == {"complete": 1}
        study = open_study(space, create=False)
        curves[task] = study.trials[0].user_attrs["train_loss_curve"]
        sizes = study.user_attrs["data"]["sizes"]
    # The engine trained and scored the trial with the task's loss (its train rows x 6
    # epochs, its eval rows), and the same trial (same seed, data, head) gave another curve.
    assert smooth.rows["engine"] == sizes["trial_train"] * 6 + sizes["trial_eval"]
    assert curves["smooth"] != curves["classify"]
    assert min(curves["smooth"]) > FLOOR  # label smoothing's floor
    assert abs(curves["smooth"][0] - curves["classify"][0]) < 0.01  # the same start

    exported = export_trial(study, 0, tmp_path / "export")
    config = yaml.safe_load((exported / "config.yaml").read_text(encoding="utf-8"))
    assert config["task"] == "smooth"
    summary = train_exported(exported / "config.yaml", quiet=True, checkpoint_every=0)
    assert smooth.rows["loop"] == summary["train_rows"] * 6  # search train's loop, its loss
    record = json.loads((Path(summary["saved"]) / "training.json").read_text(encoding="utf-8"))
    assert record["train_steps"] > 0
    assert 0.0 <= summary["test_accuracy"] <= 1.0
