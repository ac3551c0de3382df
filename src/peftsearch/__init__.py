"""peftsearch: a multi-objective Optuna search over PEFT configurations.

The subpackages are the design:

- :mod:`peftsearch.spaces`: ``space.yaml`` -> a validated :class:`~peftsearch.spaces.Space`.
- :mod:`peftsearch.searcher`: the Optuna study, storage, sampler and the ask/tell worker loop.
- :mod:`peftsearch.objectives`: data, model + PEFT build, train loop and evaluation of one trial.
- :mod:`peftsearch.reports`: Pareto selection and the files written for users.

Importing this package is cheap: torch and friends load only where a trial runs.
"""

__version__ = "0.1.0"
