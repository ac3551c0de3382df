"""What the untrained model says (verbalizer heads): the zero-shot table of every template x
verbalizer, and the label words found by the model (``verbalizers: {auto: ...}``), both
computed on a worker's :class:`~peftsearch.objectives.runner.TrialRunner` before the search's
trials."""

from __future__ import annotations

from typing import Any

from peftsearch.errors import SpaceError
from peftsearch.objectives.data import TemplateTooLong
from peftsearch.objectives.metrics import score
from peftsearch.spaces import DEMOS, has_slot


def zero_shot(
    runner: Any, n_demos: int = 0, verbalizers: list[str] | None = None
) -> dict[str, dict[str, float]]:
    """The metric of the untrained LM for every template x verbalizer (model.head
    verbalizer): what each template and verbalizer gives before any training. With
    ``n_demos``, the templates with a ``{demos}`` slot only, holding that many
    demonstrations per class; ``verbalizers``: these only (default: all)."""
    spec = runner.space
    out: dict[str, dict[str, float]] = {}
    engine = runner.engine
    references = runner.task.references(runner.held())
    for template, tmpl in spec.templates.items():
        if n_demos and not has_slot(tmpl, DEMOS):
            continue
        out[template] = {}
        for verbalizer in verbalizers or spec.verbalizer_names:
            params = {
                **runner._fixed(),
                "template": template,
                "verbalizer": verbalizer,
                "n_demos": n_demos,
            }
            eval_data = runner.encoded(params)[1]
            tokens = runner.label_tokens(verbalizer, template)
            result = engine.score_untrained(params, eval_data, tokens)
            out[template][verbalizer] = score(
                runner._metric,
                spec.objectives.metric,
                result.predictions,
                references,
                **spec.objectives.metric_kwargs,
            )
    return out


def untrained_text(runner: Any, n_demos: int = 0) -> dict[str, dict[str, float]]:
    """The metric of what the untrained model writes, per template (``task: generate``),
    keyed as the label tasks' table is (the verbalizer ``None``); with ``n_demos``, the
    templates with a ``{demos}`` slot only. Each template's first outputs are kept in
    ``runner.zero_shot_examples`` (template -> examples) for the report."""
    spec, engine = runner.space, runner.engine
    held = runner.held()
    references = runner.task.references(held)
    out: dict[str, dict[str, float]] = {}
    for template, tmpl in spec.templates.items():
        if n_demos and not has_slot(tmpl, DEMOS):
            continue
        params = {**runner._fixed(), "template": template, "n_demos": n_demos}
        eval_data = runner.encoded(params)[1]
        result = engine.score_untrained(params, eval_data, None)
        value = score(
            runner._metric,
            spec.objectives.metric,
            result.predictions,
            references,
            **spec.objectives.metric_kwargs,
        )
        out[template] = {"None": value}
        if not n_demos:
            runner.zero_shot_examples[template] = runner.task.examples(held, result.predictions)
    return out


def find_label_words(runner: Any) -> dict[str, Any]:
    """``verbalizers: {auto: ...}``: the found verbalizers, per template (``words``:
    template -> ``auto-i`` -> {label: [words]}: each template's prediction point has its
    own), and how they were found (rows; per template and class the 10 best words and
    their log-likelihood ratios); see :mod:`peftsearch.objectives.label_search`.

    Raises:
        SpaceError: the model's ranking holds too few words for ``n`` verbalizers.
    """
    import torch

    from peftsearch.objectives import label_search as ls

    spec, auto = runner.space, runner.space.auto_verbalizers
    assert auto is not None, "no verbalizers.auto in the space"
    runner.setup()
    labels, task = list(spec.data.labels), runner.task
    rows = task.demo_rows(runner.splits.trial_train, auto.rows, spec.study.seed, spec.data)
    words = ls.word_tokens(runner._tokenizer, spec.lm_kind == "causal")
    logprobs = []
    for template, tmpl in spec.templates.items():
        params = {**runner._fixed(), "template": template, "n_demos": 0}
        try:
            data = task.encode(rows, tmpl, runner._tokenizer, spec)
        except TemplateTooLong as exc:
            raise SpaceError(str(spec.file), f"templates.{template}", str(exc)) from None
        logprobs.append(runner.engine.vocab_logprobs(params, data))
    target = torch.tensor(rows["label"].to_numpy())
    found: dict[str, Any] = {}
    ranking: dict[str, Any] = {}
    for template, logp in zip(spec.templates, logprobs, strict=True):
        ranked = ls.rank([logp], target, len(labels), words)
        found[template] = ls.verbalizers(ranked, labels, words, auto.k, auto.n)
        ranking[template] = {
            label: [[words[t], round(v, 4)] for t, v in ranked[c][:10]]
            for c, label in enumerate(labels)
        }
        if len(found[template]) < auto.n:
            short = min(len(r) for r in ranked)
            raise SpaceError(
                str(spec.file),
                "verbalizers.auto",
                f"under template {template!r} the model's ranking holds {short} words for "
                f"a class, too few for n {auto.n} verbalizers of k {auto.k} words; lower k "
                "or n",
            )
    return {
        "words": found,
        "rows": rows["row"].tolist(),
        "templates": list(spec.templates),
        "ranking": ranking,
    }
