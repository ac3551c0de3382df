"""LoRA (Hu et al. 2021) as peft defines it: ``W x + B(A(dropout(x))) * alpha / r``.

A kaiming-uniform(a=sqrt 5), B zero, on the linear layers peft's ``check_target_module_exists``
matches for ``target_modules`` (null: peft's default mapping for the model type). In the packed
engine every slot's A and B are fields of the stack (``lora.<layer>.A`` / ``.B``, zero-padded to
the pack's largest rank: exact, see :mod:`~peftsearch.objectives.stack`), and one hook per
adapted layer adds every row's own delta with two ``bmm``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any

from peftsearch.errors import TrialFailed
from peftsearch.objectives.adapters._base import Adapter
from peftsearch.spaces import Rule, cat, log_range


@dataclass
class LoraRows:
    """What the LoRA hooks read during one packed forward."""

    names: set[str] = field(default_factory=set)  # layers some trial in the batch adapts
    seg_scaling: Any = None  # [S] alpha / r per segment
    scaling: Any = None  # [N] the same per batch row (segments of unequal rows only)
    dropout: Any = None  # [N] LoRA dropout of each row's trial (training, some p > 0)


class LoRA(Adapter):
    name = "lora"
    label = "LoRA"
    rate_param = "learning_rate"
    short = "r"
    size_param = "lora_r"
    rules = {
        "lora_r": Rule("int", 8, low=0, help="LoRA rank; 0 = no LoRA", order=4),
        "lora_alpha": Rule(
            "float", 16, low=0, low_open=True, help="LoRA scale numerator (alpha / r)", order=9
        ),
        "lora_dropout": Rule("float", 0.0, low=0, high=1, high_open=True, order=10),
        "target_modules": Rule(
            "modules", None, help="LoRA targets; null = peft's default", order=11
        ),
    }
    # LoRA's rate is the base ``learning_rate`` (measured ranges: benchmarks/RESULTS.md,
    # "Per-part learning rates").
    defaults = {
        "classifier": {"lora_r": cat(0, 1, 4, 16), "learning_rate": log_range(5e-4, 5e-3)},
        "verbalizer": {"lora_r": cat(0, 1, 4, 16), "learning_rate": log_range(1e-4, 3e-3)},
    }

    def used(self, params: dict[str, Any]) -> bool:
        return int(params["lora_r"]) > 0

    def describe(self, params: dict[str, Any]) -> str:
        return f"LoRA r={params['lora_r']}, alpha={params['lora_alpha']}"

    # -- the packed engine ----------------------------------------------------------------------

    def targets(self, engine: Any, params: dict[str, Any]) -> list[str]:
        """The engine's linear layers a trial of ``params`` adapts.

        Raises:
            TrialFailed: no default targets for the model type, or none match.
        """
        from peft import LoraConfig
        from peft.tuners.tuners_utils import check_target_module_exists
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

        targets: Any = params["target_modules"]
        if targets is None:
            kind = str(getattr(engine.base.config, "model_type", ""))
            targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(kind)
            if targets is None:
                raise TrialFailed(
                    f"no default LoRA target modules for model type {kind!r}; "
                    "set target_modules in space.yaml"
                )
        config = LoraConfig(r=params["lora_r"], target_modules=list(targets))
        names = [n for n in engine.linears if check_target_module_exists(config, n)]
        if not names:
            raise TrialFailed(
                f"target_modules {list(targets)} match no linear layer of the model "
                f"(some of its layers: {', '.join(list(engine.linears)[:6])}, ...)"
            )
        return names

    def init(self, engine: Any, slot: Any, gen: Any) -> dict[str, Any]:
        import torch

        params, out = slot.params, {}
        r = int(params["lora_r"])
        names = self.targets(engine, params)
        for name in names:
            lin = engine.linears[name]
            a = torch.empty(r, lin.in_features)
            torch.nn.init.kaiming_uniform_(a, a=math.sqrt(5), generator=gen)
            b = torch.zeros(lin.out_features, r)
            out[f"lora.{name}.A"] = torch.nn.Parameter(a.to(engine.device))
            out[f"lora.{name}.B"] = torch.nn.Parameter(b.to(engine.device))
        slot.state[self.name] = {
            "layers": names,
            "scaling": float(params["lora_alpha"]) / r,
            "dropout": float(params["lora_dropout"]),
        }
        for name in names:
            engine.hook(engine.linears[name], f"lora:{name}", lambda n=name: _hook(engine.rows, n))
        return out

    def prepare(self, engine: Any, rows: Any, segments: list[tuple[Any, int]]) -> None:
        import torch

        states = [s.state.get(self.name) for s, _ in segments]
        counts = torch.tensor([n for _, n in segments])
        scaling = torch.tensor([st["scaling"] if st else 0.0 for st in states])
        lr = LoraRows(names={n for st in states if st for n in st["layers"]})
        lr.seg_scaling = scaling.to(engine.device)
        lr.scaling = None if rows.equal else scaling.repeat_interleave(counts).to(engine.device)
        if rows.training:
            # Every slot's own value, LoRA or not (a slot without LoRA adds a zero delta).
            p = torch.tensor([float(s.params.get("lora_dropout", 0.0)) for s, _ in segments])
            if bool((p > 0).any()):
                lr.dropout = p.repeat_interleave(counts).to(engine.device)
        rows.extra[self.name] = lr

    # -- outside the engine -----------------------------------------------------------------------

    def peft_config(self, params: dict[str, Any], task_type: Any, model_config: Any) -> Any:
        from peft import LoraConfig

        return LoraConfig(
            task_type=task_type,
            r=params["lora_r"],
            lora_alpha=params["lora_alpha"],  # peft uses it as a float
            lora_dropout=params["lora_dropout"],
            target_modules=params["target_modules"],
        )

    def slot_config(self, slot: Any, task_type: Any, model_config: Any) -> Any:
        import dataclasses

        config = self.peft_config(slot.params, task_type, model_config)
        # The exact layers the engine trained.
        return dataclasses.replace(config, target_modules=sorted(slot.lora))

    def load_slot(self, model: Any, slot: Any) -> None:
        import torch

        layers = model.get_base_model()  # the transformers model with LoRA layers in it
        with torch.no_grad():
            for name, (a, b) in slot.lora.items():
                layer = layers.get_submodule(name)
                layer.lora_A["default"].weight.copy_(a)
                layer.lora_B["default"].weight.copy_(b)

    def owns(self, parameter_name: str) -> bool:
        return "lora_" in parameter_name


def _hook(rows: Any, name: str) -> Any:
    """Adds every row's trial's LoRA delta to the output of layer ``name``."""
    import torch

    a_name, b_name = f"lora.{name}.A", f"lora.{name}.B"
    site = 1_000_000 + zlib.crc32(name.encode()) % 1_000_000  # fixed across processes

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        lr = rows.extra.get("lora") if rows.segments else None
        if lr is None or name not in lr.names:
            return None
        fields = rows.stack.fields
        x = args[0]
        if rows.training and lr.dropout is not None:
            x = rows.dropout(x, site, lr.dropout)
        if rows.equal:  # [trials, rows x width, in] against each trial's A, B: one bmm each
            a = fields[a_name].index_select(0, rows.present)
            b = fields[b_name].index_select(0, rows.present)
            scaling = lr.seg_scaling.view(-1, 1, 1)
            xs = x.reshape(len(rows.segments), -1, x.shape[-1]).to(a.dtype)
        else:  # each row gathers its trial's A [R, in] and B [out, R]
            a = fields[a_name].index_select(0, rows.slot_rows)
            b = fields[b_name].index_select(0, rows.slot_rows)
            scaling = lr.scaling.view(-1, 1, 1)
            xs = x.reshape(x.shape[0], -1, x.shape[-1]).to(a.dtype)
        delta = torch.bmm(torch.bmm(xs, a.transpose(1, 2)), b.transpose(1, 2)) * scaling
        return out + delta.view(out.shape).to(out.dtype)

    return hook
