"""The classification head: each classifier trial trains its own copy of the base model's new
head (peft's ``modules_to_save``); a language model's own head (verbalizer) never trains.

In the packed engine the copy's parameters are fields ``head.<module>.<parameter>``, and one
hook per head module runs every trial's rows through its own parameters with
``torch.func.vmap`` over ``functional_call`` of one template copy (any head module: BERT's
linear, RoBERTa's dense + out_proj).
"""

from __future__ import annotations

import copy
from typing import Any

from peftsearch.objectives.adapters._base import Adapter
from peftsearch.spaces import Rule, log_range


class Head(Adapter):
    name = "head"
    label = "classification head"
    rate_param = "head_learning_rate"
    in_kind = False  # every classifier trial trains one: it names no kind
    rules = {
        "head_learning_rate": Rule(
            "optional_float",
            None,
            low=0,
            low_open=True,
            help="peak learning rate of the classification head; null = learning_rate",
            order=6,
        ),
    }
    # A new linear head wants rates one to two orders of magnitude above LoRA's (measured on
    # MiniLM + Rotten Tomatoes and SMS spam: benchmarks/RESULTS.md, "Per-part learning rates").
    defaults = {"classifier": {"head_learning_rate": log_range(1e-2, 3e-1)}}

    def used(self, params: dict[str, Any]) -> bool:
        return True  # whenever the model has a head to train (a classifier)

    def describe(self, params: dict[str, Any]) -> str:
        return "the classification head"

    # -- the packed engine ----------------------------------------------------------------------

    def attach(self, engine: Any) -> None:
        for name, mod in engine.head_modules.items():
            template = copy.deepcopy(mod)
            for m in template.modules():  # deepcopy copies hooks too: the template has none
                m._forward_hooks.clear()
            template.requires_grad_(False).eval()
            pnames = [n for n, _ in mod.named_parameters()]
            hook = _hook(engine.rows, name, template, pnames)
            engine.hook(mod, f"head:{name}", lambda h=hook: h)

    def init(self, engine: Any, slot: Any, gen: Any) -> dict[str, Any]:
        import torch

        heads = torch.nn.ModuleDict(
            {n: copy.deepcopy(m) for n, m in engine.head_modules.items()}
        ).to(engine.device)
        for m in heads.modules():  # deepcopy copies our hooks too: the copies must not have them
            m._forward_hooks.clear()
        heads.requires_grad_(True)
        heads.eval()
        slot.state[self.name] = heads
        out: dict[str, Any] = {}
        for head, module in heads.items():
            for pname, p in module.named_parameters():
                out[f"head.{head}.{pname}"] = p
        return out


def _hook(rows: Any, name: str, template: Any, pnames: list[str]) -> Any:
    """Replaces a head module's output: each trial's rows through its own head parameters."""
    from torch.func import functional_call, vmap

    fields = [f"head.{name}.{p}" for p in pnames]

    def one(params: dict[str, Any], x: Any) -> Any:
        return functional_call(template, params, (x,))

    batched = vmap(one)

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        import torch

        if not rows.segments:
            return None
        if len(args) != 1 or not torch.is_tensor(args[0]):
            raise RuntimeError(f"head module {name!r} takes {len(args)} inputs; packing needs one")
        x = args[0]
        stacked = rows.stack.fields
        params = {
            p: stacked[f].index_select(0, rows.present) for p, f in zip(pnames, fields, strict=True)
        }
        s, n = len(rows.segments), rows.n_max
        if rows.equal:
            xp = x.view(s, n, *x.shape[1:])
        else:
            assert rows.dst is not None
            xp = x.new_zeros(s * n, *x.shape[1:]).index_copy(0, rows.dst, x)
            xp = xp.view(s, n, *x.shape[1:])
        y = batched(params, xp)
        y = y.reshape(s * n, *y.shape[2:])
        return y if rows.dst is None or rows.equal else y.index_select(0, rows.dst)

    return hook
