"""Classification metrics, single-label from a confusion matrix and multi-label from per-label
counts, the tuning of multi-label thresholds and the calibration of single-label probabilities:
one implementation for validation and evaluate."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts (num_classes, num_classes): rows are true labels, columns predictions."""
    flat = np.asarray(y_true, dtype=np.int64) * num_classes + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(flat, minlength=num_classes**2).reshape(num_classes, num_classes)


def report(confusion: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Accuracy, macro and weighted F1, per-class precision/recall/F1/support (as scikit-learn's
    classification_report, with 0 where a ratio has no denominator). Macro-F1 averages over the
    classes in the data or predicted, as scikit-learn does when not given the labels: a class
    absent from both has no F1 to speak of."""
    tp = np.diag(confusion).astype(float)
    support = confusion.sum(axis=1).astype(float)
    predicted = confusion.sum(axis=0).astype(float)
    precision = np.divide(tp, predicted, out=np.zeros_like(tp), where=predicted > 0)
    recall = np.divide(tp, support, out=np.zeros_like(tp), where=support > 0)
    denom = precision + recall
    f1 = np.divide(2 * precision * recall, denom, out=np.zeros_like(tp), where=denom > 0)
    total = support.sum()
    return {
        "accuracy": float(tp.sum() / total) if total else 0.0,
        "macro_f1": float(f1[(support > 0) | (predicted > 0)].mean()) if total else 0.0,
        "weighted_f1": float((f1 * support).sum() / total) if total else 0.0,
        "support": int(total),
        "per_class": {
            str(name): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i, name in enumerate(names)
        },
        "labels": [str(n) for n in names],
        "confusion_matrix": confusion.astype(int).tolist(),
    }


def multilabel_counts(targets: np.ndarray, predicted: np.ndarray) -> np.ndarray:
    """Counts per label, (labels, 3): true positives, false positives, false negatives; plus a
    last row [documents, exact matches, 0]. Counts of several batches add up."""
    t, p = np.asarray(targets, dtype=bool), np.asarray(predicted, dtype=bool)
    per_label = np.stack([(t & p).sum(0), (~t & p).sum(0), (t & ~p).sum(0)], axis=1)
    totals = np.array([[len(t), int((t == p).all(axis=1).sum()), 0]])
    return np.concatenate([per_label, totals]).astype(np.int64)


def multilabel_report(counts: np.ndarray, names: Sequence[str]) -> dict[str, Any]:
    """Micro and macro F1, subset accuracy (all labels of a document right), Hamming loss and
    per-label precision/recall/F1/support, from `multilabel_counts`. Macro-F1 averages over every
    label, one absent from the documents and never predicted counting 0, as scikit-learn's
    f1_score does for label indicator matrices (unlike `report`: each follows scikit-learn)."""
    tp, fp, fn = (counts[:-1, i].astype(float) for i in range(3))
    documents, exact = int(counts[-1, 0]), int(counts[-1, 1])

    def ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
        return np.divide(a, b, out=np.zeros_like(a, dtype=float), where=b > 0)

    precision, recall = ratio(tp, tp + fp), ratio(tp, tp + fn)
    f1 = ratio(2 * precision * recall, precision + recall)
    micro_p, micro_r = ratio(tp.sum(), tp.sum() + fp.sum()), ratio(tp.sum(), tp.sum() + fn.sum())
    return {
        "multi_label": True,
        "subset_accuracy": exact / documents if documents else 0.0,
        "micro_f1": float(ratio(2 * micro_p * micro_r, micro_p + micro_r)),
        "macro_f1": float(f1.mean()),
        "micro_precision": float(micro_p),
        "micro_recall": float(micro_r),
        "hamming_loss": float((fp.sum() + fn.sum()) / (documents * len(names))) if documents else 0.0,
        "support": documents,
        "per_class": {
            str(name): {
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(tp[i] + fn[i]),
            }
            for i, name in enumerate(names)
        },
        "labels": [str(n) for n in names],
    }


def describe(report: dict[str, Any]) -> str:
    """The headline figures of a report (`report` or `multilabel_report`), for one log line."""
    if report.get("multi_label"):
        return (f"micro-F1 {report['micro_f1']:.4f}, macro-F1 {report['macro_f1']:.4f}, "
                f"subset accuracy {report['subset_accuracy']:.4f}")
    return f"accuracy {report['accuracy']:.4f}, macro-F1 {report['macro_f1']:.4f}"


THRESHOLD_GRID = np.round(np.arange(0.05, 0.96, 0.05), 2)


def tune_thresholds(probs: np.ndarray, targets: np.ndarray, metric: str = "macro_f1") -> list[float]:
    """Per label, a threshold on THRESHOLD_GRID (ties go to the one nearest 0.5), tuned on
    (valid) data for `metric`:

    - macro_f1: each label's best F1, which makes their mean the best there is; a label with
      no positive example keeps 0.5.
    - micro_f1: starting from 0.5 for every label, each label in turn takes the threshold that
      gives the best micro-F1 of all labels with the others' as they stand, twice over, so the
      result is never below 0.5's. A label's own best F1 can be to predict it for every
      document (2p / (1 + p) for a share p of positives beats never predicting it), which
      floods the other labels' documents with it: micro-F1 and subset accuracy fell far below
      0.5's on a model trained for two epochs.
    """
    targets = np.asarray(targets, dtype=bool)
    labels = targets.shape[1]
    # Per label and threshold, true positives and predicted positives (tp + fp); one label at
    # a time, as the (N, labels, grid) table of a large valid set would not fit in memory.
    tp = np.zeros((labels, len(THRESHOLD_GRID)), dtype=np.int64)
    positives = np.zeros_like(tp)
    for j in range(labels):
        predicted = probs[:, j, None] >= THRESHOLD_GRID[None, :]  # (N, grid)
        tp[j] = (predicted & targets[:, j, None]).sum(0)
        positives[j] = predicted.sum(0)
    actual = targets.sum(0)  # (labels,): tp + fn

    def nearest_half(scores: np.ndarray) -> int:
        best = np.flatnonzero(np.isclose(scores, scores.max()))
        return int(best[np.argmin(np.abs(THRESHOLD_GRID[best] - 0.5))])

    if metric == "macro_f1":
        return [
            float(THRESHOLD_GRID[nearest_half(2 * tp[j] / (positives[j] + actual[j]))]) if actual[j] else 0.5
            for j in range(labels)
        ]
    chosen = np.full(labels, np.argmin(np.abs(THRESHOLD_GRID - 0.5)))  # 0.5 for every label
    all_tp, all_positives = tp[np.arange(labels), chosen].sum(), positives[np.arange(labels), chosen].sum()
    for _ in range(2):
        for j in range(labels):
            # micro-F1 = 2 TP / (predicted + actual), summed over the labels; here over
            # label j's thresholds, the other labels' as they stand.
            tp_j = all_tp - tp[j, chosen[j]] + tp[j]
            denominator = all_positives - positives[j, chosen[j]] + positives[j] + actual.sum()
            micro = np.where(denominator > 0, 2 * tp_j / np.maximum(denominator, 1), 0.0)
            best = nearest_half(micro)
            all_tp += tp[j, best] - tp[j, chosen[j]]
            all_positives += positives[j, best] - positives[j, chosen[j]]
            chosen[j] = best
    return [float(THRESHOLD_GRID[c]) for c in chosen]


# Fewer valid documents fit a temperature to their own noise (Guo et al., 2017, fitted it on
# 5,000 or more); the probabilities are then left as the model gives them.
CALIBRATION_MIN_DOCUMENTS = 200
TEMPERATURE_RANGE = (0.05, 20.0)
CALIBRATION_BINS = 15


def _tempered_log_probs(log_probs: np.ndarray, temperature: float) -> np.ndarray:
    """log of softmax(log_probs / temperature), in float64, as model.probabilities computes it."""
    scaled = np.asarray(log_probs, dtype=np.float64) / temperature
    top = scaled.max(axis=1, keepdims=True)
    return scaled - top - np.log(np.exp(scaled - top).sum(axis=1, keepdims=True))


def log_loss(log_probs: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Mean negative log-probability of the true class (scikit-learn's log_loss), tempered by
    `temperature`; `log_probs`: the log-probabilities (model.log_probabilities), `targets`:
    the true class ids."""
    return float(-_tempered_log_probs(log_probs, temperature)[np.arange(len(targets)), targets].mean())


def calibration_error(log_probs: np.ndarray, targets: np.ndarray, temperature: float = 1.0) -> float:
    """Expected calibration error: over CALIBRATION_BINS equal bins of the top probability, the
    gap between that probability and how often the top class is right, weighted by the bin's
    share of documents (0: "90%" is right 90% of the time). Arguments as log_loss's."""
    tempered = np.exp(_tempered_log_probs(log_probs, temperature))
    return calibration_error_of(calibration_bins(tempered.max(axis=1), tempered.argmax(axis=1) == targets))


def calibration_bins(confidence: np.ndarray, right: np.ndarray) -> np.ndarray:
    """(3, CALIBRATION_BINS): per bin of the top probability `confidence`, the documents, the
    sum of their top probabilities and how many of them were `right`; batches' bins add up."""
    bins = np.minimum((np.asarray(confidence, dtype=np.float64) * CALIBRATION_BINS).astype(int),
                      CALIBRATION_BINS - 1)
    return np.stack([np.bincount(bins, minlength=CALIBRATION_BINS),
                     np.bincount(bins, weights=confidence, minlength=CALIBRATION_BINS),
                     np.bincount(bins, weights=right, minlength=CALIBRATION_BINS)]).astype(np.float64)


def calibration_error_of(bins: np.ndarray) -> float:
    """calibration_error of the documents counted in `bins` (calibration_bins): the sum over
    bins of |right - sum of top probabilities|, over all documents."""
    documents, confidence, right = bins
    return float(np.abs(right - confidence).sum() / max(1.0, documents.sum()))


def fit_temperature(log_probs: np.ndarray, targets: np.ndarray) -> float | None:
    """The temperature (in TEMPERATURE_RANGE) whose tempered probabilities have the least log
    loss on `targets` (arguments as log_loss's); None where they cannot tell it: fewer than
    CALIBRATION_MIN_DOCUMENTS, none misclassified (the loss then falls as long as the
    temperature does), or a log-probability that is not a number (logits that overflowed: NaN
    compares false, and the search would run to the sharpest bound, 0.05). Golden-section
    search on 1/temperature, in which the loss is convex.

    Log-probabilities, not probabilities: the log of a float32 probability that underflowed to
    0 is not known, and a guess for it (1e-300) moved a fit from 6.3 to 20 (tests/test_metrics.py)."""
    if len(targets) < CALIBRATION_MIN_DOCUMENTS or not np.isfinite(log_probs).all():
        return None
    if (log_probs.argmax(axis=1) == targets).all():
        return None
    def loss(inverse: float) -> float:
        return log_loss(log_probs, targets, 1 / inverse)

    low, high = 1 / TEMPERATURE_RANGE[1], 1 / TEMPERATURE_RANGE[0]
    ratio = (np.sqrt(5) - 1) / 2
    for _ in range(60):  # the interval shrinks to 0.618^60 of its width: far below 1e-6
        a, b = high - ratio * (high - low), low + ratio * (high - low)
        if loss(a) <= loss(b):
            high = b
        else:
            low = a
    return float(1 / ((low + high) / 2))
