"""The train loop and evaluation: NaN stops a trial, predictions keep the input order, steps."""

from __future__ import annotations

from pathlib import Path

import pandas as pd
import pytest
import torch

from peftsearch.errors import TrialFailed
from peftsearch.objectives.data import encode
from peftsearch.objectives.model import PeftPlan, build, load_base
from peftsearch.objectives.train import MAX_CURVE_POINTS, TrainConfig, evaluate_model, train
from peftsearch.spaces import ModelSpec
from tests.conftest import FILLER, NEGATIVE, POSITIVE

CPU = torch.device("cpu")


@pytest.fixture(scope="module")
def loaded(tiny_model: Path):
    from transformers import BertTokenizer

    base, _ = load_base(ModelSpec(path=str(tiny_model)), num_labels=2, seed=0)
    base.requires_grad_(False)
    # Built from the vocab file here: on transformers 5 the saved tokenizer of conftest's
    # make_tiny_model knows only the 5 special tokens (``vocab_file=`` is ignored there).
    tokenizer = BertTokenizer(vocab=str(tiny_model / "vocab.txt"), do_lower_case=True)
    assert tokenizer.convert_ids_to_tokens(tokenizer("good film")["input_ids"]) == [
        "[CLS]",
        "good",
        "film",
        "[SEP]",
    ]
    return base, tokenizer


@pytest.fixture(scope="module")
def data(loaded):
    """48 rows of varied length (so sorting by length reorders them)."""
    import random

    rng = random.Random(0)
    texts, labels = [], []
    for i in range(48):
        pos = i % 2 == 0
        words = rng.sample(FILLER, 1 + (i * 7) % 9) + [rng.choice(POSITIVE if pos else NEGATIVE)]
        texts.append(" ".join(words))
        labels.append(int(pos))
    df = pd.DataFrame({"text": texts, "label": labels})
    return encode(df, "{text}", loaded[1], 32, ["text"], targets=torch.tensor(labels))


class NaNLossFrom(torch.nn.Module):
    """Wraps a model; from the ``bad``-th forward on, its loss is NaN."""

    def __init__(self, inner: torch.nn.Module, bad: int) -> None:
        super().__init__()
        self.inner, self.bad, self.calls = inner, bad, 0

    def forward(self, **batch):
        self.calls += 1
        out = self.inner(**batch)
        if self.calls >= self.bad:
            out.loss = out.loss * float("nan")
        return out


class InfLoss(NaNLossFrom):
    def forward(self, **batch):
        out = self.inner(**batch)
        out.loss = out.loss + float("inf")
        return out


def test_nan_loss_fails_the_trial_naming_the_step(loaded, data) -> None:
    model = NaNLossFrom(build(loaded[0], PeftPlan(lora_r=2)), bad=3)
    steps = []
    cfg = TrainConfig(learning_rate=1e-3, batch_size=8, epochs=2)  # 12 steps
    with pytest.raises(TrialFailed, match=r"nan at step 3 of 12") as info:
        train(model, data, cfg, CPU, on_step=lambda s, t, loss=None: steps.append(s))
    assert "nan" in str(info.value).lower()
    assert steps == [1, 2]  # stopped at once: step 3 never reported as done


def test_infinite_loss_fails_the_trial(loaded, data) -> None:
    model = InfLoss(build(loaded[0], PeftPlan()), bad=1)
    with pytest.raises(TrialFailed, match=r"inf at step 1 of"):
        train(model, data, TrainConfig(learning_rate=1e-3, batch_size=8), CPU)


def test_huge_learning_rate_fails_rather_than_finishing(loaded, data) -> None:
    # A real blow-up, no wrapper: the weights overflow and the loss stops being finite.
    model = build(loaded[0], PeftPlan(lora_r=2, prompt_length=2))
    with pytest.raises(TrialFailed, match=r"(nan|inf) at step \d+ of 60"):
        train(model, data, TrainConfig(learning_rate=1e30, batch_size=8, epochs=10), CPU)


