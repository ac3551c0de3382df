"""DoRA (Liu et al. 2024, weight-decomposed LoRA) as peft defines it (``LoraConfig(use_dora=
True)``): a layer's weight becomes ``m * (W + s·BA) / ||W + s·BA||``, row by row, with ``m`` a
learned magnitude per output unit (starting as ``||W||``) and the norm detached from the
gradient (the paper's section 4.3, as peft does). ``adapter: dora`` chooses it; it takes
LoRA's parameters (``lora_r``, ``lora_alpha``, ``target_modules``, ``use_rslora``, ...).

In the packed engine a slot's tensors are ``dora.<layer>.A`` / ``.B`` / ``.m``. The output of
a layer is, per row (peft's ``DoraLinearLayer.forward``)::

    y = W x + b + (g - 1) · W x' + g · s · B A x',   g = m / ||W + s·BA||  (x' = dropout(x))

No trial needs its dense ``W + s·BA``: row ``i`` of the norm squared is
``||W_i||² + 2s·B_i·(A W_i) + s²·B_i (A Aᵀ) B_iᵀ``, which for all trials of a batch is one
matmul of the stacked A with the shared W (``A Wᵀ``: [trials, r, out]) and two small ``bmm``
(the reason for the hand-written form; ``tests/objectives/test_packed.py`` checks it against
peft's DoRA, same losses). The rows of other trials get ``g = 1`` and a zero delta.
"""

from __future__ import annotations

import zlib
from typing import Any, ClassVar

from peftsearch.objectives.adapters.lora import LoRA
from peftsearch.spaces import Rule


class DoRA(LoRA):
    name = "dora"
    label = "DoRA"
    config_class = "LoraConfig"
    short = "dora"
    size_param: ClassVar[str | None] = None  # its size is LoRA's ``lora_r`` (one column)
    shares = "lora"  # LoRA's parameters apply to it (asked in its trials too)
    method = True
    rules: ClassVar[dict[str, Rule]] = {}  # none of its own: LoRA registers them
    defaults: ClassVar[dict[str, dict[str, Any]]] = {}

    def used(self, params: dict[str, Any]) -> bool:
        return params.get("adapter") == "dora" and int(params["lora_r"]) > 0

    def describe(self, params: dict[str, Any]) -> str:
        return "DoRA " + super().describe(params).removeprefix("LoRA ")

    # -- the packed engine ----------------------------------------------------------------------

    def init(self, engine: Any, slot: Any, gen: Any) -> dict[str, Any]:
        import torch

        out = super().init(engine, slot, gen)  # A and B as LoRA's, from the same draws
        for name in slot.state[self.name]["layers"]:
            weight = engine.linears[name].weight.detach()
            magnitude = torch.linalg.norm(weight.float(), dim=1)  # ||W + s·BA|| with B = 0
            out[f"dora.{name}.m"] = torch.nn.Parameter(magnitude.to(engine.device))
        return out

    def make_hook(self, engine: Any, name: str) -> Any:
        return _hook(engine.rows, name, engine.linears[name])

    def prepare(self, engine: Any, rows: Any, segments: list[tuple[Any, int]]) -> None:
        import torch

        super().prepare(engine, rows, segments)  # scaling and dropout per row, as LoRA's
        states = [s.state.get(self.name) for s, _ in segments]
        # per layer, which segments' trials have DoRA on it ([S] bool)
        rows.extra["dora:on"] = {
            n: torch.tensor([bool(st) and n in st["layers"] for st in states]).to(engine.device)
            for n in rows.extra[self.name].names
        }

    # -- outside the engine -----------------------------------------------------------------------

    def peft_config(self, params: dict[str, Any], task_type: Any, model_config: Any) -> Any:
        import dataclasses

        config = super().peft_config(params, task_type, model_config)
        return dataclasses.replace(config, use_dora=True)

    def load_slot(self, model: Any, slot: Any) -> None:
        import torch

        layers = model.get_base_model()
        with torch.no_grad():
            for name in slot.state[self.name]["layers"]:
                layer = layers.get_submodule(name)
                layer.lora_A["default"].weight.copy_(slot.tensors[f"dora.{name}.A"])
                layer.lora_B["default"].weight.copy_(slot.tensors[f"dora.{name}.B"])
                layer.lora_magnitude_vector["default"].weight.copy_(slot.tensors[f"dora.{name}.m"])

    def slot_config(self, slot: Any, task_type: Any, model_config: Any) -> Any:
        import dataclasses

        config = self.peft_config(slot.params, task_type, model_config)
        return dataclasses.replace(config, target_modules=sorted(slot.state[self.name]["layers"]))

    # ``owns`` is LoRA's: a built peft model names DoRA's tensors as LoRA's (``lora_A``,
    # ``lora_B``, ``lora_magnitude_vector``); they train at LoRA's rates, which are DoRA's.


