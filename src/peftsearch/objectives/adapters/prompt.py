"""The soft prompt (prompt tuning, Lester et al. 2021): ``k`` learned rows in front of the
word embeddings, with attention 1 and token type 0, as peft's ``PromptTuningConfig`` puts them.

``prompt_init: vocab`` (default) starts the rows as copies of embeddings of tokens sampled from
the trial's train rows (and, for a classifier, the first row as its ``[CLS]``); ``random`` is
peft's N(0, 1) rows. In the packed engine every slot's prompt is the ``prompt`` field of the
stack (padded to the pack's longest); the engine's row layout asks :meth:`SoftPrompt.columns`
for each row's prompt columns.
"""

from __future__ import annotations

from typing import Any

from peftsearch.objectives.adapters._base import Adapter
from peftsearch.spaces import Rule, cat, log_range


class SoftPrompt(Adapter):
    name = "prompt"
    label = "soft prompt"
    config_class = "PromptTuningConfig"  # peft's (the saved model card names it)
    rate_param = "prompt_learning_rate"
    short = "prompt"
    size_param = "prompt_length"
    outer = True  # peft's prompt learning wraps the model; LoRA goes in beneath it
    rules = {
        "prompt_length": Rule(
            "int", 0, low=0, help="learned virtual tokens; 0 = no soft prompt", order=2
        ),
        "prompt_learning_rate": Rule(
            "optional_float",
            None,
            low=0,
            low_open=True,
            help="peak learning rate of the soft prompt; null = learning_rate",
            order=7,
        ),
        "prompt_init": Rule(
            "str",
            "vocab",
            choices=("vocab", "random"),
            help="soft prompt start: embeddings of tokens sampled from the train rows (vocab, "
            "Lester et al. 2021) or N(0, 1) rows (random, peft's RANDOM)",
            order=8,
        ),
    }
    # A soft prompt wants rates one to two orders of magnitude above LoRA's (measured:
    # benchmarks/RESULTS.md, "Per-part learning rates").
    defaults = {
        "classifier": {
            "prompt_length": cat(0, 4, 16),
            "prompt_learning_rate": log_range(1e-2, 3e-1),
        },
        "verbalizer": {
            "prompt_length": cat(0, 4, 16),
            "prompt_learning_rate": log_range(1e-3, 1e-1),
        },
        "generator": {
            "prompt_length": cat(0, 8, 20),
            "prompt_learning_rate": log_range(3e-3, 1e-1),
        },
    }

    def used(self, params: dict[str, Any]) -> bool:
        return int(params["prompt_length"]) > 0

    def describe(self, params: dict[str, Any]) -> str:
        return f"a soft prompt of {params['prompt_length']} virtual tokens"

    # -- the packed engine ----------------------------------------------------------------------

    def init(self, engine: Any, slot: Any, gen: Any) -> dict[str, Any]:
        import torch

        from peftsearch.objectives.model import lead_token, vocab_prompt

        k = int(slot.params["prompt_length"])
        if slot.params.get("prompt_init", "random") == "vocab":  # studies before it: random
            # A classifier pools position 0: the prompt starts with the rows' [CLS].
            lead = lead_token(slot.train_data) if engine.lm_kind is None else None
            w = engine.embed.weight
            rows = vocab_prompt(w, slot.train_data, engine.special_ids, k, gen, lead)
        else:
            rows = torch.randn(k, engine.hidden, generator=gen)
        return {"prompt": torch.nn.Parameter(rows.float().to(engine.device))}

    def virtual_tokens(self, slot: Any) -> int:
        prompt = slot.tensors.get("prompt")
        return 0 if prompt is None else int(prompt.shape[0])

    @staticmethod
    def columns(prompts: Any, slot_rows: Any, start: Any, width: int, left: bool) -> Any:
        """``[rows, width, hidden]``: each batch row's trial's soft prompt from column
        ``start`` of the row on (0 with right padding), what lies outside the prompt being
        don't-care.

        ``prompts[slot_rows[:, None], j - start]`` would say the same, but its backward (an
        accumulating ``index_put_``) sums in a thread-dependent order on CPU: the same trial
        gave 0.574 and 0.586 on two runs of the demo's prompt-16 trial. ``index_select`` and
        ``gather`` (whose backward adds serially along the gathered dim) give the same bits
        every run."""
        import torch

        per_row = prompts.index_select(0, slot_rows)  # [rows, P, hidden]
        n, p, h = per_row.shape
        if not left:  # start is 0: columns 0..P-1 are the prompt
            if p >= width:
                return per_row[:, :width]
            return torch.nn.functional.pad(per_row, (0, 0, 0, width - p))
        at = (torch.arange(width, device=per_row.device) - start).clamp(0, p - 1)
        return per_row.gather(1, at.unsqueeze(-1).expand(n, width, h))

    # -- outside the engine -----------------------------------------------------------------------

    def peft_config(self, params: dict[str, Any], task_type: Any, model_config: Any) -> Any:
        from peft import PromptTuningConfig

        from peftsearch.objectives.model import prompt_config

        k = int(params["prompt_length"])
        if model_config is None:  # the exported config: peft fills the sizes in when it loads
            return PromptTuningConfig(task_type=task_type, num_virtual_tokens=k)
        return prompt_config(model_config, task_type, k)

    def load_slot(self, model: Any, slot: Any) -> None:
        import torch

        with torch.no_grad():
            model.prompt_encoder["default"].embedding.weight.copy_(slot.tensors["prompt"])

    def owns(self, parameter_name: str) -> bool:
        return "prompt_encoder" in parameter_name