def test_nan_checked_on_log_steps_when_the_run_is_long() -> None:
    # Over MAX_CURVE_POINTS steps the loss is read every few steps; the step named is that read.
    class Tiny(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(()))
            self.calls = 0

        def forward(self, input_ids, attention_mask, labels, token_type_ids=None):
            self.calls += 1
            loss = (self.w - 1) ** 2
            return type("Out", (), {"loss": loss * float("nan") if self.calls == 3 else loss})

    enc = type("E", (), {})()
    n = 4
    from peftsearch.objectives.data import Encoded

    enc = Encoded(
        input_ids=torch.ones(n, 2, dtype=torch.long),
        attention_mask=torch.ones(n, 2, dtype=torch.long),
        token_type_ids=None,
        labels=torch.zeros(n, dtype=torch.long),
        lengths=torch.full((n,), 2),
    )
    total = 2 * MAX_CURVE_POINTS  # log every 2 steps
    with pytest.raises(TrialFailed, match=rf"nan at step 4 of {total}"):
        train(Tiny(), enc, TrainConfig(learning_rate=0.1, batch_size=1, max_steps=total), CPU)


def test_train_runs_the_steps_and_moves_only_trainable_weights(loaded, data) -> None:
    torch.manual_seed(0)
    model = build(loaded[0], PeftPlan(lora_r=2))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    calls = []
    cfg = TrainConfig(learning_rate=1e-2, batch_size=16, epochs=2)
    stats = train(model, data, cfg, CPU, on_step=lambda s, t, loss=None: calls.append((s, t)))
    assert stats.steps == cfg.total_steps(48) == 6
    assert calls == [(s, 6) for s in range(1, 7)]
    assert len(stats.loss_curve) == 6 and stats.curve_every == 1
    assert all(torch.isfinite(torch.tensor(stats.loss_curve)))
    assert stats.seconds > 0
    for n, p in model.named_parameters():
        if p.requires_grad and "lora_" in n:
            assert not torch.equal(p, before[n]), n  # A moves from step 2 on, B from step 1
        elif not p.requires_grad:
            assert torch.equal(p, before[n]), n


def test_train_is_deterministic_for_a_seed(loaded, data) -> None:
    def once(seed: int) -> list[float]:
        torch.manual_seed(0)
        model = build(loaded[0], PeftPlan(lora_r=2))
        return train(
            model, data, TrainConfig(learning_rate=1e-2, batch_size=8, seed=seed), CPU
        ).loss_curve

    assert once(0) == once(0)
    assert once(0) != once(1)  # the seed sets the batch order


def test_total_steps() -> None:
    assert TrainConfig(learning_rate=1, batch_size=16).total_steps(100) == 7  # ceil(100 / 16)
    assert TrainConfig(learning_rate=1, batch_size=16).total_steps(96) == 6
    assert TrainConfig(learning_rate=1, batch_size=16, epochs=3).total_steps(100) == 21
    assert TrainConfig(learning_rate=1, batch_size=16, epochs=3, max_steps=5).total_steps(100) == 5
    assert TrainConfig(learning_rate=1, batch_size=16, max_steps=50).total_steps(10) == 50
    assert TrainConfig(learning_rate=1, batch_size=1).total_steps(3) == 3


def test_max_steps_wraps_around_epochs(loaded, data) -> None:
    model = build(loaded[0], PeftPlan())
    stats = train(model, data, TrainConfig(learning_rate=1e-3, batch_size=32, max_steps=5), CPU)
    assert stats.steps == 5  # 48 rows / 32 = 2 batches per pass; 5 steps cross passes


def _one_by_one(model, enc) -> tuple[list[int], list[float]]:
    """Each row alone, trimmed to its own length: the reference for order and loss."""
    preds, losses = [], []
    model.eval()
    with torch.no_grad():
        for i in range(len(enc)):
            n = int(enc.lengths[i])
            out = model(
                input_ids=enc.input_ids[i : i + 1, :n],
                attention_mask=enc.attention_mask[i : i + 1, :n],
                token_type_ids=enc.token_type_ids[i : i + 1, :n],
                labels=enc.labels[i : i + 1],
            )
            preds.append(int(out.logits.argmax(-1)))
            losses.append(float(out.loss))
    return preds, losses


