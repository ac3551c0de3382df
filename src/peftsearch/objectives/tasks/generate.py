"""Text generation (``task: generate``, ``model.head: generator``): a causal LM (GPT, Llama,
SmolLM2) or an encoder-decoder (T5, BART) learns to write each row's reference text, and a
trial is scored on what it writes (greedy decoding, the KV cache, every trial of a pack in one
batch: :mod:`peftsearch.objectives.decoding`) by a text metric (exact match, ROUGE, chrF,
BLEU: :data:`peftsearch.objectives.metrics.TEXT_METRICS`).

Rows:

- **causal LM**: the rendered template, then the reference and EOS, left padded; the loss is
  on the reference's tokens and EOS only (the template's tokens are context). The reference
  follows the template after one space unless the template ends in whitespace ("Answer:" +
  " Paris"), as a causal LM writes the next word. The template gets ``model.max_length -
  generation.max_new_tokens`` tokens (its text cut by ``data.truncation``, never its words).
- **encoder-decoder**: the rendered template is the encoder's input (``model.max_length``
  tokens), the reference the decoder's labels (the tokenizer's ``text_target``).

A reference longer than ``generation.max_new_tokens`` tokens is cut to it: a trial cannot
write more (``search validate`` counts them). Splits are random (no classes to stratify); a
row's loss is the mean over its reference tokens, a trial's the mean over its rows.

Rungs of successive halving decode too: a rung ranks trials on the same metric as the end
(the teacher-forced eval loss is stored beside it, ``eval_loss``), so a rung's cut and the
front compare the same numbers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.objectives.tasks._base import Task

TARGET = "target"  # the cleaned reference text column
EXAMPLES = 5  # validation rows whose input, reference and output a trial stores


def seq2seq(tokenizer: Any) -> bool:
    """True when ``tokenizer`` belongs to an encoder-decoder base (``load_base`` marks it)."""
    return getattr(tokenizer, "peftsearch_lm", "causal") == "seq2seq"


def _full_ids(tokenizer: Any, texts: list[str], space_first: bool) -> list[list[int]]:
    """Each reference's whole ids, EOS last: an encoder-decoder's ``text_target``; a causal
    LM's text (after a space when ``space_first``) and EOS."""
    if seq2seq(tokenizer):
        return list(tokenizer(text_target=texts, add_special_tokens=True)["input_ids"])
    lead = " " if space_first else ""
    ids = tokenizer([lead + t for t in texts], add_special_tokens=False)["input_ids"]
    return [[*i, tokenizer.eos_token_id] for i in ids]


def target_ids(tokenizer: Any, texts: list[str], room: int, space_first: bool) -> list[list[int]]:
    """Each reference as the token ids a trial learns to write (:func:`_full_ids`), at most
    ``room`` tokens: a longer one is cut, its EOS kept."""
    eos = tokenizer.eos_token_id
    return [
        i if len(i) <= room else [*i[: room - 1], eos]
        for i in _full_ids(tokenizer, texts, space_first)
    ]


def too_long(tokenizer: Any, texts: list[str], room: int, space_first: bool) -> int:
    """How many references :func:`target_ids` cuts (``search validate`` reports it)."""
    return sum(len(i) > room for i in _full_ids(tokenizer, texts, space_first))


def space_first(template: Any) -> bool:
    """A causal LM's reference starts with a space unless the template ends in whitespace."""
    from peftsearch.spaces import template_text

    text = template_text(template)
    return not text[-1:].isspace()


