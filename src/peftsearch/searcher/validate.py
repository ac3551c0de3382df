"""``search validate``: check a space against its real model and data, without training.

It sits in the searcher, above :mod:`peftsearch.objectives` whose data, model and metric
loaders it uses: it also shows what the search will do (the demonstration counts it tries).
"""

from __future__ import annotations

import statistics
from collections import Counter
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.objectives.data import Splits, load_splits
from peftsearch.objectives.model import model_error
from peftsearch.searcher.records import demo_counts
from peftsearch.spaces import DEMOS, CategoricalDist, IntDist, Space, has_slot, render


def _max_prompt_length(space: Space) -> int:
    spec = space.search_params()["prompt_length"]
    if isinstance(spec, CategoricalDist):
        return max(spec.choices)
    if isinstance(spec, IntDist):
        return spec.high
    return int(spec)


def cut_rows(
    template: Any, rows: list[dict[str, Any]], tokenizer: Any, max_length: int
) -> list[int]:
    """The tokens by which each row longer than ``max_length`` (``template`` rendered on it,
    untruncated) is over: what slot-only truncation cuts from its text."""
    rendered = [render(template, r) for r in rows]
    if not rendered:
        return []
    if isinstance(rendered[0], tuple):
        first, second = zip(*rendered, strict=True)
        ids = tokenizer(list(first), list(second), truncation=False, verbose=False)["input_ids"]
    else:
        ids = tokenizer(rendered, truncation=False, verbose=False)["input_ids"]
    return [len(x) - max_length for x in ids if len(x) > max_length]


def own_length(template: Any, tokenizer: Any, columns: list[str]) -> int:
    """The tokens of ``template``'s own words (its text slots and ``{demos}`` empty, its
    ``{mask}`` one mask token), special tokens included: what no text can shorten."""
    row: dict[str, Any] = dict.fromkeys([*columns, DEMOS], "")
    row["mask"] = tokenizer.mask_token or ""
    text = render(template, row)
    pair = text if isinstance(text, tuple) else (text,)
    return len(tokenizer(*pair, truncation=False, verbose=False)["input_ids"])


def check_space(space: Space) -> Iterator[str]:
    """Load data splits, tokenizer and model config; render and tokenize every template on the
    first train row. Yields report lines; raises SpaceError on the first problem."""
    file = str(space.file)
    splits = load_splits(space)
    yield from _data_lines(space, splits)
    tokenizer = yield from _model_lines(space)
    from peftsearch.objectives import tasks
    from peftsearch.objectives.metrics import load_metric  # imports evaluate: slow

    metric = load_metric(space.objectives.metric, file)
    tasks.get(space.task_name).check_metric(metric, space, file)
    yield f"metric: {space.objectives.metric} (maximized), trainable parameters (minimized)"
    if space.lm_kind == "generator":
        yield from _generator_lines(space, splits, tokenizer)
    elif space.lm_kind is not None:
        yield (
            f"head: verbalizer ({space.lm_kind} LM; label words scored "
            + ("at {mask})" if space.lm_kind == "masked" else "after the template's end)")
        )
    yield from _template_lines(space, splits, tokenizer)
    yield from _truncation_lines(space, splits, tokenizer)
    yield from _search_lines(space)
    yield f"{file}: ok (nothing trained, nothing written)"


def _data_lines(space: Space, splits: Splits) -> Iterator[str]:
    """The split sizes and the train labels."""
    sizes = splits.summary()
    yield (
        "data: "
        + ", ".join(f"{k} {v:,}" for k, v in sizes.items())
        + f" (split made: {', '.join(splits.record['made_by_split']) or 'none, files given'})"
    )
    if "label" not in splits.train:  # a task whose answer is text
        words = splits.train["target"].astype(str).str.split().str.len()
        yield (
            f"references (train, {space.data.target_column}): words per answer median "
            f"{words.median():g}, 90th percentile {words.quantile(0.9):g}, max {words.max():,}"
        )
        return
    counts = Counter(splits.train["label"])
    yield "labels (train): " + ", ".join(
        f"{name} {counts.get(i, 0):,}" for i, name in enumerate(space.data.labels)
    )


def _model_lines(space: Space) -> Generator[str, None, Any]:
    """Load the model config and tokenizer and check them against the space; yields the
    model line, returns the tokenizer."""
    from transformers import AutoConfig, AutoTokenizer  # imports torch: after the data checks

    file = str(space.file)
    kwargs: dict[str, Any] = {"trust_remote_code": space.model.trust_remote_code}
    where = space.model.path
    if where.endswith(".gguf"):
        where, kwargs["gguf_file"] = str(Path(where).parent), Path(where).name
    try:
        config = AutoConfig.from_pretrained(where, **kwargs)
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
    except (OSError, ValueError, ImportError) as exc:
        raise model_error(file, space.model.path, exc, space.lm_kind) from None
    if space.lm_kind == "masked" and tokenizer.mask_token is None:
        raise SpaceError(
            file, "model.path", "the templates use {mask} but this tokenizer has no mask token"
        )
    limit = getattr(config, "max_position_embeddings", None)
    longest = space.model.max_length + _max_prompt_length(space)
    if limit is not None and longest > limit:
        raise SpaceError(
            file,
            "model.max_length",
            f"max_length + the largest prompt_length = {longest} exceeds the model's "
            f"{limit} positions",
        )
    from peftsearch.objectives import adapters
    from peftsearch.objectives.model import skeleton

    model = skeleton(config, len(space.data.labels), space.lm_kind, space.model.trust_remote_code)
    adapters.check_space(space, model, file)  # placements that match no layer
    if space.lm_kind == "generator":  # how the generate task encodes (as load_base marks it)
        seq2seq = bool(getattr(config, "is_encoder_decoder", False))
        tokenizer.peftsearch_lm = "seq2seq" if seq2seq else "causal"
    yield f"model: {config.model_type}, {space.model.path}"
    return tokenizer


