"""Several trials trained at once on one frozen base model (batched multi-adapter training).

Small PEFT trials leave a GPU idle: a batch of 32 short rows cannot fill it. Here K trials
("slots") share one resident, frozen base model and one forward/backward per step: each slot
owns a slice of the batch rows, its LoRA A/B per target module, its soft prompt, its copy of
the classification head, and its own optimizer, schedule, data order and dropout generator.
Rows never mix inside a transformer (attention is within a row; no batch norm), so a slot's
gradients are exactly those of its own loss and a trial's result does not depend on what it was
packed with; ``tests/objectives/test_packed.py`` checks that against the same trial run alone,
and a single slot against peft's own LoRA + prompt-tuning model.

Why hand-rolled: peft's mixed-adapter batches (``forward(..., adapter_names=[...])``) work in
eval mode only ("Cannot pass `adapter_names` when the model is in training mode", peft 0.21),
and a deep copy of the base per trial repeats the frozen work once per trial.

The adapters follow peft's definitions: LoRA A kaiming-uniform(a=sqrt 5), B zero, output
``B(A(dropout(x))) * alpha / r`` added to the frozen layer's; the soft prompt is ``k`` rows of
N(0, 1) (peft's RANDOM init) prepended to the word embeddings with attention 1 and token type
0; the head starts as a copy of the base model's head (peft's ``modules_to_save``). Target
modules are matched by peft's own ``check_target_module_exists`` and default mapping.

Dropout: masks drawn once over a packed batch would tie a trial's result to its neighbours,
so every mask is drawn per slot from the trial's own generator: the base model's dropout
layers (hidden states, embeddings, the dropout before the head) through hooks, and the trial's
``lora_dropout``. The base itself runs in eval mode, so its attention-probability dropout, which
happens inside SDPA from the global generator, is off. Measured against peft with every
dropout on: benchmarks/RESULTS.md.

The base model is never modified: LoRA and heads act through forward hooks that do nothing when
no slot is active.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from peftsearch.errors import TrialFailed
from peftsearch.objectives.data import Encoded
from peftsearch.objectives.model import PeftPlan, head_names, lead_token, vocab_prompt
from peftsearch.objectives.train import (
    MAX_CURVE_POINTS,
    EvalResult,
    TrainConfig,
    TrainStats,
    autocast,
    batch_rows,
    param_groups,
    row_order,
)


def lm_head_names(base: Any) -> set[str]:
    """The language model's head: every top-level child besides the backbone (``lm_head`` of
    Llama and RoBERTa, ``cls`` of BERT, DistilBERT's ``vocab_transform`` / ``vocab_layer_norm``
    / ``vocab_projector``, ModernBERT's ``head`` and ``decoder``). LoRA never targets them."""
    backbone = base.base_model
    return {n for n, m in base.named_children() if m is not backbone}


def narrow_to(out: Any, rows: torch.Tensor, cols: torch.Tensor) -> Any:
    """A backbone's output with its sequence output cut to one position per row (``[n, 1,
    hidden]``): what follows in the model (its LM head: position-wise layers, a tied
    decoder, logit soft-capping) then runs on the prediction points only."""
    first = out[0][rows, cols].unsqueeze(1)
    if isinstance(out, tuple):
        return (first, *out[1:])
    out.last_hidden_state = first  # a ModelOutput keeps its fields and tuple view in step
    return out


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass(eq=False)
class Slot:
    """One trial inside the engine: its adapters, optimizer and progress."""

    key: Any
    params: dict[str, Any]
    plan: PeftPlan
    cfg: TrainConfig
    train_data: Encoded
    eval_data: Encoded
    lora: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]]
    scaling: float
    prompt: torch.nn.Parameter | None
    head: torch.nn.Module
    trainable: int
    opt: Any = None
    sched: Any = None
    gen: Any = None  # dropout masks, on the device
    order: Iterator[Any] | None = None
    step: int = 0
    total: int = 0
    log_every: int = 1
    pending: list[Any] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)
    started: float = 0.0
    train_seconds: float = 0.0
    pack_sizes: list[int] = field(default_factory=list)
    label_words: list[list[int]] | None = None  # verbalizer: each class's first-token ids
    label_tokens: Any = None  # label_words padded into a LongTensor [classes, words]
    label_weights: Any = None  # [classes, words]: 1 / words of the class, 0 for padding
    rung_steps: list[int] = field(default_factory=list)  # evaluate (and maybe stop) there

    @property
    def prompt_length(self) -> int:
        return 0 if self.prompt is None else int(self.prompt.shape[0])

    def parameters(self) -> list[torch.nn.Parameter]:
        return [p for part in self.parts().values() for p in part]

    def parts(self) -> dict[str, list[torch.nn.Parameter]]:
        """The trainable tensors by part (each has its own learning rate)."""
        return {
            "lora": [p for ab in self.lora.values() for p in ab],
            "prompt": [] if self.prompt is None else [self.prompt],
            "head": list(self.head.parameters()),
        }


