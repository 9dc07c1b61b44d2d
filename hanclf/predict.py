"""Prediction without Lightning: `Predictor` (load once, call on batches) and `predict_file`
(Parquet/CSV/JSONL in, Parquet out, streamed in record batches with bounded memory).

`Predictor` is what Ray `map_batches`, Spark `mapInArrow` or your own loop would wrap; the CLI's
predict, explain and evaluate use it too.
"""

from __future__ import annotations

import contextlib
import functools
import json
import multiprocessing
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from hanclf import __version__
from hanclf.artifact import load
from hanclf.config import DataConfig
from hanclf.data import (
    UNREAD_NOTE_SHARE, EncodedDoc, Truncation, WordBatch, index_tokens, pad, readable, size_batches,
    tokenize_texts, truncate,
)
from hanclf.errors import HanclfError, HanclfWarning, UsageError
from hanclf.io import (
    STRING_TYPES,
    TextColumns,
    as_path,
    atomic_output,
    check_input,
    check_output,
    column_names,
    empty_batch,
    input_format,
    iter_batches,
    parquet_rows,
    require_columns,
    text_columns,
    text_values,
    to_stderr,
)
from hanclf.model import UNK, probabilities
from hanclf.progress import RowProgress
from hanclf.tokenize import tokenize_all
from hanclf.vocab import Labels
from hanclf.workers import (
    MIN_ROWS_PER_PROCESS,
    TEXT_BYTES_PER_ROW,
    context,
    cgroup_memory_room,
    cores,
    main_module_importable,
    start_predict_worker,
    start_server,
    threads_within_quota,
)

ROW_ID = "row_id"  # added to the output when no --id-column is given: the 0-based input row
ROW_GROUP_ROWS = 100_000  # output rows buffered per Parquet row group; few large groups read fast
INPUT_BATCH_ROWS = 8_192
# Texts a Predictor tokenizes at a time, however many it is given (a Ray batch, a Spark Arrow
# batch): a call on 100,000 texts held all their tokens at once, +1.2 GiB on top of the model.
# The same as predict's input batches, so that predict_file's results are unchanged.
PREDICT_CHUNK_ROWS = INPUT_BATCH_ROWS
PROCESS_MEMORY = 1 << 30  # what one predict process may use at its peak (bench/predict_memory.py)
# Padded word slots (B x S x W) in one batch at most. It bounds a batch's memory: batches of
# 1,024 documents and no such cap padded up to 2 million slots and a process held 7-9 GiB of
# GPU memory (one process alone reserved 46 GiB), so 16 workers ran an H200 out of memory.
MAX_BATCH_SLOTS = 512 * 1024
WORKER_ROWS = 1_024  # rows per task sent to a worker: small, so the last ones are shared out evenly
GUARD_MAIN = 'from a script, call predict_file under `if __name__ == "__main__":`'


# The words of similar-size documents (padded where the model runs) with the indices of those
# documents among the texts they came from.
Batch = tuple[np.ndarray, WordBatch]


@dataclass
class DocAttention:
    """What the model saw of one document and where it looked."""

    sentences: list[list[str]]  # tokens after truncation, as written in the text
    sent_att: np.ndarray  # (sentences,)
    word_att: list[np.ndarray]  # per sentence, (words,)
    probs: np.ndarray  # (labels,)
    in_vocab: list[np.ndarray]  # per sentence, (words,) bool: False where the model read <unk>
    unseen_tokens: int = 0  # tokens past the model's sentence and word limits (data.max_*)

    def display_weights(self) -> list[np.ndarray]:
        """Per sentence, (words,): sqrt(sent_att) * word_att, the HAN paper's display weight,
        under which the words of a lightly attended sentence stay visible."""
        return [np.sqrt(np.float64(s)) * w.astype(np.float64) for s, w in zip(self.sent_att, self.word_att)]


def one_per_text(texts: Iterable[str | None]) -> list[str | None]:
    """`texts` as a list of str or None (a missing value: None, NaN, pd.NA). Refused, since each
    would be scored as something else without a word: a lone string (one text per character), a
    table (its column names), items that are not text (an empty document each)."""
    if isinstance(texts, str):
        raise TypeError("texts: give a list of texts; for one text, [text]")
    if isinstance(texts, (pd.DataFrame, pa.Table, pa.RecordBatch)):
        raise TypeError("texts: give one column of texts (a list, Series or Arrow array); to "
                        "label a table, call the predictor on it: predictor(table)")
    if isinstance(texts, (pa.Array, pa.ChunkedArray)):
        texts = texts.to_pylist()
    listed = list(texts)
    for i, text in enumerate(listed):
        if text is None or isinstance(text, str):
            continue
        if pd.api.types.is_scalar(text) and pd.isna(text):
            listed[i] = None
        else:
            raise TypeError(f"texts[{i}]: {type(text).__name__}, not text (str, or None for a missing one)")
    return listed


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except RuntimeError:
        raise UsageError(f"--device {device}: not a device (use auto, cpu, cuda or cuda:N)") from None
    if resolved.type == "cuda" and (resolved.index or 0) >= torch.cuda.device_count():
        raise UsageError(f"--device {device}: no such CUDA device here; use --device cpu or auto")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise UsageError(f"--device {device}: no Apple GPU (MPS) here; use --device cpu or auto")
    return resolved


