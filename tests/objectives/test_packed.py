"""Batched multi-adapter training: a trial packed with others gives what it gives alone, and one
slot trains exactly like peft's own LoRA + prompt-tuning model."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch

from peftsearch.errors import TrialFailed
from peftsearch.objectives import adapters
from peftsearch.objectives import packed as packed_mod
from peftsearch.objectives.model import build, count_params, load_base
from peftsearch.objectives.runner import TrialResult, TrialRunner
from peftsearch.objectives.train import TrainConfig, evaluate_model, train
from peftsearch.spaces import load_space
from tests.conftest import HIDDEN, LAYERS
from tests.objectives.test_runner import hand_count, params, write_space_file

# Four trials that differ in everything packing must cope with: rank (and none), template,
# prompt length (and none), learning rate, LoRA dropout, batch size and so step count.
MIXED = [
    params(template="plain", lora_r=2, prompt_length=0, learning_rate=1e-2, lora_dropout=0.1),
    params(template="review", lora_r=4, prompt_length=3, learning_rate=3e-2, batch_size=8),
    params(template="plain", lora_r=0, prompt_length=2, learning_rate=5e-2, max_steps=4),
    params(template="review", lora_r=0, prompt_length=0, learning_rate=2e-2, epochs=2),
]


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory, tiny_model: Path, sentiment_csv: Path):
    path = write_space_file(tmp_path_factory.mktemp("packed"), tiny_model, sentiment_csv)
    r = TrialRunner(load_space(path))
    r.setup()
    return r


def run_pack(runner: TrialRunner, trials: list[dict[str, Any]], size: int) -> dict[int, Any]:
    pack = runner.pack(size)
    for i, p in enumerate(trials):
        pack.add(i, p)
    out: dict[int, Any] = {}
    while len(pack):
        for key, result in pack.step():
            out[key] = result
    return out


def assert_same(a: TrialResult, b: TrialResult) -> None:
    """Equal within float noise: the packed batch is wider, so matmuls sum in another order."""
    assert a.trainable_params == b.trainable_params
    assert a.metric == b.metric
    assert a.attrs["eval_loss"] == pytest.approx(b.attrs["eval_loss"], rel=1e-4, abs=1e-6)
    assert a.attrs["train_loss_curve"] == pytest.approx(b.attrs["train_loss_curve"], abs=1e-4)
    assert a.attrs["train_steps"] == b.attrs["train_steps"]


def test_each_trial_packed_equals_the_trial_alone(runner: TrialRunner) -> None:
    alone = [runner.run(p) for p in MIXED]
    packed = run_pack(runner, MIXED, size=4)
    assert sorted(packed) == [0, 1, 2, 3]
    for i, p in enumerate(MIXED):
        assert_same(packed[i], alone[i])
        assert packed[i].trainable_params == hand_count(p["lora_r"], p["prompt_length"])
    assert packed[2].attrs["train_steps"] == 4  # max_steps: it left the pack early
    assert packed[0].attrs["pack_size"] > 1 and alone[0].attrs["pack_size"] == 1
    # the trials did learn something different from each other
    assert len({round(r.attrs["eval_loss"], 6) for r in alone}) == 4


# LoRA's options in one pack: peft's default targets, every attention projection, every
# linear layer, and rank-stabilized scaling; each row gets its own layers and scale.
PLACED = [
    params(template="plain", lora_r=2, prompt_length=0, learning_rate=1e-2),
    params(
        template="review", lora_r=4, prompt_length=0, target_modules="attention", use_rslora=True
    ),
    params(template="plain", lora_r=2, prompt_length=2, target_modules="all-linear"),
    params(template="review", lora_r=4, prompt_length=0, target_modules="all-linear"),
]


def test_lora_placements_and_scalings_pack_like_alone(runner: TrialRunner) -> None:
    alone = [runner.run(p) for p in PLACED]
    packed = run_pack(runner, PLACED, size=4)
    for i in range(len(PLACED)):
        assert_same(packed[i], alone[i])
    sizes = [r.trainable_params for r in alone]
    head = hand_count(0, 0)
    assert sizes[0] == hand_count(2, 0)  # peft's default: query and value
    assert sizes[1] == head + 2 * (hand_count(4, 0) - head)  # q, k, v and the output: 4 layers
    attention_r2 = head + 2 * (hand_count(2, 0) - head)
    assert sizes[2] - 2 * runner.engine.hidden > attention_r2  # + the feed-forward layers
    assert len({round(r.attrs["eval_loss"], 6) for r in alone}) == 4


# Methods mixed in one pack: LoRA, IA3 (alone and beneath a soft prompt), and none (the head
# alone, with lora_r set: `adapter: none` trains no LoRA whatever the rank).
METHODS = [
    params(template="plain", adapter="lora", lora_r=2, prompt_length=0),
    params(template="review", adapter="ia3", prompt_length=0, learning_rate=5e-2),
    params(template="plain", adapter="ia3", prompt_length=2, ia3_learning_rate=1e-1),
    params(template="review", adapter="none", lora_r=4, prompt_length=0, learning_rate=2e-2),
    params(template="plain", adapter="dora", lora_r=2, prompt_length=0, learning_rate=2e-2),
    params(template="review", adapter="dora", lora_r=4, prompt_length=2, lora_dropout=0.1),
]


def test_adapter_methods_pack_like_alone(runner: TrialRunner) -> None:
    alone = [runner.run(p) for p in METHODS]
    packed = run_pack(runner, METHODS, size=len(METHODS))
    for i in range(len(METHODS)):
        assert_same(packed[i], alone[i])
    kinds = ["lora", "ia3", "ia3+prompt", "head", "dora", "dora+prompt"]
    assert [adapters.kind_of(p) for p in METHODS] == kinds
    assert alone[3].trainable_params == hand_count(0, 0)
    # DoRA: LoRA's A and B plus a magnitude per output unit of query and value
    assert alone[4].trainable_params == hand_count(2, 0) + LAYERS * 2 * HIDDEN
    assert len({round(r.attrs["eval_loss"], 6) for r in alone}) == len(METHODS)


def test_queued_trials_join_as_others_finish(runner: TrialRunner) -> None:
    trials = [MIXED[2], MIXED[0], MIXED[1]]  # the short one finishes first; the third joins
    alone = [runner.run(p) for p in trials]
    packed = run_pack(runner, trials, size=2)
    for i in range(3):
        assert_same(packed[i], alone[i])
    assert packed[1].attrs["pack_size"] == 2  # always with a neighbour
    assert 1 < packed[2].attrs["pack_size"] < 2  # joined late, alone at the end


def test_a_slot_with_test_data_is_scored_on_it_as_a_twin_scored_there_as_eval(
    runner: TrialRunner,
) -> None:
    """``test_data`` (``search confirm --budget full``): the finished trial is scored on it too;
    a twin (same params, same seed, so the same training) whose eval data are those rows
    gets the same predictions and loss."""
    engine = runner.engine
    p = MIXED[0]
    train, held = runner.encoded(p["template"])
    other = train  # other rows than the eval set (and 4x as many)
    engine.capacity = 2
    engine.add("tested", p, train, held, 5, test_data=other)
    engine.add("twin", p, train, other, 5)
    done = {}
    while len(engine):
        done.update({f.key: f for f in engine.step()})
    tested, twin = done["tested"], done["twin"]
    assert twin.test_result is None and tested.test_result is not None
    assert tested.test_result.predictions == twin.result.predictions
    assert tested.test_result.loss == pytest.approx(twin.result.loss, rel=1e-5)
    assert len(tested.result.predictions) == len(held)
    assert len(tested.test_result.predictions) == len(other) != len(held)


def test_a_diverging_trial_fails_alone_and_its_neighbours_are_unharmed(
    runner: TrialRunner,
) -> None:
    bad = params(learning_rate=1e30, epochs=3)
    good = MIXED[1]
    packed = run_pack(runner, [bad, good], size=2)
    assert isinstance(packed[0], TrialFailed)
    assert re_match(r"train loss is (nan|inf) at step \d+ of \d+", str(packed[0]))
    assert_same(packed[1], runner.run(good))


def re_match(pattern: str, text: str) -> bool:
    import re

    return re.search(pattern, text) is not None


def test_out_of_memory_halves_the_pack_and_restarts_its_trials(
    runner: TrialRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    real, calls = packed_mod.PackedEngine._train_step, []

    def flaky(self):
        calls.append(len(self.active))
        if len(calls) == 3:  # mid-training, three trials in the batch
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real(self)

    trials = MIXED[:3]
    alone = [runner.run(p) for p in trials]
    monkeypatch.setattr(packed_mod.PackedEngine, "_train_step", flaky)
    pack = runner.pack(3)
    packed = run_pack(runner, trials, size=3)
    assert calls[:4] == [3, 3, 3, 1]  # after the error: one at a time (3 // 2 = 1)
    assert pack.capacity == 1
    for i in range(3):
        assert_same(packed[i], alone[i])  # restarted from scratch: the same results


def test_out_of_memory_of_a_single_trial_fails_it(
    runner: TrialRunner, monkeypatch: pytest.MonkeyPatch
) -> None:
    def oom(self):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(packed_mod.PackedEngine, "_train_step", oom)
    with pytest.raises(TrialFailed, match="^out of memory: CUDA out of memory"):
        runner.run(MIXED[0])
    monkeypatch.undo()
    assert math.isfinite(runner.run(MIXED[0]).attrs["eval_loss"])  # the runner goes on


def test_a_bad_target_fails_at_add(runner: TrialRunner) -> None:
    with pytest.raises(TrialFailed, match=r"target_modules \['nope'\] match no linear layer"):
        runner.run(params(target_modules=["nope"]))


def test_the_base_model_is_left_as_it_was(runner: TrialRunner) -> None:
    before = {k: v.clone() for k, v in runner._base.state_dict().items()}
    probe = runner.encoded("plain")[1]
    batch = {"input_ids": probe.input_ids[:8], "attention_mask": probe.attention_mask[:8]}
    with torch.no_grad():
        logits = runner._base(**batch).logits
    run_pack(runner, MIXED[:2], size=2)
    after = runner._base.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())
    assert count_params(runner._base) == 0
    with torch.no_grad():  # the hooks do nothing outside a packed forward
        assert torch.equal(runner._base(**batch).logits, logits)


# --- one slot is peft ---------------------------------------------------------------------------


def _no_dropout(model: torch.nn.Module) -> list[tuple[torch.nn.Dropout, float]]:
    """Dropout off (peft draws its masks from the global generator, the engine per trial, so
    only without dropout can the two match step by step); returns what to restore."""
    was = [(m, m.p) for m in model.modules() if isinstance(m, torch.nn.Dropout)]
    for m, _ in was:
        m.p = 0.0
    return was


def _copy_into_peft(slot: Any, model: torch.nn.Module) -> int:
    """Put the slot's initial adapter weights into peft's model; returns how many tensors."""
    named = dict(model.named_parameters())
    copied = 0
    dora = {
        n: (slot.tensors[f"dora.{n}.A"], slot.tensors[f"dora.{n}.B"])
        for n in (slot.state.get("dora") or {}).get("layers", [])
    }
    for name, (a, b) in {**slot.lora, **dora}.items():
        for part, value in (("lora_A", a), ("lora_B", b)):
            (key,) = [k for k in named if k.endswith(f"{name}.{part}.default.weight")]
            named[key].data.copy_(value.data)
            copied += 1
    if slot.prompt is not None:
        (key,) = [k for k in named if "prompt_encoder" in k]
        named[key].data.copy_(slot.prompt.data)
        copied += 1
    for head, module in slot.head.items():
        for pname, value in module.named_parameters():
            keys = [k for k in named if f"{head}.modules_to_save" in k and k.endswith(pname)]
            if not keys:  # no adapters at all: the head itself trains, under its own name
                keys = [k for k in named if k.endswith(f"{head}.{pname}")]
            (key,) = keys
            named[key].data.copy_(value.data)
            copied += 1
    return copied


@pytest.mark.parametrize(
    ("lora_r", "prompt_length", "lora"),
    [
        (2, 0, {}),
        (0, 3, {}),
        (4, 2, {}),
        (0, 0, {}),
        (4, 0, {"use_rslora": True, "target_modules": "attention"}),
        (2, 2, {"target_modules": "all-linear", "use_rslora": True}),
        (2, 0, {"target_modules": ["attention"]}),  # a searched choice, read back as a list
        (4, 2, {"loraplus_lr_ratio": 16.0}),  # LoRA+: B at 16x A's rate
        (4, 0, {"adapter": "ia3", "ia3_learning_rate": 5e-2}),  # IA3 (lora_r unused)
        (0, 2, {"adapter": "ia3"}),  # IA3 beneath a soft prompt
        (2, 0, {"adapter": "dora"}),  # DoRA: peft's use_dora
        (4, 2, {"adapter": "dora", "use_rslora": True, "target_modules": "attention"}),
    ],
)
def test_one_slot_trains_like_peft(
    runner: TrialRunner, lora_r: int, prompt_length: int, lora: dict[str, Any]
) -> None:
    p = params(lora_r=lora_r, prompt_length=prompt_length, learning_rate=2e-2, epochs=2, **lora)
    # Each part at its own rate: the engine's groups and the plain loop's (search train) agree.
    p.update(head_learning_rate=5e-2, prompt_learning_rate=1e-1)
    train_data, eval_data = runner.encoded(p["template"])
    engine = runner.engine
    slot = engine.add("peft", p, train_data, eval_data, 0)
    base, _ = load_base(runner.space.model, 2, 0)  # a fresh copy: the runner's has our hooks
    model = build(base, p)  # peft's own LoraConfig of the trial (use_rslora, target sets)
    _no_dropout(model)
    restore = _no_dropout(runner._base)
    dora = len((slot.state.get("dora") or {}).get("layers", []))
    assert _copy_into_peft(slot, model) == 2 * (len(slot.lora) + dora) + (prompt_length > 0) + 2
    if not lora:
        assert count_params(model) == slot.trainable == hand_count(lora_r, prompt_length)
    if lora.get("adapter") == "ia3":
        # peft's BERT layers: key and value (their outputs, H each) and every `output.dense`,
        # feed-forward by peft's suffix rule (their inputs: H for the attention's, 2H for the
        # FFN's intermediate), in each of the LAYERS layers
        assert not slot.lora
        ia3 = LAYERS * (HIDDEN + HIDDEN + HIDDEN + 2 * HIDDEN)
        assert slot.trainable == hand_count(0, prompt_length) + ia3
    assert count_params(model) == slot.trainable
    initial = [t.detach().clone() for t in slot.parameters()]

    done = []
    try:
        while not done:
            done = engine.step()
    finally:
        for m, p_was in restore:
            m.p = p_was
    stats = train(model, train_data, TrainConfig.from_params(p, 0), torch.device("cpu"))
    ours = done[0]
    theirs = evaluate_model(model, eval_data, torch.device("cpu"), 64)
    assert ours.error is None
    # all-linear adapts every linear layer: float32 sums in another order drift a little over
    # the steps (measured: 6e-8 at the first step, 1.9e-5 at the 20th, up and down between).
    tol = 3e-5 if lora.get("target_modules") == "all-linear" else 1e-5
    assert ours.stats.loss_curve == pytest.approx(stats.loss_curve, abs=tol)
    assert ours.result.loss == pytest.approx(theirs.loss, rel=1e-5)
    assert ours.result.predictions == theirs.predictions
    moved = [not torch.equal(a, b) for a, b in zip(initial, slot.parameters(), strict=True)]
    assert all(moved[-2:]) and (lora_r == 0 or moved[1])  # head and LoRA B did train


def test_the_base_models_dropout_applies_with_each_trials_own_masks(runner: TrialRunner) -> None:
    """The tiny BERT has dropout 0.1: it changes training, and (per-trial masks) packing
    still does not (the packed tests above run with it on)."""
    p = MIXED[1]
    with_dropout = runner.run(p)
    restore = _no_dropout(runner._base)
    try:
        without = runner.run(p)
    finally:
        for m, p_was in restore:
            m.p = p_was
    assert with_dropout.attrs["train_loss_curve"] != without.attrs["train_loss_curve"]
    assert runner.run(p).attrs["train_loss_curve"] == with_dropout.attrs["train_loss_curve"]


def test_another_architecture_packs_too() -> None:
    """RoBERTa: a head that is a module with its own dense layer and dropout, no token types,
    and LoRA targets from peft's default mapping. Engine alone vs packed, on token ids."""
    from transformers import RobertaConfig, RobertaForSequenceClassification

    from peftsearch.objectives.data import Encoded
    from peftsearch.objectives.packed import PackedEngine

    torch.manual_seed(0)
    config = RobertaConfig(
        vocab_size=60,
        hidden_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=32,
        max_position_embeddings=64,
        num_labels=2,
    )
    base = RobertaForSequenceClassification(config).requires_grad_(False)
    gen = torch.Generator().manual_seed(0)

    def data(n: int) -> Encoded:
        lengths = torch.randint(4, 12, (n,), generator=gen)
        ids = torch.randint(3, 60, (n, 12), generator=gen)
        mask = (torch.arange(12)[None, :] < lengths[:, None]).long()
        ids = ids * mask + config.pad_token_id * (1 - mask)
        labels = (ids[:, 1] % 2).long()
        return Encoded(ids, mask, None, labels, lengths)

    train_data, eval_data = data(48), data(20)
    trials = [
        params(lora_r=2, prompt_length=0, target_modules=None, lora_dropout=0.1),
        params(lora_r=0, prompt_length=3, learning_rate=5e-2, batch_size=8),
    ]

    def run(size: int, which: list[int]) -> dict[int, Any]:
        engine = PackedEngine(base, torch.device("cpu"), left_pad=False, capacity=size)
        for i in which:
            engine.add(i, trials[i], train_data, eval_data, 0)
        out = {}
        while len(engine):
            out.update({f.key: f for f in engine.step()})
        engine.close()
        return out

    alone = {**run(1, [0]), **run(1, [1])}
    packed = run(2, [0, 1])
    for i in (0, 1):
        assert packed[i].error is None and alone[i].error is None
        assert packed[i].result.predictions == alone[i].result.predictions
        assert packed[i].result.loss == pytest.approx(alone[i].result.loss, rel=1e-5)
        assert packed[i].stats.loss_curve == pytest.approx(alone[i].stats.loss_curve, abs=1e-5)
    # r 2 on query and value of 2 layers + RoBERTa's head (dense 16x16 + out_proj 16x2)
    head = 16 * 16 + 16 + 16 * 2 + 2
    assert packed[0].trainable == 2 * 2 * 2 * (16 + 16) + head
    assert packed[1].trainable == 3 * 16 + head


