"""The adapter methods as a space dimension: which method's parameters a trial asks and shows,
its kind and its description; the peft configs each method exports."""

from __future__ import annotations

from peft import IA3Config, LoraConfig, TaskType

from peftsearch.objectives import adapters
from peftsearch.objectives.trial import TrialConfig


def test_each_method_shows_its_own_size_only() -> None:
    lora = TrialConfig.from_values({"adapter": "lora", "lora_r": 4, "prompt_length": 2})
    dora = TrialConfig.from_values({"adapter": "dora", "lora_r": 4})
    ia3 = TrialConfig.from_values({"adapter": "ia3", "lora_r": 4})
    none = TrialConfig.from_values({"adapter": "none", "prompt_length": 4})
    assert adapters.sizes(lora) == {"prompt_length": 2, "lora_r": 4}
    assert adapters.sizes(dora) == {"prompt_length": 0, "lora_r": 4}  # DoRA takes LoRA's rank
    assert adapters.sizes(ia3) == {"prompt_length": 0, "lora_r": None}  # not an IA3 thing
    assert adapters.sizes(none)["lora_r"] is None
    kinds = [adapters.kind_of(p) for p in (lora, dora, ia3, none)]
    assert kinds == ["lora+prompt", "dora", "ia3", "prompt"]
    assert adapters.methods_of("lora_r") == {"lora", "dora"}
    assert adapters.methods_of("ia3_learning_rate") == {"ia3"}
    assert adapters.methods_of("prompt_length") is None  # goes with any method


def test_the_exported_peft_config_of_each_method() -> None:
    task = TaskType.SEQ_CLS
    dora = TrialConfig.from_values({"adapter": "dora", "lora_r": 4, "use_rslora": True})
    (config,) = adapters.peft_configs(dora, task).values()
    assert isinstance(config, LoraConfig) and config.use_dora and config.use_rslora
    assert config.r == 4
    ia3 = TrialConfig.from_values({"adapter": "ia3"})
    (config,) = adapters.peft_configs(ia3, task).values()
    assert isinstance(config, IA3Config)  # no model read: peft fills in its default layers
    assert config.target_modules is None and config.feedforward_modules is None
    placed = TrialConfig.from_values({"lora_r": 2, "target_modules": "all-linear"})
    assert adapters.peft_configs(placed, task)[""].target_modules == "all-linear"
    attention = TrialConfig.from_values({"lora_r": 2, "target_modules": ["attention"]})
    regex = adapters.peft_configs(attention, task)[""].target_modules
    import re

    assert re.fullmatch(regex, "bert.encoder.layer.0.attention.self.query")
    assert re.fullmatch(regex, "model.layers.3.self_attn.o_proj")
    assert re.fullmatch(regex, "bert.encoder.layer.0.attention.output.dense")
    assert not re.fullmatch(regex, "bert.encoder.layer.0.output.dense")  # the FFN's
    assert not re.fullmatch(regex, "bert.encoder.layer.0.attention.self")  # not a layer
    both = TrialConfig.from_values({"adapter": "ia3", "prompt_length": 4})
    assert set(adapters.peft_configs(both, task)) == {"", "ia3"}  # IA3 beneath the prompt


def test_the_line_printed_per_trial_names_the_method() -> None:
    from peftsearch.searcher.lines import _summary

    base = {"template": "t", "learning_rate": 1e-3, "head_learning_rate": 0.05}
    lora = _summary(TrialConfig.from_values({**base, "lora_r": 4}))
    ia3 = _summary(TrialConfig.from_values({**base, "adapter": "ia3", "ia3_learning_rate": 0.02}))
    dora = _summary(TrialConfig.from_values({**base, "adapter": "dora", "lora_r": 2}))
    assert lora.startswith("t | prompt 0 | r 4 | lr lora 1.00e-03")
    assert ia3 == "t | prompt 0 | ia3 | lr head 5.00e-02, ia3 2.00e-02"  # no LoRA rank
    assert dora.startswith("t | prompt 0 | r 2 | dora | lr") and "dora 1.00e-03" in dora
    # where the method goes, when not peft's default targets
    wide = _summary(TrialConfig.from_values({**base, "lora_r": 4, "target_modules": "all-linear"}))
    assert wide.startswith("t | prompt 0 | r 4 | all-linear | lr lora")
    assert "default" not in _summary(TrialConfig.from_values({**base, "target_modules": "default"}))


def test_method_of_names_the_method_and_where_it_goes() -> None:
    def of(**values: object) -> str:
        return adapters.method_of(TrialConfig.from_values(values))

    assert of(lora_r=4) == of(lora_r=4, target_modules="default") == "lora"
    assert of(lora_r=4, target_modules="all-linear") == "lora all-linear"
    assert of(adapter="dora", lora_r=2, target_modules="query,key") == "dora query+key"
    assert of(adapter="ia3") == "ia3"
    assert of(lora_r=0) == of(adapter="none", lora_r=4) == "none"
    wide = TrialConfig.from_values({"lora_r": 4, "target_modules": "all-linear"})
    assert adapters.places(wide) == {"target_modules": "all-linear"}
    assert adapters.places(TrialConfig.from_values({"adapter": "ia3"})) == {}
    assert adapters.shape_params() == ["adapter", "prompt_length", "lora_r", "target_modules"]


def test_an_export_lists_only_the_methods_own_parameters() -> None:
    """An IA3 trial's config.yaml leaves LoRA's parameters out: a space giving them beside
    `adapter: ia3` is refused (test_bad_input.py), so the export must not write them."""
    ia3 = adapters.own_params(TrialConfig.from_values({"adapter": "ia3", "lora_alpha": 64}))
    assert not {"lora_r", "lora_alpha", "target_modules", "use_rslora"} & set(ia3)
    assert {"ia3_learning_rate", "prompt_length", "learning_rate", "adapter"} <= set(ia3)
    dora = adapters.own_params(TrialConfig.from_values({"adapter": "dora", "lora_r": 2}))
    assert dora["lora_r"] == 2 and "ia3_learning_rate" not in dora
    from peftsearch.spaces._params import method_problem

    assert all(method_problem(name, ia3) is None for name in ia3)