def _norms(a: Any, b: Any, weight: Any, w_sq: Any, scaling: Any) -> Any:
    """``[S, out]``: ``||W + s·B A||`` per output row of each segment's trial, without the
    dense ``B A`` (see the module docstring); no gradient (peft detaches it)."""
    import torch

    with torch.no_grad():
        aw = torch.matmul(a, weight.t().to(a.dtype))  # [S, r, out]
        cross = (b * aw.transpose(1, 2)).sum(-1)  # [S, out]: B_i · (A W_i)
        quad = (torch.bmm(b, torch.bmm(a, a.transpose(1, 2))) * b).sum(-1)  # B_i A Aᵀ B_iᵀ
        s = scaling.view(-1, 1)
        return (w_sq + 2 * s * cross + s * s * quad).clamp_min(0).sqrt()


def _hook(rows: Any, name: str, linear: Any) -> Any:
    """Adds every DoRA row's delta to the output of layer ``name`` (module docstring)."""
    import torch
    import torch.nn.functional as F

    a_name, b_name, m_name = f"dora.{name}.A", f"dora.{name}.B", f"dora.{name}.m"
    site = 3_000_000 + zlib.crc32(name.encode()) % 1_000_000  # fixed across processes
    w_sq = (linear.weight.detach().float() ** 2).sum(1)  # [out]: ||W_i||², the base is frozen

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        lr = rows.extra.get("dora") if rows.segments else None
        if lr is None or name not in lr.names:
            return None
        fields = rows.stack.fields
        a = fields[a_name].index_select(0, rows.present)  # [S, R, in]
        b = fields[b_name].index_select(0, rows.present)  # [S, out, R]
        m = fields[m_name].index_select(0, rows.present)  # [S, out]
        norm = _norms(a, b, module.weight, w_sq.to(a.device), lr.seg_scaling)
        on = rows.extra["dora:on"][name].view(-1, 1)
        g = torch.where(on, m / norm.clamp_min(torch.finfo(norm.dtype).tiny), torch.ones_like(m))
        x = args[0]
        dropped = rows.training and lr.dropout is not None
        if dropped:
            x = rows.dropout(x, site, lr.dropout)
            base = F.linear(x, module.weight)
        else:
            base = out if module.bias is None else out - module.bias
        seg = rows.seg  # [N]: each batch row's segment
        n = x.shape[0]
        xs = x.reshape(n, -1, x.shape[-1]).to(a.dtype)
        a_rows, b_rows = a.index_select(0, seg), b.index_select(0, seg)
        lora = torch.bmm(torch.bmm(xs, a_rows.transpose(1, 2)), b_rows.transpose(1, 2))
        g_rows = g.index_select(0, seg).unsqueeze(1)  # [N, 1, out]
        s_rows = lr.seg_scaling.index_select(0, seg).view(-1, 1, 1)
        base = base.reshape(n, -1, base.shape[-1]).to(a.dtype)
        delta = (g_rows - 1) * base + g_rows * lora * s_rows
        return out + delta.view(out.shape).to(out.dtype)

    return hook
