"""`search export`: one trial of a real tiny study, written as a directory that stands alone."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.distributions import CategoricalDistribution, FloatDistribution
from optuna.trial import TrialState

from peftsearch.errors import UserError
from peftsearch.reports import export as export_mod
from peftsearch.reports.export import export_trial, neighbours, trial_params
from peftsearch.reports.select import pick_trial
from peftsearch.searcher import open_study, run_study
from peftsearch.spaces import RULES, CategoricalDist, FloatDist, IntDist, load_space, template_text
from tests.conftest import run_cli, space_dict

pytestmark = pytest.mark.usefixtures("one_thread")

# One enqueued trial per adapter kind: numbers 0..3 are head, lora, prompt, lora+prompt.
ENQUEUE = [
    {"template": "review", "prompt_length": 0, "lora_r": 0, "learning_rate": 0.02},
    {"template": "plain", "prompt_length": 0, "lora_r": 2, "learning_rate": 0.01},
    {"template": "review", "prompt_length": 2, "lora_r": 0, "learning_rate": 0.02},
    {"template": "review", "prompt_length": 2, "lora_r": 4, "learning_rate": 0.015},
]
KINDS = ["head", "lora", "prompt", "lora+prompt"]
# Non-default fixed values, so the export must carry the study's fixed params, not RULES'.
FIXED = {"lora_alpha": 8, "weight_decay": 0.01, "warmup_ratio": 0.1, "batch_size": 16}
# Synthetic complete trials that make a front with a distinct knee, best and budget pick. The
# first dominates every real trial of the tiny study (34+ params, accuracy far below 0.96), so
# the front is these three whatever the real trials score.
SYNTHETIC = [(0.96, 30), (0.98, 2_000), (0.99, 50_000)]
FAILED = 7  # the number of the failed trial added after those


@pytest.fixture(scope="module")
def study_space(tmp_path_factory, tiny_model: Path, sentiment_csv: Path) -> Path:
    root = tmp_path_factory.mktemp("export_study")
    raw = space_dict(
        tiny_model,
        sentiment_csv,
        root / "out",
        study={"name": "tiny", "n_trials": 4, "seed": 3, "enqueue": ENQUEUE},
    )
    raw["params"].update(FIXED)
    path = root / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    space = load_space(path)
    assert run_study(space, show_progress=False).counts == {"complete": 4}
    study = open_study(space, create=False)
    dists = {
        "template": CategoricalDistribution(["plain", "review"]),
        "prompt_length": CategoricalDistribution([0, 2]),
        "lora_r": CategoricalDistribution([0, 2, 4]),
        "learning_rate": FloatDistribution(1e-3, 3e-2, log=True),
    }
    for metric, params in SYNTHETIC:
        study.add_trial(
            optuna.trial.create_trial(
                values=[metric, params],
                distributions=dists,
                params={
                    "template": "plain",
                    "prompt_length": 0,
                    "lora_r": 4,
                    "learning_rate": 0.01,
                },
                user_attrs={"template_text": "{text}", "trainable_pct": params / 74.74},
            )
        )
    failed = study.ask()
    failed.set_user_attr("fail_reason", "out of memory: testing")
    study.tell(failed, state=TrialState.FAIL)
    assert failed.number == FAILED
    return path


@pytest.fixture(scope="module")
def study(study_space: Path):
    return open_study(load_space(study_space), create=False)


@pytest.mark.parametrize("number", range(4), ids=KINDS)
def test_export_is_a_standalone_directory(study, study_space, tmp_path, number) -> None:
    trial = study.trials[number]
    to = export_trial(study, number, tmp_path / "exp")
    assert to == (tmp_path / "exp").resolve()
    names = {p.name for p in to.iterdir()}
    assert {"config.yaml", "training_args.json", "README.md", "export.json"} <= names
    assert ("adapter_config.json" in names) == (KINDS[number] != "head")
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temp dir left

    # config.yaml: a valid space file, every parameter fixed to what the trial ran with.
    config = load_space(to / "config.yaml")
    search = config.search_params()
    assert set(search) == set(RULES)
    assert not [
        n for n, s in search.items() if isinstance(s, CategoricalDist | FloatDist | IntDist)
    ]
    ran = {**study.user_attrs["fixed_params"], **trial.params}
    assert {n: search[n] for n in ran} == ran
    assert search["lora_alpha"] == 8 and search["warmup_ratio"] == 0.1
    assert list(config.templates) == [trial.params["template"]]
    assert (
        template_text(config.templates[trial.params["template"]])
        == (trial.user_attrs["template_text"])
    )
    original = load_space(study_space)
    assert Path(config.model.path).is_absolute() and config.model.path == original.model.path
    assert config.data.path == original.data.path and Path(str(config.data.path)).is_absolute()
    assert config.data.split == original.data.split
    assert (config.data.train_size, config.data.eval_size) == (160, 60)
    assert config.study.seed == 3 and config.objectives.metric == "accuracy"
    assert config.study.storage is None and config.study.enqueue == []
    header = (to / "config.yaml").read_text(encoding="utf-8").split("\n\n")[0]
    assert "study 'tiny'" in header and f"trial {number}" in header
    assert f"accuracy: {trial.values[0]:.6g}" in header
    assert f"{int(trial.values[1]):,}" in header
    assert "FULL train split" in header and "TEST split" in header

    # adapter_config.json: peft's own format.
    from peft import LoraConfig, PromptTuningConfig

    if KINDS[number] == "lora":
        lora = LoraConfig.from_pretrained(str(to))
        assert (lora.r, lora.lora_alpha) == (trial.params["lora_r"], 8)
    elif KINDS[number] == "prompt":
        prompt = PromptTuningConfig.from_pretrained(str(to))
        assert prompt.num_virtual_tokens == trial.params["prompt_length"]
    elif KINDS[number] == "lora+prompt":
        prompt = PromptTuningConfig.from_pretrained(str(to))
        assert prompt.num_virtual_tokens == 2
        lora = LoraConfig.from_pretrained(str(to / "lora"))
        assert lora.r == trial.params["lora_r"] == 4
    types = {
        sub: json.loads((to / sub / "adapter_config.json").read_text(encoding="utf-8"))["peft_type"]
        for sub in ("", "lora")
        if (to / sub / "adapter_config.json").exists()
    }
    assert (
        types
        == {
            "head": {},
            "lora": {"": "LORA"},
            "prompt": {"": "PROMPT_TUNING"},
            "lora+prompt": {"": "PROMPT_TUNING", "lora": "LORA"},
        }[KINDS[number]]
    )

    # training_args.json: real TrainingArguments fields with the trial's values.
    from transformers import TrainingArguments

    targs = json.loads((to / "training_args.json").read_text(encoding="utf-8"))
    built = TrainingArguments(**targs)
    assert built.learning_rate == trial.params["learning_rate"]
    assert built.per_device_train_batch_size == 16
    assert built.num_train_epochs == 1 and built.max_steps == -1
    assert built.weight_decay == 0.01 and built.warmup_steps == 0.1
    assert built.seed == 3 and built.max_grad_norm == 1.0
    assert str(getattr(built.lr_scheduler_type, "value", built.lr_scheduler_type)) == "linear"

    # optimizer.json: a peak rate per part the trial trains (the head always; rates not set
    # in the space follow learning_rate; LoRA's B is a part of its own, LoRA+'s, at the same
    # rate here: loraplus_lr_ratio 1).
    groups = json.loads((to / "optimizer.json").read_text(encoding="utf-8"))["groups"]
    want = ["lora", "lora_B"] * (trial.params["lora_r"] > 0) + ["prompt"] * (
        trial.params["prompt_length"] > 0
    )
    assert [g["part"] for g in groups] == [*want, "head"]
    assert all(g["lr"] == trial.params["learning_rate"] for g in groups)

    readme = (to / "README.md").read_text(encoding="utf-8")
    assert f"# Trial {number} of study `tiny`" in readme
    assert "optimizers=(opt, None)" in readme
    assert f"search train {to / 'config.yaml'}" in readme
    assert f"{trial.values[0]:.4f}" in readme
    provenance = json.loads((to / "export.json").read_text(encoding="utf-8"))
    assert provenance["trial"] == number and provenance["kind"] == KINDS[number]
    assert provenance["data"]["sha256"] == study.user_attrs["data"]["sha256"]


def test_the_config_reruns_the_trial_to_the_same_metric(study, tmp_path) -> None:
    """`search run config.yaml` repeats the trial: the config holds everything it needs."""
    trial = study.trials[3]
    to = export_trial(study, 3, tmp_path / "exp")
    space = load_space(to / "config.yaml")
    assert space.output_dir == to / "rerun"
    run_study(space, show_progress=False)
    (again,) = open_study(space, create=False).trials
    assert again.values == trial.values
    assert again.user_attrs["template_text"] == trial.user_attrs["template_text"]


def test_readme_names_the_pareto_neighbours(study, tmp_path) -> None:
    # The synthetic 2,000-param trial (number 5) sits between 30 (4) and 50,000 (6).
    assert sorted(t.number for t in study.best_trials) == [4, 5, 6]
    to = export_trial(study, 5, tmp_path / "exp")
    readme = (to / "README.md").read_text(encoding="utf-8")
    assert "| next smaller Pareto trial | 4 | 0.9600 | 30 |" in readme
    assert "| next larger Pareto trial | 6 | 0.9900 | 50,000 |" in readme
    assert "on the Pareto front" in readme


def test_neighbours_of_front_and_dominated_trials() -> None:
    study = optuna.create_study(directions=["maximize", "minimize"])
    for values in [(0.6, 1_000), (0.8, 10_000), (0.81, 1_000_000), (0.7, 20_000)]:
        study.add_trial(optuna.trial.create_trial(values=list(values)))
    mid = neighbours(study, study.trials[1])
    assert mid["on_front"] and mid["picks"] == ["knee"]
    assert (mid["smaller"]["trial"], mid["larger"]["trial"]) == (0, 2)
    first = neighbours(study, study.trials[0])
    assert first["smaller"] is None and first["larger"]["trial"] == 1
    dominated = neighbours(study, study.trials[3])
    assert not dominated["on_front"] and dominated["dominated_by"]["trial"] == 1
    assert (dominated["smaller"]["trial"], dominated["larger"]["trial"]) == (1, 2)
    assert neighbours(study, study.trials[2])["picks"] == ["best"]


def test_trial_params_split_searched_module_lists(study) -> None:
    trial = optuna.trial.create_trial(
        values=[0.5, 10],
        params={"target_modules": "query,value"},
        distributions={"target_modules": CategoricalDistribution(["query", "query,value"])},
    )
    assert trial_params(study, trial)["target_modules"] == ["query", "value"]


@pytest.mark.parametrize(
    ("number", "message"),
    [(FAILED, "is FAIL (out of memory: testing); only a COMPLETE"), (99, "has no trial 99")],
)
def test_only_complete_trials_export(study, tmp_path, number, message) -> None:
    with pytest.raises(UserError) as err:
        export_trial(study, number, tmp_path / "exp")
    assert message in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "exp").exists()


def test_existing_target_and_failures_leave_nothing_behind(study, tmp_path, monkeypatch) -> None:
    (tmp_path / "taken").mkdir()
    with pytest.raises(UserError, match="already exists"):
        export_trial(study, 1, tmp_path / "taken")

    def boom(*args, **kwargs):
        raise RuntimeError("disk full")

    monkeypatch.setattr(export_mod, "_readme", boom)
    with pytest.raises(RuntimeError, match="disk full"):
        export_trial(study, 1, tmp_path / "exp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]

    monkeypatch.undo()
    real = Path.write_text

    def fail_late(self, *args, **kwargs):
        if self.name == "README.md":
            raise OSError("disk full")
        return real(self, *args, **kwargs)

    monkeypatch.setattr(Path, "write_text", fail_late)
    with pytest.raises(OSError, match="disk full"):
        export_trial(study, 1, tmp_path / "exp")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


@pytest.mark.parametrize(
    "pick", [["knee"], ["best"], ["max-params", "1000"]], ids=["knee", "best", "max-params"]
)
def test_cli_export_pick_agrees_with_pick_trial(study, study_space, tmp_path, pick) -> None:
    how, budget = pick[0], (int(pick[1]) if len(pick) > 1 else None)
    want = pick_trial(study, how, budget).number
    to = tmp_path / "picked"
    proc = run_cli("export", str(study_space), "--pick", *pick, "--to", str(to))
    assert proc.returncode == 0, proc.stderr
    assert f"exported trial {want}: {to}" in proc.stdout
    assert json.loads((to / "export.json").read_text(encoding="utf-8"))["trial"] == want
    assert load_space(to / "config.yaml").study.name == f"tiny-trial-{want}"


def test_picks_differ_on_this_front(study) -> None:
    """The CLI test above is only worth something if the three picks choose different trials."""
    assert len({pick_trial(study, h, 1000).number for h in ("knee", "best", "max-params")}) == 3


def test_cli_export_refuses_a_failed_trial(study_space, tmp_path) -> None:
    proc = run_cli("export", str(study_space), "--trial", str(FAILED), "--to", str(tmp_path / "x"))
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1 and "only a COMPLETE trial" in proc.stderr
    assert not (tmp_path / "x").exists()
