"""The base model (loaded once per worker) and the PEFT build of one trial.

peft has no single config for prompt tuning + LoRA. Its own pieces compose (checked on
peft 0.21): ``inject_adapter_in_model(LoraConfig)`` puts LoRA layers into the base model, then
``get_peft_model(PromptTuningConfig)`` wraps it with the soft prompt and the classification head
as ``modules_to_save``; that wrap freezes everything else, so the ``lora_`` parameters are set
trainable again. Tests check, for each combination, that exactly the intended parameters train
and that the count matches hand arithmetic.
"""

from __future__ import annotations

import copy
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.spaces import ModelSpec

_DTYPES = {"float32": "float32", "bfloat16": "bfloat16", "float16": "float16"}


def pick_device(spec: str) -> Any:
    """``auto`` -> CUDA when present, else CPU."""
    import torch

    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(spec)


def skeleton(config: Any, num_labels: int, lm_kind: str | None, trust_remote_code: bool) -> Any:
    """The base model ``load_base`` would load, built from its ``config`` on the meta device:
    its module tree without weights (``search validate`` checks placements on it)."""
    import torch
    from transformers import (
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
        AutoModelForSequenceClassification,
    )

    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    with torch.device("meta"):
        if lm_kind is None:
            config.num_labels = num_labels
            return AutoModelForSequenceClassification.from_config(config, **kwargs)
        auto: Any = AutoModelForMaskedLM if lm_kind == "masked" else AutoModelForCausalLM
        if lm_kind == "generator" and getattr(config, "is_encoder_decoder", False):
            auto = AutoModelForSeq2SeqLM
        return auto.from_config(config, **kwargs)


def load_base(
    spec: ModelSpec,
    num_labels: int,
    seed: int,
    file: str = "space.yaml",
    lm_kind: str | None = None,
) -> tuple[Any, Any]:
    """Load tokenizer and model: a sequence classifier (new head seeded by ``seed``), or with
    ``lm_kind`` a causal or masked language model whose own head scores label words. A
    ``.gguf`` path loads that file from its folder (transformers dequantizes it).

    Causal LMs get left padding and left truncation: the prediction point is the template's
    end, so padding and cuts go before it.

    Raises:
        SpaceError: the model cannot be loaded; the message says why (offline hub id, ...).
    """
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()  # the "MISSING classifier" load report is expected
    kwargs: dict[str, Any] = {"trust_remote_code": spec.trust_remote_code}
    where = spec.path
    if spec.path.endswith(".gguf"):
        where, kwargs["gguf_file"] = str(Path(spec.path).parent), Path(spec.path).name
    try:
        tokenizer = AutoTokenizer.from_pretrained(where, **kwargs)
        torch.manual_seed(seed)  # the new head's init: the same in every worker
        dtype = getattr(torch, _DTYPES[spec.dtype]) if spec.dtype in _DTYPES else "auto"
        if lm_kind is None:
            model = AutoModelForSequenceClassification.from_pretrained(
                where, num_labels=num_labels, dtype=dtype, **kwargs
            )
        else:
            model = lm_class(where, lm_kind, kwargs).from_pretrained(where, dtype=dtype, **kwargs)
    except (OSError, ValueError, ImportError) as exc:  # "no model here", missing gguf, ...
        raise model_error(file, spec.path, exc, lm_kind) from None
    if lm_kind == "generator":  # the generate task encodes by the model's kind
        seq2seq = bool(model.config.is_encoder_decoder)
        tokenizer.peftsearch_lm = "seq2seq" if seq2seq else "causal"
        lm_kind = "seq2seq" if seq2seq else "causal"
    if getattr(model, "hf_quantizer", None) is not None:  # a dequantized GGUF: plain weights
        model.hf_quantizer = None
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id
    if lm_kind == "causal":
        tokenizer.padding_side = tokenizer.truncation_side = "left"
    if lm_kind == "masked" and tokenizer.mask_token is None:
        raise SpaceError(
            file,
            "model.path",
            "the templates use {mask} but this tokenizer has no mask token",
            spec.path,
        )
    return model, tokenizer


