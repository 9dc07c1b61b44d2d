"""`explain`: where the model looked. Word and sentence attention as a long CSV (one row per
token, or per sentence with `level="sentence"`) and as an HTML report, streamed so any input
size works (the HTML report is meant for tens to a few thousand documents).

weight = sqrt(sent_att) * word_att is the paper's display weight (Yang et al. 2016, §3.6): a
word in a lightly attended sentence still shows when the sentence attention is spread out.
Tokens cut by max_sentences / max_words are not listed: the model never saw them.
"""

from __future__ import annotations

import contextlib
import csv
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hanclf.artifact import check_not_model_file
from hanclf.data import SPLIT_COLUMN, no_rows_in_split, not_a_label_set, require_split_column, row_name, rows_in_split
from hanclf.errors import UsageError
from hanclf.io import (
    TextColumns,
    as_path,
    atomic_output,
    check_input,
    check_output,
    column_names,
    column_values,
    iter_batches,
    known_rows,
    refuse_stdout,
    require_columns,
    text_columns,
    text_values,
    to_stderr,
)
from hanclf.predictor import DocAttention, Predictor, check_multi_label_options
from hanclf.progress import RowProgress
from hanclf.report import HtmlReport
from hanclf.vocab import NotALabelSet, normalize_labels

TOKEN_COLUMNS = [
    "doc_id", "sent_idx", "tok_idx", "token", "word_att", "sent_att", "weight",
    "pred_label", "pred_prob", "true_label", "in_vocab", "unseen_tokens",  # added last: earlier
]  # columns keep their places
SENTENCE_COLUMNS = [
    "doc_id", "sent_idx", "sentence", "sent_att", "rank", "pred_label", "pred_prob", "true_label",
    "unseen_tokens",
]
LEVELS = ("token", "sentence")
BATCH_ROWS = 1_024


@dataclass
class Explained:
    """One document as explain reports it."""

    doc_id: Any
    attention: DocAttention
    predicted: list[int]  # label ids: one, or for multi-label those over their thresholds
    pred_label: str  # their names (multi-label: joined by the label separator, in id order)
    # The predicted label's probability (multi-label: the highest of the predicted labels', as
    # the HTML report shows it; None where no label is predicted).
    pred_prob: float | None
    true_label: str | None  # as pred_label, from the input's label column

    def pred_prob_cell(self) -> str:
        return "" if self.pred_prob is None else f"{self.pred_prob:.6f}"

    def sentence_ranks(self) -> list[int]:
        """Rank of each sentence by attention, 1 = most attended."""
        order = np.argsort(-self.attention.sent_att, kind="stable")
        ranks = np.empty(len(order), dtype=int)
        ranks[order] = np.arange(1, len(order) + 1)
        return ranks.tolist()


def _prediction_only(doc: Explained, columns: Sequence[str]) -> list[Any]:
    """The one row of a document with no word: its id and prediction, the other columns empty."""
    known = {"doc_id": doc.doc_id, "pred_label": doc.pred_label,
             "pred_prob": doc.pred_prob_cell(), "true_label": doc.true_label or "",
             "unseen_tokens": doc.attention.unseen_tokens}
    return [known.get(column, "") for column in columns]


def token_rows(doc: Explained) -> Iterator[list[Any]]:
    att = doc.attention
    if not att.sentences:  # so that every document's prediction is in the file
        yield _prediction_only(doc, TOKEN_COLUMNS)
    for s, (sentence, sent_att, weights) in enumerate(zip(att.sentences, att.sent_att, att.display_weights())):
        for w, (token, known, word_att, weight) in enumerate(zip(sentence, att.in_vocab[s], att.word_att[s], weights)):
            yield [
                doc.doc_id, s, w, token, f"{word_att:.6f}", f"{sent_att:.6f}",
                f"{weight:.6f}", doc.pred_label, doc.pred_prob_cell(),
                doc.true_label or "", bool(known), att.unseen_tokens,
            ]


def sentence_rows(doc: Explained) -> Iterator[list[Any]]:
    att = doc.attention
    if not att.sentences:  # as in token_rows
        yield _prediction_only(doc, SENTENCE_COLUMNS)
    for s, (sentence, rank) in enumerate(zip(att.sentences, doc.sentence_ranks())):
        yield [
            doc.doc_id, s, " ".join(sentence), f"{att.sent_att[s]:.6f}", rank,
            doc.pred_label, doc.pred_prob_cell(), doc.true_label or "", att.unseen_tokens,
        ]


