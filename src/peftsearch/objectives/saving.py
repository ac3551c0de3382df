"""``search train``'s saved directory: the weights, the files beside them, the reload check.

:func:`save` writes into a temp directory beside the target, loads it back the plain way
(:func:`check_reload`) and renames it into place only if it predicts what the trained model
predicts. :func:`save_injected` and :func:`save_lm_adapters` write adapters in peft's own format;
:func:`load_py` is the text of ``load.py`` (the module :mod:`peftsearch.objectives.load`).
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

from peftsearch.objectives.load import (
    _prompted_generate,
    generate_texts,
    label_scores,
    load_model,
    predict_texts,
)
from peftsearch.objectives.model_card import readme

if TYPE_CHECKING:
    from peftsearch.objectives.production_heads import Trained


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def save(
    trained: Trained,
    info: dict[str, Any],
    record: dict[str, Any],
    to: Path,
    probe: list[str],
    device: str,
    script: str,
) -> None:
    """Save into a temp dir beside ``to``, check that it reloads to the same predictions, and
    rename it into place."""
    to.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=to.parent, prefix=f".{to.name}.", suffix=".tmp"))
    try:
        trained.write(tmp)
        trained.tokenizer.save_pretrained(tmp)
        (tmp / "inference.json").write_text(json.dumps(info, indent=2) + "\n", "utf-8")
        (tmp / "training.json").write_text(json.dumps(record, indent=2) + "\n", "utf-8")
        (tmp / "load.py").write_text(script, encoding="utf-8")
        (tmp / "README.md").write_text(readme(info, record), encoding="utf-8")
        check_reload(trained.want, tmp, probe, device)
        mask = _umask()
        for path in tmp.rglob("*"):  # safetensors writes 0600; give every file the same mode
            os.chmod(path, (0o777 if path.is_dir() else 0o666) & ~mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700
        os.rename(tmp, to)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def save_injected(model: Any, adapter: Any, into: Path, base_model: str) -> None:
    """An adapter injected beneath the top one (LoRA beneath the soft prompt), in peft's own
    format: its config and its weights (``load.py`` injects every such sub-directory)."""
    from peft import get_peft_model_state_dict
    from safetensors.torch import save_file

    inner = model.base_model  # the transformers model with the adapter injected
    config = copy.deepcopy(inner.peft_config["default"])
    config.base_model_name_or_path = base_model
    config.inference_mode = True
    into.mkdir()
    config.save_pretrained(str(into))
    state = get_peft_model_state_dict(inner, adapter_name="default")
    # The head belongs to the outer adapter (modules_to_save); only this adapter's tensors.
    weights = {k: v.detach().cpu().contiguous() for k, v in state.items() if adapter.owns(k)}
    if not weights:
        raise RuntimeError(f"no {adapter.name} weights found beneath the top adapter")
    save_file(weights, str(into / "adapter_model.safetensors"), metadata={"format": "pt"})


def save_lm_adapters(
    base: Any, slot: Any, lm_kind: str, base_model: str, into: Path, task: str | None = None
) -> None:
    """A verbalizer slot's trained adapters as peft adapters on ``base`` (modified in place: it
    is not needed after training), in the classifier layout (:func:`adapters.arrange`): the top
    directory holds the outer adapter, a sub-directory each adapter injected beneath it. Each
    adapter builds its config (:meth:`Adapter.slot_config`) and copies the slot's tensors in
    (:meth:`Adapter.load_slot`). The zero-shot model (no adapter) saves nothing here."""
    from peft import get_peft_model, inject_adapter_in_model

    from peftsearch.objectives import adapters, tasks

    owner = tasks.get(task) if task else tasks.for_lm_kind(lm_kind)
    task_type = owner.peft_task_type(lm_kind)
    configs = {
        a.name: c
        for a in adapters.used(slot.params)
        if (c := a.slot_config(slot, task_type, base.config)) is not None
    }
    unsaved = {name.split(".")[0] for name in slot.tensors} - set(configs)
    if unsaved:
        raise RuntimeError(
            f"adapter {', '.join(sorted(unsaved))} has no peft config: an LM head's "
            "`search train` cannot save it"
        )
    if not configs:
        return
    layout = adapters.arrange(configs)
    model: Any = base
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # peft warns about the second modification; expected
        for where, config in layout.items():
            if where:  # beneath the top one
                model = inject_adapter_in_model(config, model)
        model = get_peft_model(model, layout[""])
    for name in configs:
        adapters.get(name).load_slot(model, slot)
    model.peft_config["default"].base_model_name_or_path = base_model
    model.save_pretrained(into)
    for where in layout:
        if where:
            save_injected(model, adapters.get(where), into / where, base_model)


def check_reload(want: list[dict[str, Any]], saved: Path, probe: list[str], device: str) -> None:
    """The saved directory, loaded the plain way, must predict ``want``: what the trained
    model predicts for the ``probe`` texts."""
    if not probe:
        return
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # transformers deprecations inside peft
        again, again_tok, again_info = load_model(saved, device)
    got = predict_texts(again, again_tok, again_info, probe)
    if want and "output" in want[0]:  # written text: the same words, row by row
        differ = [a["text"] for a, b in zip(want, got, strict=True) if a["output"] != b["output"]]
        if differ:
            raise RuntimeError(
                f"the saved model does not reproduce the trained one: it writes other text "
                f"for {len(differ)} of {len(want)} probe texts (first: {differ[0]!r})"
            )
        return
    worst = max(
        abs(a["scores"][k] - b["scores"][k])
        for a, b in zip(want, got, strict=True)
        for k in a["scores"]
    )
    if worst > 1e-4:
        raise RuntimeError(
            f"the saved model does not reproduce the trained one (max probability gap {worst:.2e})"
        )


# -- what is written beside the weights ------------------------------------------------------------


def load_py() -> str:
    """``load.py``: the module :mod:`peftsearch.objectives.load` verbatim (:func:`load_model`,
    :func:`predict_texts`, :func:`label_scores` and a command line).

    The file can differ from the running code if peftsearch was reinstalled or edited since it
    was imported. So the text is compiled, and each function must have the running
    function's bytecode.

    Raises:
        RuntimeError: the file on disk no longer matches the running code.
    """
    text = _load_py_text()
    defined: dict[str, Any] = {}
    try:  # defines the functions (and imports json, sys, pathlib, typing); runs nothing else
        exec(compile(text, "load.py", "exec"), defined)
    except SyntaxError as exc:
        raise RuntimeError(f"cannot write load.py: its source does not parse: {exc}") from None
    for f in (load_model, predict_texts, generate_texts, _prompted_generate, label_scores):
        again = defined.get(f.__name__)
        if again is None or again.__code__.co_code != f.__code__.co_code:
            raise RuntimeError(
                f"cannot write load.py: {__file__} changed since peftsearch was imported "
                "(reinstalled or edited?); run the command again"
            )
    return text


def _load_py_text() -> str:
    from peftsearch.objectives import load

    return Path(load.__file__).read_text(encoding="utf-8")
