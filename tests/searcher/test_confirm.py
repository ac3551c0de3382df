"""`search confirm`: the front's trials trained again on other seeds, each run stored on the
study as it finishes (a rerun trains only what is missing), read by the report and the picks."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from peftsearch.errors import UserError
from peftsearch.objectives import runner as runner_mod
from peftsearch.objectives.runner import TrialRunner
from peftsearch.reports.confirmed import confirm_key, confirmations, spearman
from peftsearch.reports.html import write_report
from peftsearch.reports.select import pick_trial
from peftsearch.reports.trials import front_trials, trial_params
from peftsearch.searcher import open_study, run_study
from peftsearch.searcher.confirm import run_confirm
from peftsearch.spaces import load_space
from tests.conftest import plain_study, run_cli, space_dict

pytestmark = pytest.mark.usefixtures("one_thread")
ENQUEUE = [
    {"template": "review", "prompt_length": 0, "lora_r": 0, "learning_rate": 0.02},
    {"template": "plain", "prompt_length": 2, "lora_r": 4, "learning_rate": 0.01},
    {"template": "plain", "prompt_length": 0, "lora_r": 2, "learning_rate": 0.03},
]


@pytest.fixture(scope="module")
def space_file(tmp_path_factory, tiny_model: Path, sentiment_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("confirm")
    raw = space_dict(
        tiny_model,
        sentiment_csv,
        root / "out",
        study={"name": "conf", "n_trials": 3, "seed": 1, "enqueue": ENQUEUE},
    )
    plain_study(raw)
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    run_study(load_space(path), show_progress=False)
    return path


def _count_adds(monkeypatch) -> list[tuple[Any, int | None]]:
    calls: list[tuple[Any, int | None]] = []
    real = runner_mod.RunnerPack.add

    def add(self, key, params, seed=None):
        calls.append((key, seed))
        return real(self, key, params, seed)

    monkeypatch.setattr(runner_mod.RunnerPack, "add", add)
    return calls


def test_confirm_trains_each_front_trial_on_new_seeds_and_stores_each_run(
    space_file: Path, monkeypatch
) -> None:
    space = load_space(space_file)
    calls = _count_adds(monkeypatch)
    found = run_confirm(space, "front", seeds=1, show_progress=False)
    study = open_study(space, create=False)
    front = sorted(t.number for t in front_trials(study))
    assert sorted(found) == front and sorted(k for k, _ in calls) == [(n, 2) for n in front]
    assert {s for _, s in calls} == {2}  # study seed 1: the extra seed is 2
    for n in front:
        stored = study.user_attrs[confirm_key(n, 2)]
        assert 0.0 <= stored["metric"] <= 1.0 and stored["train_steps"] > 0
        assert found[n].n == 2 and found[n].runs == {2: stored["metric"]}
    # The stored run is what that configuration gives with seed 2 (and seeds do matter).
    n = front[0]
    pack = TrialRunner(space).pack(1)
    pack.add("check", trial_params(study, study.trials[n]), 2)
    done: list[Any] = []
    while len(pack):
        done += pack.step()
    ((_, again),) = done
    assert again.metric == study.user_attrs[confirm_key(n, 2)]["metric"]
    assert again.attrs["eval_loss"] != study.trials[n].user_attrs["eval_loss"]

    # Asking for 2 seeds now trains only the missing one per trial; asking again, nothing.
    calls.clear()
    found = run_confirm(space, "front", seeds=2, show_progress=False)
    assert sorted(k for k, _ in calls) == [(n, 3) for n in front]
    assert all(c.n == 3 for c in found.values())
    calls.clear()
    run_confirm(space, "front", seeds=2, show_progress=False)
    assert calls == []


def test_the_report_the_picks_and_the_export_use_the_confirmed_means(
    space_file: Path, tmp_path: Path
) -> None:
    from peftsearch.reports.export import export_trial

    space = load_space(space_file)
    run_confirm(space, "front", seeds=1, show_progress=False)
    study = open_study(space, create=False)
    confirmed = confirmations(study)
    page = write_report(study, tmp_path / "r.html").read_text(encoding="utf-8")
    assert 'id="confirmed"' in page
    for c in confirmed.values():
        assert f"{c.mean:.4f} &plusmn; {c.std:.4f}" in page
    best = max(front_trials(study), key=lambda t: (confirmed[t.number].mean, -t.values[1]))
    assert pick_trial(study, "best").number == best.number
    readme = (export_trial(study, best.number, tmp_path / "e") / "README.md").read_text("utf-8")
    assert "`search confirm` trained it on" in readme
    from optuna_dashboard._note import get_note_from_system_attrs

    attrs = study._storage.get_study_system_attrs(study._study_id)
    note = get_note_from_system_attrs(attrs, None)["body"]
    for c in confirmed.values():
        assert f"{c.mean:.4f} +- {c.std:.4f} ({c.n})" in note
    assert "Knee by confirmed means (`search export --pick knee`): trial " in note


def test_bad_choices_are_refused_with_the_reason(space_file: Path) -> None:
    space = load_space(space_file)
    with pytest.raises(UserError, match="trial 99 is not a completed"):
        run_confirm(space, "99", seeds=1, show_progress=False)
    with pytest.raises(UserError, match="not a trial number"):
        run_confirm(space, "front,1", seeds=1, show_progress=False)
    with pytest.raises(UserError, match="--seeds must be at least 1"):
        run_confirm(space, "front", seeds=0, show_progress=False)


def test_spearman() -> None:
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    assert spearman([1, 2], [1, 2]) is None and spearman([1, 2, 3], [5, 5, 5]) is None


def test_cli_confirm_prints_each_trial(space_file: Path) -> None:
    proc = run_cli("confirm", str(space_file), "--trials", "0", "--seeds", "1", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    assert "confirmed mean +- std (n)" in proc.stdout
    assert proc.stdout.splitlines()[1].split()[0] == "0"
