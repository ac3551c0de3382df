"""``search train``'s training, by head: a new classification head trained by the plain loop
(:func:`train_classifier`), the LM's own head scoring label words (:func:`train_verbalizer`) or
writing answers (:func:`train_generator`), both trained by the search's engine with one slot.
Each returns a :class:`Trained`, which :func:`peftsearch.objectives.saving.save` writes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from peftsearch.objectives import saving
from peftsearch.objectives.checkpoint import Checkpoint
from peftsearch.objectives.load import predict_texts


@dataclass
class Trained:
    """A trained configuration, whichever head: what ``train_exported`` reports and saves."""

    tokenizer: Any
    cfg: Any  # TrainConfig
    stats: Any  # TrainStats
    trainable: int
    base_params: int
    predictions: dict[str, list[Any]]  # validation and test: a class id (or text) per row
    write: Callable[[Path], None]  # writes the trained weights into a directory
    want: list[dict[str, Any]]  # the trained model's own predictions of the probe texts
    info: dict[str, Any] = field(default_factory=dict)  # what inference.json adds for this head


@dataclass
class _Inputs:
    """How a configuration's rows are encoded: by the space's task, under its template, with
    the ``{demos}`` text drawn for it."""

    space: Any
    template: Any
    tokenizer: Any
    demos: str

    def encode(self, df: Any) -> Any:
        from peftsearch.objectives import tasks

        task = tasks.get(self.space.task_name)
        return task.encode(df, self.template, self.tokenizer, self.space, self.demos)


def _inputs(
    space: Any, params: dict[str, Any], splits: Any, tokenizer: Any, info: dict[str, Any]
) -> _Inputs:
    """This configuration's :class:`_Inputs`. The ``{demos}`` text, drawn as the search's
    trials draw it, goes into ``info`` (``inference.json``), so a saved model predicts on
    the layout it was trained on."""
    from peftsearch.objectives import demos

    text, rows = demos.for_params(space, params, splits.train, tokenizer)
    info["demos"] = text
    if rows:
        info["demo_rows"] = rows
    return _Inputs(space, space.templates[params["template"]], tokenizer, text)


def _trained_rows(splits: Any, info: dict[str, Any]) -> Any:
    """The train split less the rows shown as demonstrations (as in the search's trials)."""
    from peftsearch.objectives import demos

    return demos.without(splits.train, info.get("demo_rows", []))


def _frozen_base(space: Any, device: Any) -> tuple[Any, Any, int]:
    """The base model (a classifier, or the LM for a verbalizer head) on ``device``, frozen,
    with its tokenizer and parameter count."""
    from peftsearch.objectives.model import count_params, load_base

    seed, file = space.study.seed, str(space.file)
    base, tokenizer = load_base(space.model, len(space.data.labels), seed, file, space.lm_kind)
    base.to(device)
    base.requires_grad_(False)
    return base, tokenizer, count_params(base, trainable=False)


# -- a new classification head --------------------------------------------------------------------


def train_classifier(
    space: Any,
    params: dict[str, Any],
    splits: Any,
    device: Any,
    on_step: Callable[..., None] | None,
    info: dict[str, Any],
    probe: list[str],
    checkpoint: Checkpoint | None = None,
) -> Trained:
    """A new classification head: peft's own model (:func:`~peftsearch.objectives.model.build`)
    trained by the plain loop; tests check that it trains as the search's engine does."""
    import torch

    from peftsearch.objectives import tasks
    from peftsearch.objectives.model import build, count_params
    from peftsearch.objectives.train import TrainConfig, evaluate_model, train

    seed = space.study.seed
    base, tokenizer, base_params = _frozen_base(space, device)
    torch.manual_seed(seed)  # as TrialRunner: adapter init and dropout follow the seed
    model = build(base, params)  # a copy: the base can go
    del base
    trainable = count_params(model)
    model.to(device)
    inputs = _inputs(space, params, splits, tokenizer, info)
    train_data = inputs.encode(_trained_rows(splits, info))
    _start_prompt(model, train_data, tokenizer, params, seed)
    cfg = TrainConfig.from_params(params, seed)
    left = tokenizer.padding_side == "left"
    task = tasks.get(space.task_name)
    stats = train(model, train_data, cfg, device, left, on_step, checkpoint, task.train_loss)
    del train_data
    predictions = {}
    for split in ("validation", "test"):
        enc = inputs.encode(getattr(splits, split))
        result = evaluate_model(model, enc, device, max(64, 2 * cfg.batch_size), left)
        predictions[split] = result.predictions
    write = _classifier_writer(model, params, space)
    want = predict_texts(model, tokenizer, info, probe)
    return Trained(tokenizer, cfg, stats, trainable, base_params, predictions, write, want)


def _start_prompt(
    model: Any, train_data: Any, tokenizer: Any, params: dict[str, Any], seed: int
) -> None:
    """A soft prompt with ``prompt_init: vocab`` starts from vocabulary embeddings drawn from
    the train rows, as the engine starts one (a random prompt keeps peft's init)."""
    import torch

    from peftsearch.objectives.model import lead_token, vocab_prompt

    k = int(params["prompt_length"])
    if not k or params.get("prompt_init", "random") != "vocab":
        return
    (weight,) = [p for n, p in model.named_parameters() if "prompt_encoder" in n]
    gen = torch.Generator().manual_seed(seed)
    rows = vocab_prompt(
        model.get_input_embeddings().weight,
        train_data,
        set(tokenizer.all_special_ids),
        k,
        gen,
        lead_token(train_data),
    )
    with torch.no_grad():
        weight.copy_(rows.to(weight.dtype))


def _classifier_writer(model: Any, params: dict[str, Any], space: Any) -> Callable[[Path], None]:
    """What writes the trained classifier into a directory: the outer peft model (adapters +
    head) with any adapter injected beneath it, or the whole model (a linear probe)."""
    from peftsearch.objectives import adapters

    def write(into: Path) -> None:
        configs = adapters.peft_configs(params, None)
        if not configs:  # no peft adapter: the whole model (a linear probe) is saved
            labels = list(space.data.labels)
            model.config.id2label = dict(enumerate(labels))
            model.config.label2id = {n: i for i, n in enumerate(labels)}
        model.save_pretrained(into)  # the outer PeftModel (adapters + head), or the model
        for name in configs:
            if name:  # an adapter injected beneath the top one
                saving.save_injected(model, adapters.get(name), into / name, space.model.path)

    return write


# -- the LM's own head, scoring label words -------------------------------------------------------


def train_verbalizer(
    space: Any,
    params: dict[str, Any],
    splits: Any,
    device: Any,
    on_step: Callable[..., None] | None,
    info: dict[str, Any],
    probe: list[str],
    checkpoint: Checkpoint | None = None,
) -> Trained:
    """The LM's own head scores label words: trained by the search's engine with one slot
    (the same loop, dropout and scoring as its trials), then written as plain peft adapters.
    ``checkpoint``: the engine's :meth:`~PackedEngine.snapshot` of the slot, written and
    resumed as the classifier's loop does (every N steps, on Ctrl-C)."""
    from peftsearch.objectives.packed import PackedEngine

    base, tokenizer, base_params = _frozen_base(space, device)
    words, inputs, data = _verbalizer_data(space, params, splits, tokenizer, info)
    left = tokenizer.padding_side == "left"
    special = set(tokenizer.all_special_ids)
    engine = PackedEngine(
        base, device, left, lm_kind=space.lm_kind, special_ids=special, task=space.task_name
    )
    seed = space.study.seed
    try:
        slot = engine.add("train", params, data["train"], data["validation"], seed, words)
        stats, result = _run_engine(engine, slot, checkpoint, on_step)
        slot.eval_data = data["test"]
        test = engine.evaluate([slot])[slot.key]
        want = _engine_predictions(engine, slot, probe, info, inputs)
    finally:
        engine.close()  # hooks off: the base model is plain again
    predictions = {"validation": result.predictions, "test": test.predictions}

    def write(into: Path) -> None:
        saving.save_lm_adapters(base, slot, space.lm_kind, space.model.path, into)

    extra = _verbalizer_info(space, params, tokenizer, words, slot)
    return Trained(
        tokenizer, slot.cfg, stats, slot.trainable, base_params, predictions, write, want, extra
    )


def _verbalizer_data(
    space: Any, params: dict[str, Any], splits: Any, tokenizer: Any, info: dict[str, Any]
) -> tuple[list[list[int]], _Inputs, dict[str, Any]]:
    """The label words' token ids, how rows are encoded, and the encoded splits (the train
    split less the demonstration rows).

    Raises:
        SpaceError: a verbalizer's words that cannot be scored, or a template too long.
    """
    from peftsearch.errors import SpaceError
    from peftsearch.objectives.data import TemplateTooLong
    from peftsearch.objectives.tasks.verbalize import label_token_ids

    file, name = str(space.file), params["verbalizer"]
    words = label_token_ids(
        tokenizer, space.data.labels, space.verbalizers[name], file, f"verbalizers.{name}"
    )
    inputs = _inputs(space, params, splits, tokenizer, info)
    try:
        data = {split: inputs.encode(getattr(splits, split)) for split in ("validation", "test")}
        data["train"] = inputs.encode(_trained_rows(splits, info))
    except TemplateTooLong as exc:
        raise SpaceError(file, f"templates.{params['template']}", str(exc)) from None
    return words, inputs, data


def _run_engine(
    engine: Any, slot: Any, checkpoint: Checkpoint | None, on_step: Callable[..., None] | None
) -> tuple[Any, Any]:
    """Train ``slot`` to its end: resumed from ``checkpoint`` if it holds a state, which is
    saved every N steps and on Ctrl-C (then KeyboardInterrupt).

    Returns:
        the slot's TrainStats and its validation EvalResult.
    """
    from peftsearch.objectives import checkpoint as ckpt

    state = checkpoint.load() if checkpoint is not None else None
    if checkpoint is not None and state is not None:
        engine.resume(slot.key, state)
        checkpoint.say(f"resuming from step {slot.step} of {slot.total} ({checkpoint.state_file})")
    with ckpt.interrupts_at_step_end(checkpoint is not None) as stop:
        while not (finished := engine.step()):
            step, total = slot.step, slot.total
            if checkpoint is not None and (step % checkpoint.every == 0 or stop):
                checkpoint.save(engine.snapshot(slot.key))
            if checkpoint is not None and stop:
                checkpoint.say(
                    f"\ninterrupted at step {step} of {total}; checkpoint saved to "
                    f"{checkpoint.state_file}: the same command resumes from there"
                )
                raise KeyboardInterrupt
            if on_step is not None:
                on_step(step, total, slot.curve[-1] if slot.curve else None)
    (done,) = finished
    if done.error is not None:
        raise done.error
    assert done.stats is not None and done.result is not None
    if on_step is not None:
        on_step(done.stats.steps, done.stats.steps)
    return done.stats, done.result


def _engine_predictions(
    engine: Any, slot: Any, texts: list[str], info: dict[str, Any], inputs: _Inputs
) -> list[dict[str, Any]]:
    """What the engine's trained slot predicts for ``texts`` (``predict_texts`` rows)."""
    import pandas as pd

    if not texts:
        return []
    labels, columns = info["labels"], info["text_columns"]
    rows = [dict(zip(columns, t.split("\t", 1), strict=True)) for t in texts]
    data = inputs.encode(pd.DataFrame(rows).assign(label=0))
    probs = engine.class_scores(slot, data).softmax(-1).tolist()
    return [
        {
            "text": t,
            "label": labels[max(range(len(labels)), key=p.__getitem__)],
            "scores": dict(zip(labels, p, strict=True)),
        }
        for t, p in zip(texts, probs, strict=True)
    ]


def _verbalizer_info(
    space: Any, params: dict[str, Any], tokenizer: Any, words: list[list[int]], slot: Any
) -> dict[str, Any]:
    """What ``inference.json`` adds for a verbalizer head."""
    name = params["verbalizer"]
    return {
        "lm_kind": space.lm_kind,
        "padding_side": tokenizer.padding_side,
        "verbalizer": name,
        "label_words": {label: space.verbalizers[name][label] for label in space.data.labels},
        "label_token_ids": words,
        "prompt_length": slot.prompt_length,
    }


# -- the LM writing answers ------------------------------------------------------------------------


def train_generator(
    space: Any,
    params: dict[str, Any],
    splits: Any,
    device: Any,
    on_step: Callable[..., None] | None,
    info: dict[str, Any],
    probe: list[str],
    checkpoint: Checkpoint | None = None,
) -> Trained:
    """``task: generate``: trained by the search's engine with one slot (its rows, loss and
    greedy decoding), then written as plain peft adapters of the causal LM or encoder-decoder;
    ``info`` gets what ``load.py`` needs to write answers the same way."""
    from peftsearch.errors import SpaceError
    from peftsearch.objectives.data import TemplateTooLong
    from peftsearch.objectives.packed import PackedEngine

    base, tokenizer, base_params = _frozen_base(space, device)
    inputs = _inputs(space, params, splits, tokenizer, info)
    try:
        data = {split: inputs.encode(getattr(splits, split)) for split in ("validation", "test")}
        data["train"] = inputs.encode(_trained_rows(splits, info))
    except TemplateTooLong as exc:
        raise SpaceError(str(space.file), f"templates.{params['template']}", str(exc)) from None
    room = space.generation.max_new_tokens
    engine = PackedEngine(
        base,
        device,
        tokenizer.padding_side == "left",
        lm_kind=space.lm_kind,
        special_ids=set(tokenizer.all_special_ids),
        task=space.task_name,
        tokenizer=tokenizer,
        max_new_tokens=room,
    )
    try:
        slot = engine.add("train", params, data["train"], data["validation"], space.study.seed)
        stats, result = _run_engine(engine, slot, checkpoint, on_step)
        slot.eval_data = data["test"]
        test = engine.evaluate([slot])[slot.key]
        want = _engine_outputs(engine, slot, probe, info, inputs)
    finally:
        engine.close()  # hooks off: the base model is plain again
    lm_kind = str(engine.lm_kind)

    def write(into: Path) -> None:
        saving.save_lm_adapters(base, slot, lm_kind, space.model.path, into, space.task_name)

    extra = {
        "lm_kind": lm_kind,
        "padding_side": tokenizer.padding_side,
        "max_new_tokens": room,
        "prompt_max_length": space.model.max_length - (0 if lm_kind == "seq2seq" else room),
        "prompt_length": slot.prompt_length,
    }
    predictions = {"validation": result.predictions, "test": test.predictions}
    return Trained(
        tokenizer, slot.cfg, stats, slot.trainable, base_params, predictions, write, want, extra
    )


def _engine_outputs(
    engine: Any, slot: Any, texts: list[str], info: dict[str, Any], inputs: _Inputs
) -> list[dict[str, Any]]:
    """What the engine's trained slot writes for ``texts`` (``predict_texts`` rows)."""
    import pandas as pd

    from peftsearch.objectives.tasks.generate import TARGET

    if not texts:
        return []
    columns = info["text_columns"]
    rows = [dict(zip(columns, t.split("\t", 1), strict=True)) for t in texts]
    slot.eval_data = inputs.encode(pd.DataFrame(rows).assign(**{TARGET: ""}))
    written = engine.evaluate([slot])[slot.key].predictions
    return [{"text": t, "output": o} for t, o in zip(texts, written, strict=True)]