def lm_class(where: str, lm_kind: str, kwargs: dict[str, Any]) -> Any:
    """The transformers auto class of a language model of ``lm_kind``: ``masked``,
    ``causal``, or ``generator`` (an encoder-decoder, T5 or BART, when its config says
    ``is_encoder_decoder``, else causal)."""
    from transformers import (
        AutoConfig,
        AutoModelForCausalLM,
        AutoModelForMaskedLM,
        AutoModelForSeq2SeqLM,
    )

    if lm_kind == "masked":
        return AutoModelForMaskedLM
    if lm_kind == "generator":
        config = AutoConfig.from_pretrained(where, **kwargs)
        if getattr(config, "is_encoder_decoder", False):
            return AutoModelForSeq2SeqLM
    return AutoModelForCausalLM


def _offline(exc: BaseException) -> bool:
    """True when a load failed for want of network (HF_HUB_OFFLINE, or no connection)."""
    from huggingface_hub import constants

    if constants.HF_HUB_OFFLINE:
        return True
    text = str(exc).lower()
    return isinstance(exc, ConnectionError) or "offline" in text or "connect" in text


def model_error(file: str, path: str, exc: BaseException, lm_kind: str | None = None) -> SpaceError:
    """One line for a ``model.path`` that does not load: an offline hub id, a folder with no
    model in it, a model of the wrong kind, or the library's own reason."""
    local = Path(path)
    if "gguf" in str(exc).lower() and isinstance(exc, ImportError):
        return SpaceError(
            file, "model.path", f"loading a .gguf file needs the gguf package: {exc}", path
        )
    if lm_kind is not None and "Unrecognized configuration class" in str(exc):
        kind = "masked LM (the templates use {mask})" if lm_kind == "masked" else "causal LM"
        return SpaceError(file, "model.path", f"this model is not a {kind}", path)
    if local.is_dir() and not (local / "config.json").is_file():
        return SpaceError(file, "model.path", "no model in this directory (no config.json)", path)
    if not local.exists() and _offline(exc):
        return SpaceError(
            file,
            "model.path",
            "no network: a hub id cannot be downloaded and is not in the local cache; "
            "use a local path (a model directory or pkg://PACKAGE/dir)",
            path,
        )
    return SpaceError(file, "model.path", f"cannot load the model: {exc}", path)


def count_params(model: Any, trainable: bool = True) -> int:
    """Exact count: the sum of ``numel`` of the (trainable) parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable)


@dataclass(frozen=True)
class PeftPlan:
    """The built-in adapters' settings by name, for code that builds one model by hand (tests,
    benchmarks); a trial's own parameter dict says the same (:meth:`params`)."""

    lora_r: int = 0
    lora_alpha: float = 16.0
    lora_dropout: float = 0.0
    target_modules: list[str] | None = None
    prompt_length: int = 0
    prompt_init: str = "random"  # or "vocab": see :func:`vocab_prompt`

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> PeftPlan:
        """The plan of a trial's parameter dict (keys of ``peftsearch.spaces.RULES``)."""
        return cls(
            lora_r=params["lora_r"],
            lora_alpha=params["lora_alpha"],
            lora_dropout=params["lora_dropout"],
            target_modules=params["target_modules"],
            prompt_length=params["prompt_length"],
            prompt_init=params.get("prompt_init", "random"),  # studies before it: random
        )

    def params(self) -> dict[str, Any]:
        """The plan as a trial's parameter dict (the other parameters at their defaults)."""
        from peftsearch.spaces import RULES

        return {**{n: r.default for n, r in RULES.items()}, **self.__dict__}


def lead_token(data: Any) -> int | None:
    """The token every row starts with (BERT's ``[CLS]``, RoBERTa's ``<s>``), or None."""
    first = data.input_ids[:, 0]
    if not len(first) or not bool((first == first[0]).all()):
        return None
    return int(first[0])