@dataclass
class Finished:
    """A slot that left the engine: trained and evaluated, or failed with ``error``."""

    key: Any
    trainable: int
    stats: TrainStats | None = None
    result: EvalResult | None = None
    error: BaseException | None = None
    pack_size: float = 1.0  # mean number of trials trained together with this one (itself too)
    pruned: bool = False  # stopped at its last rung: ``result`` is that rung's evaluation
    planned_steps: int = 0  # the steps it would have trained to the end


class _Layout:
    """Which slots own which rows of the batch now going through the base model."""

    def __init__(self) -> None:
        self.segments: list[tuple[Slot, int]] = []
        self.widths: list[int] = []  # each slot's own sequence width (prompt + its tokens)
        self.width = 0  # the packed batch's width
        self.left_pad = False
        self.training = False
        self.pick: tuple[torch.Tensor, torch.Tensor] | None = None  # LM heads: (rows, cols)

    def dropout(self, x: torch.Tensor, i: int, p: float, gen: Any) -> torch.Tensor:
        """Dropout of segment ``i``'s rows ``x`` with masks that do not depend on the pack.

        The mask covers the slot's own width only (padding the pack added keeps its values):
        drawn over the packed width, a slot would consume more random numbers than alone and
        every later mask would differ."""
        if x.dim() >= 3 and x.shape[1] == self.width and self.widths[i] < self.width:
            own = self.widths[i]
            cols = slice(self.width - own, None) if self.left_pad else slice(0, own)
            keep = torch.ones(x.shape, device=x.device, dtype=torch.float32)
            keep[:, cols] = _keep_mask((x.shape[0], own, *x.shape[2:]), p, gen, x.device)
            return x * keep.to(x.dtype)
        return x * _keep_mask(tuple(x.shape), p, gen, x.device).to(x.dtype)


def _keep_mask(shape: tuple[int, ...], p: float, gen: Any, device: Any) -> torch.Tensor:
    keep = torch.empty(shape, device=device, dtype=torch.float32)
    keep.bernoulli_(1.0 - p, generator=gen)
    return keep / (1.0 - p)


