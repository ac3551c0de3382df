"""Several trials trained at once on one frozen base model (batched multi-adapter training).

Small PEFT trials leave a GPU idle: a batch of 32 short rows cannot fill it. Here K trials
("slots") share one resident, frozen base model and one forward/backward per step: each slot
owns a slice of the batch rows, its LoRA A/B per target module, its soft prompt, its copy of
the classification head, its schedule, data order and dropout masks. Rows never mix inside a
transformer (attention is within a row; no batch norm), so a slot's gradients are exactly those
of its own loss and a trial's result does not depend on what it was packed with;
``tests/objectives/test_packed.py`` checks that against the same trial run alone, and a single
slot against peft's own LoRA + prompt-tuning model.

The per-trial work of a step does not grow with K either (issue 12): every slot's tensors live
in one stacked block (:mod:`~peftsearch.objectives.stack`: one clip, one schedule, one AdamW
for all), and the hooks on the base (:mod:`~peftsearch.objectives.hooks`) apply every slot's
LoRA, head and dropout in a fixed number of tensor ops. The Python per slot and step is its
row order and a few counters. Measured: ``benchmarks/pack_ops.py``, RESULTS.md.

Why hand-rolled: peft's mixed-adapter batches (``forward(..., adapter_names=[...])``) work in
eval mode only ("Cannot pass `adapter_names` when the model is in training mode", peft 0.21),
loop over adapters in Python, and a deep copy of the base per trial repeats the frozen work
once per trial.

The adapters follow peft's definitions: LoRA A kaiming-uniform(a=sqrt 5), B zero, output
``B(A(dropout(x))) * alpha / r`` added to the frozen layer's; the soft prompt is ``k`` rows
prepended to the word embeddings with attention 1 and token type 0 (vocab or N(0, 1) init);
the head starts as a copy of the base model's head (peft's ``modules_to_save``). Target
modules are matched by peft's own ``check_target_module_exists`` and default mapping.

Layout of a packed row: ``[prompt, tokens, padding]`` (right padding) or ``[padding, prompt,
tokens]`` (left padding), so a row's real columns do not move with the pack's width.

Dropout: the base's dropout layers (hidden states, embeddings, the dropout before the head) and
the trial's ``lora_dropout``, each with masks that are a function of the trial (seed, step, its
own rows) alone (:func:`~peftsearch.objectives.hooks.keep_mask`). The base itself runs in eval
mode, so its attention-probability dropout, which happens inside SDPA from the global
generator, is off. Measured against peft with every dropout on: benchmarks/RESULTS.md.

A slot's own tensors (``Slot.lora``, ``prompt``, ``head``) hold its initial values until it
leaves the engine and its trained values after; while it trains, the stack holds them.
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
from peftsearch.objectives import hooks as H
from peftsearch.objectives.data import Encoded
from peftsearch.objectives.hooks import lm_head_names
from peftsearch.objectives.model import PeftPlan, head_names, lead_token, vocab_prompt
from peftsearch.objectives.stack import PARTS, Field, Stack
from peftsearch.objectives.train import (
    MAX_CURVE_POINTS,
    EvalResult,
    TrainConfig,
    TrainStats,
    autocast,
    batch_rows,
    row_order,
)


def is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.cuda.OutOfMemoryError) or "out of memory" in str(exc).lower()


@dataclass(eq=False)
class Slot:
    """One trial inside the engine: its adapters, settings and progress."""

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
    row: int | None = None  # its row of the engine's Stack while it is in there
    order: Iterator[Any] | None = None
    step: int = 0
    total: int = 0
    log_every: int = 1
    loss_steps: int = 0  # steps whose loss is summed in the stack and not yet in ``curve``
    curve: list[float] = field(default_factory=list)
    started: float = 0.0
    train_seconds: float = 0.0
    pack_sizes: list[int] = field(default_factory=list)
    label_words: list[list[int]] | None = None  # verbalizer: each class's first-token ids
    rung_steps: list[int] = field(default_factory=list)  # evaluate (and maybe stop) there
    test_data: Encoded | None = (
        None  # also scored when it finishes (``search confirm --budget full``)
    )

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

    def tensors(self) -> dict[str, torch.nn.Parameter]:
        """Its tensors by their field name in the stack."""
        out: dict[str, torch.nn.Parameter] = {}
        for name, (a, b) in self.lora.items():
            out[f"lora.{name}.A"], out[f"lora.{name}.B"] = a, b
        if self.prompt is not None:
            out["prompt"] = self.prompt
        for head, module in self.head.items():  # type: ignore[operator]
            for pname, p in module.named_parameters():
                out[f"head.{head}.{pname}"] = p
        return out


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
    test_result: EvalResult | None = None  # on the slot's ``test_data``, when it has some


Part = tuple[list[tuple[Slot, int]], dict[str, Any]]  # slots owning consecutive rows, batch


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
        self.rows = H.Rows()
        self.stack: Stack | None = None
        self.occupant: list[Slot | None] = []  # the slot in each row of the stack
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
            self._hooks.append(base.base_model.register_forward_hook(H.pick_hook(self.rows)))
        self._linears = {
            name: mod
            for name, mod in base.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.split(".")[0] not in heads
        }
        for name, mod in self._head_modules.items():
            template = copy.deepcopy(mod)
            for m in template.modules():  # deepcopy copies hooks too: the template has none
                m._forward_hooks.clear()
            template.requires_grad_(False).eval()
            pnames = [n for n, _ in mod.named_parameters()]
            hook = H.head_hook(self.rows, name, template, pnames)
            self._hooks.append(mod.register_forward_hook(hook))
        site = 0
        for mod in base.modules():
            if isinstance(mod, torch.nn.Dropout):
                self._hooks.append(mod.register_forward_hook(H.dropout_hook(self.rows, site)))
                site += 1
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
        test_data: Encoded | None = None,
    ) -> Slot:
        """Queue one trial. Its adapters are drawn from ``seed`` alone (same seed, same init,
        whatever else is in the engine). ``label_tokens``: with an LM head, each class's label
        words as token ids (the first token of each word). ``test_data``: scored too when the
        trial finishes (:attr:`Finished.test_result`), after ``eval_data``."""
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
            prompt = torch.nn.Parameter(rows.float().to(self.device))
        heads = torch.nn.ModuleDict(
            {n: copy.deepcopy(m) for n, m in self._head_modules.items()}
        ).to(self.device)
        for m in heads.modules():  # deepcopy copies our hooks too: the copies must not have them
            m._forward_hooks.clear()
        heads.requires_grad_(True)
        heads.eval()
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
            test_data=test_data,
        )
        slot.trainable = sum(p.numel() for p in slot.parameters())
        if self.lm_kind is not None:
            if not label_tokens:
                raise ValueError("an LM head needs label_tokens")
            slot.label_words = label_tokens
        self._init_training(slot)
        slot.rung_steps = sorted({s for s in (rung_steps or []) if 0 < s < slot.total})
        for name in lora:
            self._hook(name)
        if queue:
            self.waiting.append(slot)
        return slot

    def _init_training(self, slot: Slot) -> None:
        cfg = slot.cfg
        if not slot.parameters():  # an LM head with no adapter: the zero-shot model
            slot.total = 0
            return
        slot.total = cfg.total_steps(len(slot.train_data))
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
            test_data=slot.test_data,
        )

    def score_untrained(
        self, params: dict[str, Any], eval_data: Encoded, label_tokens: list[list[int]]
    ) -> EvalResult:
        """Evaluate the base model alone (zero-shot): no adapters, nothing trained."""
        bare = {**params, "lora_r": 0, "prompt_length": 0}
        slot = self.add(("zero-shot",), bare, eval_data, eval_data, 0, label_tokens, queue=False)
        return self.evaluate([slot])[slot.key]

    def vocab_logprobs(
        self, params: dict[str, Any], data: Encoded, batch_size: int = 32
    ) -> torch.Tensor:
        """The untrained LM's log-probability of every vocabulary token at each row's
        prediction point, [rows, vocab] on the CPU (automatic label search): the zero-shot
        slot of :meth:`score_untrained` with one class per token."""
        vocab = int(self.base.get_output_embeddings().weight.shape[0])
        bare = {**params, "lora_r": 0, "prompt_length": 0}
        every = [[t] for t in range(vocab)]
        slot = self.add(("label-search",), bare, data, data, 0, every, queue=False)
        return self.class_scores(slot, data, batch_size)

    def _hook(self, name: str) -> None:
        if name not in self._hooked:
            self._hooked.add(name)
            hook = H.lora_hook(self.rows, name)
            self._hooks.append(self._linears[name].register_forward_hook(hook))

    def close(self) -> None:
        """Remove the hooks: the base model is as it was."""
        for h in self._hooks:
            h.remove()
        self._hooks.clear()
        self._hooked.clear()

    # -- the stack: every resident slot's tensors in one block ------------------------------------

    @staticmethod
    def _fields(slot: Slot) -> dict[str, Field]:
        part = {"lora": "lora", "prompt": "prompt", "head": "head"}
        return {
            name: Field(tuple(t.shape), part[name.split(".")[0]])
            for name, t in slot.tensors().items()
        }

    def _place(self, slots: list[Slot], live: bool) -> None:
        """Give each of ``slots`` without one a row of the stack, holding its own tensors.
        The stack grows (rows, a larger rank or prompt, new layers) when it must; trials
        already in it keep their values and optimizer state."""
        missing = [s for s in slots if s.row is None]
        if not missing:
            return
        want = dict(self.stack.specs) if self.stack is not None else {}
        for s in missing:
            for name, f in self._fields(s).items():
                have = want.get(name)
                if have is None:
                    want[name] = f
                elif have.shape != f.shape:
                    grown = tuple(max(a, b) for a, b in zip(have.shape, f.shape, strict=True))
                    want[name] = Field(grown, f.part)
        free = [i for i, o in enumerate(self.occupant) if o is None]
        if self.stack is None or want != self.stack.specs or len(free) < len(missing):
            used = len(self.occupant) - len(free)
            rows = max(self.capacity, len(self.occupant), used + len(missing))
            if self.stack is None:
                self.stack = Stack(want, rows, self.device)
            else:
                self.stack = self.stack.resized(want, rows)
            self.occupant += [None] * (rows - len(self.occupant))
            free = [i for i, o in enumerate(self.occupant) if o is None]
        for s, row in zip(missing, free, strict=False):
            self.occupant[row], s.row = s, row
            cfg = s.cfg
            trains = live and s.total > 0
            self.stack.place(
                row,
                {n: t.detach() for n, t in s.tensors().items()},
                {p: cfg.rate(p) for p in PARTS},
                cfg.weight_decay,
                int(cfg.warmup_ratio * s.total),
                s.total,
                cfg.max_grad_norm,
                trains,
            )

    def _release(self, slot: Slot, keep: bool) -> None:
        """Take ``slot`` out of the stack; ``keep``: its trained values go back into its own
        tensors first."""
        if slot.row is None or self.stack is None:
            slot.row = None
            return
        if keep:
            with torch.no_grad():
                for name, t in slot.tensors().items():
                    t.copy_(self.stack.read(slot.row, name, tuple(t.shape)))
        self.stack.free(slot.row)
        self.occupant[slot.row], slot.row = None, None
        if all(o is None for o in self.occupant):  # empty: the next pack sizes it afresh
            self.stack, self.occupant = None, []

    def _drop_stack(self) -> None:
        for s in self.occupant:
            if s is not None:
                s.row = None
        self.stack, self.occupant = None, []

    # -- forward --------------------------------------------------------------------------------

    def _batch(self, data: Encoded, idx: torch.Tensor) -> dict[str, Any]:
        b = batch_rows(data, idx, self.device, self.left_pad)
        b["lengths"] = data.lengths[idx]  # on the CPU: the packed width needs no device sync
        return b

    def _forward(self, items: list[tuple[Slot, dict[str, Any]]]) -> torch.Tensor:
        """Class scores of every row of ``items``, in order (each slot's prompt in front of
        its rows, rows padded to the longest, on the side the tokenizer pads)."""
        parts = []
        for slot, b in items:
            if "lengths" not in b:
                b = {**b, "lengths": b["attention_mask"].sum(-1).cpu()}
            parts.append(([(slot, int(b["input_ids"].shape[0]))], b))
        return self._forward_parts(parts, training=False)[0]

    def _forward_parts(self, parts: list[Part], training: bool) -> tuple[torch.Tensor, Any]:
        """Class scores of every row of ``parts``, and ``(segment of each row, rows per
        segment, stacked row per segment)``. Slots without a stack row get one for this pass."""
        segs = [seg for segs, _ in parts for seg in segs]
        temp = [s for s, _ in segs if s.row is None]
        self._place(temp, live=False)
        try:
            kwargs, positions, meta = self._inputs(parts, training)
            if self.lm_kind is None:
                return self.base(**kwargs).logits, meta
            return self._verbalize(kwargs, positions, meta), meta
        finally:
            self.rows.clear()
            for s in temp:
                self._release(s, keep=False)

    def _inputs(self, parts: list[Part], training: bool) -> tuple[dict[str, Any], Any, Any]:
        """The packed batch (``inputs_embeds``, mask, token types) and :attr:`rows` set up for
        the hooks; every per-row quantity is a tensor op, not a loop over slots."""
        dev, left = self.device, self.left_pad
        segs = [seg for segs, _ in parts for seg in segs]
        batches = [b for _, b in parts]
        wd = max(int(b["input_ids"].shape[1]) for b in batches)
        keys = ["input_ids", "attention_mask", "token_type_ids", "positions"]
        cols: dict[str, Any] = {}
        for col in keys:
            if col not in batches[0]:
                continue
            if len(batches) == 1:
                cols[col] = batches[0][col]
                continue
            pieces = []
            for b in batches:
                pad = wd - int(b["input_ids"].shape[1])
                if col == "positions":
                    pieces.append(b[col] + pad if left else b[col])
                elif pad:
                    pieces.append(F.pad(b[col], (pad, 0) if left else (0, pad)))
                else:
                    pieces.append(b[col])
            cols[col] = torch.cat(pieces)
        lengths = (
            torch.cat([b["lengths"] for b in batches])
            if len(batches) > 1
            else batches[0]["lengths"]
        )
        counts = torch.tensor([n for _, n in segs])
        ks = torch.tensor([s.prompt_length for s, _ in segs])
        k_rows = ks.repeat_interleave(counts)
        n_rows = int(counts.sum())
        width = int((k_rows + lengths).max()) if n_rows else wd
        ids, mask = cols["input_ids"], cols["attention_mask"]
        types, positions = cols.get("token_type_ids"), cols.get("positions")
        stack = self.stack
        assert stack is not None
        present = torch.tensor([s.row for s, _ in segs])
        slot_rows = present.repeat_interleave(counts).to(dev)
        j = torch.arange(width, device=dev)
        if int(ks.max()) > 0:
            k = k_rows.to(dev).unsqueeze(1)
            length = lengths.to(dev).unsqueeze(1)
            if left:  # [padding, prompt, tokens]; the data rows are left padded to wd
                start = width - length - k
                src = j - (width - wd)
                in_tok = j >= width - length
            else:  # [prompt, tokens, padding]
                start = torch.zeros_like(k)
                src = j - k
                in_tok = (j >= k) & (j < k + length)
            in_prompt = (j >= start) & (j < start + k)
            src = src.clamp(0, wd - 1).expand(n_rows, width)
            ids = ids.gather(1, src)
            if types is not None:
                types = torch.where(in_tok, types.gather(1, src), 0)
            mask = (in_tok | in_prompt).to(mask.dtype)
            if positions is not None:
                positions = positions + (width - wd if left else k_rows.to(dev))
            embeds = self.embed(ids)
            rows_prompt = H.prompt_columns(stack.fields["prompt"], slot_rows, start, width, left)
            embeds = torch.where(in_prompt.unsqueeze(-1), rows_prompt.to(embeds.dtype), embeds)
        else:
            embeds = self.embed(ids)
        kwargs: dict[str, Any] = {"inputs_embeds": embeds, "attention_mask": mask}
        if types is not None:
            kwargs["token_type_ids"] = types
        # Rows for the hooks: which stacked row, segment and place in [segments, n_max] each
        # batch row has, and each row's LoRA scaling, LoRA dropout and dropout key.
        s_count = len(segs)
        seg = torch.arange(s_count).repeat_interleave(counts)
        first = (torch.cumsum(counts, 0) - counts).repeat_interleave(counts)
        row_in = torch.arange(n_rows) - first
        n_max = int(counts.max())
        r = self.rows
        r.segments, r.stack, r.training, r.width = segs, stack, training, width
        r.slot_rows, r.present = slot_rows, present.to(dev)
        r.seg, r.n_max = seg.to(dev), n_max
        r.equal = bool((counts == n_max).all())
        r.dst = (seg * n_max + row_in).to(dev)
        scaling = torch.tensor([s.scaling for s, _ in segs])
        r.seg_scaling = scaling.to(dev)
        r.scaling = None if r.equal else scaling.repeat_interleave(counts).to(dev)
        r.lora_names = {name for s, _ in segs for name in s.lora}
        r.coords = (width - 1 - j) if left else j
        r.lora_p, r.keys = None, None
        if training:
            p = torch.tensor([s.plan.lora_dropout for s, _ in segs])
            if bool((p > 0).any()):
                r.lora_p = p.repeat_interleave(counts).to(dev)
            seeds = torch.tensor([s.cfg.seed for s, _ in segs]).repeat_interleave(counts)
            steps = torch.tensor([s.step for s, _ in segs]).repeat_interleave(counts)
            r.keys = H.row_keys(seeds, steps, row_in).to(dev)
        meta = (r.seg, counts.to(dev), r.present)
        return kwargs, positions, meta

    def _verbalize(self, kwargs: dict[str, Any], positions: Any, meta: Any) -> Any:
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
            cols = positions
        # The whole model runs, its own head included (whatever modules it has); a hook on
        # the backbone hands the head only the prediction points: [rows, 1, vocab] logits.
        self.rows.pick = (rows, cols)
        try:
            logits = self.base(**kwargs).logits[:, 0]
        finally:
            self.rows.pick = None
        logp = torch.log_softmax(logits.float(), -1)
        # Each segment's label words, padded to the widest (weight 0): [segments, classes, words].
        words = [s.label_words for s, _ in self.rows.segments]
        classes = {len(w) for w in words}  # type: ignore[arg-type]
        if len(classes) != 1:
            raise RuntimeError(f"trials of one pack need the same classes, got {sorted(classes)}")
        wide = max(len(ws) for w in words for ws in w)  # type: ignore[union-attr]
        tokens = [[ws + [ws[0]] * (wide - len(ws)) for ws in w] for w in words]  # type: ignore[union-attr]
        weights = [
            [[1.0 / len(ws)] * len(ws) + [0.0] * (wide - len(ws)) for ws in w] for w in words
        ]  # type: ignore[union-attr]
        seg = meta[0]
        tok = torch.tensor(tokens, device=logp.device).index_select(0, seg)
        wts = torch.tensor(weights, device=logp.device).index_select(0, seg)
        picked = logp.gather(1, tok.flatten(1)).view(tok.shape)
        return (picked * wts).sum(-1)

    # -- training -------------------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.active) + len(self.waiting)

    def keys(self) -> list[Any]:
        return [s.key for s in self.active + self.waiting]

    def progress(self) -> list[tuple[Any, int, int]]:
        """``(key, step, total)`` of each active slot."""
        return [(s.key, s.step, s.total) for s in self.active]

    # -- checkpoints (``search train`` of a verbalizer head) ------------------------------------

    def snapshot(self, key: Any) -> dict[str, Any]:
        """An active trial's whole training state between two steps: its tensors and AdamW
        moments (its corner of each field), the step, the optimizer's step count, the loss
        not yet in the curve, and the curve. The data order and the dropout masks are
        functions of the seed and the step, so :meth:`resume` continues bit-exactly (CPU)."""
        slot = next(s for s in self.active if s.key == key)
        stack = self.stack
        assert stack is not None and slot.row is not None
        row = slot.row
        shapes = {n: tuple(t.shape) for n, t in slot.tensors().items()}

        def corner(block: torch.Tensor, name: str) -> torch.Tensor:
            cut = tuple(slice(0, n) for n in shapes[name])
            return stack.view_of(block, name)[row][cut].detach().cpu().clone()

        return {
            "step": slot.step,
            "tensors": {n: corner(stack.data, n) for n in shapes},
            "m": {n: corner(stack.m, n) for n in shapes},
            "v": {n: corner(stack.v, n) for n in shapes},
            "adam_steps": stack.steps[row].detach().cpu().clone(),
            "loss_sum": stack.loss_sum[row].detach().cpu().clone(),
            "loss_steps": slot.loss_steps,
            "curve": list(slot.curve),
        }

    def resume(self, key: Any, state: dict[str, Any]) -> None:
        """A queued trial joins now at ``state`` (a :meth:`snapshot` of the same trial: same
        params, data and seed) instead of at step 0."""
        slot = next(s for s in self.waiting if s.key == key)
        self.waiting.remove(slot)
        slot.started = time.perf_counter()
        self.active.append(slot)
        self._place([slot], live=True)
        stack, row = self.stack, slot.row
        assert stack is not None and row is not None
        with torch.no_grad():
            for block, part in ((stack.data, "tensors"), (stack.m, "m"), (stack.v, "v")):
                for name, value in state[part].items():
                    cut = tuple(slice(0, n) for n in value.shape)
                    stack.view_of(block, name)[row][cut] = value.to(self.device)
            stack.steps[row] = state["adam_steps"].to(self.device)
            stack.loss_sum[row] = state["loss_sum"].to(self.device)
        slot.step, slot.loss_steps = int(state["step"]), int(state["loss_steps"])
        slot.curve = list(state["curve"])
        assert slot.order is not None
        for _ in range(slot.step):  # the data order is the seed's: replay it to the step
            next(slot.order)

    def drop(self, key: Any) -> None:
        for s in self.active:
            if s.key == key:
                self._release(s, keep=False)
        self.active = [s for s in self.active if s.key != key]
        self.waiting = [s for s in self.waiting if s.key != key]

    def clear(self) -> None:
        for s in self.active:
            self._release(s, keep=False)
        self.active, self.waiting = [], []
        self._drop_stack()

    def step(self) -> list[Finished]:
        """One optimizer step of every active slot; returns the slots that left."""
        joined = []
        while self.waiting and len(self.active) < self.capacity:
            slot = self.waiting.pop(0)
            slot.started = time.perf_counter()
            self.active.append(slot)
            joined.append(slot)
        if not self.active:
            return []
        try:
            self._place(joined, live=True)
            done = self._train_step()
        except Exception as exc:
            if not is_oom(exc):
                failed = [Finished(s.key, s.trainable, error=exc) for s in self.active]
                self.active = []
                self._drop_stack()
                return failed
            self._drop_stack()
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
                self._read_losses([s])  # the loss since the last curve point
                self._sync()
                s.train_seconds = time.perf_counter() - s.started
                out.append(self._leave(s, result, pruned=True))
        return out

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    def _leave(self, s: Slot, result: EvalResult, pruned: bool) -> Finished:
        """Take ``s`` out of the engine as a finished (or stopped) trial, its trained values
        back in its own tensors."""
        self.active.remove(s)
        self._release(s, keep=True)
        stats = TrainStats(s.step, s.train_seconds, s.curve, s.log_every)
        mean_pack = sum(s.pack_sizes) / len(s.pack_sizes) if s.pack_sizes else 1.0
        return Finished(s.key, s.trainable, stats, result, None, mean_pack, pruned, s.total)

    def _train_parts(self, active: list[Slot]) -> list[Part]:
        """This step's rows: each slot's next batch of its own row order, one gather per
        training set (slots on the same template share one)."""
        groups: dict[int, tuple[Encoded, list[tuple[Slot, torch.Tensor]]]] = {}
        for s in active:
            groups.setdefault(id(s.train_data), (s.train_data, []))[1].append((s, next(s.order)))  # type: ignore[arg-type]
        parts = []
        for data, picks in groups.values():
            idx = picks[0][1] if len(picks) == 1 else torch.cat([i for _, i in picks])
            parts.append(([(s, len(i)) for s, i in picks], self._batch(data, idx)))
        return parts

    def _optimizer_step(self, active: list[Slot]) -> list[Finished]:
        stack = self.stack
        assert stack is not None
        parts = self._train_parts(active)
        with autocast(self.device):
            logits, (seg, counts, present) = self._forward_parts(parts, training=True)
        labels = (
            torch.cat([b["labels"] for _, b in parts]) if len(parts) > 1 else parts[0][1]["labels"]
        )
        per_row = F.cross_entropy(logits.float(), labels, reduction="none")
        per_slot = torch.zeros(len(counts), device=per_row.device).index_add_(0, seg, per_row)
        per_slot = per_slot / counts
        stack.zero_grad()
        per_slot.sum().backward()
        stack.loss_sum.index_add_(0, present, per_slot.detach())
        stack.step()
        to_log = []
        for s in active:
            s.step += 1
            s.loss_steps += 1
            s.pack_sizes.append(len(active))
            if s.step % s.log_every == 0 or s.step == s.total:
                to_log.append(s)
        out: list[Finished] = []
        for s, value in self._read_losses(to_log):
            if not math.isfinite(value):
                reason = f"train loss is {value} at step {s.step} of {s.total}; stopped"
                out.append(Finished(s.key, s.trainable, error=TrialFailed(reason)))
                self.active.remove(s)
                self._release(s, keep=False)
        return out

    def _read_losses(self, slots: list[Slot]) -> list[tuple[Slot, float]]:
        """Each slot's mean train loss since its last curve point, appended to its curve (one
        host sync for all of them)."""
        slots = [s for s in slots if s.loss_steps]
        if not slots or self.stack is None:
            return []
        rows = torch.tensor([s.row for s in slots], device=self.device)
        sums = self.stack.loss_sum.index_select(0, rows)
        self.stack.loss_sum.index_fill_(0, rows, 0.0)
        out = []
        for s, total in zip(slots, sums.tolist(), strict=True):
            value = total / s.loss_steps
            s.loss_steps = 0
            if math.isfinite(value):
                s.curve.append(value)
            out.append((s, value))
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
        tested = [s for s in ended if s.test_data is not None]
        tests = self.evaluate(tested, split="test") if tested else {}
        out = [self._leave(s, results[s.key], pruned=False) for s in ended]
        for f in out:
            f.test_result = tests.get(f.key)
        return out

    # -- evaluation -----------------------------------------------------------------------------

    def class_scores(self, slot: Slot, data: Encoded, batch_size: int = 64) -> torch.Tensor:
        """The class scores (what the cross-entropy sees) of ``slot`` on every row of
        ``data``, in row order, on the CPU; in the model's own dtype, no bf16 autocast (what
        a plain load of the saved adapters computes)."""
        out = []
        with torch.no_grad():
            for idx in torch.arange(len(data)).split(batch_size):
                batch = self._batch(data, idx)
                out.append(self._forward([(slot, batch)]).float().cpu())
        return torch.cat(out)

    def evaluate(self, slots: list[Slot], split: str = "eval") -> dict[Any, EvalResult]:
        """Predictions (argmax) and mean cross-entropy of each slot on its eval data (``split``
        "test": its ``test_data``), all slots in the same batches, each in sorted-length chunks
        of its eval batch size."""
        start = time.perf_counter()
        data_of: dict[Any, Encoded] = {}
        for s in slots:
            data = s.eval_data if split == "eval" else s.test_data
            if data is None:
                raise ValueError(f"slot {s.key!r} has no {split} data")
            data_of[s.key] = data
        chunks = {}
        for s in slots:
            size = max(64, 2 * s.cfg.batch_size)
            chunks[s.key] = torch.argsort(data_of[s.key].lengths, descending=True).split(size)
        preds: dict[Any, list[Any]] = {s.key: [] for s in slots}
        loss_sum = {s.key: 0.0 for s in slots}
        sums: list[tuple[list[Slot], torch.Tensor]] = []
        rounds = max(len(c) for c in chunks.values())
        temp = [s for s in slots if s.row is None]
        self._place(temp, live=False)
        try:
            with torch.no_grad(), autocast(self.device):
                for i in range(rounds):
                    parts: list[Part] = []
                    for s in slots:
                        if i < len(chunks[s.key]):
                            b = self._batch(data_of[s.key], chunks[s.key][i])
                            parts.append(([(s, len(chunks[s.key][i]))], b))
                    logits, (seg, counts, _) = self._forward_parts(parts, training=False)
                    logits = logits.float()
                    labels = torch.cat([b["labels"] for _, b in parts])
                    ce = F.cross_entropy(logits, labels, reduction="none").double()
                    per = torch.zeros(len(parts), dtype=torch.float64, device=ce.device)
                    sums.append(([seg_[0][0] for seg_, _ in parts], per.index_add_(0, seg, ce)))
                    picked = logits.argmax(-1).cpu().split([len(p[1]["labels"]) for p in parts])
                    for (segs_, _), pr in zip(parts, picked, strict=True):
                        preds[segs_[0][0].key].append(pr)
        finally:
            for s in temp:
                self._release(s, keep=False)
        for owners, per in sums:  # one host sync per round, after all rounds ran
            for s, value in zip(owners, per.tolist(), strict=True):
                loss_sum[s.key] += value
        seconds = time.perf_counter() - start
        out = {}
        for s in slots:
            order = torch.cat(list(chunks[s.key]))
            ordered = torch.empty(len(data_of[s.key]), dtype=torch.long)
            ordered[order] = torch.cat(preds[s.key])
            loss = loss_sum[s.key] / max(1, len(data_of[s.key]))
            out[s.key] = EvalResult(ordered.tolist(), loss, seconds)
        return out