class Predictor:
    """A trained model ready to label texts: `Predictor(model_dir)(batch)` -> predictions.

    `device`: auto (a GPU if there is one), cpu, cuda or cuda:N. `batch_size`: documents per
    forward pass (None: 1,024 on a GPU, 64 on the CPU); batches also hold at most
    MAX_BATCH_SLOTS padded word slots. The model is loaded once; calls are independent.

    `truncation` adds up, over all the texts given to it so far (to label, or to batch for a
    model elsewhere), the documents that the model's caps (data.max_sentences, data.max_words)
    cut and the words they leave unread.
    """

    def __init__(self, model_dir: str | Path, device: str = "auto", batch_size: int | None = None) -> None:
        if batch_size is not None and batch_size < 1:
            raise UsageError(f"batch_size {batch_size}: must be at least 1 (None: the device's default)")
        self.model_dir = as_path(model_dir, "model_dir")
        self.artifact = load(self.model_dir)
        self.device = resolve_device(device)
        self.model = self.artifact.model.to(self.device).eval()
        # On the CPU the word GRU's input term is looked up in a table over the vocabulary (on
        # a GPU cuDNN's fused GRU is faster), built by the first forward pass: a predict worker
        # that only batches, or predict's main process while its workers label, never runs the
        # model and so never pays for it (~0.2 s, 1.2 KB a vocabulary entry per member).
        self._word_gates_pending = self.device.type == "cpu"
        self.labels = self.artifact.labels
        # Small batches stay in the CPU's caches (64 ran 1.5x faster than 256 on one core). On a
        # GPU larger ones amortize the launches: the model labelled 74,455 docs/s at 1,024 and
        # 49,200 at 256 on an H200 (bench/results/throughput-gpu.md).
        self.batch_size = batch_size or (1024 if self.device.type == "cuda" else 64)
        self.max_batch_slots = MAX_BATCH_SLOTS
        self.truncation = Truncation()

    def __repr__(self) -> str:
        shown = ", ".join(map(str, self.labels.names[:5])) + (", ..." if len(self.labels) > 5 else "")
        return (f"Predictor('{self.model_dir}', device='{self.device}', batch_size={self.batch_size}; "
                f"{len(self.labels)} labels: {shown})")

    @property
    def text_column(self) -> TextColumns:
        return self.artifact.config.data.text_column

    def input_columns(
        self, path: Path, text_column: TextColumns | None, id_column: str | None
    ) -> tuple[TextColumns, str | None]:
        """Text and id columns to read from `path`: those given, else the ones the model was
        trained with (the id column only where the file has it)."""
        data = self.artifact.config.data
        if id_column is None and data.id_column and data.id_column in column_names(path):
            id_column = data.id_column
        return text_column or data.text_column, id_column

    def batches(self, texts: Sequence[str | None]) -> Iterator[Batch]:
        """The model's inputs for `texts`, made as they are needed: the CPU's part of predicting
        (tokens, ids, batches of similar-size documents), which predict's workers do for a model
        on a GPU."""
        tokenized = tokenize_texts(one_per_text(texts), self.artifact.config.data)
        self.truncation += tokenized.truncation()
        return self._batches(tokenized.encoded(self.artifact.vocab))

    def _batches(self, docs: list[EncodedDoc]) -> Iterator[Batch]:
        for index in map(np.array, size_batches(docs, self.batch_size, self.max_batch_slots)):
            yield index, WordBatch.of([docs[i] for i in index])

    def _forward(
        self, batches: Iterable[Batch]
    ) -> Iterator[tuple[np.ndarray, torch.Tensor, torch.Tensor, torch.Tensor]]:
        """Run the batches; yields (doc indices, probs, word att, sent att) for each, tensors on
        the model's device (on a GPU, possibly still being computed)."""
        if self._word_gates_pending:
            self.model.precompute_word_gates()
            self._word_gates_pending = False
        # bf16 autocast on GPU; the CPU stays in fp32, the precision models are validated in.
        autocast = torch.autocast("cuda", torch.bfloat16, enabled=self.device.type == "cuda")
        with torch.inference_mode(), autocast:
            for index, batch in batches:
                logits, word_att, sent_att = self.model(**pad(batch, self.device))
                yield index, probabilities(logits, self.labels.multi_label, self.labels.temperature), word_att, sent_att

    def predict_proba(self, texts: Iterable[str | None]) -> np.ndarray:
        """Class probabilities (len(texts), len(labels)), columns in `self.labels.names` order;
        rows sum to 1, except for multi-label models (one independent probability per label).

        `texts`: a list, Series or Arrow array of str (None for a missing text). A model that
        reads several columns (text_column [title, text]) reads them joined by a blank line,
        "\\n\\n".join(parts); predictor(table) does that for you."""
        return self._chunked_probs(one_per_text(texts))[0]

    def predict_tokenized(self, tokenized: Sequence[list[list[str]]]) -> np.ndarray:
        """As predict_proba, for documents already split into sentences of tokens (e.g. with
        some sentences removed, to measure what they contributed). An empty sentence is none."""
        vocab, config = self.artifact.vocab, self.artifact.config.data
        # The GRUs take sentences of one word or more, as tokenize makes them.
        docs = [[sentence for sentence in doc if sentence] for doc in tokenized]
        return self._probs(len(docs), self._batches(index_tokens(docs, config).encoded(vocab)))

    def _probs(self, documents: int, batches: Iterable[Batch]) -> np.ndarray:
        probs, _ = self._queue_probs(documents, batches)()
        return probs

    def _chunked_probs(self, texts: list[str | None]) -> tuple[np.ndarray, np.ndarray]:
        """_queue_probs's probabilities and no-word flags for `texts`, tokenized
        PREDICT_CHUNK_ROWS texts at a time, so that memory does not grow with len(texts)."""
        step = max(PREDICT_CHUNK_ROWS, self.batch_size)
        waiting = [self._queue_probs(len(chunk), self.batches(chunk))
                   for chunk in (texts[i : i + step] for i in range(0, len(texts), step))]
        if not waiting:
            return self._queue_probs(0, iter(()))()
        parts = [wait() for wait in waiting]
        return np.concatenate([p for p, _ in parts]), np.concatenate([n for _, n in parts])

    def _queue_probs(
        self, documents: int, batches: Iterable[Batch]
    ) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        """Start the model on `batches` of `documents` documents; returns the function that
        waits for their probabilities, (documents, labels), and also gives which documents had
        no word, (documents,) bool. On a GPU this returns as soon as the work is queued, leaving
        this process free until it needs the result."""
        no_word = np.zeros(documents, dtype=bool)

        def noting_empty(batches: Iterable[Batch]) -> Iterator[Batch]:
            for index, batch in batches:
                no_word[index] = batch.wordless()
                yield index, batch

        queued = [
            (index, probs.to("cpu", non_blocking=True))  # into pinned memory, asynchronously
            for index, probs, _, _ in self._forward(noting_empty(batches))
        ]
        copied = torch.cuda.Event() if self.device.type == "cuda" else None
        if copied is not None:
            copied.record(torch.cuda.current_stream(self.device))

        def result() -> tuple[np.ndarray, np.ndarray]:
            if copied is not None:
                copied.synchronize()
            probs = np.zeros((documents, len(self.labels)), dtype=np.float32)
            for index, batch_probs in queued:
                probs[index] = batch_probs.numpy()
            return probs, no_word

        return result

    def attend(self, texts: Sequence[str | None]) -> list[DocAttention]:
        """Probabilities plus word and sentence attention for each text."""
        vocab, config = self.artifact.vocab, self.artifact.config.data
        whole = tokenize_all(readable(text, config) for text in one_per_text(texts))
        tokens = [truncate(doc, config) for doc in whole]
        docs = index_tokens(tokens, config).encoded(vocab)
        out: list[DocAttention | None] = [None] * len(docs)
        for index, *on_device in self._forward(self._batches(docs)):
            probs, word_att, sent_att = (t.cpu() for t in on_device)
            for row, i in enumerate(index):
                sentences = tokens[i]
                out[i] = DocAttention(
                    sentences=sentences,
                    sent_att=sent_att[row, : len(sentences)].numpy(),
                    word_att=[word_att[row, s, : len(w)].numpy() for s, w in enumerate(sentences)],
                    probs=probs[row].numpy(),
                    # (A document with no word is encoded as one sentence of padding: no flags.)
                    in_vocab=np.split(docs[i].ids != UNK, np.cumsum(docs[i].lengths)[:-1]) if sentences else [],
                    unseen_tokens=sum(map(len, whole[i])) - sum(map(len, sentences)),
                )
        return out  # type: ignore[return-value]

    def label_type(self) -> pa.DataType:
        return pa.int64() if self.labels.numeric else pa.string()

    def output_schema(self, top_k: int = 1) -> pa.Schema:
        """The columns `predict_table` returns, known before any data is seen (Spark's
        mapInArrow and Ray want the schema up front)."""
        label, prob = self.label_type(), pa.float32()
        if self.labels.multi_label:
            fields = [pa.field("pred_labels", pa.list_(label)), pa.field("pred_probs", pa.list_(prob))]
        else:
            fields = [pa.field("pred_label", label), pa.field("pred_prob", prob)]
        fields.append(pa.field("empty_text", pa.bool_()))
        if top_k != 1:  # asked for, even where the model has a single label to list
            self.check_options(top_k)
            fields += [pa.field("top_labels", pa.list_(label)), pa.field("top_probs", pa.list_(prob))]
        return pa.schema(fields)

    def predict_table(
        self, texts: Iterable[str | None], top_k: int = 1, threshold: float | None = None
    ) -> pa.Table:
        """The prediction columns for `texts` (as for predict_proba; see `output_schema`).

        Single-label: pred_label and pred_prob, the most likely label. Multi-label: pred_labels
        and pred_probs, every label whose probability reaches its threshold (tuned on valid, or
        `threshold` for all), most likely first. Both: empty_text and, with top_k > 1 (-1: all),
        top_labels / top_probs, the k most likely labels whose probability is at least
        `threshold`, most likely first (fastText's predict-prob k th).
        """
        self.check_options(top_k, threshold)  # before the model runs
        probs, no_word = self._chunked_probs(one_per_text(texts))
        return self._table(probs, no_word, top_k, threshold)

    def _table(
        self, probs: np.ndarray, no_word: np.ndarray, top_k: int, threshold: float | None
    ) -> pa.Table:
        """predict_table's columns, from the documents' probabilities and which had no word."""
        schema = self.output_schema(top_k)
        k = self.check_options(top_k, threshold)
        ranked = np.argsort(-probs, axis=1, kind="stable")
        values = [self.labels.value(n) for n in self.labels.names]

        def ranked_where(passes: np.ndarray, limit: int) -> tuple[list[list], list[list[float]]]:
            labels, kept_probs = [], []
            for row, order, passing in zip(probs, ranked[:, :limit], passes):
                kept = [i for i in order if passing[i]]
                labels.append([values[i] for i in kept])
                kept_probs.append([float(row[i]) for i in kept])
            return labels, kept_probs

        if self.labels.multi_label:
            columns = list(ranked_where(self.labels.predicted(probs, threshold), len(values)))
        else:
            best = ranked[:, 0]
            columns = [[values[i] for i in best], probs[np.arange(len(probs)), best]]
        columns.append(no_word)
        if top_k != 1:  # the most probable labels, those at --threshold or above where given
            columns += ranked_where(probs.astype(np.float64) >= (threshold or 0.0), k)
        return pa.Table.from_arrays(
            [pa.array(c, f.type) for c, f in zip(columns, schema)], schema=schema
        )

    def check_options(self, top_k: int, threshold: float | None = None) -> int:
        """How many labels --top-k K asks for: K, or every label for -1 or any K past their
        number (as fastText's predict-prob does); a usage error for options that do not fit."""
        if isinstance(top_k, bool) or not isinstance(top_k, (int, np.integer)):
            raise TypeError(f"top_k: a whole number (-1 for every label), not {top_k!r}")
        check_threshold(threshold)
        if threshold is not None and top_k == 1 and not self.labels.multi_label:
            raise UsageError(f"--threshold {threshold}: it filters the labels of --top-k K (K > 1, or "
                             "-1 for all); pred_label is always the most probable label")
        if top_k == -1 or top_k > len(self.labels):
            return len(self.labels)
        if top_k < 1:
            raise UsageError(f"--top-k {top_k}: use 1 or more, or -1 for every label")
        return top_k

    def __call__(
        self, batch: pa.RecordBatch | pa.Table | pd.DataFrame, top_k: int = 1,
        threshold: float | None = None,
    ) -> pa.Table | pd.DataFrame:
        """The batch with prediction columns appended (pandas in, pandas out; list columns hold
        lists); `top_k` and `threshold` as for predict_table (Ray Data passes them as
        map_batches' fn_kwargs)."""
        if not isinstance(batch, (pd.DataFrame, pa.Table, pa.RecordBatch)):
            raise TypeError(f"batch: a pandas DataFrame, pyarrow Table or RecordBatch, not "
                            f"{type(batch).__name__} (Ray Data: map_batches(..., batch_format='pyarrow'))")
        names = list(batch.columns) if isinstance(batch, pd.DataFrame) else batch.schema.names
        taken = [name for name in self.output_schema(top_k).names if name in names]
        if taken:
            raise UsageError(f"the batch already has the column(s) {', '.join(taken)} that the "
                             "predictions go into; drop or rename them first")
        missing = [name for name in text_columns(self.text_column) if name not in names]
        if missing:
            raise UsageError(f"the batch has no column '{missing[0]}', which the model reads its "
                             f"text from (columns: {', '.join(map(str, names))})")
        if isinstance(batch, pd.DataFrame):
            try:
                texts = pa.Table.from_pandas(batch[text_columns(self.text_column)], preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError) as e:
                raise UsageError(_not_text(batch, text_columns(self.text_column), e)) from None
            predictions = self.predict_table(text_values("the batch", self.text_column, texts), top_k, threshold)
            frame = predictions.to_pandas()
            for field in predictions.schema:  # lists, not NumPy arrays: comparable, and Ray converts them
                if pa.types.is_list(field.type):
                    frame[field.name] = predictions.column(field.name).to_pylist()
            return pd.concat([batch, frame.set_axis(batch.index)], axis=1)
        table = pa.Table.from_batches([batch]) if isinstance(batch, pa.RecordBatch) else batch
        predictions = self.predict_table(text_values("the batch", self.text_column, table), top_k, threshold)
        for name in predictions.column_names:
            table = table.append_column(name, predictions.column(name))
        return table