def test_evaluate_keeps_the_input_order(data) -> None:
    from transformers import BertConfig, BertForSequenceClassification

    # A random BERT with large weights: its predictions differ from row to row by a clear margin
    # (the tiny model's 0.02-scale init predicts one class for every row).
    torch.manual_seed(0)
    config = BertConfig(
        vocab_size=int(data.input_ids.max()) + 1,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        initializer_range=0.5,
    )
    model = BertForSequenceClassification(config)
    expected, losses = _one_by_one(model, data)
    assert 0 < sum(expected) < len(expected), "the test needs varied predictions"
    sorted_order = torch.argsort(data.lengths, descending=True).tolist()
    assert sorted_order != list(range(len(data)))  # evaluation really reorders the rows
    result = evaluate_model(model, data, CPU, batch_size=5)
    assert result.predictions == expected
    assert result.loss == pytest.approx(sum(losses) / len(losses), rel=1e-4)
    assert result.seconds > 0
    # the batch size changes nothing
    assert evaluate_model(model, data, CPU, batch_size=64).predictions == expected
    assert evaluate_model(model, data, CPU, batch_size=1).predictions == expected


def test_evaluate_after_training_with_adapters(loaded, data) -> None:
    torch.manual_seed(0)
    model = build(loaded[0], PeftPlan(lora_r=2, prompt_length=2))
    train(model, data, TrainConfig(learning_rate=3e-2, batch_size=8, epochs=3), CPU)
    result = evaluate_model(model, data, CPU, batch_size=7)
    expected, losses = _one_by_one(model, data)
    assert result.predictions == expected
    assert result.loss == pytest.approx(sum(losses) / len(losses), rel=1e-4)


def test_each_part_trains_at_its_own_rate() -> None:
    """One AdamW group per part (and per decay), each with its part's peak rate; unset rates
    follow learning_rate."""
    import torch

    from peftsearch.objectives.train import TrainConfig, param_groups, part_of

    names = ["base.q.lora_A.default.weight", "prompt_encoder.default.embedding.weight", "x.bias"]
    assert [part_of(n) for n in names] == ["lora", "prompt", "head"]
    a, b = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(4, 3))
    w, bias = torch.nn.Parameter(torch.zeros(2, 3)), torch.nn.Parameter(torch.zeros(2))
    cfg = TrainConfig(learning_rate=1e-3, weight_decay=0.1, rates={"head": 0.2})
    groups = param_groups({"lora": [a], "prompt": [b], "head": [w, bias]}, cfg)
    got = [(g["part"], g["lr"], g["weight_decay"], len(g["params"])) for g in groups]
    assert got == [
        ("lora", 1e-3, 0.1, 1),
        ("prompt", 1e-3, 0.1, 1),  # no prompt rate: learning_rate
        ("head", 0.2, 0.1, 1),
        ("head", 0.2, 0.0, 1),  # the bias: no decay
    ]
    opt = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: 0.5)
    sched.step()
    assert [g["lr"] for g in opt.param_groups] == [5e-4, 5e-4, 0.1, 0.1]  # schedule per group


def test_loraplus_rates_are_peft_create_loraplus_optimizers(loaded) -> None:
    """LoRA+: every parameter of a built model trains at the rate peft's own
    ``create_loraplus_optimizer`` gives it (B at ``loraplus_lr_ratio`` times A's rate)."""
    from peft.optimizers import create_loraplus_optimizer

    from peftsearch.objectives.train import param_groups, part_of
    from peftsearch.spaces import RULES

    p = {name: rule.default for name, rule in RULES.items()}
    p.update(template="plain", lora_r=4, prompt_length=0, learning_rate=2e-3)
    p.update(loraplus_lr_ratio=16.0, weight_decay=0.0)
    model = build(loaded[0], p)
    named = [(n, w) for n, w in model.named_parameters() if w.requires_grad]
    parts: dict[str, list] = {}
    for name, w in named:
        parts.setdefault(part_of(name), []).append(w)
    ours = {
        id(w): g["lr"]
        for g in param_groups(parts, TrainConfig.from_params(p, 0))
        for w in g["params"]
    }
    theirs_opt = create_loraplus_optimizer(
        model, torch.optim.AdamW, lr=2e-3, loraplus_lr_ratio=16.0, weight_decay=0.0
    )
    theirs = {id(w): g["lr"] for g in theirs_opt.param_groups for w in g["params"]}
    lora = [(n, w) for n, w in named if "lora_" in n]
    assert lora and {id(w) for _, w in lora} <= theirs.keys()
    for name, w in lora:
        assert ours[id(w)] == pytest.approx(theirs[id(w)]), name
    b_rates = [ours[id(w)] for n, w in lora if "lora_B" in n]
    assert b_rates and b_rates == pytest.approx([3.2e-2] * len(b_rates))  # 16 x 2e-3
