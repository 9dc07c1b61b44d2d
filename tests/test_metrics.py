"""Confusion matrix and report, checked against numbers worked out by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hanclf.metrics import (
    CALIBRATION_MIN_DOCUMENTS,
    TEMPERATURE_RANGE,
    calibration_error,
    confusion_matrix,
    fit_temperature,
    log_loss,
    multilabel_counts,
    multilabel_report,
    report,
    tune_thresholds,
)
from hanclf.model import log_probabilities

# rows: true class, columns: predicted class
#            pred a  b  c     support
HAND = [[4, 1, 0],  # a    5
        [2, 1, 1],  # b    4
        [1, 0, 3]]  # c    4
# predicted totals: a 7, b 2, c 4; 13 documents, 8 correct
PRECISION = {"a": 4 / 7, "b": 1 / 2, "c": 3 / 4}
RECALL = {"a": 4 / 5, "b": 1 / 4, "c": 3 / 4}
F1 = {"a": 2 / 3, "b": 1 / 3, "c": 3 / 4}  # e.g. a: 2*(4/7)*(4/5) / (4/7 + 4/5) = 2/3


def hand_labels() -> tuple[np.ndarray, np.ndarray]:
    pairs = [(t, p) for t, row in enumerate(HAND) for p, n in enumerate(row) for _ in range(n)]
    np.random.default_rng(0).shuffle(pairs)
    y_true, y_pred = zip(*pairs)
    return np.array(y_true), np.array(y_pred)


def test_confusion_matrix_counts():
    y_true, y_pred = hand_labels()
    assert confusion_matrix(y_true, y_pred, 3).tolist() == HAND
    assert confusion_matrix(np.array([0, 1]), np.array([1, 1]), 4).tolist() == [
        [0, 1, 0, 0], [0, 1, 0, 0], [0, 0, 0, 0], [0, 0, 0, 0]
    ]


def test_report_hand_computed():
    r = report(np.array(HAND), ["a", "b", "c"])
    for name in "abc":
        c = r["per_class"][name]
        assert c["precision"] == pytest.approx(PRECISION[name], abs=1e-9)
        assert c["recall"] == pytest.approx(RECALL[name], abs=1e-9)
        assert c["f1"] == pytest.approx(F1[name], abs=1e-9)
    assert [r["per_class"][n]["support"] for n in "abc"] == [5, 4, 4]
    assert r["accuracy"] == pytest.approx(8 / 13, abs=1e-9)
    assert r["macro_f1"] == pytest.approx((2 / 3 + 1 / 3 + 3 / 4) / 3, abs=1e-9)  # 7/12
    assert r["weighted_f1"] == pytest.approx((5 * 2 / 3 + 4 * 1 / 3 + 4 * 3 / 4) / 13, abs=1e-9)
    assert r["support"] == 13
    assert r["labels"] == ["a", "b", "c"]
    assert r["confusion_matrix"] == HAND


def test_never_predicted_class_scores_zero_not_nan():
    confusion = np.array([[3, 0, 0], [1, 2, 0], [2, 0, 0]])  # class 2 is never predicted
    r = report(confusion, ["x", "y", "z"])
    z = r["per_class"]["z"]
    assert (z["precision"], z["recall"], z["f1"], z["support"]) == (0.0, 0.0, 0.0, 2)
    assert not any(math.isnan(v) for c in r["per_class"].values() for v in c.values())
    f1_x = 2 * (3 / 6) * 1 / (3 / 6 + 1)
    f1_y = 2 * 1 * (2 / 3) / (1 + 2 / 3)
    assert r["macro_f1"] == pytest.approx((f1_x + f1_y + 0) / 3, abs=1e-9)


def test_macro_f1_leaves_out_classes_neither_in_the_data_nor_predicted():
    # As scikit-learn's f1_score(average="macro"): a test subset without a class, or a long tail
    # of classes absent from valid, would otherwise pull macro-F1 down by a zero per class.
    confusion = np.array([[3, 1, 0], [0, 2, 0], [0, 0, 0]])  # no "z" in the data, none predicted
    r = report(confusion, ["x", "y", "z"])
    f1_x, f1_y = 2 * 1 * (3 / 4) / (1 + 3 / 4), 2 * (2 / 3) * 1 / (2 / 3 + 1)
    assert r["macro_f1"] == pytest.approx((f1_x + f1_y) / 2, abs=1e-9)
    assert r["per_class"]["z"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    sklearn = pytest.importorskip("sklearn.metrics")
    y_true, y_pred = [0, 0, 0, 0, 1, 1], [0, 0, 0, 1, 1, 1]
    assert r["macro_f1"] == pytest.approx(sklearn.f1_score(y_true, y_pred, average="macro"), abs=1e-9)


def test_numeric_label_names_become_strings():
    r = report(np.array([[1, 0], [0, 1]]), [1, 5])
    assert r["labels"] == ["1", "5"] and set(r["per_class"]) == {"1", "5"}
    assert r["accuracy"] == 1.0 and r["macro_f1"] == 1.0


def test_empty_confusion_gives_zeros():
    r = report(np.zeros((2, 2), dtype=int), ["a", "b"])
    assert (r["accuracy"], r["macro_f1"], r["weighted_f1"], r["support"]) == (0.0, 0.0, 0.0, 0)


def test_matches_scikit_learn():
    metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(1)
    y_true = rng.integers(0, 4, 200)
    y_pred = np.where(rng.random(200) < 0.6, y_true, rng.integers(0, 3, 200))  # 3 never predicted
    r = report(confusion_matrix(y_true, y_pred, 4), ["a", "b", "c", "d"])
    expected = metrics.classification_report(y_true, y_pred, output_dict=True, zero_division=0)
    assert r["accuracy"] == pytest.approx(metrics.accuracy_score(y_true, y_pred), abs=1e-9)
    assert r["macro_f1"] == pytest.approx(expected["macro avg"]["f1-score"], abs=1e-9)
    assert r["weighted_f1"] == pytest.approx(expected["weighted avg"]["f1-score"], abs=1e-9)
    for i, name in enumerate("abcd"):
        for ours, theirs in (("precision", "precision"), ("recall", "recall"), ("f1", "f1-score")):
            assert r["per_class"][name][ours] == pytest.approx(expected[str(i)][theirs], abs=1e-9)


def test_multilabel_report_matches_scikit_learn():
    sklearn_metrics = pytest.importorskip("sklearn.metrics")
    rng = np.random.default_rng(0)
    targets = rng.random((200, 4)) < 0.35
    predicted = np.where(rng.random((200, 4)) < 0.8, targets, ~targets)  # 80% of cells right
    predicted[:5] = targets[:5]  # some exact matches for sure
    # counts of two batches add up to those of the whole
    counts = multilabel_counts(targets[:70], predicted[:70]) + multilabel_counts(targets[70:], predicted[70:])
    r = multilabel_report(counts, ["a", "b", "c", "d"])
    assert r["micro_f1"] == pytest.approx(sklearn_metrics.f1_score(targets, predicted, average="micro"))
    assert r["macro_f1"] == pytest.approx(sklearn_metrics.f1_score(targets, predicted, average="macro"))
    assert r["subset_accuracy"] == pytest.approx(sklearn_metrics.accuracy_score(targets, predicted))
    assert r["hamming_loss"] == pytest.approx(sklearn_metrics.hamming_loss(targets, predicted))
    assert r["micro_precision"] == pytest.approx(
        sklearn_metrics.precision_score(targets, predicted, average="micro"))
    per_label_recall = sklearn_metrics.recall_score(targets, predicted, average=None)
    assert [r["per_class"][k]["recall"] for k in "abcd"] == pytest.approx(per_label_recall)
    assert [r["per_class"][k]["support"] for k in "abcd"] == targets.sum(0).tolist()
    assert r["support"] == 200


def test_multilabel_report_by_hand_with_a_label_never_predicted():
    targets = np.array([[1, 0], [1, 1], [0, 0]], dtype=bool)
    predicted = np.array([[1, 0], [1, 0], [0, 0]], dtype=bool)
    r = multilabel_report(multilabel_counts(targets, predicted), ["x", "y"])
    # x: tp 2; y: fn 1, never predicted -> precision 0 by convention, f1 0
    assert r["per_class"]["x"] == {"precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2}
    assert r["per_class"]["y"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 1}
    assert r["micro_f1"] == pytest.approx(2 * 1.0 * (2 / 3) / (1 + 2 / 3))
    assert r["subset_accuracy"] == pytest.approx(2 / 3) and r["hamming_loss"] == pytest.approx(1 / 6)


def test_tune_thresholds_picks_the_best_f1_per_label():
    probs = np.array([[0.9, 0.2, 0.6], [0.7, 0.3, 0.6], [0.4, 0.35, 0.6], [0.1, 0.1, 0.6]])
    targets = np.array([[1, 0, 0], [1, 1, 0], [0, 1, 0], [0, 0, 0]], dtype=bool)
    # label 0: any cut in (0.4, 0.7] separates perfectly; ties go to the one nearest 0.5 -> 0.5
    # label 1: positives at 0.3 and 0.35, a negative at 0.2 -> cut in (0.2, 0.3]: 0.25 or 0.3 -> 0.3
    # label 2: no positive in the data -> stays 0.5
    assert tune_thresholds(probs, targets) == [0.5, 0.3, 0.5]


def test_thresholds_tuned_for_micro_f1_never_fall_below_one_half():
    # A rare label the model cannot tell apart (10% of documents): its own best F1 is to predict
    # it for every document (2p / (1 + p) > 0), which floods micro-F1 with false positives.
    rng = np.random.default_rng(0)
    n = 200
    clear = rng.random(n) < 0.5
    vague = rng.random(n) < 0.1
    probs = np.column_stack([np.where(clear, 0.9, 0.1), rng.uniform(0.1, 0.45, n)])
    targets = np.column_stack([clear, vague])

    def micro_f1(thresholds):
        predicted = probs >= np.array(thresholds)
        return 2 * (predicted & targets).sum() / (predicted.sum() + targets.sum())

    per_label = tune_thresholds(probs, targets, "macro_f1")
    assert per_label[1] < 0.5  # the vague label for many documents
    assert micro_f1(per_label) < 0.8 < 0.85 < micro_f1([0.5, 0.5])
    assert tune_thresholds(probs, targets, "micro_f1") == [0.5, 0.5]  # nothing beats 0.5 here
    # Where another threshold does better it is found: label 0's positives now at 0.4.
    probs[:, 0] = np.where(clear, 0.4, 0.1)
    tuned = tune_thresholds(probs, targets, "micro_f1")
    assert tuned == [0.4, 0.5] and micro_f1(tuned) > micro_f1([0.5, 0.5])


def overconfident(documents: int, temperature: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Log-probabilities log softmax(z) of a model whose true classes are drawn from softmax(z / T)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(scale=3.0, size=(documents, 5))
    true = np.exp(logits / temperature)
    true /= true.sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(5, p=row) for row in true])
    return log_probabilities(torch.tensor(logits, dtype=torch.float32)).numpy(), targets


def test_the_fitted_temperature_is_the_one_the_data_was_drawn_with():
    log_probs, targets = overconfident(20_000, temperature=2.0)
    fitted = fit_temperature(log_probs, targets)
    assert fitted == pytest.approx(2.0, abs=0.1)
    # The least log loss there is: a step either way costs.
    assert log_loss(log_probs, targets, fitted) < min(log_loss(log_probs, targets, fitted * f) for f in (0.9, 1.1))
    assert calibration_error(log_probs, targets) > 0.1 > 0.02 > calibration_error(log_probs, targets, fitted)
    underconfident, targets = overconfident(20_000, temperature=0.5, seed=1)
    assert fit_temperature(underconfident, targets) == pytest.approx(0.5, abs=0.05)


def test_no_temperature_from_too_few_documents_from_no_mistakes_or_from_nan():
    log_probs, targets = overconfident(CALIBRATION_MIN_DOCUMENTS, temperature=2.0)
    assert fit_temperature(log_probs, targets) is not None
    assert fit_temperature(log_probs[:-1], targets[:-1]) is None
    assert fit_temperature(log_probs, log_probs.argmax(axis=1)) is None  # every document right
    for bad in (np.nan, np.inf, -np.inf):  # none fitted to the sharpest bound, 0.05
        damaged = log_probs.copy()
        damaged[3] = bad
        assert fit_temperature(damaged, targets) is None


def test_log_loss_and_calibration_error_by_hand():
    probs = np.array([[0.9, 0.1], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]], dtype=np.float32)
    targets = np.array([0, 1, 1, 0])
    assert log_loss(np.log(probs), targets) == pytest.approx(-np.log([0.9, 0.2, 0.7, 0.6]).mean(), rel=1e-6)
    # Bins of 1/15: 0.9 and 0.8 fall apart, as do 0.7 and 0.6; each bin holds one document,
    # right (gap 1 - p) or wrong (gap p).
    assert calibration_error(np.log(probs), targets) == pytest.approx((0.1 + 0.8 + 0.3 + 0.4) / 4, rel=1e-6)
    # Temperature 2 takes the square root of each probability before normalizing them again.
    tempered = np.sqrt(probs) / np.sqrt(probs).sum(axis=1, keepdims=True)
    assert log_loss(np.log(probs), targets, 2.0) == pytest.approx(log_loss(np.log(tempered), targets), rel=1e-6)


def test_the_temperature_is_fitted_on_log_probabilities_a_float32_softmax_would_lose():
    # 10 of 1,000 documents confidently wrong, their true class 110 logits below the top: a
    # float32 softmax gives it 0 (exp(-110) is below float32's least number), whose log the fit
    # had to guess (1e-300: -690), and the guess took the temperature to the bound of 20 where
    # the logits' own fit is 6.3.
    rng = np.random.default_rng(0)
    logits = rng.normal(scale=3.0, size=(1_000, 3))
    true = np.exp(logits / 2) / np.exp(logits / 2).sum(axis=1, keepdims=True)
    targets = np.array([rng.choice(3, p=row) for row in true])
    logits[:10], targets[:10] = [0.0, -5.0, -110.0], 2
    assert (torch.softmax(torch.tensor(logits, dtype=torch.float32), -1)[:10, 2] == 0).all()

    def exact_loss(temperature: float) -> float:  # from the logits, in float64
        scaled = logits / temperature
        top = scaled.max(axis=1, keepdims=True)
        return -(scaled[np.arange(1_000), targets] - top[:, 0] - np.log(np.exp(scaled - top).sum(axis=1))).mean()

    grid = np.exp(np.linspace(0.0, np.log(TEMPERATURE_RANGE[1]), 3_000))
    best = grid[np.argmin([exact_loss(t) for t in grid])]
    assert 6 < best < 7
    fitted = fit_temperature(log_probabilities(torch.tensor(logits, dtype=torch.float32)).numpy(), targets)
    assert fitted == pytest.approx(best, rel=0.002)
