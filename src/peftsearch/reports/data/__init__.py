"""The data behind the HTML report, one module per theme; plain values, no plotly.

:mod:`peftsearch.reports.figures` gathers them into one
:class:`~peftsearch.reports.figures.ReportData` (and re-exports every public name here):

- :mod:`.common`: the trial selections and attribute readers the others share;
- :mod:`.front`: the Pareto plot's points, front and knee;
- :mod:`.templates`: the metric per prompt template, and whether the evidence is enough;
- :mod:`.importances`: parameter importances per objective;
- :mod:`.history`: best-so-far, hypervolume (per trial and per training step), loss curves;
- :mod:`.pruning`: what successive halving stopped, its rungs and the compute it saved;
- :mod:`.zero_shot`: the untrained model's scores and the label words it found;
- :mod:`.facts`: study-level facts (model, data, budget, sampler, counts, failures).
"""