def _not_text(frame: pd.DataFrame, columns: list[str], error: Exception) -> str:
    """What a text column holds that Arrow could not read as text: the first such value, by its
    index label (Arrow's own message quotes a good text, not the bad one)."""
    for column in columns:
        for label, value in frame[column].items():
            if not (value is None or isinstance(value, str) or pd.api.types.is_scalar(value) and pd.isna(value)):
                return (f"the batch's column '{column}' holds {type(value).__name__} {value!r:.40} at index "
                        f"{label!r}, not text (str, or None for a missing one)")
    return f"the batch's text column(s) {', '.join(columns)} cannot be read as text ({str(error).splitlines()[0]})"


def check_threshold(threshold: float | None) -> None:
    if threshold is not None and not 0.0 <= threshold <= 1.0:
        raise UsageError(f"--threshold {threshold}: a probability, from 0 to 1")


def check_multi_label_options(labels: Labels, threshold: float | None, label_separator: str | None) -> None:
    """evaluate's and explain's --threshold and --label-separator (None where not given): for
    multi-label models only, a probability, a non-empty separator."""
    for flag, value in (("--threshold", threshold), ("--label-separator", label_separator)):
        if value is not None and not labels.multi_label:
            raise UsageError(f"{flag} {value}: applies to multi-label models only; this one "
                             "predicts its most probable label")
    check_threshold(threshold)
    if label_separator == "":
        raise UsageError("--label-separator: give a non-empty separator")


