"""One trial: data, model + PEFT build, train loop, evaluation.

- :mod:`.data`: load, clean, split (stratified, recorded) and tokenize per template.
- :mod:`.model`: the base model loaded once; LoRA and/or soft prompt built per trial.
- :mod:`.train`: the train loop and evaluation.
- :mod:`.metrics`: the task metrics offered offline.
- :mod:`.runner`: :class:`TrialRunner`, params -> :class:`TrialResult`.

Submodules import torch/transformers/datasets; import them where a trial runs, not at CLI start.
"""
