"""The offline metrics against hand-worked confusion matrices (scikit-learn's definitions)."""

from __future__ import annotations

import math
import random

import pytest

from peftsearch.objectives import metrics
from peftsearch.objectives.metrics import (
    F1,
    METRICS,
    Accuracy,
    MatthewsCorrelation,
    Precision,
    Recall,
    load_metric,
    score,
)

# --- binary ------------------------------------------------------------------------------------
# refs  1 1 1 1 0 0 0 0 0 0
# preds 1 1 1 0 1 1 0 0 0 0
# class 1: TP 3, FN 1, FP 2, TN 4
BIN_REF = [1, 1, 1, 1, 0, 0, 0, 0, 0, 0]
BIN_PRED = [1, 1, 1, 0, 1, 1, 0, 0, 0, 0]

# --- three classes, class 2 never predicted ------------------------------------------------------
# refs  0 0 1 1 1 2 2 2
# preds 0 1 1 1 0 0 1 0
# confusion (rows true, cols predicted):
#        p0 p1 p2
#   t0 [  1  1  0 ]   support 2
#   t1 [  1  2  0 ]   support 3
#   t2 [  2  1  0 ]   support 3
#   predicted: 4, 4, 0
MC_REF = [0, 0, 1, 1, 1, 2, 2, 2]
MC_PRED = [0, 1, 1, 1, 0, 0, 1, 0]
# per class: P = TP / predicted (0 when nothing predicted), R = TP / support, F1 = 2TP/(2TP+FP+FN)
MC_P = [1 / 4, 2 / 4, 0.0]
MC_R = [1 / 2, 2 / 3, 0.0]
MC_F = [2 / (2 + 3 + 1), 4 / (4 + 2 + 1), 0.0]  # 1/3, 4/7, 0
MC_SUPPORT = [2, 3, 3]


def compute(cls, pred, ref, **kwargs) -> float:
    (value,) = cls().compute(predictions=pred, references=ref, **kwargs).values()
    return value


def test_metrics_offered() -> None:
    labels = {"accuracy", "f1", "precision", "recall", "matthews_correlation"}
    text = {"exact_match", "rouge1", "rouge2", "rougeL", "rougeLsum", "chrf", "bleu"}
    assert set(METRICS) == labels | text and set(metrics.TEXT_METRICS) == text
    for name, cls in METRICS.items():
        metric = load_metric(name)  # local: no hub access
        assert type(metric) is cls
        toy = ["a b", "c"] if name in text else [0, 1]
        assert set(metric.compute(predictions=toy, references=toy)) == {name}