def predict_file(
    model_dir: str | Path,
    input_path: str | Path,
    output: str | Path,
    text_column: TextColumns | None = None,
    id_column: str | None = None,
    keep_columns: Sequence[str] | str = (),
    top_k: int = 1,
    threshold: float | None = None,
    batch_size: int | None = None,
    device: str = "auto",
    devices: int | None = 1,
    force: bool = False,
    progress: bool | None = None,
    log: Callable[[str], None] = to_stderr,
) -> dict[str, float]:
    """Label every row of `input_path` into the Parquet file `output`; returns rows, seconds,
    processes (the worker processes used; 1: this process alone), rows_without_id (null or
    empty in `id_column`), cut (documents longer than the model's caps, data.max_sentences and
    data.max_words), words (in all the documents) and unread_words (past the caps). Where 10%
    (UNREAD_NOTE_SHARE) or more of the words go unread, a note says so through `log`.

    `progress`: a progress bar on stderr (None: where stderr is a terminal); without one, `log`
    gets a line on the rows labelled so far every PROGRESS_LOG_SECONDS, for batch jobs' logs
    and notebooks (default: stderr; `lambda message: None` for none).

    `devices` worker processes take slices of the input in parallel while this process reads
    and writes in input order; 1 runs everything in this process. On the CPU each worker labels
    its slices on its share of the cores; with the model on a GPU, workers tokenize and batch
    and this process runs the model. None (the CLI's default) picks for the input: one process
    per CPU core (on a GPU, one core is left to this process), fewer for small inputs or little
    memory, none under 2,048 rows.
    Workers import the calling script as spawned processes do (hanclf.workers), so a script
    that starts them needs `if __name__ == "__main__":`, and each worker pays for the imports
    at its top.
    """
    if getattr(multiprocessing.current_process(), "_inheriting", False):
        # A worker importing a script that calls predict_file unguarded: fail before touching
        # the output (the main process stops the other workers, maybe in the middle of writing)
        # or making a pool's semaphores, which a worker that dies this early would leak.
        raise HanclfError(GUARD_MAIN)
    start = time.perf_counter()
    model_dir, output = as_path(model_dir, "model_dir"), as_path(output, "output")
    input_path = as_path(input_path, "input_path", data=True)
    check_input(input_path)
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise UsageError(f"{output}: predictions are written as Parquet; name it *.parquet")
    check_output(output, force, reads=input_path)
    predictor = Predictor(model_dir, device, batch_size)
    predictor.check_options(top_k, threshold)
    text_column, id_column = predictor.input_columns(input_path, text_column, id_column)
    if isinstance(keep_columns, str):  # one column's name, not its letters
        keep_columns = [keep_columns]
    passed = [id_column] if id_column else []
    passed += [c for c in keep_columns if c not in passed]
    ours = [*predictor.output_schema(top_k).names, *([] if id_column else [ROW_ID])]
    if not id_column and ROW_ID in column_names(input_path):
        raise UsageError(f"{input_path}: has a column '{ROW_ID}', the name of the row positions "
                         f"predict writes without --id-column; pass --id-column {ROW_ID} to keep "
                         "it as the id, or rename it")
    for column in passed:
        if column in ours:
            raise UsageError(f"{input_path}: column '{column}' has the name of an output column of "
                             f"predict ({', '.join(ours)}); rename it in the input to keep it")
    wanted = {"--text-column": text_column, "--id-column": id_column}
    wanted["--keep-columns"] = list(keep_columns)
    require_columns(input_path, wanted)
    job = _Job(input_path, text_column, id_column, passed, top_k, threshold,
               {"hanclf": json.dumps({"version": __version__, "model": str(model_dir.resolve()),
                                      "labels": predictor.labels.names})})
    processes = worker_processes(devices, predictor.device, input_path)
    usable = cores()
    if predictor.device.type == "cpu" and processes > usable:
        log(f"note: --devices {processes} is more than the CPU cores this process may use ({usable}): "
            "the workers take turns on them, which is slower than one worker per core")
    batches = iter_batches(input_path, job.columns, INPUT_BATCH_ROWS)
    job.progress = RowProgress.of_input(input_path, progress, log, "labelled")
    with (atomic_output(output, force) as tmp, _out_of_memory_explained(predictor.batch_size), job.progress,
          threads_within_quota()):
        if processes == 1:
            rows = job.write(tmp, ((b, predictor.predict_table(job.texts(b), top_k, threshold)) for b in batches))
        else:
            rows = _write_in_workers(job, tmp, batches, predictor, model_dir, processes)
        if rows == 0:  # an empty partition of a batch job: an empty output, with the usual columns
            empty = empty_batch(input_path, job.columns)
            rows = job.write(tmp, iter([(empty, predictor.predict_table(job.texts(empty), top_k, threshold))]))
    truncation = predictor.truncation
    if truncation.unread_share >= UNREAD_NOTE_SHARE:
        log(_unread_note(truncation, predictor.artifact.config.data))
    return {"rows": rows, "seconds": time.perf_counter() - start, "processes": processes,
            "rows_without_id": job.rows_without_id, "cut": truncation.cut, "words": truncation.words,
            "unread_words": truncation.unread}


