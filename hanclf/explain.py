"""`explain`: word and sentence attention as a long CSV, one row per token the model saw.

weight = sqrt(sent_att) * word_att is the paper's display weight (Yang et al. 2016, §3.6): a
word in a lightly attended sentence still shows when the sentence attention is spread out.
Tokens cut by max_sentences / max_words are not listed: the model never saw them.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path

from hanclf.errors import UsageError
from hanclf.io import atomic_output, check_input, column_names, iter_batches, require_columns, text_values
from hanclf.predict import Predictor
from hanclf.vocab import normalize_label

COLUMNS = [
    "doc_id", "sent_idx", "tok_idx", "token", "word_att", "sent_att", "weight",
    "pred_label", "pred_prob", "true_label",
]
BATCH_ROWS = 1_024


def explain_file(
    model_dir: Path,
    input_path: Path,
    output: Path,
    text_column: str | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    limit: int | None = None,
    batch_size: int = 256,
    device: str = "auto",
    force: bool = False,
) -> dict[str, int]:
    """Write the attention CSV for the first `limit` rows (all rows if None); returns counts.

    true_label is filled when the input has the model's label column (or `label_column`).
    """
    check_input(input_path)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: must be at least 1")
    predictor = Predictor(model_dir, device, batch_size)
    text_column, id_column = predictor.input_columns(input_path, text_column, id_column)
    require_columns(input_path, {"--text-column": text_column, "--id-column": id_column, "--label-column": label_column})
    if label_column is None and predictor.artifact.config.data.label_column in column_names(input_path):
        label_column = predictor.artifact.config.data.label_column
    columns = [c for c in (text_column, id_column, label_column) if c]
    names = predictor.labels.names

    docs = tokens = 0
    with atomic_output(output, force) as tmp, tmp.open("w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(COLUMNS)
        for batch in iter_batches(input_path, columns, BATCH_ROWS):
            if limit is not None:
                batch = batch.slice(0, limit - docs)
            texts = text_values(input_path, text_column, batch.column(text_column))
            ids = batch.column(id_column).to_pylist() if id_column else range(docs, docs + len(texts))
            truth = batch.column(label_column).to_pylist() if label_column else [None] * len(texts)
            for doc_id, true, att in zip(ids, truth, predictor.attend(texts)):
                best = int(att.probs.argmax())
                label, prob = names[best], f"{att.probs[best]:.6f}"
                true = normalize_label(true) or ""
                for s, (sentence, sent_att) in enumerate(zip(att.sentences, att.sent_att)):
                    root = math.sqrt(float(sent_att))
                    for w, (token, word_att) in enumerate(zip(sentence, att.word_att[s])):
                        writer.writerow([
                            doc_id, s, w, token, f"{word_att:.6f}", f"{sent_att:.6f}",
                            f"{root * float(word_att):.6f}", label, prob, true,
                        ])
                        tokens += 1
            docs += len(texts)
            if limit is not None and docs >= limit:
                break
    if docs == 0:
        raise UsageError(f"{input_path}: has a header but no rows")
    return {"documents": docs, "tokens": tokens}
