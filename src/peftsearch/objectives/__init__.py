"""What a trial is: its configuration, data, adapters, task, the packed engine that trains it,
and production training of a chosen one.

The rooms (see ``docs/ARCHITECTURE.md``):

- :mod:`.trial`: :class:`~.trial.TrialConfig`, one trial's parameters, typed and frozen.
- :mod:`.adapters`: one module per adapter kind (LoRA, soft prompt, head), registered.
- :mod:`.tasks`: one module per task kind (classify, verbalize), registered.
- :mod:`.data`, :mod:`.demos`: load, split (recorded), tokenize per template; demonstrations.
- :mod:`.model`: the base model, loaded once per worker; a trial's peft model (``build``).
- The packed engine: :mod:`.packed` (core), :mod:`.layout` (rows of several trials as one
  batch), :mod:`.slots`, :mod:`.stack` (one AdamW for all), :mod:`.hooks` (shared dropout),
  :mod:`.evaluation`, :mod:`.snapshot` (checkpoints).
- :mod:`.runner`: :class:`~.runner.TrialRunner`, a worker's data, model and engine; a trial's
  parameters -> its result. :mod:`.zero_shot`: the untrained model's scores, found label words.
- :mod:`.metrics`: the task metrics offered offline.
- Production: :mod:`.production` (``search train`` / ``search predict``),
  :mod:`.production_heads`, :mod:`.saving`, :mod:`.checkpoint`, :mod:`.model_card`, and
  :mod:`.load` (copied verbatim into every saved model; imports no peftsearch).

Importing the package (and :mod:`.adapters`, :mod:`.tasks`, :mod:`.trial`) is light; the other
submodules import torch/transformers/datasets: import them where a trial runs, not at CLI start.
"""
