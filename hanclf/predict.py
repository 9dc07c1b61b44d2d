"""`predict_file`: Parquet/CSV/JSONL in, Parquet out, streamed in record batches with bounded
memory, in this process or in worker processes. The model side, `Predictor`, is hanclf.predictor;
it is importable from here too, as `from hanclf.predict import Predictor, predict_file`.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch

from hanclf import __version__
from hanclf.config import DataConfig
from hanclf.data import UNREAD_NOTE_SHARE, Truncation
from hanclf.errors import HanclfError, UsageError
from hanclf.io import (
    STRING_TYPES,
    TextColumns,
    as_path,
    atomic_output,
    check_input,
    check_output,
    column_names,
    empty_batch,
    iter_batches,
    refuse_stdout,
    require_columns,
    text_columns,
    text_values,
    to_stderr,
)
from hanclf.predictor import PREDICT_CHUNK_ROWS, Predictor
from hanclf.progress import RowProgress
from hanclf.worker_pool import GUARD_MAIN, worker_processes, write_in_workers
from hanclf.workers import cores, threads_within_quota

__all__ = ["Predictor", "predict_file"]

ROW_ID = "row_id"  # added to the output when no --id-column is given: the 0-based input row
ROW_GROUP_ROWS = 100_000  # output rows buffered per Parquet row group; few large groups read fast
# As many rows as a Predictor tokenizes at a time: each input batch is one chunk of it, so that
# predict_file's results are those it gave before Predictor chunked its texts.
INPUT_BATCH_ROWS = PREDICT_CHUNK_ROWS


def predict_file(
    model_dir: str | Path,
    input_path: str | Path,
    output: str | Path,
    text_column: TextColumns | None = None,
    id_column: str | None = None,
    keep_columns: Sequence[str] | str | None = (),
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
    refuse_stdout(output)
    if output.suffix.lower() not in (".parquet", ".pq"):
        raise UsageError(f"{output}: predictions are written as Parquet; name it *.parquet")
    check_output(output, force, reads=input_path)
    predictor = Predictor(model_dir, device, batch_size)
    predictor.check_options(top_k, threshold)
    text_column, id_column = predictor.input_columns(input_path, text_column, id_column)
    if isinstance(keep_columns, str):  # one column's name, not its letters
        keep_columns = [keep_columns]
    keep_columns = keep_columns or []  # None: as the other optional arguments take it
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
    job = FileJob(input_path, text_column, id_column, passed, top_k, threshold,
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
            rows = write_in_workers(job, tmp, batches, predictor, model_dir, processes)
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
    head = truncation.past_the_caps(data, "the input's")
    return (f"note: {head} ({cut_share}), labelled from "
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
class FileJob:
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
                writer, table = self._joined(pending, path, writer)
                whole = table.num_rows - table.num_rows % ROW_GROUP_ROWS
                writer = _write(path, writer, table.slice(0, whole), self.metadata)
                pending = [table.slice(whole)] if whole < table.num_rows else []
        if pending:
            writer, table = self._joined(pending, path, writer)
            writer = _write(path, writer, table, self.metadata)
        if writer is not None:
            writer.close()
        return rows

    def _joined(
        self, tables: list[pa.Table], path: Path, writer: pq.ParquetWriter | None
    ) -> tuple[pq.ParquetWriter | None, pa.Table]:
        """`tables` as one, of the types written so far, and the writer to append it with.
        Types can differ between batches of JSON Lines, typed by what each holds: a column that
        is all null (a key the first objects leave out, as Spark writes null fields) or ints
        in the rows written so far, and text or floats later, takes the later type, the rows
        written so far being written again with it; other changes are the input's to fix."""
        try:
            table = pa.concat_tables(tables, promote_options="permissive")
            if writer is None or table.schema.equals(writer.schema):
                return writer, table
            # Not a cast to the types written: that read the id "007" as the number 7.
            schema = pa.unify_schemas([writer.schema, table.schema], promote_options="permissive")
            if not schema.equals(writer.schema):
                writer = _rewritten(path, writer, schema)
            return writer, table.cast(schema)
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as error:
            types: dict[str, list[pa.DataType]] = {}
            for schema in [t.schema for t in tables] + ([writer.schema] if writer else []):
                for field in schema:
                    if field.type not in types.setdefault(field.name, []):
                        types[field.name].append(field.type)
            differing = {name: found for name, found in types.items() if len(found) > 1}
            # Those that cannot be one type; else those whose values would not fit the one type
            # (ints past 2^53 as floats).
            names = [name for name, found in differing.items() if not _one_type(name, found)] or list(differing)
            changed = ", ".join(f"column '{name}' is {' in some rows, '.join(map(str, differing[name]))} in others"
                                for name in names)
            raise UsageError(f"{self.input_path}: the type of a column changes within the input: "
                             f"{changed or error}; give each column one type (in JSON, all numbers "
                             "or all strings), or convert the input to Parquet") from None


def _one_type(name: str, types: list[pa.DataType]) -> bool:
    """Whether a column of these types in different rows can be written as one (null and text,
    ints and floats)."""
    try:
        pa.unify_schemas([pa.schema([pa.field(name, t)]) for t in types], promote_options="permissive")
        return True
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return False


def _rewritten(path: Path, writer: pq.ParquetWriter, schema: pa.Schema) -> pq.ParquetWriter:
    """The Parquet file `path` that `writer` wrote, written again with the types of `schema`,
    one row group at a time; returns the writer that appends to it."""
    writer.close()
    written = path.with_name(f"{path.name}.before")  # beside it, in atomic_output's temporary folder
    os.replace(path, written)
    source = pq.ParquetFile(written)
    rewriter = None
    for group in range(source.num_row_groups):  # at least one: `writer` wrote a table
        rewriter = _write(path, rewriter, source.read_row_group(group).cast(schema), writer.schema.metadata)
    source.close()
    written.unlink()
    return rewriter


def _write(
    path: Path, writer: pq.ParquetWriter | None, table: pa.Table, metadata: dict[str, str] | dict[bytes, bytes]
) -> pq.ParquetWriter:
    """`table` appended to the Parquet file `path` in row groups of at most ROW_GROUP_ROWS rows,
    by `writer`, or by a new one where nothing is written yet (None); returns the writer."""
    table = table.replace_schema_metadata(metadata)
    if writer is None:
        writer = pq.ParquetWriter(path, table.schema, compression="zstd")
    writer.write_table(table, row_group_size=ROW_GROUP_ROWS)
    return writer
