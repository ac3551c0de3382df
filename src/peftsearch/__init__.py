"""peftsearch: a multi-objective Optuna search over PEFT configurations.

The subpackages are the design:

- :mod:`peftsearch.spaces`: ``space.yaml`` -> a validated :class:`~peftsearch.spaces.Space`.
- :mod:`peftsearch.searcher`: the Optuna study, storage, sampler and the ask/tell worker loop.
- :mod:`peftsearch.objectives`: data, model + PEFT build, train loop and evaluation of one trial.
- :mod:`peftsearch.reports`: Pareto selection and the files written for users.

Importing this package is cheap: torch and friends load only where a trial runs.
"""

__version__ = "0.1.0"

# The adapter and task kinds register their parameters (and task names) in the space
# vocabulary. Light: no torch, no peft (those load where a trial runs). This is the package's
# one assembly point; the layers below it never import a higher one.
import peftsearch.objectives.adapters  # noqa: E402,F401
import peftsearch.objectives.tasks  # noqa: E402,F401