def _unread_note(truncation: Truncation, data: DataConfig) -> str:
    """predict's note on the words of its input that the caps kept from the model."""
    cut = truncation.cut / max(1, truncation.documents)
    # A few pasted logs among short tickets can hold a tenth of the words: not "0%" of documents.
    cut_share = f"{cut:.0%}" if cut >= 0.01 else "under 1%"
    return (f"note: the model reads {data.max_sentences} sentences of {data.max_words} words at most "
            f"(data.max_sentences, data.max_words): {truncation.unread_share:.0%} of the input's words are "
            f"past them, in {truncation.cut} of {truncation.documents} documents ({cut_share}), labelled from "
            "their beginnings alone; train on such documents with larger caps (--set data.max_sentences=... "
            "--set data.max_words=...), or split them into parts")


@contextlib.contextmanager
def _out_of_memory_explained(batch_size: int) -> Iterator[None]:
    """A GPU running out of memory, in this process or a worker, as a one-line error."""
    try:
        yield
    except torch.cuda.OutOfMemoryError:
        raise HanclfError(
            f"the GPU ran out of memory at batches of up to {batch_size} documents; try "
            f"--batch-size {max(1, batch_size // 4)}"
        ) from None


@dataclass
class _Job:
    """What to read from the input and how to write the predictions of one `predict_file` call."""

    input_path: Path
    text_column: TextColumns
    id_column: str | None
    passed: list[str]  # columns copied through
    top_k: int
    threshold: float | None
    metadata: dict[str, str]
    rows_without_id: int = 0  # null or empty in the id column: those rows cannot be joined on
    progress: Callable[[int], None] = lambda rows: None  # told the rows labelled so far

    @property
    def columns(self) -> list[str]:
        return [*text_columns(self.text_column), *self.passed]

    def texts(self, batch: pa.RecordBatch) -> list[str | None]:
        return text_values(self.input_path, self.text_column, batch)

    def write(self, path: Path, labelled: Iterator[tuple[pa.RecordBatch, pa.Table]]) -> int:
        """Input batches and their predictions, in input order, into the Parquet file `path` in
        row groups of ROW_GROUP_ROWS; returns the number of rows."""
        rows = 0
        writer: pq.ParquetWriter | None = None
        pending: list[pa.Table] = []
        for batch, predictions in labelled:
            columns = {}
            if not self.id_column:
                columns[ROW_ID] = pa.array(range(rows, rows + batch.num_rows), pa.int64())
            else:
                ids = batch.column(self.id_column)
                if pa.types.is_dictionary(ids.type):  # pandas' category dtype
                    ids = ids.cast(ids.type.value_type)
                self.rows_without_id += ids.null_count
                if ids.type in STRING_TYPES:
                    self.rows_without_id += pc.sum(pc.equal(ids, "")).as_py() or 0
            columns.update({name: batch.column(name) for name in self.passed})
            columns.update(zip(predictions.column_names, predictions.columns))
            pending.append(pa.table(columns))
            rows += batch.num_rows
            self.progress(rows)
            if sum(t.num_rows for t in pending) >= ROW_GROUP_ROWS:
                # Whole row groups only; the rest starts the next (groups of equal size).
                table = self._joined(pending, writer)
                whole = table.num_rows - table.num_rows % ROW_GROUP_ROWS
                writer = _write(path, writer, table.slice(0, whole), self.metadata)
                pending = [table.slice(whole)] if whole < table.num_rows else []
        if pending:
            writer = _write(path, writer, self._joined(pending, writer), self.metadata)
        if writer is not None:
            writer.close()
        return rows

    def _joined(self, tables: list[pa.Table], writer: pq.ParquetWriter | None) -> pa.Table:
        """`tables` as one, of the types written so far. Types can differ between batches of
        JSONL lines, typed by what each holds: a column all null in one batch takes the others'
        type, unless a row group of nulls has been written; other changes are the input's to
        fix."""
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
            if writer is not None and not table.schema.equals(writer.schema):
                table = table.cast(writer.schema)
            return table
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
            types: dict[str, list[str]] = {}
            for schema in [t.schema for t in tables] + ([writer.schema] if writer else []):
                for field in schema:
                    if str(field.type) not in types.setdefault(field.name, []):
                        types[field.name].append(str(field.type))
            changed = ", ".join(f"column '{name}' is {' in some rows, '.join(found)} in others"
                                for name, found in types.items() if len(found) > 1)
            raise UsageError(f"{self.input_path}: the type of a column changes within the input: "
                             f"{changed or error}; give each column one type (in JSON, all numbers "
                             "or all strings), or convert the input to Parquet") from None


