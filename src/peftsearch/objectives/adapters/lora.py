"""LoRA (Hu et al. 2021) as peft defines it: ``W x + B(A(dropout(x))) * alpha / r``, or with
``use_rslora`` (rank-stabilized LoRA, Kalajdzievski 2023) ``* alpha / sqrt(r)``.

A kaiming-uniform(a=sqrt 5), B zero, on the linear layers peft's ``check_target_module_exists``
matches for ``target_modules``: a module name or a list of them, or one of the named sets in
:data:`TARGET_SETS` (``default``: peft's mapping for the model type, ``attention``: every
attention projection, ``all-linear``: peft's own shorthand for every linear layer but the
output head). In the packed
engine every slot's A and B are fields of the stack (``lora.<layer>.A`` / ``.B``, zero-padded to
the pack's largest rank: exact, see :mod:`~peftsearch.objectives.stack`), and one hook per
adapted layer adds every row's own delta with two ``bmm``.
"""

from __future__ import annotations

import math
import zlib
from dataclasses import dataclass, field
from typing import Any, ClassVar

from peftsearch.errors import TrialFailed
from peftsearch.objectives.adapters._base import Adapter
from peftsearch.spaces import Rule, cat, log_range

# Where LoRA goes, by name (``target_modules: attention``). ``attention`` is a regular
# expression peft matches against full module names (``re.fullmatch``): the query, key,
# value and output projections of BERT-like encoders (``attention.self.query``,
# ``attention.output.dense``), DistilBERT (``attention.q_lin``), Llama / SmolLM2 / BART
# (``self_attn.q_proj``, ``out_proj``) and T5 (``SelfAttention.q``); it is saved as is in
# ``adapter_config.json``, so plain peft places the adapter where the search trained it.
ATTENTION = (
    r".*\.(self_attn|attn|attention|encoder_attn|SelfAttention|EncDecAttention)(\.self)?\."
    r"(query|key|value|q_proj|k_proj|v_proj|o_proj|out_proj|q_lin|k_lin|v_lin|out_lin|q|k|v|o)"
    r"|.*\.attention\.output\.dense"
)
TARGET_SETS: dict[str, str | None] = {
    "default": None,  # peft's TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    "attention": ATTENTION,
    "all-linear": "all-linear",  # peft expands it (_maybe_include_all_linear_layers)
}


def target_set(value: Any) -> str | None:
    """The named set ``target_modules`` names, if any (also as a one-item list: a searched
    choice is stored comma-joined and read back as a list)."""
    if isinstance(value, list | tuple) and len(value) == 1:
        value = value[0]
    return value if isinstance(value, str) and value in TARGET_SETS else None


def match_layers(model: Any, linears: Any, value: Any, task_type: Any) -> list[str]:
    """The names among ``linears`` (linear layers of ``model``) that ``target_modules:
    value`` adapts, as peft matches them (``check_target_module_exists``; ``all-linear``
    expanded by peft's own ``_maybe_include_all_linear_layers``).

    Raises:
        ValueError: no default targets for the model type, or nothing matches (the message
            names some of the model's layers).
    """
    from peft import LoraConfig
    from peft.tuners.tuners_utils import check_target_module_exists
    from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING

    targets: Any = peft_targets(value)
    if targets is None:
        kind = str(getattr(model.config, "model_type", ""))
        targets = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING.get(kind)
        if targets is None:
            raise ValueError(
                f"no default LoRA target modules for model type {kind!r}; "
                "set target_modules in space.yaml"
            )
    if targets == "all-linear":  # peft's own expansion, on the base model
        from peft.tuners.tuners_utils import _maybe_include_all_linear_layers

        wide = LoraConfig(r=1, target_modules="all-linear", task_type=task_type)
        _maybe_include_all_linear_layers(wide, model)  # sets its target_modules
        targets = sorted(wide.target_modules or ())
    elif not isinstance(targets, str):
        targets = list(targets)
    config = LoraConfig(r=1, target_modules=targets)
    names = [n for n in linears if check_target_module_exists(config, n)]
    if not names:
        shown = targets if isinstance(targets, str) else list(targets)
        raise ValueError(
            f"target_modules {shown} match no linear layer of the model (named sets: "
            f"{', '.join(TARGET_SETS)}; some of its layers: {', '.join(list(linears)[:6])}, ...)"
        )
    return names


