"""A toy adapter written outside ``src/``: BitFit (Ben Zaken et al. 2022), training the bias of
every linear layer the adapters may target. It is here to prove the adapter room: this file,
and one ``register`` call, are all a new method needs (no file under ``src/`` changes).

peft has no config for it, so outside the packed engine it unfreezes the biases of the plain
model (:meth:`BitFit.unfreeze`), and a trial that uses it alone saves as a whole model.
"""

from __future__ import annotations

from typing import Any

from peftsearch.objectives.adapters import Adapter
from peftsearch.spaces import Rule, cat


class BitFit(Adapter):
    name = "bitfit"
    label = "BitFit biases"
    rate_param = "bitfit_learning_rate"
    size_param = "bitfit"
    short = "bitfit"
    rules = {
        "bitfit": Rule("int", 0, low=0, high=1, help="train the linear layers' biases (1)"),
        "bitfit_learning_rate": Rule(
            "optional_float", None, low=0, low_open=True, help="null = learning_rate"
        ),
    }
    defaults = {"classifier": {"bitfit": cat(0, 1)}}

    def used(self, params: dict[str, Any]) -> bool:
        return int(params.get("bitfit") or 0) > 0

    def describe(self, params: dict[str, Any]) -> str:
        return "BitFit (the linear layers' biases)"

    def init(self, engine: Any, slot: Any, gen: Any) -> dict[str, Any]:
        import torch

        out = {}
        layers = [n for n, lin in engine.linears.items() if lin.bias is not None]
        for name in layers:
            zeros = torch.zeros(engine.linears[name].out_features, device=engine.device)
            out[f"bitfit.{name}"] = torch.nn.Parameter(zeros)  # a delta on the frozen bias
            engine.hook(engine.linears[name], f"bitfit:{name}", lambda n=name: _hook(engine, n))
        slot.state[self.name] = layers
        return out

    def prepare(self, engine: Any, rows: Any, segments: list[tuple[Any, int]]) -> None:
        rows.extra[self.name] = {n for s, _ in segments for n in s.state.get(self.name, [])}

    def unfreeze(self, model: Any, params: dict[str, Any]) -> None:
        import torch

        for name, module in model.named_modules():
            linear = isinstance(module, torch.nn.Linear) and module.bias is not None
            if linear and not _is_head(name):
                module.bias.requires_grad_(True)

    def owns(self, parameter_name: str) -> bool:
        return parameter_name.endswith(".bias") and not _is_head(parameter_name)


def _is_head(name: str) -> bool:
    return name.split(".")[0] in ("classifier", "score")


def _hook(engine: Any, name: str) -> Any:
    rows, field = engine.rows, f"bitfit.{name}"

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        if not rows.segments or name not in rows.extra.get("bitfit", ()):
            return None
        delta = rows.stack.fields[field].index_select(0, rows.slot_rows)  # [rows, out]
        shape = (delta.shape[0],) + (1,) * (out.dim() - 2) + (delta.shape[1],)
        return out + delta.view(shape).to(out.dtype)

    return hook