def worker_processes(devices: int | None, device: torch.device, input_path: Path) -> int:
    """How many processes label `input_path`: `devices` if given, else what the machine and the
    input size call for."""
    if devices is not None:
        if devices < 1:
            raise UsageError(f"--devices {devices}: must be at least 1")
        if devices > 1 and not main_module_importable():
            raise UsageError(f"--devices {devices}: worker processes import the calling script, "
                             "and one read from stdin has no file; save it as a file, or use 1")
        return devices
    if not main_module_importable():
        return 1
    # One single-threaded process per core: on the CPU the model's operations are too small for
    # several threads to help (2 threads ran 0.8x as fast as one). Tokenizing holds Python's
    # lock and runs ~8,000 docs/s a core, far below what one GPU labels, so with a GPU every
    # core but this process's tokenizes.
    by_rows = _estimated_rows(input_path) // MIN_ROWS_PER_PROCESS
    by_memory = _available_memory() // PROCESS_MEMORY
    by_cores = cores() - 1 if _model_in_this_process(device) else cores()
    return max(1, min(by_cores, by_rows, by_memory))


def _model_in_this_process(device: torch.device) -> bool:
    """Whether predict's workers leave the model to this process: on a GPU, one process feeding
    it batches made by all the others, instead of processes taking turns on it (16 processes,
    each with its own model and CUDA context, labelled 15,500 rows/s on an H200 where the
    model alone labels 74,000 docs/s)."""
    return device.type == "cuda"


