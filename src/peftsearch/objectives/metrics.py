"""The task metrics a study can maximize, as local :class:`evaluate.Metric` subclasses: class
ids (accuracy, f1, ...) and generated text (exact_match, rouge1/2/L/Lsum, chrf, bleu).

``evaluate.load("accuracy")`` fetches a script from the hub, which fails offline, so the metrics
the tool offers ship here. They compute with numpy rather than scikit-learn (which the hub
scripts use) because the offline GPU host has no scikit-learn/scipy and its 64 MiB carry limit
leaves no room for them; the definitions follow scikit-learn's (``average`` = binary, macro,
micro, weighted; binary scores ``pos_label`` = 1) and tests check them on hand-worked cases.
Any other name or a local module path still goes to ``evaluate.load`` for online users.
"""

from __future__ import annotations

from typing import Any

import datasets
import evaluate
import numpy as np

from peftsearch.errors import SpaceError

_FEATURES = datasets.Features(
    {"predictions": datasets.Value("int64"), "references": datasets.Value("int64")}
)


def _confusion(pred: np.ndarray, ref: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    labels = np.union1d(pred, ref)
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    np.add.at(cm, (np.searchsorted(labels, ref), np.searchsorted(labels, pred)), 1)
    return labels, cm


def _prf(
    pred: np.ndarray, ref: np.ndarray, average: str, pos_label: int
) -> tuple[float, float, float]:
    """Precision, recall, F1 as scikit-learn defines them (zero_division = 0)."""
    labels, cm = _confusion(pred, ref)
    tp = np.diag(cm).astype(float)
    pred_n, true_n = cm.sum(0).astype(float), cm.sum(1).astype(float)
    if average == "micro":
        tp, pred_n, true_n = (
            np.array([tp.sum()]),
            np.array([pred_n.sum()]),
            np.array([true_n.sum()]),
        )
    elif average == "binary":
        if len(labels) > 2:
            raise ValueError(
                f"average='binary' needs two classes, found {len(labels)}; "
                "set metric_kwargs: {average: macro} (or micro, weighted)"
            )
        if pos_label not in labels:
            return 0.0, 0.0, 0.0
        i = int(np.searchsorted(labels, pos_label))
        tp, pred_n, true_n = tp[i : i + 1], pred_n[i : i + 1], true_n[i : i + 1]
    with np.errstate(divide="ignore", invalid="ignore"):
        p = np.where(pred_n > 0, tp / pred_n, 0.0)
        r = np.where(true_n > 0, tp / true_n, 0.0)
        f = np.where(p + r > 0, 2 * p * r / (p + r), 0.0)
    if average == "weighted":
        w = true_n / true_n.sum()
        return float((p * w).sum()), float((r * w).sum()), float((f * w).sum())
    if average not in ("macro", "micro", "binary"):
        raise ValueError(f"average must be binary, macro, micro or weighted, got {average!r}")
    return float(p.mean()), float(r.mean()), float(f.mean())


class _Local(evaluate.Metric):
    name_ = ""
    inputs_ = "predictions, references: class ids"
    features_ = _FEATURES

    def _info(self) -> evaluate.MetricInfo:
        return evaluate.MetricInfo(
            description=f"{self.name_} (peftsearch, offline)",
            citation="",
            inputs_description=self.inputs_,
            features=self.features_,
        )


class Accuracy(_Local):
    name_ = "accuracy"

    def _compute(self, predictions: Any, references: Any) -> dict[str, float]:
        return {"accuracy": float(np.mean(np.asarray(predictions) == np.asarray(references)))}


class _PRF(_Local):
    index = 0

    def _compute(
        self, predictions: Any, references: Any, average: str = "binary", pos_label: int = 1
    ) -> dict[str, float]:
        scores = _prf(np.asarray(predictions), np.asarray(references), average, pos_label)
        return {self.name_: scores[self.index]}


class Precision(_PRF):
    name_, index = "precision", 0


class Recall(_PRF):
    name_, index = "recall", 1


class F1(_PRF):
    name_, index = "f1", 2


class MatthewsCorrelation(_Local):
    name_ = "matthews_correlation"

    def _compute(self, predictions: Any, references: Any) -> dict[str, float]:
        # Multi-class MCC (Gorodkin 2004), the formula scikit-learn uses.
        _, cm = _confusion(np.asarray(predictions), np.asarray(references))
        t, p = cm.sum(1).astype(float), cm.sum(0).astype(float)
        c, s = float(np.trace(cm)), float(cm.sum())
        denom = np.sqrt((s * s - p @ p) * (s * s - t @ t))
        return {"matthews_correlation": float((c * s - t @ p) / denom) if denom else 0.0}


# -- text metrics (generated text against reference text) ------------------------------------
# Computed by the reference packages (rouge-score, sacrebleu), so they match published numbers;
# shipped here because evaluate.load fetches its scripts from the hub.

_TEXT_FEATURES = datasets.Features(
    {"predictions": datasets.Value("string"), "references": datasets.Value("string")}
)


class _LocalText(_Local):
    inputs_ = "predictions, references: one string each per example"
    features_ = _TEXT_FEATURES


def normalize_answer(text: str) -> str:
    """SQuAD's answer normalization (the official v1.1 script): lower case, punctuation and
    the articles a / an / the removed, whitespace collapsed."""
    import re
    import string

    text = "".join(ch for ch in text.lower() if ch not in set(string.punctuation))
    text = re.sub(r"\b(a|an|the)\b", " ", text)
    return " ".join(text.split())


class ExactMatch(_LocalText):
    """The share of predictions equal to their reference after :func:`normalize_answer`
    (SQuAD's exact match, on a 0-1 scale like evaluate's ``exact_match``); ``normalize:
    false`` compares the stripped strings."""

    name_ = "exact_match"

    def _compute(
        self, predictions: Any, references: Any, normalize: bool = True
    ) -> dict[str, float]:
        norm = normalize_answer if normalize else str.strip
        hits = [norm(p) == norm(r) for p, r in zip(predictions, references, strict=True)]
        return {"exact_match": float(np.mean(hits)) if hits else 0.0}


class Rouge(_LocalText):
    """ROUGE F-measure (Google's ``rouge-score``, as evaluate's ``rouge`` uses it), the mean
    over examples (evaluate's ``use_aggregator=False`` then a mean; its default bootstrap
    aggregate is a resampled estimate of the same mean)."""

    name_ = "rouge1"

    def _compute(
        self, predictions: Any, references: Any, use_stemmer: bool = False
    ) -> dict[str, float]:
        from rouge_score import rouge_scorer

        scorer = rouge_scorer.RougeScorer([self.name_], use_stemmer=use_stemmer)
        scores = [
            scorer.score(r, p)[self.name_].fmeasure
            for p, r in zip(predictions, references, strict=True)
        ]
        return {self.name_: float(np.mean(scores)) if scores else 0.0}


class Rouge2(Rouge):
    name_ = "rouge2"


class RougeL(Rouge):
    name_ = "rougeL"


class RougeLsum(Rouge):
    name_ = "rougeLsum"  # sentences split on newlines, as rouge-score does


class ChrF(_LocalText):
    """Corpus chrF (sacrebleu's ``CHRF``, 0-100; ``word_order: 2`` gives chrF++)."""

    name_ = "chrf"

    def _compute(
        self, predictions: Any, references: Any, char_order: int = 6, word_order: int = 0
    ) -> dict[str, float]:
        from sacrebleu.metrics import CHRF

        chrf = CHRF(char_order=char_order, word_order=word_order)
        return {"chrf": float(chrf.corpus_score(list(predictions), [list(references)]).score)}


class Bleu(_LocalText):
    """Corpus BLEU by sacrebleu (0-100, its default 13a tokenizer), one reference each."""

    name_ = "bleu"

    def _compute(
        self, predictions: Any, references: Any, tokenize: str = "13a"
    ) -> dict[str, float]:
        from sacrebleu.metrics import BLEU

        bleu = BLEU(tokenize=tokenize)
        return {"bleu": float(bleu.corpus_score(list(predictions), [list(references)]).score)}


# Predicted class ids against reference class ids (the label tasks' metrics).
LABEL_METRICS: dict[str, type[_Local]] = {
    m.name_: m for m in (Accuracy, F1, Precision, Recall, MatthewsCorrelation)
}
METRICS: dict[str, type[_Local]] = dict(LABEL_METRICS)
# Generated text against reference text (a generation task's metrics).
TEXT_METRICS: dict[str, type[_Local]] = {
    m.name_: m for m in (ExactMatch, Rouge, Rouge2, RougeL, RougeLsum, ChrF, Bleu)
}
METRICS.update(TEXT_METRICS)


def load_metric(name: str, file: str = "space.yaml") -> evaluate.EvaluationModule:
    """A shipped metric by name, else ``evaluate.load(name)`` (hub name or local script path).

    Raises:
        SpaceError: the metric cannot be loaded (offline, a typo); the shipped names are listed.
    """
    if name in METRICS:
        return METRICS[name]()
    try:
        return evaluate.load(name)
    except Exception as exc:  # evaluate raises FileNotFoundError, ConnectionError, ImportError...
        raise SpaceError(
            file,
            "objectives.metric",
            f"cannot load metric ({type(exc).__name__}); offline, use one of "
            f"{', '.join(METRICS)} or a local evaluate module path",
            name,
        ) from None


def check_metric(
    metric: evaluate.EvaluationModule,
    name: str,
    kwargs: dict[str, Any],
    num_labels: int,
    file: str = "space.yaml",
) -> None:
    """Score a toy prediction so bad ``metric_kwargs`` fail before any training."""
    labels = list(range(num_labels))
    try:
        score(metric, name, labels, labels, **kwargs)
    except Exception as exc:
        raise SpaceError(
            file,
            "objectives.metric_kwargs",
            f"metric {name!r} rejects them: {type(exc).__name__}: {exc}",
            kwargs,
        ) from None


def score(
    metric: evaluate.EvaluationModule, name: str, predictions: Any, references: Any, **kwargs: Any
) -> float:
    """Compute ``metric`` and return the one number the study maximizes."""
    result = metric.compute(predictions=predictions, references=references, **kwargs) or {}
    if name in result:
        return float(result[name])
    short = name.rstrip("/").rsplit("/", 1)[-1].removesuffix(".py")
    if short in result:
        return float(result[short])
    if len(result) == 1:
        return float(next(iter(result.values())))
    raise ValueError(f"metric {name!r} returned {sorted(result)}; cannot tell which to maximize")
