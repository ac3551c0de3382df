"""IA3 (Liu et al. 2022, "(IA)^3") as peft defines it: learned vectors that rescale the
outputs of the attention's key and value layers and the input of the feed-forward output
layer; nothing else trains but the head. ``adapter: ia3`` chooses it.

Its layers are peft's mapping for the model type (``TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES
_MAPPING``: ``key``, ``value``, ``output.dense`` for BERT; ``k_proj``, ``v_proj``,
``down_proj`` for Llama), a layer being "feed-forward" (its input scaled, not its output) as
peft's ``_check_target_module_feedforward`` says. peft starts every vector at 1.

In the packed engine a slot's vectors are the fields ``ia3.<layer>``, stored as ``l - 1``
(zero at the start): the stack pads a trial without IA3 on a layer with zeros, which is then
the identity. One hook per layer multiplies every row by its own trial's ``1 + (l - 1)``: a
gather and an elementwise product, the same ops for any number of trials.
"""

from __future__ import annotations

from typing import Any

from peftsearch.errors import TrialFailed
from peftsearch.objectives.adapters._base import Adapter
from peftsearch.spaces import Rule


class IA3(Adapter):
    name = "ia3"
    label = "IA3"
    config_class = "IA3Config"  # peft's (the saved model card names it)
    rate_param = "ia3_learning_rate"
    short = "ia3"
    method = True  # a choice of the `adapter` parameter
    rules = {
        "ia3_learning_rate": Rule(
            "optional_float",
            None,
            low=0,
            low_open=True,
            help="peak learning rate of the IA3 vectors; null = learning_rate",
            order=7.5,
        ),
    }

    def used(self, params: dict[str, Any]) -> bool:
        return params.get("adapter") == "ia3"

    def describe(self, params: dict[str, Any]) -> str:
        return "IA3 (peft's default layers for the model type)"

    # -- the packed engine ----------------------------------------------------------------------

    def targets(self, engine: Any) -> dict[str, bool]:
        """The engine's linear layers IA3 rescales, each with whether it is feed-forward.

        Raises:
            TrialFailed: peft has no IA3 layers for the model type, or none match.
        """
        config = _config(engine.base.config, None)
        if config is None:
            kind = str(getattr(engine.base.config, "model_type", ""))
            raise TrialFailed(f"peft has no default IA3 layers for model type {kind!r}")
        from peft.tuners.ia3.model import IA3Model
        from peft.tuners.tuners_utils import check_target_module_exists

        names = {
            n: IA3Model._check_target_module_feedforward(config, n)
            for n in engine.linears
            if check_target_module_exists(config, n)
        }
        if not names:
            raise TrialFailed(f"IA3's layers {config.target_modules} match no linear layer")
        return names

    def init(self, engine: Any, slot: Any, gen: Any) -> dict[str, Any]:
        import torch

        layers = self.targets(engine)
        out = {}
        for name, feedforward in layers.items():
            lin = engine.linears[name]
            size = lin.in_features if feedforward else lin.out_features
            out[f"ia3.{name}"] = torch.nn.Parameter(torch.zeros(size, device=engine.device))
            make = _input_hook if feedforward else _output_hook
            engine.hook(lin, f"ia3:{name}", lambda n=name, m=make: m(engine.rows, n), feedforward)
        slot.state[self.name] = {"layers": layers}
        return out

    def prepare(self, engine: Any, rows: Any, segments: list[tuple[Any, int]]) -> None:
        """The layers some trial of the batch scales, each with which batch rows are such a
        trial's (``[N, 1, 1]``, 1 or 0): the others' rows are not scaled at all, so that the
        identity pad of a trial without IA3 gets no gradient (it would count in that trial's
        gradient norm, and change its clipping, when packed with an IA3 trial)."""
        import torch

        layers = [st["layers"] if (st := s.state.get(self.name)) else {} for s, _ in segments]
        names = {n for ls in layers for n in ls}
        counts = torch.tensor([n for _, n in segments])
        rows.extra[self.name] = {
            name: torch.tensor([float(name in ls) for ls in layers])
            .repeat_interleave(counts)
            .view(-1, 1, 1)
            .to(engine.device)
            for name in names
        }

    # -- outside the engine -----------------------------------------------------------------------

    def peft_config(self, params: dict[str, Any], task_type: Any, model_config: Any) -> Any:
        return _config(model_config, task_type)

    def slot_config(self, slot: Any, task_type: Any, model_config: Any) -> Any:
        import dataclasses

        config = _config(model_config, task_type)
        layers = slot.state[self.name]["layers"]  # the exact layers the engine trained
        feedforward = sorted(n for n, ff in layers.items() if ff)
        return dataclasses.replace(
            config, target_modules=sorted(layers), feedforward_modules=feedforward
        )

    def load_slot(self, model: Any, slot: Any) -> None:
        import torch

        layers = model.get_base_model()
        with torch.no_grad():
            for name in slot.state[self.name]["layers"]:
                vector = layers.get_submodule(name).ia3_l["default"]
                vector.copy_((1 + slot.tensors[f"ia3.{name}"]).view_as(vector))

    def owns(self, parameter_name: str) -> bool:
        return "ia3_l" in parameter_name


def _config(model_config: Any, task_type: Any) -> Any:
    """peft's ``IA3Config`` with its default layers for the model type (None: peft has none
    for it). Without a model config (``search export`` reads no model), the layers are left
    out: peft fills in the same defaults when it builds the model."""
    from peft import IA3Config
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_FEEDFORWARD_MODULES_MAPPING as FEEDFORWARD,
    )
    from peft.utils.constants import (
        TRANSFORMERS_MODELS_TO_IA3_TARGET_MODULES_MAPPING as TARGETS,
    )

    if model_config is None:
        return IA3Config(task_type=task_type)
    kind = str(getattr(model_config, "model_type", ""))
    if kind not in TARGETS:
        return None
    return IA3Config(
        task_type=task_type,
        target_modules=list(TARGETS[kind]),
        feedforward_modules=list(FEEDFORWARD[kind]),
    )


def _scales(rows: Any, name: str) -> Any:
    """``[N, 1, d]``: each batch row's trial's scale on layer ``name`` (1 + the field)."""
    field = rows.stack.fields[f"ia3.{name}"]
    return 1 + field.index_select(0, rows.slot_rows).unsqueeze(1) * rows.extra["ia3"][name]


def _output_hook(rows: Any, name: str) -> Any:
    """Scales the output of layer ``name`` by every row's own vector (peft's non-feed-forward
    IA3: ``base(x) * l``)."""

    def hook(module: Any, args: tuple[Any, ...], out: Any) -> Any:
        if not rows.segments or name not in rows.extra.get("ia3", ()):
            return None
        scales = _scales(rows, name)
        scaled = out.view(scales.shape[0], -1, out.shape[-1]) * scales
        return scaled.view(out.shape).to(out.dtype)

    return hook


def _input_hook(rows: Any, name: str) -> Any:
    """Scales the input of layer ``name`` by every row's own vector (peft's feed-forward IA3:
    ``base(x * l)``)."""

    def hook(module: Any, args: tuple[Any, ...]) -> Any:
        if not rows.segments or name not in rows.extra.get("ia3", ()):
            return None
        x = args[0]
        scales = _scales(rows, name)
        scaled = x.view(scales.shape[0], -1, x.shape[-1]) * scales
        return (scaled.view(x.shape).to(x.dtype), *args[1:])

    return hook
