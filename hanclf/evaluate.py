"""`evaluate`: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of a
model on labelled data (multi-label: micro/macro-F1, subset accuracy, Hamming loss, per-label
figures), streamed so the data can be larger than memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hanclf.data import (
    SPLIT_COLUMN, no_label, no_rows_in_split, not_a_label_set, require_split_column, rows_in_split,
)
from hanclf.io import (
    TextColumns, as_path, check_input, column_values, iter_batches, require_columns, text_columns, text_values, to_stderr,
)
from hanclf.metrics import (
    CALIBRATION_BINS, calibration_bins, calibration_error_of, confusion_matrix, multilabel_counts,
    multilabel_report, report,
)
from hanclf.predictor import PREDICT_CHUNK_ROWS, Predictor, check_multi_label_options
from hanclf.progress import RowProgress
from hanclf.vocab import Labels, NotALabelSet, joined_sets_hint, normalize_labels

BATCH_ROWS = PREDICT_CHUNK_ROWS  # rows read and scored at a time, as many as predict reads
UNKNOWN_LABELS_SHOWN = 5  # in the warning on labels the model does not know


def evaluate_file(
    model_dir: str | Path,
    data: str | Path,
    text_column: TextColumns | None = None,
    label_column: str | None = None,
    split: str | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    threshold: float | None = None,
    label_separator: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = to_stderr,
) -> dict[str, Any]:
    """Metrics of the model on `data` (only rows of `split` if given, e.g. 'test').

    Multi-label models only: `threshold` replaces the per-label thresholds tuned on valid (as
    predict's --threshold does), `label_separator` the model's separator of labels in one
    string of the label column. `progress` and `log`: the rows read and scored so far, as
    predict_file's; `log` also gets a warning where the data holds labels the model does not
    know, which are scored as scikit-learn scores them: rows misclassified (multi-label: the
    label missed), the label in the per-class figures with its support."""
    data = as_path(data, "data", data=True)
    check_input(data)
    predictor = Predictor(model_dir, device, batch_size)
    config = predictor.artifact.config.data
    labels = predictor.labels
    check_multi_label_options(labels, threshold, label_separator)
    separator = label_separator or config.label_separator
    text_column = text_column or config.text_column
    label_column = label_column or config.label_column
    require_columns(data, {"--text-column": text_column, "--label-column": label_column})
    require_split_column(data, split)
    columns = [*text_columns(text_column), label_column] + ([SPLIT_COLUMN] if split else [])

    n = len(labels)
    # Counts add up over batches: a confusion matrix, or per-label tp/fp/fn for multi-label (and
    # a last row of totals). A label the model was not trained on (a category new since) gets
    # its row after the model's as it is met, and in the confusion matrix a column that stays
    # 0: its rows are scored as scikit-learn scores a label that y_true holds and y_pred never
    # does, as misclassified (multi-label: that label missed), not refused.
    counts = np.zeros((n + 1, 3) if labels.multi_label else (n, n), dtype=np.int64)
    scored = labels  # the labels counted: the model's, then those met that it does not know
    # Single-label: how often each level of pred_prob was right (metrics.calibration_bins).
    bins = np.zeros((3, CALIBRATION_BINS))
    unknown_rows = 0  # rows with a label the model does not know
    row = 0
    seen: set[str | None] = set()  # split values
    with RowProgress.of_input(data, progress, log, "read") as rows_read:
        for batch in iter_batches(data, columns, BATCH_ROWS):
            texts = text_values(data, text_column, batch)
            raw = column_values(data, batch, label_column)
            keep = rows_in_split(column_values(data, batch, SPLIT_COLUMN), split, seen) if split else range(len(texts))
            where = f"{data} column '{label_column}'"
            try:
                values = normalize_labels([raw[i] for i in keep], labels.multi_label, separator)
            except NotALabelSet as error:
                raise not_a_label_set(str(data), row + list(keep)[error.index], label_column, error) from None
            if not labels.multi_label:
                # The first row only: counting them all would mean reading the whole input first.
                unlabelled = [row + i for i, value in zip(keep, values) if value is None][:1]
                if unlabelled:
                    raise no_label(str(data), unlabelled, label_column)
            label_sets = values if labels.multi_label else [[value] for value in values]
            unknown_rows += sum(any(tag not in labels.index for tag in tags) for tags in label_sets)
            met = list({tag for tags in label_sets for tag in tags} - scored.index.keys())
            if met:
                scored = Labels([*scored.names, *met], labels.multi_label)
                counts = _with_rows_for(counts, len(met), labels.multi_label)
            row += len(texts)
            if keep:
                probs = predictor.predict_proba([texts[i] for i in keep])
                predicted = labels.predicted(probs, threshold)
                if labels.multi_label:
                    never_predicted = np.zeros((len(keep), len(scored) - n), dtype=bool)
                    counts += multilabel_counts(scored.multi_hot(values, where), np.hstack([predicted, never_predicted]))
                else:
                    targets = np.array(scored.ids(values, where))
                    counts += confusion_matrix(targets, predicted, len(scored))
                    bins += calibration_bins(probs.max(axis=1), predicted == targets)
            rows_read(row)  # once scored, as predict counts rows once labelled
    documents = counts[-1, 0] if labels.multi_label else counts.sum()
    if documents == 0:
        raise no_rows_in_split(data, split, seen)
    scored_data = str(data) + (f" (split={split})" if split else "")
    # The labels the model does not know in the order Labels gives labels (so whatever order
    # the rows come in), after the model's.
    unknown = Labels.build(scored.names[n:]).names
    order = [*range(n), *(scored.index[name] for name in unknown)]
    if labels.multi_label:
        result = multilabel_report(counts[[*order, -1]], labels.names + unknown)
        result["thresholds"] = dict(zip(labels.names, np.asarray(labels.cuts(threshold)).tolist()))
    else:
        result = report(counts[np.ix_(order, order)], labels.names + unknown)
        result["calibration_error"] = calibration_error_of(bins)
    if unknown_rows:
        shown = ", ".join(map(repr, unknown[:UNKNOWN_LABELS_SHOWN]))
        more = len(unknown) - UNKNOWN_LABELS_SHOWN
        counted = ("each such label counted as missed (a false negative)" if labels.multi_label
                   else "counted as misclassified")
        leave_out = "take those labels out of" if labels.multi_label else "filter those rows out of"
        log(f"warning: {scored_data} column '{label_column}': {unknown_rows} of {documents} rows have a "
            f"label the model was not trained on ({shown}{f' and {more} more' if more > 0 else ''}); "
            f"{counted}, as scikit-learn counts them; {leave_out} the data to score only the "
            f"labels the model knows{joined_sets_hint(unknown, labels.multi_label)}")
    result["data"] = scored_data
    return result


def _with_rows_for(counts: np.ndarray, labels: int, multi_label: bool) -> np.ndarray:
    """`counts` with room for `labels` more labels: rows of 0 before the totals (multi-label),
    or rows and columns of 0 (a confusion matrix)."""
    if multi_label:
        return np.insert(counts, [len(counts) - 1] * labels, 0, axis=0)
    return np.pad(counts, ((0, labels), (0, labels)))