def _estimated_rows(path: Path) -> int:
    if input_format(path) == "parquet":
        return parquet_rows(path)
    return path.stat().st_size // TEXT_BYTES_PER_ROW


def _available_memory() -> int:
    """MemAvailable of /proc/meminfo (Linux), or less where this process's container (cgroup)
    has less room left; elsewhere, no limit."""
    available = 1 << 62
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    return min(available, cgroup_memory_room())


def _write_in_workers(
    job: _Job, path: Path, batches: Iterator[pa.RecordBatch], predictor: Predictor,
    model_dir: Path, processes: int,
) -> int:
    """job.write, with `processes` worker processes labelling tasks of WORKER_ROWS rows, or,
    where the model stays in this process (a GPU), making its batches.

    Tasks go to whichever worker is free; at most two per worker are in flight, which bounds
    memory, and results are taken in submission order, which keeps the output in input order."""
    model_here = _model_in_this_process(predictor.device)
    start_server()
    # The workers' own copies of the model stay on the CPU; with the model here, they only
    # batch, as this process will run them (its batch size, not the CPU's default).
    threads = 1 if model_here else max(1, cores() // processes)
    pool = ProcessPoolExecutor(processes, mp_context=context(), initializer=start_predict_worker,
                               initargs=(os.getpid(), model_dir, threads, predictor.batch_size))
    work = _batch_texts if model_here else functools.partial(_predict_texts, top_k=job.top_k, threshold=job.threshold)

    def labelled() -> Iterator[tuple[pa.RecordBatch, pa.Table]]:
        in_flight: deque[tuple[pa.RecordBatch, Future]] = deque()
        # With the model here: tasks whose batches are queued on the GPU. Each task's table is
        # built once the next task is queued, so the GPU computes while this process builds
        # tables, writes and takes in batches.
        on_model: deque[tuple[pa.RecordBatch, Callable[[], tuple[np.ndarray, np.ndarray]]]] = deque()

        def submit(texts: list[str | None]) -> Future:
            try:
                return pool.submit(work, texts)
            except OSError as error:
                # CPython (3.11.7 read) may start a new worker on the pipes of a pool that it is
                # tearing down because another worker died; the tasks in flight, already
                # failed, then say that a worker died.
                if any(future.done() and isinstance(future.exception(), BrokenProcessPool)
                       for _, future in in_flight):
                    raise BrokenProcessPool() from error
                raise

        def done() -> Iterator[tuple[pa.RecordBatch, pa.Table]]:
            part, result = in_flight.popleft()
            made, truncation = result.result()
            predictor.truncation += truncation
            if not model_here:
                yield part, made
                return
            on_model.append((part, predictor._queue_probs(part.num_rows, made)))
            if len(on_model) > 1:
                yield from_model()

        def from_model() -> tuple[pa.RecordBatch, pa.Table]:
            part, probs_and_no_word = on_model.popleft()
            return part, predictor._table(*probs_and_no_word(), job.top_k, job.threshold)

        for batch in batches:
            for offset in range(0, batch.num_rows, WORKER_ROWS):
                part = batch.slice(offset, WORKER_ROWS)
                in_flight.append((part, submit(job.texts(part))))
                while len(in_flight) > 2 * processes:
                    yield from done()
        while in_flight:
            yield from done()
        while on_model:
            yield from_model()

    try:
        return job.write(path, labelled())
    except BrokenProcessPool:
        raise worker_died() from None
    except KeyboardInterrupt:
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def worker_died() -> HanclfError:
    """Why a worker may have died, the likelier cause first: under a script, a missing guard
    (its workers' tracebacks say so at length); under the CLI (which has the guard), a notebook
    or an interactive session (which need none), memory."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    # Path(...).stem: on Windows the command is hanclf.exe
    cli = spec is not None and spec.name.split(".")[0] == "hanclf" or Path(sys.argv[0]).stem == "hanclf"
    memory = "out of memory? try fewer --devices" if cli else "out of memory? try fewer devices"
    script = not cli and getattr(main, "__file__", None) is not None
    causes = f"{GUARD_MAIN}; or {memory}" if script else memory
    return HanclfError(f"a predict worker process died (its own error, if any, is printed above): {causes}")


def _stop_workers(pool: ProcessPoolExecutor, seconds: float = 2.0) -> None:
    """Shut the pool down, terminating workers still alive after `seconds`: a graceful shutdown
    once waited for ever on a worker blocked on the pool's queue, and Ctrl-C never returned (1
    of ~24 tries in a review). Terminating them all at once instead left a worker that was
    being forked to fail on the pool's removed semaphore and print a traceback."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # CPython's own table
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + seconds
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.terminate()
    # Python's exit wakes the pool's manager thread through a pipe that the thread closes as it
    # ends, with no lock between them (CPython 3.11): racing, it printed "Exception ignored ...
    # Bad file descriptor" after the command's last line. Ended here, it is not woken.
    if manager is not None:
        manager.join(max(0.0, deadline - time.monotonic()) + 1.0)


