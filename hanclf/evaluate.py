"""`evaluate`: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of a
model on labelled data (multi-label: micro/macro-F1, subset accuracy, Hamming loss, per-label
figures), streamed so the data can be larger than memory."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from hanclf.data import SPLIT_COLUMN, no_label, no_rows_in_split, require_split_column, row_name, rows_in_split
from hanclf.errors import UsageError
from hanclf.io import (
    TextColumns, as_path, check_input, iter_batches, require_columns, text_columns, text_values, to_stderr,
)
from hanclf.metrics import confusion_matrix, multilabel_counts, multilabel_report, report
from hanclf.predict import Predictor, RowProgress, check_multi_label_options
from hanclf.vocab import normalize_labels

BATCH_ROWS = 8_192


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
    predict_file's."""
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
    # Counts add up over batches: a confusion matrix, or per-label tp/fp/fn for multi-label.
    counts = np.zeros((n + 1, 3) if labels.multi_label else (n, n), dtype=np.int64)
    row = 0
    seen: set[str | None] = set()  # split values
    with RowProgress.of_input(data, progress, log, "read") as rows_read:
        for batch in iter_batches(data, columns, BATCH_ROWS):
            texts = text_values(data, text_column, batch)
            raw = batch.column(label_column).to_pylist()
            keep = rows_in_split(batch.column(SPLIT_COLUMN).to_pylist(), split, seen) if split else range(len(texts))
            where = f"{data} column '{label_column}'"
            values = normalize_labels([raw[i] for i in keep], labels.multi_label, separator)
            if labels.multi_label:
                targets = labels.multi_hot(values, where) if keep else None
            else:
                # The first row only: counting them all would mean reading the whole input first.
                unlabelled = [row + i for i, value in zip(keep, values) if value is None][:1]
                if unlabelled:
                    raise no_label(str(data), unlabelled, label_column)
                for i, value in zip(keep, values):
                    if value not in labels.index:
                        # A category new since training (tickets grow them) cannot be predicted:
                        # which row, and what to do, as explain says.
                        raise UsageError(
                            f"{data}: {row_name(row + i)} has label {value!r} in column '{label_column}', "
                            f"not one of the model's ({', '.join(labels.names)}); drop such rows, or "
                            "train again with them"
                        )
                targets = np.array(labels.ids(values, where))
            row += len(texts)
            if keep:
                predicted = labels.predicted(predictor.predict_proba([texts[i] for i in keep]), threshold)
                if labels.multi_label:
                    counts += multilabel_counts(targets, predicted)
                else:
                    counts += confusion_matrix(targets, predicted, n)
            rows_read(row)  # once scored, as predict counts rows once labelled
    documents = counts[-1, 0] if labels.multi_label else counts.sum()
    if documents == 0:
        raise no_rows_in_split(data, split, seen)
    if labels.multi_label:
        result = multilabel_report(counts, labels.names)
        result["thresholds"] = dict(zip(labels.names, np.asarray(labels.cuts(threshold)).tolist()))
    else:
        result = report(counts, labels.names)
    result["data"] = str(data) + (f" (split={split})" if split else "")
    return result