# --- per-step work does not grow with the pack (issue 12) -------------------------------------


def _ops_per_step(runner: TrialRunner, trials: list[dict[str, Any]], steps: int = 3) -> float:
    from torch.profiler import ProfilerActivity, profile

    engine = runner.engine
    engine.capacity = len(trials)
    for i, p in enumerate(trials):
        runner.add(("ops", len(trials), i), {**p, "max_steps": 1000})
    try:
        for _ in range(2):
            assert not engine.step()
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                engine.step()
    finally:
        engine.clear()
        engine.capacity = 1
    return sum(e.name.startswith("aten::") for e in prof.events()) / steps


def test_the_ops_of_a_packed_step_do_not_grow_with_the_number_of_trials(
    runner: TrialRunner,
) -> None:
    """Counted with torch's profiler (deterministic, unlike time). Before the stacked engine,
    12 trials took 11x the ops of one (each its own LoRA matmuls, head, masks, AdamW)."""
    mix = [
        params(template="plain", lora_r=2, prompt_length=3, lora_dropout=0.1),
        params(template="review", lora_r=4, prompt_length=0, learning_rate=3e-2),
    ]
    two = _ops_per_step(runner, mix)
    twelve = _ops_per_step(
        runner, [{**mix[i % 2], "learning_rate": 1e-3 * (i + 1)} for i in range(12)]
    )
    assert twelve <= 1.1 * two