_worker: Predictor | None = None  # the model of a worker process of _write_in_workers


def _start_worker(model_dir: Path, threads: int, batch_size: int) -> None:
    """In a worker, after become_worker (see start_predict_worker)."""
    global _worker
    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # the main process, which loaded the model too, has said it
        warnings.simplefilter("ignore", HanclfWarning)
        _worker = Predictor(model_dir, "cpu", batch_size)


def _predict_texts(
    texts: list[str | None], top_k: int, threshold: float | None
) -> tuple[pa.Table, Truncation]:
    """A worker's task on the CPU: the predictions of `texts`, and what the caps cut of them,
    which the main process adds to its own Predictor's truncation."""
    _worker.truncation = Truncation()
    return _worker.predict_table(texts, top_k, threshold), _worker.truncation


def _batch_texts(texts: list[str | None]) -> tuple[list[Batch], Truncation]:
    """A worker's task when the model is in the main process: the batches of `texts`, and what
    the caps cut of them."""
    _worker.truncation = Truncation()
    return list(_worker.batches(texts)), _worker.truncation


def _write(
    path: Path, writer: pq.ParquetWriter | None, table: pa.Table, metadata: dict[str, str]
) -> pq.ParquetWriter:
    table = table.replace_schema_metadata(metadata)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema, compression="zstd")
    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    return writer
