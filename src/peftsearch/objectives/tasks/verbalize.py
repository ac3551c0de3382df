"""Classification by label words (``model.head: verbalizer``, PET / LM-BFF): the base is a
causal or masked language model, nothing of it trains (only adapters), and a class's score is
the log-probability the LM's own head gives its label words at the row's prediction point (the
last token of a causal LM, the ``{mask}`` of a masked LM), averaged over its words.

A word counts by its first token: one forward pass per row, whatever the words (scoring whole
multi-token words would take a pass per word for a causal LM and a mask per token for a masked
LM). Words of different classes must therefore start with different tokens (checked when the
verbalizer is tokenized).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.objectives.tasks._labels import Labelled
from peftsearch.spaces import Rule


def lm_head_names(base: Any) -> set[str]:
    """The language model's head: every top-level child besides the backbone (``lm_head`` of
    Llama and RoBERTa, ``cls`` of BERT, DistilBERT's ``vocab_transform`` / ``vocab_layer_norm``
    / ``vocab_projector``, ModernBERT's ``head`` and ``decoder``). LoRA never targets them."""
    backbone = base.base_model
    return {n for n, m in base.named_children() if m is not backbone}


def narrow_to(out: Any, rows: Any, cols: Any) -> Any:
    """A backbone's output with its sequence output cut to one position per row (``[n, 1,
    hidden]``): what follows in the model (its LM head: position-wise layers, a tied
    decoder, logit soft-capping) then runs on the prediction points only."""
    first = out[0][rows, cols].unsqueeze(1)
    if isinstance(out, tuple):
        return (first, *out[1:])
    out.last_hidden_state = first  # a ModelOutput keeps its fields and tuple view in step
    return out


def pick_hook(rows: Any) -> Any:
    """A forward hook that hands on a backbone's (or decoder's) output at the positions
    ``rows.pick`` names only (:func:`narrow_to`); inactive while ``rows.pick`` is None."""

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        if rows.pick is None:
            return None
        return narrow_to(out, *rows.pick)

    return hook


class Verbalize(Labelled):
    name = "verbalize"
    head = "verbalizer"
    rules = {
        "verbalizer": Rule(
            "optional_str",
            None,
            help="name of a verbalizer under `verbalizers:` (model.head: verbalizer)",
            order=1,
        ),
    }
    defaults = {"verbalizer": {"epochs": 1, "batch_size": 16, "warmup_ratio": 0.06}}

    def peft_task_type(self, lm_kind: str | None) -> Any:
        from peft import TaskType

        return TaskType.CAUSAL_LM if lm_kind == "causal" else TaskType.FEATURE_EXTRACTION

    def demo_answer(self, space: Any, params: Any) -> Callable[[dict[str, Any]], str]:
        """The verbalizer's first label word (the word the model is trained to predict)."""
        verbalizer = params.get("verbalizer")
        if verbalizer is None:
            return super().demo_answer(space, params)
        labels = list(space.data.labels)
        words = space.words(verbalizer, params["template"])
        return lambda row: words[labels[int(row["label"])]][0]

    def zero_shot(self, runner: Any, n_demos: int, verbalizers: Any) -> dict[str, Any]:
        """Every template x verbalizer, untrained (see :mod:`peftsearch.objectives.zero_shot`)."""
        from peftsearch.objectives import zero_shot

        return zero_shot.zero_shot(runner, n_demos, verbalizers)

    def train(self, space: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        from peftsearch.objectives.production_heads import train_verbalizer

        return train_verbalizer(space, params, *args, **kwargs)

    def head_modules(self, base: Any) -> tuple[dict[str, Any], set[str]]:
        return {}, lm_head_names(base)

    def attach(self, engine: Any) -> None:
        engine.hook(engine.base.base_model, "verbalize:pick", lambda: pick_hook(engine.rows))

    def check_slot(self, slot: Any, label_tokens: Any) -> None:
        if not label_tokens:
            raise ValueError("an LM head needs label_tokens")
        slot.label_words = label_tokens

    def scores(self, engine: Any, kwargs: dict[str, Any], positions: Any) -> Any:
        """Each row's class scores: the mean log-probability of each class's label words."""
        import torch

        mask = kwargs["attention_mask"]
        causal = engine.lm_kind == "causal"
        if causal:
            # Positions counted over real tokens, so left padding does not shift them.
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        width = mask.shape[1]
        rows = torch.arange(mask.shape[0], device=mask.device)
        if causal:
            cols = torch.full_like(rows, width - 1) if engine.left_pad else mask.sum(-1) - 1
        else:
            cols = positions
        # The whole model runs, its own head included (whatever modules it has); a hook on
        # the backbone hands the head only the prediction points: [rows, 1, vocab] logits.
        engine.rows.pick = (rows, cols)
        try:
            logits = engine.base(**kwargs).logits[:, 0]
        finally:
            engine.rows.pick = None
        logp = torch.log_softmax(logits.float(), -1)
        return _word_scores(logp, engine.rows)


def _word_scores(logp: Any, rows: Any) -> Any:
    """``[rows, classes]``: each row's mean log-probability of its segment's label words."""
    import torch

    # Each segment's label words, padded to the widest (weight 0): [segments, classes, words].
    words = [s.label_words for s, _ in rows.segments]
    classes = {len(w) for w in words}
    if len(classes) != 1:
        raise RuntimeError(f"trials of one pack need the same classes, got {sorted(classes)}")
    wide = max(len(ws) for w in words for ws in w)
    tokens = [[ws + [ws[0]] * (wide - len(ws)) for ws in w] for w in words]
    weights = [[[1.0 / len(ws)] * len(ws) + [0.0] * (wide - len(ws)) for ws in w] for w in words]
    seg = rows.seg
    tok = torch.tensor(tokens, device=logp.device).index_select(0, seg)
    wts = torch.tensor(weights, device=logp.device).index_select(0, seg)
    picked = logp.gather(1, tok.flatten(1)).view(tok.shape)
    return (picked * wts).sum(-1)


def label_token_ids(
    tokenizer: Any, labels: list[str], words: dict[str, list[str]], file: str, key: str
) -> list[list[int]]:
    """Each label's words as the first token id of each word (the module says why the first
    token), in the order of ``labels``.

    Raises:
        SpaceError: a word with no tokens, or words of two labels that start with the same
            token (their scores could not differ); ``key`` names the verbalizer.
    """
    out: list[list[int]] = []
    first_of: dict[int, tuple[str, str]] = {}
    for label in labels:
        ids = []
        for word in words[label]:
            pieces = tokenizer(word, add_special_tokens=False)["input_ids"]
            if not pieces:
                raise SpaceError(file, f"{key}.{label}", "no tokens", word)
            other = first_of.get(pieces[0])
            if other is not None and other[0] != label:
                raise SpaceError(
                    file,
                    key,
                    f"{other[1]!r} ({other[0]}) and {word!r} ({label}) start with the same "
                    f"token {tokenizer.convert_ids_to_tokens(pieces[0])!r}; a word is scored by "
                    "its first token, so pick words that start differently",
                )
            first_of[pieces[0]] = (label, word)
            ids.append(pieces[0])
        out.append(ids)
    return out