class PackedEngine:
    """Trains and evaluates any number of trials together on ``base``.

    ``add`` queues a trial; each ``step`` runs one optimizer step for every active slot (up to
    ``capacity`` at once; queued ones join as others finish) and returns the trials that
    finished during it, evaluated together. Out of memory with several slots active halves the
    capacity and restarts those trials from their initial state (their results do not change);
    with one slot it fails that trial.
    """

    def __init__(
        self,
        base: Any,
        device: Any,
        left_pad: bool,
        capacity: int = 1,
        lm_kind: str | None = None,
        special_ids: set[int] | None = None,
    ) -> None:
        """``lm_kind`` None: ``base`` is a sequence classifier and each trial trains a copy of
        its head. ``"causal"`` / ``"masked"``: ``base`` is a language model whose own LM head
        scores each label's words (see :meth:`_verbalize`); nothing but adapters trains."""
        self.base, self.device, self.left_pad = base, device, left_pad
        self.capacity = max(1, capacity)
        self.lm_kind = lm_kind
        self.special_ids = set(special_ids or ())  # never drawn by a vocab-initialized prompt
        self.layout = _Layout()
        self.active: list[Slot] = []
        self.waiting: list[Slot] = []
        # Called as on_rung(key, rung, step, EvalResult) when a slot reaches one of its rung
        # steps; True stops the trial there (it leaves as a Finished with pruned=True).
        self.on_rung: Any = None
        self.embed = base.get_input_embeddings()
        self.hidden = int(self.embed.weight.shape[1])
        self._hooked: set[str] = set()
        self._hooks: list[Any] = []
        if lm_kind is None:
            heads = head_names(base)
            self._head_modules = {name: getattr(base, name) for name in sorted(heads)}
        else:
            heads = lm_head_names(base)
            self._head_modules = {}
            self._hooks.append(base.base_model.register_forward_hook(self._pick_hook()))
        self._linears = {
            name: mod
            for name, mod in base.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.split(".")[0] not in heads
        }
        for name, mod in self._head_modules.items():
            self._hooks.append(mod.register_forward_hook(self._head_hook(name)))
        dropout_hook = self._dropout_hook()  # a plain function: deepcopy of a head keeps it
        for mod in base.modules():
            if isinstance(mod, torch.nn.Dropout):
                self._hooks.append(mod.register_forward_hook(dropout_hook))
        base.eval()

    # -- building a slot ------------------------------------------------------------------------

    def _targets(self, plan: PeftPlan) -> list[str]:
        from peft import LoraConfig
        from peft.tuners.tuners_utils import check_target_module_exists
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        targets: Any = plan.target_modules
        if targets is None:
            kind = str(getattr(self.base.config, "model_type", ""))
            targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(kind)
            if targets is None:
                raise TrialFailed(
                    f"no default LoRA target modules for model type {kind!r}; "
                    "set target_modules in space.yaml"
                )
        config = LoraConfig(r=plan.lora_r, target_modules=list(targets))
        names = [n for n in self._linears if check_target_module_exists(config, n)]
        if not names:
            raise TrialFailed(
                f"target_modules {list(targets)} match no linear layer of the model "
                f"(some of its layers: {', '.join(list(self._linears)[:6])}, ...)"
            )
        return names

    def add(
        self,
        key: Any,
        params: dict[str, Any],
        train_data: Encoded,
        eval_data: Encoded,
        seed: int,
        label_tokens: list[list[int]] | None = None,
        queue: bool = True,
        rung_steps: list[int] | None = None,
    ) -> Slot:
        """Queue one trial. Its adapters are drawn from ``seed`` alone (same seed, same init,
        whatever else is in the engine). ``label_tokens``: with an LM head, each class's label
        words as token ids (the first token of each word)."""
        plan = PeftPlan.from_params(params)
        cfg = TrainConfig.from_params(params, seed)
        gen = torch.Generator().manual_seed(seed)
        lora: dict[str, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        if plan.lora_r > 0:
            for name in self._targets(plan):
                lin = self._linears[name]
                a = torch.empty(plan.lora_r, lin.in_features)
                torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
                b = torch.zeros(lin.out_features, plan.lora_r)
                lora[name] = (
                    torch.nn.Parameter(a.to(self.device)),
                    torch.nn.Parameter(b.to(self.device)),
                )
        prompt = None
        if plan.prompt_length > 0:
            if plan.prompt_init == "vocab":
                w, k = self.embed.weight, plan.prompt_length
                # A classifier pools position 0: the prompt starts with the rows' [CLS].
                lead = lead_token(train_data) if self.lm_kind is None else None
                rows = vocab_prompt(w, train_data, self.special_ids, k, gen, lead)
            else:
                rows = torch.randn(plan.prompt_length, self.hidden, generator=gen)
            prompt = torch.nn.Parameter(rows.to(self.device))
        heads = torch.nn.ModuleDict(
            {n: copy.deepcopy(m) for n, m in self._head_modules.items()}
        ).to(self.device)
        for m in heads.modules():  # deepcopy copies our hooks too: the copies must not have them
            m._forward_hooks.clear()
        heads.requires_grad_(True)
        heads.eval()  # no dropout inside the head either (see the module docstring)
        slot = Slot(
            key=key,
            params=params,
            plan=plan,
            cfg=cfg,
            train_data=train_data,
            eval_data=eval_data,
            lora=lora,
            scaling=plan.lora_alpha / plan.lora_r if plan.lora_r else 0.0,
            prompt=prompt,
            head=heads,
            trainable=0,
        )
        slot.trainable = sum(p.numel() for p in slot.parameters())
        if self.lm_kind is not None:
            if not label_tokens:
                raise ValueError("an LM head needs label_tokens")
            slot.label_words = label_tokens
            width = max(len(words) for words in label_tokens)
            slot.label_tokens = torch.tensor(
                [words + [words[0]] * (width - len(words)) for words in label_tokens],
                device=self.device,
            )
            slot.label_weights = torch.tensor(
                [
                    [1.0 / len(words)] * len(words) + [0.0] * (width - len(words))
                    for words in label_tokens
                ],
                device=self.device,
            )
        self._init_training(slot)
        slot.rung_steps = sorted({s for s in (rung_steps or []) if 0 < s < slot.total})
        for name in lora:
            self._hook(name)
        if queue:
            self.waiting.append(slot)
        return slot

    def _init_training(self, slot: Slot) -> None:
        from transformers import get_linear_schedule_with_warmup

        cfg, params = slot.cfg, slot.parameters()
        slot.gen = torch.Generator(device=self.device).manual_seed(cfg.seed)
        if not params:  # an LM head with no adapter: the zero-shot model, nothing to train
            slot.total = 0
            return
        slot.opt = torch.optim.AdamW(
            param_groups(slot.parts(), cfg), lr=cfg.learning_rate, fused=self.device.type == "cuda"
        )
        slot.total = cfg.total_steps(len(slot.train_data))
        slot.sched = get_linear_schedule_with_warmup(
            slot.opt, int(cfg.warmup_ratio * slot.total), slot.total
        )
        slot.log_every = max(1, math.ceil(slot.total / MAX_CURVE_POINTS))
        slot.order = row_order(len(slot.train_data), cfg)

    def _reset(self, slot: Slot) -> Slot:
        """The slot as it was when added (after an out-of-memory restart)."""
        return self.add(
            slot.key,
            slot.params,
            slot.train_data,
            slot.eval_data,
            slot.cfg.seed,
            slot.label_words,
            rung_steps=slot.rung_steps,
        )

    def score_untrained(
        self, params: dict[str, Any], eval_data: Encoded, label_tokens: list[list[int]]
    ) -> EvalResult:
        """Evaluate the base model alone (zero-shot): no adapters, nothing trained."""
        bare = {**params, "lora_r": 0, "prompt_length": 0}
        slot = self.add(("zero-shot",), bare, eval_data, eval_data, 0, label_tokens, queue=False)
        return self.evaluate([slot])[slot.key]

    # -- hooks: LoRA on target layers, per-slot heads -------------------------------------------

    def _hook(self, name: str) -> None:
        if name in self._hooked:
            return
        self._hooked.add(name)
        layout = self.layout

        def lora_hook(module: Any, args: tuple[Any, ...], out: torch.Tensor) -> Any:
            segs = layout.segments
            if not any(name in s.lora for s, _ in segs):
                return None
            x, parts, start = args[0], [], 0
            for i, (slot, n) in enumerate(segs):
                ab = slot.lora.get(name)
                if ab is None:
                    parts.append(out.new_zeros((n, *out.shape[1:])))
                else:
                    xs = x[start : start + n]
                    if layout.training and slot.plan.lora_dropout > 0:
                        xs = layout.dropout(xs, i, slot.plan.lora_dropout, slot.gen)
                    a, b = ab
                    delta = F.linear(F.linear(xs.to(a.dtype), a), b) * slot.scaling
                    parts.append(delta.to(out.dtype))
                start += n
            return out + torch.cat(parts)

        self._hooks.append(self._linears[name].register_forward_hook(lora_hook))

    def _head_hook(self, name: str) -> Any:
        layout = self.layout

        def head_hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
            segs = layout.segments
            if not segs:
                return None
            parts, start = [], 0
            for slot, n in segs:
                head = slot.head[name]  # type: ignore[index]
                sliced = [a[start : start + n] if torch.is_tensor(a) else a for a in args]
                parts.append(head(*sliced))
                start += n
            return torch.cat(parts)

        return head_hook

    def _pick_hook(self) -> Any:
        layout = self.layout

        def pick_hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
            """The backbone's output at each row's prediction point only (LM heads)."""
            if layout.pick is None:
                return None
            return narrow_to(out, *layout.pick)

        return pick_hook

    def _dropout_hook(self) -> Any:
        layout = self.layout

        def dropout_hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
            """The base's dropout layer (an identity in eval mode) with each slot's masks."""
            segs = layout.segments
            if not layout.training or not segs or module.p == 0:
                return None
            x, parts, start = args[0], [], 0
            for i, (slot, n) in enumerate(segs):
                parts.append(layout.dropout(x[start : start + n], i, module.p, slot.gen))
                start += n
            return torch.cat(parts)

        return dropout_hook

    def close(self) -> None:
        """Remove the hooks: the base model is as it was."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._hooked.clear()

    # -- forward --------------------------------------------------------------------------------

    def _forward(self, items: list[tuple[Slot, dict[str, Any]]]) -> torch.Tensor:
        """Logits of every row of ``items``, in order; each slot's prompt in front of its rows,
        rows padded to the longest (on the side the tokenizer pads)."""
        width = max(s.prompt_length + b["input_ids"].shape[1] for s, b in items)
        embeds, masks, types = [], [], []
        has_types = "token_type_ids" in items[0][1]
        for slot, b in items:
            e, m = self.embed(b["input_ids"]), b["attention_mask"]
            t = b.get("token_type_ids")
            n, k = e.shape[0], slot.prompt_length
            if slot.prompt is not None:
                e = torch.cat([slot.prompt.to(e.dtype).unsqueeze(0).expand(n, -1, -1), e], 1)
                m = torch.cat([m.new_ones(n, k), m], 1)
                if t is not None:
                    t = torch.cat([t.new_zeros(n, k), t], 1)
            pad = width - e.shape[1]
            if pad:
                side = (pad, 0) if self.left_pad else (0, pad)
                e = F.pad(e, (0, 0, *side))
                m = F.pad(m, side)
                t = F.pad(t, side) if t is not None else None
            embeds.append(e)
            masks.append(m)
            if t is not None:
                types.append(t)
        kwargs: dict[str, Any] = {
            "inputs_embeds": torch.cat(embeds),
            "attention_mask": torch.cat(masks),
        }
        if has_types:
            kwargs["token_type_ids"] = torch.cat(types)
        self.layout.segments = [(s, b["input_ids"].shape[0]) for s, b in items]
        self.layout.widths = [s.prompt_length + b["input_ids"].shape[1] for s, b in items]
        self.layout.width, self.layout.left_pad = width, self.left_pad
        try:
            if self.lm_kind is None:
                return self.base(**kwargs).logits
            return self._verbalize(items, kwargs)
        finally:
            self.layout.segments = []

    def _verbalize(self, items: list[tuple[Slot, dict[str, Any]]], kwargs: dict[str, Any]) -> Any:
        """Class scores from the LM head: at the prediction point of each row (the last token
        for a causal LM, the ``{mask}`` token for a masked LM), the log-probability of each
        class's label words, averaged over its words. A word counts by its first token: one
        forward pass per row, whatever the words (scoring whole multi-token words would take
        a pass per word for a causal LM and a mask per token for a masked LM), and what the
        label-word literature (PET, LM-BFF) does. Words of different classes must therefore
        start with different tokens (checked when the verbalizer is tokenized)."""
        mask = kwargs["attention_mask"]
        if self.lm_kind == "causal":
            # Positions counted over real tokens, so left padding does not shift them.
            kwargs["position_ids"] = (mask.cumsum(-1) - 1).clamp(min=0)
        width = mask.shape[1]
        rows = torch.arange(mask.shape[0], device=mask.device)
        if self.lm_kind == "causal":
            cols = torch.full_like(rows, width - 1) if self.left_pad else mask.sum(-1) - 1
        else:
            parts = []
            for (slot, b), own in zip(items, self.layout.widths, strict=True):
                shift = slot.prompt_length + ((width - own) if self.left_pad else 0)
                parts.append(b["positions"] + shift)
            cols = torch.cat(parts)
        # The whole model runs, its own head included (whatever modules it has); a hook on
        # the backbone hands the head only the prediction points: [rows, 1, vocab] logits.
        self.layout.pick = (rows, cols)
        try:
            logits = self.base(**kwargs).logits[:, 0]
        finally:
            self.layout.pick = None
        logp = torch.log_softmax(logits.float(), -1)
        scores, start = [], 0
        for slot, b in items:
            n = b["input_ids"].shape[0]
            picked = logp[start : start + n][:, slot.label_tokens]  # [n, classes, words]
            scores.append((picked * slot.label_weights).sum(-1))
            start += n
        return torch.cat(scores)

    # -- training -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.active) + len(self.waiting)

    def keys(self) -> list[Any]:
        return [s.key for s in self.active + self.waiting]

    def progress(self) -> list[tuple[Any, int, int]]:
        """``(key, step, total)`` of each active slot."""
        return [(s.key, s.step, s.total) for s in self.active]

    def drop(self, key: Any) -> None:
        self.active = [s for s in self.active if s.key != key]
        self.waiting = [s for s in self.waiting if s.key != key]

    def clear(self) -> None:
        self.active, self.waiting = [], []

    def step(self) -> list[Finished]:
        """One optimizer step of every active slot; returns the slots that left."""
        while self.waiting and len(self.active) < self.capacity:
            slot = self.waiting.pop(0)
            slot.started = time.perf_counter()
            self.active.append(slot)
        if not self.active:
            return []
        try:
            done = self._train_step()
        except Exception as exc:
            if not is_oom(exc):
                failed = [Finished(s.key, s.trainable, error=exc) for s in self.active]
                self.active = []
                return failed
            self._free()
            if len(self.active) == 1:
                slot = self.active.pop()
                reason = f"out of memory: {str(exc).splitlines()[0]}"
                return [Finished(slot.key, slot.trainable, error=TrialFailed(reason))]
            # Fewer at once: restart these trials from scratch (same seed, same result).
            self.capacity = max(1, len(self.active) // 2)
            restarted = [self._reset(s) for s in self.active]
            self.waiting = [s for s in self.waiting if s not in restarted]
            self.waiting = restarted + self.waiting
            self.active = []
            return []
        return done

    def _free(self) -> None:
        import gc

        gc.collect()
        if self.device.type == "cuda":
            torch.cuda.empty_cache()

    def _train_step(self) -> list[Finished]:
        active = [s for s in self.active if s.step < s.total]
        out: list[Finished] = []
        if active:
            out = self._optimizer_step(active)
        out += self._rungs([s for s in self.active if s.step in s.rung_steps])
        return out + self._finish([s for s in self.active if s.step >= s.total])

    def _rungs(self, reached: list[Slot]) -> list[Finished]:
        """Evaluate the slots that just reached a rung (together) and stop those that
        :attr:`on_rung` says to stop."""
        if not reached or self.on_rung is None:
            return []
        results = self.evaluate(reached)
        out: list[Finished] = []
        for s in reached:
            rung = s.rung_steps.index(s.step)
            result = results[s.key]
            if self.on_rung(s.key, rung, s.step, result):
                if s.pending:  # the loss since the last curve point
                    s.curve.append(float(torch.stack(s.pending).float().mean()))
                    s.pending = []
                self._sync()
                s.train_seconds = time.perf_counter() - s.started
                out.append(self._leave(s, result, pruned=True))
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _leave(self, s: Slot, result: EvalResult, pruned: bool) -> Finished:
        """Take ``s`` out of the engine as a finished (or stopped) trial."""
        self.active.remove(s)
        stats = TrainStats(s.step, s.train_seconds, s.curve, s.log_every)
        mean_pack = sum(s.pack_sizes) / len(s.pack_sizes) if s.pack_sizes else 1.0
        return Finished(s.key, s.trainable, stats, result, None, mean_pack, pruned, s.total)

    def _optimizer_step(self, active: list[Slot]) -> list[Finished]:
        self.layout.training = True
        items = [
            (s, batch_rows(s.train_data, next(s.order), self.device, self.left_pad))  # type: ignore[arg-type]
            for s in active
        ]
        with autocast(self.device):
            logits = self._forward(items)
        losses, start = [], 0
        for _, b in items:
            n = b["labels"].shape[0]
            losses.append(F.cross_entropy(logits[start : start + n].float(), b["labels"]))
            start += n
        torch.stack(losses).sum().backward()
        to_log: list[tuple[Slot, list[Any]]] = []
        for slot, loss in zip(active, losses, strict=True):
            params = slot.parameters()
            torch.nn.utils.clip_grad_norm_(params, slot.cfg.max_grad_norm)
            slot.opt.step()
            slot.sched.step()
            slot.opt.zero_grad(set_to_none=True)
            slot.pending.append(loss.detach())
            slot.step += 1
            slot.pack_sizes.append(len(active))
            if slot.step % slot.log_every == 0 or slot.step == slot.total:
                to_log.append((slot, slot.pending))
                slot.pending = []
        out: list[Finished] = []
        if to_log:  # one host sync for every slot that logs at this step
            means = torch.stack([torch.stack(p).float().mean() for _, p in to_log]).tolist()
            for (slot, _), value in zip(to_log, means, strict=True):
                if not math.isfinite(value):
                    reason = f"train loss is {value} at step {slot.step} of {slot.total}; stopped"
                    out.append(Finished(slot.key, slot.trainable, error=TrialFailed(reason)))
                    self.active.remove(slot)
                else:
                    slot.curve.append(value)
        return out

    def _finish(self, ended: list[Slot]) -> list[Finished]:
        """Evaluate the slots that trained all their steps, together, and let them go."""
        if not ended:
            return []
        self._sync()
        now = time.perf_counter()
        for s in ended:
            s.train_seconds = now - s.started
        results = self.evaluate(ended)
        return [self._leave(s, results[s.key], pruned=False) for s in ended]

    # -- evaluation -----------------------------------------------------------------------------

    def class_scores(self, slot: Slot, data: Encoded, batch_size: int = 64) -> torch.Tensor:
        """The class scores (what the cross-entropy sees) of ``slot`` on every row of
        ``data``, in row order, on the CPU; in the model's own dtype, no bf16 autocast (what
        a plain load of the saved adapters computes)."""
        self.layout.training = False
        out = []
        with torch.no_grad():
            for idx in torch.arange(len(data)).split(batch_size):
                batch = batch_rows(data, idx, self.device, self.left_pad)
                out.append(self._forward([(slot, batch)]).float().cpu())
        return torch.cat(out)

    def evaluate(self, slots: list[Slot]) -> dict[Any, EvalResult]:
        """Predictions (argmax) and mean cross-entropy of each slot on its eval data, all
        slots in the same batches, each in sorted-length chunks of its eval batch size."""
        start = time.perf_counter()
        self.layout.training = False
        chunks = {}
        for s in slots:
            size = max(64, 2 * s.cfg.batch_size)
            chunks[s.key] = torch.argsort(s.eval_data.lengths, descending=True).split(size)
        preds: dict[Any, list[Any]] = {s.key: [] for s in slots}
        loss_sum = {s.key: torch.zeros((), dtype=torch.float64, device=self.device) for s in slots}
        rounds = max(len(c) for c in chunks.values())
        with torch.no_grad(), autocast(self.device):
            for i in range(rounds):
                items = [
                    (s, batch_rows(s.eval_data, chunks[s.key][i], self.device, self.left_pad))
                    for s in slots
                    if i < len(chunks[s.key])
                ]
                logits = self._forward(items)
                at = 0
                for s, b in items:
                    lg = logits[at : at + b["labels"].shape[0]].float()
                    at += b["labels"].shape[0]
                    preds[s.key].append(lg.argmax(-1))
                    loss_sum[s.key] += F.cross_entropy(lg, b["labels"], reduction="sum").double()
        seconds = time.perf_counter() - start
        out = {}
        for s in slots:
            order = torch.cat(list(chunks[s.key]))
            ordered = torch.empty(len(s.eval_data), dtype=torch.long)
            ordered[order] = torch.cat(preds[s.key]).cpu()
            loss = float(loss_sum[s.key]) / max(1, len(s.eval_data))
            out[s.key] = EvalResult(ordered.tolist(), loss, seconds)
        return out
