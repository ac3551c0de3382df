"""The study: storage, sampler, and the ask/tell worker loop."""

from peftsearch.searcher.opening import open_study
from peftsearch.searcher.outcome import RunOutcome, counts_toward_budget
from peftsearch.searcher.samplers import SAMPLERS, make_sampler
from peftsearch.searcher.storage import mask_url, open_storage
from peftsearch.searcher.study import run_study

__all__ = [
    "SAMPLERS",
    "RunOutcome",
    "counts_toward_budget",
    "make_sampler",
    "mask_url",
    "open_storage",
    "open_study",
    "run_study",
]
