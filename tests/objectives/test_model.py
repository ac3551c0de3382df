"""The PEFT build of one trial: exact trainable counts, which parameters learn, the base untouched.

Counts are checked against arithmetic written out here for the tiny BERT of ``tests/conftest.py``
(hidden 16, 2 layers, 2 labels), not against another call into peft.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from peftsearch.objectives.model import PeftPlan, build, count_params, load_base
from peftsearch.spaces import ModelSpec
from tests.conftest import HIDDEN, LABELS, LAYERS

# The classification head: a Linear(HIDDEN -> LABELS) with bias.
HEAD = HIDDEN * LABELS + LABELS  # 16*2 + 2 = 34


def lora_count(r: int, modules: int = 2) -> int:
    """LoRA on ``modules`` Linear(HIDDEN -> HIDDEN) per layer: A is r x HIDDEN, B is HIDDEN x r."""
    return modules * LAYERS * r * (HIDDEN + HIDDEN)


def test_hand_arithmetic_matches_the_numbers() -> None:
    # Written out once, so a change of the tiny model's shape shows up here first.
    assert HEAD == 34
    assert lora_count(2) == 2 * 2 * 2 * 32 == 256
    assert lora_count(2, modules=1) == 128


@pytest.fixture(scope="module")
def base(tiny_model: Path):
    model, _ = load_base(ModelSpec(path=str(tiny_model)), num_labels=LABELS, seed=0)
    model.requires_grad_(False)  # as TrialRunner.setup leaves it
    return model


@pytest.fixture(scope="module")
def batch(tiny_model: Path) -> dict[str, torch.Tensor]:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(tiny_model))
    enc = tok(
        ["the film was good", "a dull and boring plot", "lovely cast", "the story was weak"],
        padding=True,
        return_tensors="pt",
    )
    return {
        "input_ids": enc["input_ids"],
        "attention_mask": enc["attention_mask"],
        "labels": torch.tensor([1, 0, 1, 0]),
    }


def test_load_base_shape(base) -> None:
    assert base.config.hidden_size == HIDDEN
    assert base.config.num_hidden_layers == LAYERS
    assert base.classifier.out_features == LABELS
    assert count_params(base) == 0  # frozen
    assert count_params(base, trainable=False) == sum(p.numel() for p in base.parameters())


def test_neither_trains_only_the_head(base) -> None:
    model = build(base, PeftPlan())
    assert count_params(model) == HEAD
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert names == {"classifier.weight", "classifier.bias"}


@pytest.mark.parametrize("r", [1, 2, 4])
def test_lora_only(base, r: int) -> None:
    model = build(base, PeftPlan(lora_r=r))
    # query and value (peft's default for BERT) in each layer, plus the head.
    assert count_params(model) == 2 * LAYERS * r * (HIDDEN + HIDDEN) + HIDDEN * LABELS + LABELS
    assert count_params(model) == lora_count(r) + HEAD


@pytest.mark.parametrize("k", [1, 3])
def test_prompt_only(base, k: int) -> None:
    model = build(base, PeftPlan(prompt_length=k))
    assert count_params(model) == k * HIDDEN + HIDDEN * LABELS + LABELS


@pytest.mark.parametrize(("r", "k"), [(2, 3), (4, 1)])
def test_lora_and_prompt(base, r: int, k: int) -> None:
    model = build(base, PeftPlan(lora_r=r, prompt_length=k))
    assert (
        count_params(model) == 2 * LAYERS * r * 2 * HIDDEN + k * HIDDEN + HIDDEN * LABELS + LABELS
    )


@pytest.mark.parametrize("prompt", [0, 2])
def test_explicit_target_modules_halve_the_lora_count(base, prompt: int) -> None:
    default = count_params(build(base, PeftPlan(lora_r=2, prompt_length=prompt)))
    query = build(base, PeftPlan(lora_r=2, prompt_length=prompt, target_modules=["query"]))
    extra = prompt * HIDDEN + HEAD
    assert count_params(query) == 1 * LAYERS * 2 * (HIDDEN + HIDDEN) + extra
    assert (count_params(query) - extra) * 2 == default - extra
    lora = [n for n, p in query.named_parameters() if "lora_" in n]
    assert lora and all(".query." in n for n in lora)


def _kind(name: str) -> str:
    if "lora_A" in name:
        return "lora_A"
    if "lora_B" in name:
        return "lora_B"
    if "prompt_encoder" in name:
        return "prompt"
    if "classifier" in name and "original_module" not in name:
        return "head"
    return "base"


PLANS = {
    "neither": PeftPlan(),
    "lora": PeftPlan(lora_r=2),
    "prompt": PeftPlan(prompt_length=2),
    "both": PeftPlan(lora_r=2, prompt_length=2),
}


@pytest.mark.parametrize("plan", PLANS.values(), ids=PLANS.keys())
def test_exactly_the_adapters_and_head_learn(base, batch, plan: PeftPlan) -> None:
    torch.manual_seed(0)
    model = build(base, plan)
    model.train()
    model(**batch).loss.backward()
    params = dict(model.named_parameters())
    kinds = {name: _kind(name) for name in params}
    expected = {"head"}
    if plan.lora_r:
        expected |= {"lora_A", "lora_B"}
    if plan.prompt_length:
        expected |= {"prompt"}
    assert {kinds[n] for n, p in params.items() if p.requires_grad} == expected
    for name, p in params.items():
        kind = kinds[name]
        if kind == "base":
            assert not p.requires_grad, name
            assert p.grad is None, name
        elif kind == "lora_A":
            # B starts at zero, so dL/dA = B^T (...) = 0 on the first step: only B moves first.
            assert p.requires_grad and p.grad is not None, name
            assert torch.count_nonzero(p.grad) == 0, name
        else:  # lora_B, the soft prompt, the head
            assert p.requires_grad and p.grad is not None, name
            assert torch.count_nonzero(p.grad) > 0, name
    if plan.lora_r:
        # The wrapped base weight of a LoRA layer is frozen.
        wrapped = [n for n in params if "query.base_layer.weight" in n]
        assert len(wrapped) == LAYERS
        assert not any(params[n].requires_grad for n in wrapped)
    # The word embeddings (the prompt's neighbours) stay frozen too.
    emb = [n for n in params if "word_embeddings.weight" in n]
    assert emb and not any(params[n].requires_grad for n in emb)


def test_build_leaves_the_base_alone(base, batch) -> None:
    before = {k: v.clone() for k, v in base.state_dict().items()}
    names = [n for n, _ in base.named_modules()]
    for plan in PLANS.values():
        model = build(base, plan)
        model.train()
        model(**batch).loss.backward()
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=1.0)
        opt.step()
    assert all(not p.requires_grad for p in base.parameters())
    assert all(p.grad is None for p in base.parameters())
    after = base.state_dict()
    assert after.keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(after[k], v), k
    assert [n for n, _ in base.named_modules()] == names  # no LoRA layers injected into it
    assert not any("lora_" in n for n in names)


def test_build_gives_independent_copies(base) -> None:
    a = build(base, PeftPlan(lora_r=2))
    b = build(base, PeftPlan(lora_r=2))
    pa = dict(a.named_parameters())
    pb = dict(b.named_parameters())
    name = next(n for n in pa if "lora_B" in n)
    with torch.no_grad():
        pa[name].add_(1.0)
    assert torch.count_nonzero(pb[name]) == 0
