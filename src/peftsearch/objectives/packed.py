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
for all), and the hooks on the base apply every slot's adapters and dropout in a fixed number
of tensor ops. The Python per slot and step is its
row order and a few counters. Measured: ``benchmarks/pack_ops.py``, RESULTS.md.

Why hand-rolled: peft's mixed-adapter batches (``forward(..., adapter_names=[...])``) work in
eval mode only ("Cannot pass `adapter_names` when the model is in training mode", peft 0.21),
loop over adapters in Python, and a deep copy of the base per trial repeats the frozen work
once per trial.

The engine knows no adapter and no task by name. Each registered adapter
(:mod:`peftsearch.objectives.adapters`: LoRA, the soft prompt, the head, as peft defines them)
builds a slot's tensors, hooks the base and prepares its per-row values; the task
(:mod:`peftsearch.objectives.tasks`) turns the packed forward into scores, a loss and
predictions. Around this core: the row layout (:mod:`~peftsearch.objectives.layout`), the
slots' bookkeeping (:mod:`~peftsearch.objectives.slots`), evaluation
(:mod:`~peftsearch.objectives.evaluation`) and checkpoints
(:mod:`~peftsearch.objectives.snapshot`).

Dropout: the base's dropout layers (hidden states, embeddings, the dropout before the head) and
the trial's ``lora_dropout``, each with masks that are a function of the trial (seed, step, its
own rows) alone (:func:`~peftsearch.objectives.hooks.keep_mask`). The base itself runs in eval
mode, so its attention-probability dropout, which happens inside SDPA from the global
generator, is off. Measured against peft with every dropout on: benchmarks/RESULTS.md.

A slot's own tensors (``Slot.tensors``) hold its initial values until it leaves the engine and
its trained values after; while it trains, the stack holds them.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from peftsearch.errors import TrialFailed
from peftsearch.objectives import adapters, evaluation, snapshot, tasks
from peftsearch.objectives import hooks as H
from peftsearch.objectives.data import Encoded
from peftsearch.objectives.layout import pack_inputs
from peftsearch.objectives.slots import Finished, Part, Slot, is_oom