def _template_lines(space: Space, splits: Splits, tokenizer: Any) -> Iterator[str]:
    """Each template rendered and tokenized on train row 0."""
    row = splits.train.iloc[0].to_dict()
    if space.lm_kind == "masked":
        row["mask"] = tokenizer.mask_token
    for name, template in space.templates.items():
        text = render(template, row)
        pair = text if isinstance(text, tuple) else (text, None)
        n = len(tokenizer(*pair, truncation=True, max_length=space.model.max_length)["input_ids"])
        shown = " ||| ".join(pair) if pair[1] is not None else pair[0]
        yield f"template {name!r} ({n} tokens on train row 0): {shown[:200]!r}"


def _truncation_lines(space: Space, splits: Splits, tokenizer: Any) -> Iterator[str]:
    """Per template, how many train rows are longer than ``model.max_length`` and by how much;
    a template whose own words do not fit is an error."""
    from peftsearch.objectives.tasks.generate import seq2seq

    file = str(space.file)
    rows = splits.train[space.data.text_columns].to_dict("records")
    if space.lm_kind == "masked":
        rows = [{**r, "mask": tokenizer.mask_token} for r in rows]
    max_length, limit = space.model.max_length, "model.max_length"
    if space.lm_kind == "generator" and not seq2seq(tokenizer):  # the answer's room kept
        max_length -= space.generation.max_new_tokens
        limit = "model.max_length - generation.max_new_tokens"
    for name, template in space.templates.items():
        own = own_length(template, tokenizer, list(space.data.text_columns))
        if own > max_length:
            raise SpaceError(
                file,
                f"templates.{name}",
                f"the template's own words take {own} tokens, more than {limit} "
                f"{max_length}: no text fits; shorten the template or raise max_length",
            )
        over = cut_rows(template, rows, tokenizer, max_length)
        cut = len(over)
        if not cut:
            yield f"truncation {name!r}: no train row is longer than {limit} {max_length}"
            continue
        yield (
            f"truncation {name!r}: {cut:,} of {len(rows):,} train rows "
            f"({100 * cut / len(rows):.0f} %) are longer than {limit} {max_length}; "
            f"their text is cut at its {space.data.truncation} (tokens cut: mean "
            f"{sum(over) / cut:.1f}, median {statistics.median(over):g}, max {max(over):,}), "
            f"the template's own words ({own} tokens) are kept"
        )


def _generator_lines(space: Space, splits: Splits, tokenizer: Any) -> Iterator[str]:
    """How a generator's rows are made and answers written, and the references cut to
    ``generation.max_new_tokens`` tokens, per template."""
    from peftsearch.objectives.tasks.generate import seq2seq, space_first, too_long

    room = space.generation.max_new_tokens
    if seq2seq(tokenizer):
        yield (
            "head: generator (encoder-decoder: the template is the encoder's input, the "
            f"reference the decoder's labels; greedy, at most {room} new tokens)"
        )
    else:
        yield (
            "head: generator (causal LM: the template, then the reference and EOS, loss on "
            f"the reference; greedy, at most {room} new tokens; the template gets "
            f"model.max_length - {room} = {space.model.max_length - room} tokens)"
        )
    texts = splits.train["target"].astype(str).tolist()
    for name, template in space.templates.items():
        cut = too_long(tokenizer, texts, room, space_first(template))
        if cut:
            yield (
                f"references {name!r}: {cut:,} of {len(texts):,} train answers "
                f"({100 * cut / len(texts):.0f} %) are longer than generation.max_new_tokens "
                f"{room} tokens (EOS included) and are cut to it for training"
            )
        else:
            yield f"references {name!r}: every train answer fits generation.max_new_tokens {room}"


def _search_lines(space: Space) -> Iterator[str]:
    """What ``search run`` adds before and during the search: found label words, and the
    demonstration counts it tries."""
    auto = space.auto_verbalizers
    if auto is not None:
        yield (
            f"verbalizers.auto: {auto.n} verbalizer(s) of {auto.k} word(s) per class "
            f"({', '.join(space.auto_names)}), found by the model per template on {auto.rows} "
            "train rows per class when `search run` starts, then stored on the study"
        )
    shots = demo_counts(space)
    if shots:
        with_slot = [n for n, t in space.templates.items() if has_slot(t, DEMOS)]
        yield (
            f"demonstrations: {', '.join(map(str, shots))} per class (n_demos) in the {{demos}} "
            f"slot of {', '.join(with_slot)}; each one's text is cut to max_length / "
            "(demonstrations + 1) tokens, and long rows lose demonstrations before their text"
        )