def test_unknown_name_goes_to_evaluate_load(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []
    monkeypatch.setattr(metrics.evaluate, "load", lambda name: calls.append(name) or "loaded")
    assert load_metric("bertscore") == "loaded"
    assert load_metric("./my_metric.py") == "loaded"
    assert calls == ["bertscore", "./my_metric.py"]


def test_accuracy() -> None:
    assert compute(Accuracy, BIN_PRED, BIN_REF) == pytest.approx(7 / 10)
    assert compute(Accuracy, MC_PRED, MC_REF) == pytest.approx(3 / 8)
    assert compute(Accuracy, [2, 2], [2, 2]) == 1.0


def test_binary_scores_pos_label_1() -> None:
    assert compute(Precision, BIN_PRED, BIN_REF) == pytest.approx(3 / 5)
    assert compute(Recall, BIN_PRED, BIN_REF) == pytest.approx(3 / 4)
    # 2 * 0.6 * 0.75 / 1.35 = 2/3 = 2TP / (2TP + FP + FN) = 6 / 9
    assert compute(F1, BIN_PRED, BIN_REF) == pytest.approx(2 / 3)
    assert compute(F1, BIN_PRED, BIN_REF, average="binary") == pytest.approx(2 / 3)


def test_binary_pos_label_0() -> None:
    # class 0: TP 4, predicted 5, support 6
    assert compute(Precision, BIN_PRED, BIN_REF, pos_label=0) == pytest.approx(4 / 5)
    assert compute(Recall, BIN_PRED, BIN_REF, pos_label=0) == pytest.approx(4 / 6)
    assert compute(F1, BIN_PRED, BIN_REF, pos_label=0) == pytest.approx(8 / 11)


def test_binary_positive_class_absent_is_zero() -> None:
    for cls in (Precision, Recall, F1):
        assert compute(cls, [0, 0, 0], [0, 0, 0]) == 0.0
    # predicted positives but none true: precision 0/2, recall 0/0 -> 0 (zero_division = 0)
    assert compute(Precision, [1, 1, 0], [0, 0, 0]) == 0.0
    assert compute(Recall, [1, 1, 0], [0, 0, 0]) == 0.0
    assert compute(F1, [1, 1, 0], [0, 0, 0]) == 0.0


def test_macro_three_classes_with_a_class_never_predicted() -> None:
    assert compute(Precision, MC_PRED, MC_REF, average="macro") == pytest.approx(
        1 / 4
    )  # (1/4+1/2+0)/3
    assert compute(Recall, MC_PRED, MC_REF, average="macro") == pytest.approx(7 / 18)  # (1/2+2/3)/3
    assert compute(F1, MC_PRED, MC_REF, average="macro") == pytest.approx(19 / 63)  # (1/3+4/7)/3
    assert pytest.approx(sum(MC_F) / 3) == 19 / 63


def test_weighted_three_classes() -> None:
    w = [s / 8 for s in MC_SUPPORT]
    # P: 2/8*1/4 + 3/8*1/2 = 1/4; R: 2/8*1/2 + 3/8*2/3 = 3/8 (= accuracy); F1: 1/12 + 3/14 = 25/84
    assert compute(Precision, MC_PRED, MC_REF, average="weighted") == pytest.approx(1 / 4)
    assert compute(Recall, MC_PRED, MC_REF, average="weighted") == pytest.approx(3 / 8)
    assert compute(F1, MC_PRED, MC_REF, average="weighted") == pytest.approx(25 / 84)
    assert pytest.approx(sum(a * b for a, b in zip(w, MC_F, strict=True))) == 25 / 84


def test_micro_equals_accuracy_for_single_label() -> None:
    for cls in (Precision, Recall, F1):
        assert compute(cls, MC_PRED, MC_REF, average="micro") == pytest.approx(3 / 8)
        assert compute(cls, BIN_PRED, BIN_REF, average="micro") == pytest.approx(7 / 10)


def test_macro_binary() -> None:
    # class 0: P 4/5, R 4/6, F1 8/11; class 1: P 3/5, R 3/4, F1 2/3
    assert compute(Precision, BIN_PRED, BIN_REF, average="macro") == pytest.approx(
        (4 / 5 + 3 / 5) / 2
    )
    assert compute(Recall, BIN_PRED, BIN_REF, average="macro") == pytest.approx((4 / 6 + 3 / 4) / 2)
    assert compute(F1, BIN_PRED, BIN_REF, average="macro") == pytest.approx((8 / 11 + 2 / 3) / 2)


def test_unknown_average_is_an_error() -> None:
    with pytest.raises(ValueError, match="average must be"):
        F1().compute(predictions=[0, 1], references=[0, 1], average="samples")


def test_binary_average_on_multiclass_data_is_an_error() -> None:
    with pytest.raises(ValueError):
        F1().compute(predictions=MC_PRED, references=MC_REF)


def test_mcc_binary_hand_worked() -> None:
    # (TP*TN - FP*FN) / sqrt((TP+FP)(TP+FN)(TN+FP)(TN+FN)) = (12 - 2) / sqrt(5*4*6*5)
    assert compute(MatthewsCorrelation, BIN_PRED, BIN_REF) == pytest.approx(10 / math.sqrt(600))


def test_mcc_multiclass_hand_worked() -> None:
    # Gorodkin: c = 3 correct, s = 8, t = supports (2,3,3), p = predicted (4,4,0)
    # (c*s - t.p) / sqrt((s^2 - p.p)(s^2 - t.t)) = (24 - 20) / sqrt((64 - 32)(64 - 22))
    assert compute(MatthewsCorrelation, MC_PRED, MC_REF) == pytest.approx(4 / math.sqrt(32 * 42))


def test_mcc_extremes() -> None:
    ref = [0, 1, 1, 0, 1, 0]
    assert compute(MatthewsCorrelation, ref, ref) == pytest.approx(1.0)
    assert compute(MatthewsCorrelation, [1 - x for x in ref], ref) == pytest.approx(-1.0)
    assert compute(MatthewsCorrelation, [1] * 6, ref) == 0.0  # constant prediction
    assert compute(MatthewsCorrelation, [0, 1, 0, 1], [1, 1, 1, 1]) == 0.0  # constant truth
    assert compute(MatthewsCorrelation, [0, 1, 2, 2], [0, 1, 2, 2]) == pytest.approx(1.0)


def _random_cases() -> list[tuple[list[int], list[int]]]:
    rng = random.Random(0)
    cases = []
    for n_classes in (2, 2, 3, 4):
        for n in (5, 40):
            ref = [rng.randrange(n_classes) for _ in range(n)]
            pred = [rng.randrange(n_classes) for _ in range(n)]
            cases.append((pred, ref))
    cases.append((MC_PRED, MC_REF))
    cases.append((BIN_PRED, BIN_REF))
    return cases


def test_agrees_with_scikit_learn() -> None:
    skm = pytest.importorskip("sklearn.metrics")
    for pred, ref in _random_cases():
        multi = len(set(pred) | set(ref)) > 2
        averages = ["macro", "micro", "weighted"] + ([] if multi else ["binary"])
        assert compute(Accuracy, pred, ref) == pytest.approx(skm.accuracy_score(ref, pred))
        assert compute(MatthewsCorrelation, pred, ref) == pytest.approx(
            skm.matthews_corrcoef(ref, pred)
        )
        for avg in averages:
            for ours, theirs in (
                (Precision, skm.precision_score),
                (Recall, skm.recall_score),
                (F1, skm.f1_score),
            ):
                expected = theirs(ref, pred, average=avg, zero_division=0)
                assert compute(ours, pred, ref, average=avg) == pytest.approx(expected), (
                    ours.name_,
                    avg,
                    pred,
                    ref,
                )


class _Fake:
    def __init__(self, result: dict[str, float]) -> None:
        self.result = result
        self.kwargs: dict = {}

    def compute(self, predictions, references, **kwargs):
        self.kwargs = kwargs
        return self.result


def test_score_picks_the_named_key() -> None:
    assert score(_Fake({"precision": 0.2, "f1": 0.7}), "f1", [0], [0]) == 0.7
    assert score(_Fake({"f1": 0.7, "precision": 0.2}), "precision", [0], [0]) == 0.2


def test_score_short_name_of_a_path_and_single_key() -> None:
    assert score(_Fake({"f1": 0.4, "x": 1.0}), "./metrics/f1.py", [0], [0]) == 0.4
    assert score(_Fake({"f1": 0.4, "x": 1.0}), "org/f1/", [0], [0]) == 0.4
    assert score(_Fake({"whatever": 0.3}), "custom", [0], [0]) == 0.3


def test_score_ambiguous_result_is_an_error() -> None:
    with pytest.raises(ValueError, match="cannot tell which"):
        score(_Fake({"a": 0.1, "b": 0.2}), "custom", [0], [0])
    with pytest.raises(ValueError):
        score(_Fake({}), "custom", [0], [0])


def test_score_passes_kwargs_and_real_metrics() -> None:
    fake = _Fake({"f1": 0.5})
    score(fake, "f1", [0], [0], average="macro")
    assert fake.kwargs == {"average": "macro"}
    value = score(load_metric("f1"), "f1", MC_PRED, MC_REF, average="macro")
    assert value == pytest.approx(19 / 63)
    assert isinstance(value, float)
    assert score(load_metric("accuracy"), "accuracy", BIN_PRED, BIN_REF) == pytest.approx(0.7)


# --- generated text (issue 25's metrics), against the reference packages --------------------

PREDS = ["The cat sat on the mat.", "hello there", "a quick brown fox", "", "Paris"]
REFS = ["the cat sat on a mat", "Hello!", "the quick brown dog jumps", "nothing", "Paris, France"]


def test_exact_match_uses_squads_normalization() -> None:
    em = load_metric("exact_match")
    # case, punctuation and articles do not count; a missing word does
    assert score(em, "exact_match", PREDS, REFS) == pytest.approx(1 / 5)
    assert metrics.normalize_answer("  The  Cat, an idea!") == "cat idea"
    assert score(em, "exact_match", ["Paris."], ["paris"]) == 1.0
    assert score(em, "exact_match", ["Paris."], ["paris"], normalize=False) == 0.0
    assert score(em, "exact_match", [" paris "], ["paris"], normalize=False) == 1.0


@pytest.mark.parametrize("name", ["rouge1", "rouge2", "rougeL", "rougeLsum"])
def test_rouge_is_rouge_scores_mean_f_measure(name: str) -> None:
    from rouge_score import rouge_scorer

    scorer = rouge_scorer.RougeScorer([name])
    want = sum(scorer.score(r, p)[name].fmeasure for p, r in zip(PREDS, REFS, strict=True))
    want /= len(PREDS)
    assert score(load_metric(name), name, PREDS, REFS) == pytest.approx(want, abs=1e-12)
    assert 0 < want < 1


def test_rouge1_hand_worked() -> None:
    # "a b c" vs "a b d": 2 of 3 unigrams each way, F = 2/3; identical text scores 1
    rouge = load_metric("rouge1")
    assert score(rouge, "rouge1", ["a b c"], ["a b d"]) == pytest.approx(2 / 3)
    assert score(rouge, "rouge1", ["same words"], ["same words"]) == 1.0


def test_chrf_and_bleu_are_sacrebleus_corpus_scores() -> None:
    import sacrebleu

    chrf = score(load_metric("chrf"), "chrf", PREDS, REFS)
    assert chrf == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS]).score, abs=1e-9)
    plus = score(load_metric("chrf"), "chrf", PREDS, REFS, word_order=2)
    assert plus == pytest.approx(sacrebleu.corpus_chrf(PREDS, [REFS], word_order=2).score)
    bleu = score(load_metric("bleu"), "bleu", PREDS, REFS)
    assert bleu == pytest.approx(sacrebleu.corpus_bleu(PREDS, [REFS]).score, abs=1e-9)
    assert 0 < chrf < 100 and chrf != plus
    same = ["a sentence of several words here"] * 2
    assert score(load_metric("chrf"), "chrf", same, same) == pytest.approx(100.0)
    assert score(load_metric("bleu"), "bleu", same, same) == pytest.approx(100.0)