def vocab_prompt(
    embed_weight: Any,
    data: Any,
    special_ids: set[int] | list[int],
    k: int,
    gen: Any,
    lead: int | None = None,
) -> Any:
    """``k`` soft-prompt rows copied from the embeddings of tokens drawn (uniformly, from
    ``gen``) among the distinct non-special tokens of ``data``'s rows: Lester et al. (2021)'s
    "sampled vocab" init, restricted to tokens the task's text uses. Such rows start at the
    scale of real token embeddings; N(0, 1) rows (peft's RANDOM) are ~10-50x larger than a
    small encoder's embeddings, and measured to learn far less at the search's short budgets
    (benchmarks/RESULTS.md).

    ``lead``: the first row starts as this token's embedding. An encoder classifier pools
    position 0, which a soft prompt prepended as peft does takes over from ``[CLS]``; starting
    the prompt with a copy of ``[CLS]`` gives the pooler what it was trained on at position 0
    (measured: benchmarks/RESULTS.md), and the prompt stays an ordinary peft prompt."""
    import torch

    ids = torch.unique(data.input_ids[data.attention_mask.bool()])
    if special_ids:
        ids = ids[~torch.isin(ids, torch.tensor(sorted(special_ids), dtype=ids.dtype))]
    if not len(ids):  # no text tokens at all: any of the vocabulary
        ids = torch.arange(int(embed_weight.shape[0]))
    pick = ids[torch.randint(len(ids), (k,), generator=gen)]
    if lead is not None:
        pick[0] = lead
    return embed_weight.detach()[pick.to(embed_weight.device)].float().cpu().clone()


def build(base: Any, trial: PeftPlan | dict[str, Any]) -> Any:
    """A fresh copy of the classifier ``base`` with a trial's adapters (a parameter dict or a
    :class:`PeftPlan`); only they and the head train.

    The adapters' peft configs compose as :func:`~peftsearch.objectives.adapters.peft_configs`
    says: the injected ones go in first (``inject_adapter_in_model``), then ``get_peft_model``
    wraps the model in the top one, which freezes everything else, so the injected adapters'
    parameters are made trainable again. No peft adapter: a linear probe (the head trains).
    Adapters peft has no config for unfreeze their own parameters last."""
    from peft import TaskType, get_peft_model, inject_adapter_in_model

    from peftsearch.objectives import adapters

    params = trial.params() if isinstance(trial, PeftPlan) else trial
    model = copy.deepcopy(base)  # every trial starts from the pristine base weights
    configs = adapters.peft_configs(params, TaskType.SEQ_CLS, model.config)
    top = configs.pop("", None)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns about the second modification; expected
        for config in configs.values():
            model = inject_adapter_in_model(config, model)
        if top is not None:
            model = get_peft_model(model, top)
            injected = [adapters.get(name) for name in configs]
            for name, param in model.named_parameters():
                if any(a.owns(name) for a in injected):
                    param.requires_grad_(True)
        else:  # no peft adapter: a linear probe, only the head trains
            head = head_names(model)
            for name, param in model.named_parameters():
                param.requires_grad_(name.split(".")[0] in head)
    for adapter in adapters.used(params):
        adapter.unfreeze(model, params)
    return model


def prompt_config(model_config: Any, task_type: Any, length: int) -> Any:
    """peft's ``PromptTuningConfig`` with the model's sizes given, not looked up: peft reads
    them from ``config.to_dict()`` under a few names (``hidden_size``, ``num_hidden_layers``,
    ...) and fails on configs that alias them (DistilBERT's ``dim``, ``n_layers``: "Please
    specify `token_dim`"); attribute access follows the aliases."""
    from peft import PromptTuningConfig

    return PromptTuningConfig(
        task_type=task_type,
        num_virtual_tokens=length,
        token_dim=model_config.hidden_size,
        num_layers=model_config.num_hidden_layers,
        num_attention_heads=model_config.num_attention_heads,
        num_transformer_submodules=1,
    )


def head_names(model: Any) -> set[str]:
    """Top-level module names of the classification head (what peft's SEQ_CLS saves)."""
    names = {n for n, _ in model.named_children()}
    head = names & {"classifier", "score"}
    if not head:
        raise ValueError(f"cannot find the classification head among {sorted(names)}")
    return head