def iter_rows(
    predictor: Predictor,
    input_path: Path,
    text_column: TextColumns | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    label_separator: str | None = None,
) -> Iterator[tuple[list[str | None], list[Any], list[str | None]]]:
    """Stream (texts, doc ids, true labels) of the first `limit` rows (all if None) of
    `input_path`, only those of `split` if given.

    True labels are filled when the input has the model's label column (or `label_column`;
    "" for none), those the model does not know as read too; multi-label sets are written as
    the model's predictions are (see `Explained`; labels it does not know last), whatever
    `label_separator` joins them in the input (default: the model's).
    """
    check_input(input_path)
    if limit is not None and limit < 1:
        raise UsageError(f"--limit {limit}: must be at least 1")
    text_column, id_column = predictor.input_columns(input_path, text_column, id_column)
    require_columns(input_path, {
        "--text-column": text_column, "--id-column": id_column, "--label-column": label_column or None,
    })
    require_split_column(input_path, split)
    model_label = predictor.artifact.config.data.label_column
    if label_column is None and model_label in column_names(input_path):
        label_column = model_label
    columns = [*text_columns(text_column), *(c for c in (id_column, label_column) if c)]
    columns += [SPLIT_COLUMN] if split else []
    labels, separator = predictor.labels, predictor.artifact.config.data.label_separator
    read_separator = label_separator or separator

    def as_label(value: Any, position: int) -> str | None:
        # A label the model does not know (a category new since training) is written as read:
        # its document shows as misclassified, as evaluate counts it, and where the model
        # looked for the label it gave instead is what a reader of such a document wants.
        try:
            read = normalize_labels([value], labels.multi_label, read_separator)[0]
        except NotALabelSet as error:
            raise not_a_label_set(str(input_path), position, label_column, error) from None
        if not labels.multi_label:
            return read
        # From a list, or split on another --label-separator: refused, as train refuses it.
        joined = [tag for tag in read if separator in tag]
        if joined:
            raise UsageError(
                f"{input_path}: {row_name(position)} has label {joined[0]!r} in column "
                f"'{label_column}', which holds the separator {separator!r} that joins a "
                "document's labels in explain's output; rename the label, or pass "
                "--label-column '' to explain without true labels"
            )
        # Null too: no label applies, a true set like any other.
        return separator.join(labels.in_order(read))

    row = docs = 0  # rows read, rows yielded
    seen: set[str | None] = set()  # split values
    for batch in iter_batches(input_path, columns, BATCH_ROWS):
        keep = rows_in_split(column_values(input_path, batch, SPLIT_COLUMN), split, seen) if split else range(batch.num_rows)
        keep = list(keep)[: None if limit is None else limit - docs]
        texts = text_values(input_path, text_column, batch)
        ids = column_values(input_path, batch, id_column) if id_column else range(row, row + len(texts))
        truth = column_values(input_path, batch, label_column) if label_column else None
        if keep:
            true_labels = [None if truth is None else as_label(truth[i], row + i) for i in keep]
            yield [texts[i] for i in keep], [ids[i] for i in keep], true_labels
        row += batch.num_rows
        docs += len(keep)
        if limit is not None and docs >= limit:
            break
    if docs == 0:
        raise no_rows_in_split(input_path, split, seen)


def iter_explained(
    predictor: Predictor, input_path: Path, threshold: float | None = None, **rows: Any
) -> Iterator[Explained]:
    """Each document of `iter_rows(predictor, input_path, **rows)` with its attention.
    `threshold` (multi-label models): predicted labels are those at or above it, instead of at
    or above their own thresholds tuned on valid."""
    labels, separator = predictor.labels, predictor.artifact.config.data.label_separator
    for texts, ids, truth in iter_rows(predictor, input_path, **rows):
        for doc_id, true, att in zip(ids, truth, predictor.attend(texts)):
            predicted = labels.chosen(att.probs, threshold)
            pred_label = separator.join(labels.names[i] for i in predicted)
            pred_prob = float(att.probs[predicted].max()) if predicted else None
            yield Explained(doc_id, att, predicted, pred_label, pred_prob, true)


def _documents_to_explain(input_path: Path, split: str | None, limit: int | None) -> int | None:
    """How many documents `iter_rows` will yield, where known before reading: a Parquet input's
    rows (from its footers), at most `limit`. With `split`: `limit` if given (a split seldom
    has fewer rows than a --limit), else not known."""
    rows = known_rows(input_path)
    if limit is None:
        return None if split else rows
    return limit if rows is None else min(rows, limit)


