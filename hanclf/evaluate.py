"""`evaluate`: accuracy, macro-F1, per-class precision/recall/F1 and the confusion matrix of a
model on labelled data, streamed so the data can be larger than memory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from hanclf.data import SPLIT_COLUMN, require_split_column, rows_in_split
from hanclf.errors import UsageError
from hanclf.io import check_input, iter_batches, require_columns, text_values
from hanclf.metrics import confusion_matrix, report
from hanclf.predict import Predictor
from hanclf.vocab import normalize_label

BATCH_ROWS = 8_192


def evaluate_file(
    model_dir: Path,
    data: Path,
    text_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
    batch_size: int = 256,
    device: str = "auto",
) -> dict[str, Any]:
    """Metrics of the model on `data` (only rows of `split` if given, e.g. 'test')."""
    check_input(data)
    predictor = Predictor(model_dir, device, batch_size)
    config = predictor.artifact.config.data
    text_column = text_column or config.text_column
    label_column = label_column or config.label_column
    require_columns(data, {"--text-column": text_column, "--label-column": label_column})
    require_split_column(data, split)
    columns = [text_column, label_column] + ([SPLIT_COLUMN] if split else [])

    n = len(predictor.labels)
    confusion = np.zeros((n, n), dtype=np.int64)
    row = 0
    for batch in iter_batches(data, columns, BATCH_ROWS):
        texts = text_values(data, text_column, batch.column(text_column))
        labels = [normalize_label(v) for v in batch.column(label_column).to_pylist()]
        keep = rows_in_split(batch.column(SPLIT_COLUMN).to_pylist(), split) if split else range(len(texts))
        for i in keep:
            if labels[i] is None:
                raise UsageError(
                    f"{data}: row {row + i + 1} has no label in column '{label_column}'; "
                    "fill or drop unlabelled rows"
                )
        row += len(texts)
        if not keep:
            continue
        y_true = predictor.labels.ids([labels[i] for i in keep], f"{data} column '{label_column}'")
        y_pred = predictor.predict_proba([texts[i] for i in keep]).argmax(1)
        confusion += confusion_matrix(np.array(y_true), y_pred, n)
    if confusion.sum() == 0:
        where = f"rows with {SPLIT_COLUMN}={split}" if split else "rows"
        raise UsageError(f"{data}: no {where} to evaluate")
    result = report(confusion, predictor.labels.names)
    result["data"] = str(data) + (f" (split={split})" if split else "")
    return result