class Generate(Task):
    name = "generate"
    head = "generator"
    defaults = {"generator": {"epochs": 2, "batch_size": 8, "warmup_ratio": 0.06}}
    decodes = True
    reads = ("labels", "targets")

    def peft_task_type(self, lm_kind: str | None) -> Any:
        from peft import TaskType

        return TaskType.SEQ_2_SEQ_LM if lm_kind == "seq2seq" else TaskType.CAUSAL_LM

    # -- data ---------------------------------------------------------------------------------

    def target_columns(self, spec: Any) -> dict[str, str]:
        return {spec.target_column: "data.target_column"}

    def clean(self, df: Any, spec: Any, file: str, split: str) -> Any:
        """``df`` with ``target`` the stripped reference text; rows without one are dropped,
        and a split with none left is refused."""
        raw = df[spec.target_column]
        text = raw.where(raw.notna(), "").astype(str).str.strip()
        keep = text != ""
        if not keep.any():
            raise SpaceError(
                file,
                "data.target_column",
                f"every one of the {len(df)} {split} rows has an empty reference text",
                spec.target_column,
            )
        return df[keep].drop(columns=[spec.target_column]).assign(**{TARGET: text[keep]})

    def split(self, df: Any, size: float | int, seed: int, spec: Any) -> tuple[Any, Any]:
        """``(rest, part)``: a random split (``datasets``' ``train_test_split``, seeded)."""
        import datasets

        ds = datasets.Dataset.from_pandas(df, preserve_index=False)
        try:
            parts = ds.train_test_split(test_size=size, seed=seed)
        except ValueError as exc:
            raise ValueError(f"cannot split the rows: {exc}") from None
        return parts["train"].to_pandas(), parts["test"].to_pandas()

    def record(self, spec: Any) -> dict[str, Any]:
        return {"target_column": spec.target_column, "split_kind": "random"}

    def encode(self, df: Any, template: Any, tokenizer: Any, space: Any, demos: str = "") -> Any:
        """The rows (see the module) with ``labels`` each row's reference length in tokens
        and ``targets`` the references' ids, right padded; a causal LM's ``prompt`` holds the
        rendered templates alone, which decoding starts from."""
        from peftsearch.objectives.data import TemplateTooLong, encode

        room = space.generation.max_new_tokens
        budget = space.model.max_length if seq2seq(tokenizer) else space.model.max_length - room
        if budget < 1:
            raise TemplateTooLong(
                f"model.max_length {space.model.max_length} leaves no room for the template "
                f"beside generation.max_new_tokens {room}"
            )
        prompt = encode(
            df,
            template,
            tokenizer,
            budget,
            list(space.data.text_columns),
            truncation=space.data.truncation,
            demos=demos,
        )
        ids = target_ids(tokenizer, df[TARGET].astype(str).tolist(), room, space_first(template))
        if seq2seq(tokenizer):
            return _with_targets(prompt, ids, tokenizer.pad_token_id, None)
        return _with_targets(_joined(prompt, ids, tokenizer.pad_token_id), ids, 0, prompt)

    def references(self, df: Any) -> list[Any]:
        return df[TARGET].astype(str).tolist()

    def demo_rows(self, train: Any, k: int, seed: int, spec: Any) -> Any:
        """``k`` train rows drawn with ``seed``."""
        if k <= 0:
            return train.iloc[:0]
        return train.sample(n=min(k, len(train)), random_state=seed)

    def demo_answer(self, space: Any, params: Any) -> Callable[[dict[str, Any]], str]:
        """The row's reference, after one space."""
        return lambda row: f" {row[TARGET]}"

    def check_metric(self, metric: Any, spec: Any, file: str) -> None:
        """A class metric is refused; a text metric scores a toy pair so that bad
        ``metric_kwargs`` fail before any training."""
        from peftsearch.objectives.metrics import LABEL_METRICS, score

        name, kwargs = spec.objectives.metric, spec.objectives.metric_kwargs
        if name in LABEL_METRICS:
            raise SpaceError(
                file,
                "objectives.metric",
                "compares class ids; task generate writes text (use exact_match, rouge1, "
                "rouge2, rougeL, rougeLsum, chrf, bleu or an evaluate metric of text)",
                name,
            )
        try:
            score(metric, name, ["a small test"], ["a small test"], **kwargs)
        except Exception as exc:
            raise SpaceError(
                file, "objectives.metric_kwargs", f"{name} fails on text: {exc}", kwargs
            ) from None

    def zero_shot(self, runner: Any, n_demos: int, verbalizers: Any) -> dict[str, Any]:
        """Every template, untrained: the base model's own answers, scored."""
        from peftsearch.objectives import zero_shot

        return zero_shot.untrained_text(runner, n_demos)

    def examples(self, held: Any, predictions: list[Any], k: int = EXAMPLES) -> list[Any]:
        """The first ``k`` held rows' texts, reference and output (the report shows them)."""
        texts = held.drop(columns=[TARGET, "row"], errors="ignore").to_dict("records")
        refs = held[TARGET].astype(str).tolist()
        return [
            {"input": t, "reference": r, "output": p}
            for t, r, p in zip(texts[:k], refs[:k], predictions[:k], strict=False)
        ]

    # -- the packed engine --------------------------------------------------------------------

    def head_modules(self, base: Any) -> tuple[dict[str, Any], set[str]]:
        """Nothing of the base trains; its output embedding (the LM head) is never a target."""
        out = base.get_output_embeddings()
        return {}, {n for n, m in base.named_children() if m is out}

    def attach(self, engine: Any) -> None:
        """The decoder's output at the positions that predict a reference token only."""
        from peftsearch.objectives.tasks.verbalize import pick_hook

        decoder = engine.base.get_decoder() if engine.lm_kind == "seq2seq" else None
        where = decoder or engine.base.base_model
        engine.hook(where, "generate:pick", lambda: pick_hook(engine.rows))

    def scores(self, engine: Any, kwargs: dict[str, Any], positions: Any) -> Any:
        """Each row's mean negative log-likelihood of its reference tokens (teacher forced):
        the LM head runs on the positions that predict them only."""
        import torch
        import torch.nn.functional as F

        lengths, targets = kwargs.pop("labels"), kwargs.pop("targets")
        dev = kwargs["inputs_embeds"].device
        lengths, targets = lengths.to(dev), targets.to(dev)
        n = len(lengths)
        rows = torch.arange(n, device=dev).repeat_interleave(lengths)
        starts = torch.cumsum(lengths, 0) - lengths
        offset = torch.arange(int(lengths.sum()), device=dev) - starts.repeat_interleave(lengths)
        if engine.lm_kind == "seq2seq":
            kwargs["decoder_input_ids"] = engine.base.prepare_decoder_input_ids_from_labels(
                labels=targets
            )
            width = targets.shape[1]
            kwargs["decoder_attention_mask"] = (
                torch.arange(width, device=dev) < lengths.unsqueeze(1)
            ).long()
            cols = offset  # decoder position j predicts target j
        else:
            mask = kwargs["attention_mask"]
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
            width = mask.shape[1]  # left padded: the reference ends each row
            cols = width - lengths.repeat_interleave(lengths) + offset - 1
        engine.rows.pick = (rows, cols)
        try:
            logits = engine.base(**kwargs).logits[:, 0]
        finally:
            engine.rows.pick = None
        gold = targets[rows, offset]
        nll = F.cross_entropy(logits.float(), gold, reduction="none")
        per_row = torch.zeros(n, device=dev, dtype=nll.dtype).index_add_(0, rows, nll)
        return per_row / lengths.clamp(min=1)

    def loss(self, scores: Any, labels: Any) -> Any:
        return scores

    def predict(self, scores: Any) -> Any:
        import torch

        return torch.zeros(len(scores), dtype=torch.long, device=scores.device)

    # -- ``search train`` ---------------------------------------------------------------------

    def train(self, space: Any, params: Any, *args: Any, **kwargs: Any) -> Any:
        from peftsearch.objectives.production_heads import train_generator

        return train_generator(space, params, *args, **kwargs)