def explain_file(
    model_dir: str | Path,
    input_path: str | Path,
    output: str | Path | None = None,
    level: str = "token",
    html: str | Path | None = None,
    text_column: TextColumns | None = None,
    id_column: str | None = None,
    label_column: str | None = None,
    split: str | None = None,
    limit: int | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    force: bool = False,
    on_document: Callable[[Explained], None] | None = None,
    threshold: float | None = None,
    label_separator: str | None = None,
    progress: bool | None = None,
    log: Callable[[str], None] = to_stderr,
) -> dict[str, int]:
    """Write attention as CSV (`level` token: one row per token; sentence: one per sentence)
    and/or an HTML report; call `on_document` for each document. Returns counts: documents,
    rows (of the CSV), cut (documents longer than the model reads, seen in part),
    repeated_ids (documents whose id an earlier one has) and no_id (null or empty id).
    `threshold`: for a multi-label model, the probability a label needs to be predicted
    (default: each label's own, tuned on valid), as predict's; `label_separator`: what joins
    the true labels in one string of the input (default: the model's), as evaluate's.
    `progress` and `log`: the documents explained so far, as predict_file's rows."""
    input_path = as_path(input_path, "input_path", data=True)
    output, html = as_path(output, "output", optional=True), as_path(html, "html", optional=True)
    if output is None and html is None and on_document is None:
        raise UsageError("explain_file: nothing to write; give output (a CSV), html (a report) or "
                         "on_document (a function called with each document)")
    if level not in LEVELS:
        raise UsageError(f"--level {level}: use one of {', '.join(LEVELS)}")
    if output is not None and html is not None and output.resolve() == html.resolve():
        raise UsageError(f"{output}: named for both the CSV and the HTML report; give --html another name")
    check_input(input_path)
    for path in (output, html):
        if path is not None:
            check_not_model_file(path)  # first: --force, which check_output advises, would not do
            refuse_stdout(path)
    if output is not None and output.suffix.lower() != ".csv":
        raise UsageError(f"{output}: attention is written as CSV; name it *.csv")
    for path in (output, html):
        if path is not None:
            check_output(path, force, reads=input_path)
    predictor = Predictor(model_dir, device, batch_size)
    check_multi_label_options(predictor.labels, threshold, label_separator)
    rows, columns = (token_rows, TOKEN_COLUMNS) if level == "token" else (sentence_rows, SENTENCE_COLUMNS)
    report = None
    if html is not None:
        separator = predictor.artifact.config.data.label_separator
        labels = predictor.labels
        thresholds = labels.cuts(threshold) if labels.multi_label else None
        report = HtmlReport(labels.names, f"{input_path.name}: {model_dir}", separator, thresholds)
    # cut: documents longer than the model reads; repeated_ids: documents whose id an earlier
    # one has (their rows share a doc_id); no_id: documents whose id is null or empty. Ids are
    # remembered only where they come from a column (row numbers never repeat): ~90 bytes each.
    counts = {"documents": 0, "rows": 0, "cut": 0, "repeated_ids": 0, "no_id": 0}
    _, ids_column = predictor.input_columns(input_path, text_column, id_column)
    ids_seen: set[str] | None = set() if ids_column else None
    with contextlib.ExitStack() as stack:
        writer = None
        if output is not None:
            tmp = stack.enter_context(atomic_output(output, force))
            csv_file = stack.enter_context(tmp.open("w", newline="", encoding="utf-8"))
            writer = csv.writer(csv_file, lineterminator="\n")
            writer.writerow(columns)
        total = _documents_to_explain(input_path, split, limit)
        explained = stack.enter_context(RowProgress(total, progress, log, "explained", "documents"))
        docs = iter_explained(
            predictor, input_path, threshold, text_column=text_column, id_column=id_column,
            label_column=label_column, split=split, limit=limit, label_separator=label_separator,
        )
        for doc in docs:
            if writer is not None:
                lines = list(rows(doc))
                writer.writerows(lines)
                counts["rows"] += len(lines)
            if report is not None:
                report.add(str(doc.doc_id), doc.attention, doc.true_label, doc.predicted)
            if on_document is not None:
                on_document(doc)
            counts["documents"] += 1
            explained(counts["documents"])
            counts["cut"] += doc.attention.unseen_tokens > 0
            if ids_seen is not None and doc.doc_id in (None, ""):
                counts["no_id"] += 1
            elif ids_seen is not None:
                counts["repeated_ids"] += str(doc.doc_id) in ids_seen
                ids_seen.add(str(doc.doc_id))
        if report is not None and html is not None:
            with atomic_output(html, force) as tmp_html:
                report.write(tmp_html)
    return counts