def peft_targets(value: Any) -> Any:
    """``target_modules`` as peft takes it: a named set resolved, anything else as given."""
    named = target_set(value)
    return TARGET_SETS[named] if named is not None else value


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
    config_class = "LoraConfig"  # peft's (the saved model card names it)
    rate_param = "learning_rate"
    short = "r"
    size_param: ClassVar[str | None] = "lora_r"
    placement: ClassVar[str | None] = "target_modules"
    method = True  # `adapter: lora` (the default)
    rules = {
        "lora_r": Rule("int", 8, low=0, help="LoRA rank; 0 = no LoRA", order=4),
        "lora_alpha": Rule(
            "float", 16, low=0, low_open=True, help="LoRA scale numerator (alpha / r)", order=9
        ),
        "lora_dropout": Rule("float", 0.0, low=0, high=1, high_open=True, order=10),
        "target_modules": Rule(
            "modules",
            None,
            help="LoRA targets: default | attention | all-linear, or module names; "
            "null = peft's default",
            order=11,
        ),
        "use_rslora": Rule(
            "bool", False, help="rank-stabilized LoRA: scale alpha / sqrt(r)", order=11.5
        ),
        "loraplus_lr_ratio": Rule(
            "float",
            1.0,
            low=0,
            low_open=True,
            help="LoRA+: B trains at this times A's learning rate (1 = plain LoRA)",
            order=11.6,
        ),
    }
    # LoRA's rate is the base ``learning_rate`` (measured ranges: benchmarks/RESULTS.md,
    # "Per-part learning rates"). A classifier searches peft's default targets against
    # all-linear (issue 24: all-linear at r 16 was the demo's best, 0.800, and widened its
    # front from 1.7 to 2.9 decades); the verbalizer keeps peft's default targets (all-linear
    # on a causal LM's MLPs is not measured on this machine's budget).
    defaults = {
        "classifier": {
            "lora_r": cat(0, 1, 4, 16),
            "target_modules": cat("default", "all-linear"),
            "learning_rate": log_range(5e-4, 5e-3),
        },
        "verbalizer": {"lora_r": cat(0, 1, 4, 16), "learning_rate": log_range(1e-4, 3e-3)},
        "generator": {"lora_r": cat(0, 2, 8), "learning_rate": log_range(2e-4, 3e-3)},
    }

    def used(self, params: dict[str, Any]) -> bool:
        return params.get("adapter", "lora") == "lora" and int(params["lora_r"]) > 0

    def describe(self, params: dict[str, Any]) -> str:
        out = f"LoRA r={params['lora_r']}, alpha={params['lora_alpha']}"
        if params.get("use_rslora"):
            out += " (rsLoRA: alpha / sqrt(r))"
        if float(params.get("loraplus_lr_ratio", 1.0)) != 1.0:
            out += f", LoRA+ ratio {params['loraplus_lr_ratio']}"
        named = target_set(params.get("target_modules"))
        if named is not None:
            out += f", on {named}"
        return out

    def where(self, params: dict[str, Any]) -> str:
        value = params.get("target_modules")
        named = target_set(value)
        if named is not None:
            return "" if named == "default" else named
        if isinstance(value, str):
            value = value.split(",")
        return "+".join(str(v) for v in value) if value else ""  # module names; null: default

    # LoRA+ (Hayou et al. 2024, peft's ``create_loraplus_optimizer``): B at its own rate.
    @property
    def parts(self) -> tuple[str, ...]:
        return (self.name, f"{self.name}_B")

    def rates(self, params: dict[str, Any]) -> dict[str, float]:
        rate = self.rate(params)
        ratio = float(params.get("loraplus_lr_ratio", 1.0))
        return {self.name: rate, f"{self.name}_B": rate * ratio}

    def field_part(self, field: str) -> str:
        return f"{self.name}_B" if field.endswith(".B") else self.name

    def param_part(self, parameter_name: str) -> str:
        return f"{self.name}_B" if "lora_B" in parameter_name else self.name

    @staticmethod
    def scaling(params: dict[str, Any]) -> float:
        """``alpha / r``, or ``alpha / sqrt(r)`` with ``use_rslora`` (peft's ``update_layer``)."""
        r = int(params["lora_r"])
        return float(params["lora_alpha"]) / (math.sqrt(r) if params.get("use_rslora") else r)

    # -- the packed engine ----------------------------------------------------------------------

    def targets(self, engine: Any, params: dict[str, Any]) -> list[str]:
        """The engine's linear layers a trial of ``params`` adapts.

        Raises:
            TrialFailed: no default targets for the model type, or none match.
        """
        task_type = engine.task.peft_task_type(engine.lm_kind)
        try:
            return match_layers(engine.base, engine.linears, params["target_modules"], task_type)
        except ValueError as exc:
            raise TrialFailed(str(exc)) from None

    def check(
        self, searched: dict[str, Any], model: Any, linears: list[str], task_type: Any, file: str
    ) -> None:
        """Every ``target_modules`` the space can give a LoRA or DoRA trial places it
        somewhere on ``model`` (a set or module names that match no layer, or ``default``
        on a model type peft has no default targets for, fail before any file is made)."""
        from peftsearch.errors import SpaceError
        from peftsearch.spaces import CategoricalDist

        method, rank = searched.get("adapter", "lora"), searched.get("lora_r")
        methods = method.choices if isinstance(method, CategoricalDist) else [method]
        ranks = rank.choices if isinstance(rank, CategoricalDist) else [rank]
        if not {"lora", "dora"} & set(methods) or ranks == [0]:
            return  # no trial of the space trains LoRA: nothing is placed
        spec = searched.get("target_modules")
        values = spec.choices if isinstance(spec, CategoricalDist) else [spec]
        for value in values:
            modules = value.split(",") if isinstance(value, str) and "," in value else value
            try:
                match_layers(model, linears, modules, task_type)
            except ValueError as exc:
                raise SpaceError(file, "params.target_modules", str(exc), value) from None

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
            out[f"{self.name}.{name}.A"] = torch.nn.Parameter(a.to(engine.device))
            out[f"{self.name}.{name}.B"] = torch.nn.Parameter(b.to(engine.device))
        slot.state[self.name] = {
            "layers": names,
            "scaling": self.scaling(params),
            "dropout": float(params["lora_dropout"]),
        }
        for name in names:
            hook = self.make_hook(engine, name)
            engine.hook(engine.linears[name], f"{self.name}:{name}", lambda h=hook: h)
        return out

    def make_hook(self, engine: Any, name: str) -> Any:
        """The forward hook of layer ``name`` (registered once per engine)."""
        return _hook(engine.rows, name)

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
            target_modules=peft_targets(params["target_modules"]),
            use_rslora=bool(params.get("use_rslora", False)),
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
