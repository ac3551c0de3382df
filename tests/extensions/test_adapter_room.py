"""The adapter room is real: a toy adapter registered from outside ``src/`` (BitFit, in
``tests/extensions/bitfit.py``) is searched, trained in the packed engine beside the built-in
adapters, stopped at rungs, reported, exported and trained by ``search train``, with no file
under ``src/`` naming it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from optuna.trial import TrialState

from peftsearch.objectives import adapters
from peftsearch.spaces import DEFAULT_PARAMS, RULES, load_space
from tests.conftest import space_dict
from tests.extensions.bitfit import BitFit

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture
def bitfit():
    """BitFit registered for one test; the registries as they were afterwards."""
    from peftsearch.spaces import _params

    saved = (dict(adapters.ADAPTERS), dict(RULES), dict(_params.OWNERS))
    saved_defaults = {k: dict(v) for k, v in DEFAULT_PARAMS.items()}
    adapter = adapters.register(BitFit())
    yield adapter
    adapters.ADAPTERS.clear()
    adapters.ADAPTERS.update(saved[0])
    RULES.clear()
    RULES.update(saved[1])
    _params.OWNERS.clear()
    _params.OWNERS.update(saved[2])
    DEFAULT_PARAMS.clear()
    DEFAULT_PARAMS.update(saved_defaults)


def test_registering_adds_the_parameters_and_refuses_a_second_one(bitfit) -> None:
    assert list(RULES)[-2:] == ["bitfit", "bitfit_learning_rate"]  # after every built-in one
    assert DEFAULT_PARAMS["classifier"]["bitfit"].choices == [0, 1]
    with pytest.raises(ValueError, match="already registered"):
        adapters.register(BitFit())
    defaults = {n: r.default for n, r in RULES.items()}
    assert adapters.kind_of({**defaults, "bitfit": 1, "lora_r": 0}) == "bitfit"
    assert adapters.kind_of({**defaults, "bitfit": 1, "prompt_length": 2}) == "bitfit+lora+prompt"
    # The line printed per trial names its size and its own rate.
    from peftsearch.searcher.lines import _summary

    line = _summary({**defaults, "template": "t", "bitfit": 1, "bitfit_learning_rate": 0.05})
    assert line == "t | prompt 0 | r 8 | bitfit 1 | lr lora 1.00e-03, bitfit 5.00e-02"


def test_a_toy_adapter_is_searched_pruned_reported_exported_and_trained(
    bitfit, tmp_path: Path, tiny_model: Path, sentiment_csv: Path
) -> None:
    from peftsearch.objectives.production import predict, train_exported
    from peftsearch.reports.export import export_trial
    from peftsearch.searcher import open_study, run_study

    raw = space_dict(
        tiny_model,
        sentiment_csv,
        tmp_path / "out",
        study={"name": "bitfit", "n_trials": 8, "seed": 0, "pruner": "moasha"},
    )
    raw["params"].update(
        bitfit={"type": "categorical", "choices": [0, 1]},
        bitfit_learning_rate=0.05,
        lora_r={"type": "categorical", "choices": [0, 2]},
        epochs=2,
    )
    raw["study"]["enqueue"] = [
        {"template": "plain", "bitfit": 1, "lora_r": 0, "prompt_length": 0},
        {"template": "plain", "bitfit": 1, "lora_r": 2, "prompt_length": 2},
        {"template": "review", "bitfit": 0, "lora_r": 0, "prompt_length": 0},
        {"template": "review", "bitfit": 0, "lora_r": 0, "prompt_length": 2},
    ]
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(raw, sort_keys=False), encoding="utf-8")
    space = load_space(path)
    outcome = run_study(space, show_progress=False)
    study = open_study(space, create=False)
    trials = study.get_trials(deepcopy=False)
    assert sum(outcome.counts.values()) == 8

    # Trained: BitFit alone has the head's parameters plus one bias per linear layer.
    alone = trials[0]
    assert alone.state == TrialState.COMPLETE and alone.params["bitfit"] == 1
    head_only = trials[2].values[1]
    biases = alone.values[1] - head_only
    assert biases > 0 and biases == sum(
        m.out_features for m in _linears(space).values() if m.bias is not None
    )
    assert alone.user_attrs["train_steps"] == alone.user_attrs["planned_steps"] > 0
    # With the built-in adapters in the same trial: their parameters add up.
    both = trials[1]
    assert both.user_attrs["trainable_params"] > alone.user_attrs["trainable_params"]
    # Successive halving stopped some trial at a rung (the pruner does not know the kinds).
    assert outcome.counts.get("pruned", 0) >= 1, outcome.counts

    # Reported: the Pareto table and CSV have its size column, the export its kind.
    report = (space.output_dir / "report.html").read_text(encoding="utf-8")
    assert "<th>prompt_length</th><th>lora_r</th><th>bitfit</th>" in report
    csv = (space.output_dir / "pareto.csv").read_text(encoding="utf-8").splitlines()
    assert "prompt_length,lora_r,bitfit,target_modules," in csv[0]
    assert csv[0].endswith(",lr_bitfit,train_seconds,template_text")  # its own rate column
    exported = export_trial(study, alone.number, tmp_path / "export")
    provenance = json.loads((exported / "export.json").read_text(encoding="utf-8"))
    assert provenance["kind"] == "bitfit"
    config = yaml.safe_load((exported / "config.yaml").read_text(encoding="utf-8"))
    assert config["params"]["bitfit"] == 1
    assert "BitFit (the linear layers' biases)" in (exported / "README.md").read_text("utf-8")
    optimizer = json.loads((exported / "optimizer.json").read_text(encoding="utf-8"))
    assert {"part": "bitfit", "lr": 0.05} in optimizer["groups"]

    # search train: no peft config, so the whole model is saved and loads plainly.
    summary = train_exported(exported / "config.yaml", quiet=True, checkpoint_every=0)
    saved = Path(summary["saved"])
    assert not (saved / "adapter_config.json").exists() and (saved / "config.json").is_file()
    assert summary["trainable_params"] == alone.values[1]
    (row,) = predict(saved, ["a fine film"])
    assert set(row["scores"]) == {"neg", "pos"}
    # What trained is exactly the linear layers' biases (and the head): every other weight,
    # layer norms' biases included, is the base's.
    trained, base = _weights(saved), _weights(Path(space.model.path))
    changed = {k for k in base if k in trained and not bool((trained[k] == base[k]).all())}
    linear_biases = {
        f"{n.removeprefix('bert.')}.bias" for n, m in _linears(space).items() if m.bias is not None
    }
    assert changed - {"classifier.weight", "classifier.bias"} == linear_biases


def _weights(model_dir: Path) -> dict:
    from safetensors.torch import load_file

    (file,) = model_dir.glob("*.safetensors")
    return {k.removeprefix("bert."): v for k, v in load_file(file).items()}


def _linears(space) -> dict:
    """The tiny model's linear layers outside its head, as the engine sees them."""
    import torch
    from transformers import AutoModelForSequenceClassification

    model = AutoModelForSequenceClassification.from_pretrained(space.model.path, num_labels=2)
    return {
        n: m
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and n.split(".")[0] != "classifier"
    }