__all__ = ["Finished", "PackedEngine", "Slot", "is_oom"]
from peftsearch.objectives.stack import Field, Stack
from peftsearch.objectives.train import (
    MAX_CURVE_POINTS,
    EvalResult,
    TrainConfig,
    TrainStats,
    autocast,
    batch_rows,
    row_order,
)


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
        task: str | None = None,
        tokenizer: Any = None,
        max_new_tokens: int = 32,
    ) -> None:
        """``lm_kind`` None: ``base`` is a sequence classifier and each trial trains a copy of
        its head. ``"causal"`` / ``"masked"``: ``base`` is a language model whose own LM head
        scores each label's words (the ``verbalize`` task); nothing but adapters trains.
        ``"generator"``: a causal LM or an encoder-decoder (``"seq2seq"``), as its config
        says, that writes answers (the ``generate`` task; ``tokenizer`` decodes them, at most
        ``max_new_tokens`` each). ``task``: a registered task's name (default: the built-in
        one of ``lm_kind``)."""
        self.base, self.device, self.left_pad = base, device, left_pad
        self.capacity = max(1, capacity)
        if lm_kind == "generator":
            lm_kind = "seq2seq" if base.config.is_encoder_decoder else "causal"
        self.lm_kind = lm_kind
        self.tokenizer, self.max_new_tokens = tokenizer, max_new_tokens
        self.task = tasks.get(task) if task else tasks.for_lm_kind(lm_kind)
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
        self._hooks: dict[str, Any] = {}
        self.head_modules, heads = self.task.head_modules(base)
        # The linear layers an adapter may target: all but the head's.
        self.linears = {
            name: mod
            for name, mod in base.named_modules()
            if isinstance(mod, torch.nn.Linear) and name.split(".")[0] not in heads
        }
        self.task.attach(self)
        for adapter in adapters.ADAPTERS.values():
            adapter.attach(self)
        site = 0
        for mod in base.modules():
            if isinstance(mod, torch.nn.Dropout):
                hook = H.dropout_hook(self.rows, site)
                self.hook(mod, f"dropout:{site}", lambda h=hook: h)
                site += 1
        base.eval()

    def hook(self, module: Any, key: str, make: Any, pre: bool = False) -> None:
        """Register the forward hook ``make()`` on ``module`` under ``key`` (``pre``: a
        forward pre-hook, which may replace the inputs), once: adapters hook layers when a
        trial first needs them; :meth:`close` removes them all."""
        if key not in self._hooks:
            register = module.register_forward_pre_hook if pre else module.register_forward_hook
            self._hooks[key] = register(make())

    # -- building a slot ------------------------------------------------------------------------

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
        untrained: bool = False,
    ) -> Slot:
        """Queue one trial. Its adapters are drawn from ``seed`` alone (same seed, same init,
        whatever else is in the engine), each registered adapter the trial uses in registry
        order. ``label_tokens``: with an LM head, each class's label words as token ids (the
        first token of each word). ``test_data``: scored too when the trial finishes
        (:attr:`Finished.test_result`), after ``eval_data``. ``untrained``: no adapters at
        all (the zero-shot model)."""
        cfg = TrainConfig.from_params(params, seed)
        gen = torch.Generator().manual_seed(seed)
        slot = Slot(key, params, cfg, train_data, eval_data, test_data=test_data)
        if not untrained:
            for adapter in adapters.used(params):
                slot.tensors.update(adapter.init(self, slot, gen))
        slot.trainable = sum(p.numel() for p in slot.parameters())
        self.task.check_slot(slot, label_tokens)
        self._init_training(slot)
        slot.rung_steps = sorted({s for s in (rung_steps or []) if 0 < s < slot.total})
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
        self, params: dict[str, Any], eval_data: Encoded, label_tokens: list[list[int]] | None
    ) -> EvalResult:
        """Evaluate the base model alone (zero-shot): no adapters, nothing trained."""
        slot = self.add(
            ("zero-shot",), params, eval_data, eval_data, 0, label_tokens, False, untrained=True
        )
        return self.evaluate([slot])[slot.key]

    def vocab_logprobs(
        self, params: dict[str, Any], data: Encoded, batch_size: int = 32
    ) -> torch.Tensor:
        """The untrained LM's log-probability of every vocabulary token at each row's
        prediction point, [rows, vocab] on the CPU (automatic label search): the zero-shot
        slot of :meth:`score_untrained` with one class per token."""
        vocab = int(self.base.get_output_embeddings().weight.shape[0])
        every = [[t] for t in range(vocab)]
        slot = self.add(("label-search",), params, data, data, 0, every, False, untrained=True)
        return self.class_scores(slot, data, batch_size)

    def close(self) -> None:
        """Remove the hooks: the base model is as it was."""
        for h in self._hooks.values():
            h.remove()
        self._hooks.clear()

    # -- the stack: every resident slot's tensors in one block ------------------------------------

    @staticmethod
    def _fields(slot: Slot) -> dict[str, Field]:
        """A slot's tensors as stack fields, each with its learning-rate part (its adapter's)."""
        return {
            name: Field(tuple(t.shape), adapters.field_part(name))
            for name, t in slot.tensors.items()
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
                self.stack = Stack(want, rows, self.device, adapters.parts())
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
                {n: t.detach() for n, t in s.tensors.items()},
                adapters.rates(s.params),
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
                for name, t in slot.tensors.items():
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
            kwargs, positions, meta = pack_inputs(self, parts, training)
            return self.task.scores(self, kwargs, positions), meta
        finally:
            self.rows.clear()
            for s in temp:
                self._release(s, keep=False)

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
        """An active trial's whole training state between two steps (see
        :func:`~peftsearch.objectives.snapshot.snapshot`)."""
        return snapshot.snapshot(self, key)

    def resume(self, key: Any, state: dict[str, Any]) -> None:
        """A queued trial joins now at ``state`` instead of at step 0 (see
        :func:`~peftsearch.objectives.snapshot.resume`)."""
        snapshot.resume(self, key, state)

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
        per_row = self.task.loss(logits, labels)
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
        """The class scores of ``slot`` on every row of ``data`` (see
        :func:`~peftsearch.objectives.evaluation.class_scores`)."""
        return evaluation.class_scores(self, slot, data, batch_size)

    def evaluate(self, slots: list[Slot], split: str = "eval") -> dict[Any, EvalResult]:
        """Predictions and mean loss of each slot on its eval (or test) data, all slots in the
        same batches (see :func:`~peftsearch.objectives.evaluation.evaluate`)."""
        return evaluation.evaluate(self, slots, split)
