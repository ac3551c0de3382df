"""Multi-objective successive halving (MO-ASHA) for peftsearch studies.

``_moasha.py`` keeps the rungs in the study's storage and decides; ``_priority.py`` ranks the
trials of a rung (plain numpy, tested on arrays).
"""

from peftsearch.searcher.pruners._moasha import MOASHA, PRUNED_ATTR, RUNGS_ATTR, rung_entries

__all__ = ["MOASHA", "PRUNED_ATTR", "RUNGS_ATTR", "rung_entries"]