def test_a_lower_rank_trial_keeps_its_padding_at_zero_in_a_higher_rank_pack(
    runner: TrialRunner,
) -> None:
    engine = runner.engine
    engine.capacity = 2
    low, high = params(lora_r=1, prompt_length=0), params(lora_r=4, prompt_length=2)
    runner.add("low", {**low, "max_steps": 50})
    runner.add("high", {**high, "max_steps": 50})
    try:
        for _ in range(5):
            engine.step()
        stack = engine.stack
        slot = next(s for s in engine.active if s.key == "low")
        for name in slot.lora:
            a, b = stack.fields[f"lora.{name}.A"], stack.fields[f"lora.{name}.B"]
            assert a.shape[1] == 4  # the pack's rank
            assert bool(a.detach()[slot.row, 1:].eq(0).all()) and bool(
                b.detach()[slot.row, :, 1:].eq(0).all()
            )
            assert bool(stack.view_of(stack.v, f"lora.{name}.A")[slot.row, 1:].eq(0).all())
            assert not bool(b.detach()[slot.row, :, :1].eq(0).all())  # its own column trained
        assert bool(stack.fields["prompt"].detach()[slot.row].eq(0).all())  # it has no prompt
    finally:
        engine.clear()
        engine.capacity = 1


def test_a_trial_without_ia3_gets_no_gradient_on_its_ia3_pads(runner: TrialRunner) -> None:
    """Packed beside an IA3 trial, a LoRA trial's IA3 fields (zero: the identity) get no
    gradient, so they cannot enter its gradient norm and change its clipping."""
    engine = runner.engine
    pack = runner.pack(2)
    pack.add("lora", METHODS[0])
    pack.add("ia3", METHODS[1])
    try:
        pack.step()
        stack = engine.stack
        rows = {s.key: s.row for s in engine.active}
        ia3 = [name for name in stack.fields if name.startswith("ia3.")]
        assert ia3 and set(rows) == {"lora", "ia3"}
        for name in ia3:
            grad = stack.fields[name].grad
            assert float(grad[rows["lora"]].abs().max()) == 0.0
            assert float(stack.fields[name].detach()[rows["lora"]].abs().max()) == 0.0
        assert any(float(stack.fields[n].grad[rows["ia3"]].abs().max()) > 0 for n in ia3)
    finally:
        pack.clear()
        runner.pack(1)
