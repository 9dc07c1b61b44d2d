"""`Predictor`: a trained model loaded once and called on batches of texts, with no Lightning
and no files: what Ray `map_batches`, Spark `mapInArrow` or your own loop wraps, and what
predict, explain and evaluate label with.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import torch

from hanclf.artifact import load
from hanclf.data import (
    EncodedDoc, Truncation, WordBatch, index_tokens, pad, read_partly, readable, size_batches, tokenize_texts,
    truncate,
)
from hanclf.errors import UsageError
from hanclf.io import TextColumns, as_path, column_names, encodable, text_columns, text_values
from hanclf.model import UNK, probabilities
from hanclf.tokenize import tokenize_all
from hanclf.vocab import Labels

# Texts a Predictor tokenizes at a time, however many it is given (a Ray batch, a Spark Arrow
# batch): a call on 100,000 texts held all their tokens at once, +1.2 GiB on top of the model.
PREDICT_CHUNK_ROWS = 8_192
# Padded word slots (B x S x W) in one batch at most. It bounds a batch's memory: batches of
# 1,024 documents and no such cap padded up to 2 million slots and a process held 7-9 GiB of
# GPU memory (one process alone reserved 46 GiB), so 16 workers ran an H200 out of memory.
MAX_BATCH_SLOTS = 512 * 1024


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
    # The text is longer than the part tokenized (data.read_partly): its tokens past that part
    # are not counted, so unseen_tokens is a lower bound (one for that rest).
    read_partly: bool = False

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
    """--device as a torch device, auto a GPU where there is one; a usage error, before the
    model loads, for a device this machine does not have."""
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
    cut and the words they leave unread; threads sharing the predictor each add theirs.
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
        self._truncation_lock = threading.Lock()

    def add_truncation(self, counts: Truncation) -> None:
        # `+=` reads, adds and writes back: two threads adding at once lost one's counts.
        with self._truncation_lock:
            self.truncation += counts

    def __getstate__(self) -> dict:
        # Ray and Spark ship a predictor to their workers by pickling it; a lock cannot be.
        return {name: value for name, value in self.__dict__.items() if name != "_truncation_lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._truncation_lock = threading.Lock()

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
        trained with (the id column only where the file has it); an id column of '' is none,
        not the model's (as explain's --label-column '')."""
        data = self.artifact.config.data
        if id_column is None and data.id_column and data.id_column in column_names(path):
            id_column = data.id_column
        return text_column or data.text_column, id_column or None

    def batches(self, texts: Sequence[str | None]) -> Iterator[Batch]:
        """The model's inputs for `texts`, made as they are needed: the CPU's part of predicting
        (tokens, ids, batches of similar-size documents), which predict's workers do for a model
        on a GPU."""
        tokenized = tokenize_texts(one_per_text(texts), self.artifact.config.data)
        self.add_truncation(tokenized.truncation())
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
        texts = one_per_text(texts)
        partly = set(read_partly(texts, config))
        whole = tokenize_all(readable(text, config) for text in texts)
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
                    unseen_tokens=sum(map(len, whole[i])) - sum(map(len, sentences)) + (i in partly),
                    read_partly=i in partly,
                )
        return out  # type: ignore[return-value]

    def label_type(self) -> pa.DataType:
        """The Arrow type of the predicted labels: int64 where the model's labels are numbers."""
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
        twice = [name for name in text_columns(self.text_column) if names.count(name) > 1]
        if twice:
            raise UsageError(f"the batch has {names.count(twice[0])} columns named '{twice[0]}', which "
                             "the model reads its text from; keep one")
        if isinstance(batch, pd.DataFrame):
            try:
                texts = pa.Table.from_pandas(batch[text_columns(self.text_column)], preserve_index=False)
            except (pa.ArrowInvalid, pa.ArrowTypeError, UnicodeEncodeError) as e:
                raise UsageError(_not_text(batch, text_columns(self.text_column), e)) from None
            predictions = self.predict_table(text_values("the batch", self.text_column, texts), top_k, threshold)
            frame = predictions.to_pandas()
            for field in predictions.schema:  # lists, not NumPy arrays: comparable, and Ray converts them
                if pa.types.is_list(field.type):
                    # object dtype, also with no rows (pandas makes an empty list float64)
                    frame[field.name] = pd.Series(predictions.column(field.name).to_pylist(), frame.index, object)
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
            if isinstance(value, str):
                if not encodable(value):
                    return (f"the batch's column '{column}' holds half of a character (a lone "
                            f"\\ud800-\\udfff surrogate) at index {label!r}; remove or replace it")
            elif not (value is None or pd.api.types.is_scalar(value) and pd.isna(value)):
                return (f"the batch's column '{column}' holds {type(value).__name__} {value!r:.40} at index "
                        f"{label!r}, not text (str, or None for a missing one)")
    return f"the batch's text column(s) {', '.join(columns)} cannot be read as text ({str(error).splitlines()[0]})"


def check_threshold(threshold: float | None) -> None:
    """--threshold, where given, is a probability."""
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