def _joined(prompt: Any, targets: list[list[int]], pad: int) -> Any:
    """A causal LM's training rows: each prompt's tokens then its reference's, left padded."""
    import torch

    from peftsearch.objectives.data import Encoded

    rows = [
        ids[mask.bool()].tolist() + t
        for ids, mask, t in zip(prompt.input_ids, prompt.attention_mask, targets, strict=True)
    ]
    width = max(len(r) for r in rows)
    input_ids = torch.full((len(rows), width), pad, dtype=torch.long)
    attention = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        input_ids[i, width - len(r) :] = torch.tensor(r)
        attention[i, width - len(r) :] = 1
    return Encoded(input_ids, attention, None, None, attention.sum(1))


def _with_targets(enc: Any, targets: list[list[int]], pad: int, prompt: Any) -> Any:
    """``enc`` with ``labels`` the reference lengths and ``targets`` their ids, right padded."""
    import dataclasses

    import torch

    width = max(len(t) for t in targets)
    padded = torch.full((len(targets), width), pad, dtype=torch.long)
    for i, t in enumerate(targets):
        padded[i, : len(t)] = torch.tensor(t)
    lengths = torch.tensor([len(t) for t in targets], dtype=torch.long)
    return dataclasses.replace(enc, labels=lengths, targets=padded, prompt=prompt)
