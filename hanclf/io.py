"""Reading tables (CSV, TSV, Parquet, JSON Lines, a directory of Parquet files) and writing
outputs atomically.

Training reads its file whole; predict, explain and evaluate stream record batches so memory
stays bounded whatever the input size.
"""

from __future__ import annotations

import contextlib
import csv
import errno
import functools
import glob
import itertools
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq

from hanclf.errors import HanclfError, UsageError

if TYPE_CHECKING:
    import pyarrow.dataset

try:
    import fcntl
except ImportError:  # Windows: no flock, so the temporaries of killed commands stay
    fcntl = None

FORMATS = {
    ".csv": "csv",
    ".tsv": "tsv",
    ".parquet": "parquet",
    ".pq": "parquet",
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
}
STRING_TYPES = (pa.string(), pa.large_string(), pa.string_view())
# Between the values of several text columns (e.g. title and body): a blank line, so that each
# column's text starts a sentence of its own.
COLUMN_SEPARATOR = "\n\n"
# Without a progress bar (stderr not a terminal: a batch job's log), long commands log a line on
# how far they are this often.
PROGRESS_LOG_SECONDS = 60.0


def bar_on_stderr() -> bool:
    """Whether a progress bar drawn on stderr would be seen as one: a terminal that can redraw a
    line (not TERM=dumb, where rich draws none). stderr's own isatty(), not rich's is_terminal,
    which FORCE_COLOR (set in many CI setups for colours) makes true: a job's log got the bar's
    redraws and none of the lines every minute."""
    from rich.console import Console

    tty = sys.stderr is not None and sys.stderr.isatty()  # None under pythonw
    return tty and not Console(stderr=True).is_dumb_terminal


def time_left(seconds: float) -> str:
    """'about 40 s left', 'about 12 min left': for progress lines."""
    return f"about {f'{seconds / 60:.0f} min' if seconds >= 90 else f'{seconds:.0f} s'} left"


# One text column's name, or several whose values are joined (config data.text_column).
TextColumns = str | Sequence[str]


def input_format(path: Path) -> str:
    if path.is_dir():
        return "parquet"  # a dataset of Parquet files
    fmt = FORMATS.get(path.suffix.lower())
    if fmt is None:
        raise UsageError(
            f"{path}: unknown file type '{path.suffix}' (use one of {', '.join(FORMATS)})"
        )
    return fmt


def known_rows(path: Path) -> int | None:
    """The rows of input `path` where known without reading it: a Parquet input's, from its
    footers (a CSV or JSONL file's would take a pass to count)."""
    return parquet_rows(path) if input_format(path) == "parquet" else None


def to_stderr(message: str) -> None:
    """The Python API's default `log`: a line on stderr, as the CLI's (a notebook shows it under
    the cell; a long training was silent there for its whole run). Where rich's global console
    is on stderr, through it: Lightning's progress bar sets it so and draws on it, and a line
    printed past it was drawn over (train's epoch lines on a terminal)."""
    import rich

    console = rich.get_console()
    if console.stderr:
        console.print(message, highlight=False, markup=False, soft_wrap=True)
    else:
        print(message, file=sys.stderr, flush=True)


def as_path(value: str | os.PathLike | None, name: str, data: bool = False, optional: bool = False) -> Path | None:
    """A path argument of the Python API as a Path, `~` expanded as pandas does (None stays None
    where `optional`); "" is refused (Path("") is the current folder); anything else is a
    TypeError, which says what to do with a DataFrame given as `data`."""
    if value is None and optional:
        return value
    if isinstance(value, str) and not value.strip():
        raise UsageError(f"{name}: an empty path")
    if isinstance(value, (str, os.PathLike)):
        return Path(os.path.expanduser(value))  # not Path.expanduser: "~draft.csv" raised
    frame = data and hasattr(value, "to_parquet")
    hint = "; write the frame to a file first (frame.to_parquet('data.parquet'))" if frame else ""
    raise TypeError(f"{name}: a path (str or pathlib.Path), not {type(value).__name__}{hint}")


def check_input(path: Path) -> str:
    """Fail early and clearly on a path that cannot be an input table; returns its format."""
    if not path.exists():
        raise UsageError(f"{path}: no such file")
    if path.is_dir():
        if (path / "model.safetensors").is_file():  # `predict data.csv runs/m`: arguments swapped
            raise UsageError(f"{path}: is a hanclf model, not data; the model comes first "
                             "(hanclf predict MODEL INPUT)")
        if not _dataset_files(path):
            raise UsageError(f"{path}: is a directory without .parquet files; give a data file, "
                             "or a directory of Parquet files")
        return "parquet"
    fmt = input_format(path)
    if path.stat().st_size == 0:
        raise UsageError(f"{path}: file is empty")
    return fmt


def _dataset_files(directory: Path) -> list[str]:
    """The Parquet files under `directory`, in path order, as Spark, Hive or Ray write them:
    part files, maybe in key=value folders, named *.parquet, or with no extension at all as Hive
    names them (000000_0), then read only if they start as Parquet files do; names starting
    with '.' or '_' (_SUCCESS, .crc) are not data."""
    return sorted(
        str(p) for p in directory.rglob("*")
        if p.is_file() and not any(part.startswith((".", "_")) for part in p.relative_to(directory).parts)
        and (p.suffix.lower() in (".parquet", ".pq") or (p.suffix == "" and _starts_as_parquet(p)))
    )


def _starts_as_parquet(path: Path) -> bool:
    try:
        with path.open("rb") as file:
            return file.read(4) == b"PAR1"
    except OSError:
        return False


def _dataset(directory: Path) -> pyarrow.dataset.Dataset:
    """A directory of Parquet files as one table (key=value folders add columns), with the
    columns of all its files: pyarrow takes the first file's schema, so a column typed null
    there (an empty pandas partition), or found only in later files, failed to read."""
    import pyarrow.dataset  # here: it adds ~0.3 s to the start of every command

    files = _dataset_files(directory)
    stamps = tuple((file, stat.st_mtime_ns, stat.st_size) for file, stat in zip(files, map(os.stat, files)))
    return pyarrow.dataset.dataset(files, schema=_folder_schema(str(directory), stamps),
                                   format="parquet", partitioning="hive", partition_base_dir=str(directory))


@functools.lru_cache(maxsize=8)
def _folder_schema(directory: str, stamps: tuple[tuple[str, int, int], ...]) -> pa.Schema:
    """The unified schema of a folder's files (`stamps`: each file with its mtime and size).
    Kept while the files are unchanged: a command asks for the folder's dataset several times
    (columns, row count, batches), and reading every file's footer each time multiplied the
    I/O of a folder of many parts."""
    import pyarrow.dataset

    footers = {}  # footers only
    for file, _, _ in stamps:
        try:
            footers[file] = pq.read_metadata(file)
        except (pa.ArrowException, OSError) as e:
            raise _unreadable(Path(file), "parquet", e) from None
    # A file without rows has no say in the types (pandas writes an empty partition's columns
    # as float64: beside text in the others, the folder was unreadable), only in the columns.
    voting = [file for file, footer in footers.items() if footer.num_rows > 0] or list(footers)
    try:
        schema = pyarrow.dataset.dataset(voting, format="parquet", partitioning="hive",
                                         partition_base_dir=directory).schema  # the partition columns too
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # A key=value folder's column inside its files too, of a type its values do not take
        # (year=2023 read as int32, int64 in the files): "cannot read as parquet" said nothing of it.
        for file in voting:
            keys = [part.split("=", 1)[0] for part in Path(file).relative_to(directory).parts[:-1] if "=" in part]
            inside = [key for key in keys if key in footers[file].schema.names]
            if inside:
                raise UsageError(f"{file}: column '{inside[0]}' is both inside the file and a key=value "
                                 "folder above it, of another type; drop it from the files, or rename "
                                 "the folders") from None
        raise
    for file in voting:
        try:
            schema = pa.unify_schemas([schema, footers[file].schema.to_arrow_schema()], promote_options="permissive")
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError) as e:
            raise UsageError(f"{file}: its column types do not agree with the folder's other files "
                             f"({e}); give every file the same types") from None
    for footer in footers.values():
        for field in footer.schema.to_arrow_schema():
            if field.name not in schema.names:
                schema = schema.append(field)
    return schema


def parquet_rows(path: Path) -> int:
    """Rows of a Parquet file or directory, from the files' footers."""
    try:
        return _dataset(path).count_rows() if path.is_dir() else pq.ParquetFile(path).metadata.num_rows
    except (pa.ArrowException, OSError) as e:
        raise _unreadable(path, "parquet", e) from None


_DELIMITERS = {"csv": ",", "tsv": "\t"}
_OTHER_SEPARATORS = {";": "';'", "\t": "tabs", ",": "','", "|": "'|'"}


def _separated_otherwise(path: Path, fmt: str, header: list[str]) -> UsageError | None:
    """The error for a CSV/TSV file separated by another character, whose header therefore
    reads as one name holding that character (a semicolon CSV, as Excel writes in much of
    Europe); None for any other header. Asked only once a column is missing or a row has more
    fields than the header, so a one-column file with such a name stays readable."""
    if fmt not in _DELIMITERS or len(header) != 1:
        return None
    found = [name for s, name in _OTHER_SEPARATORS.items() if s != _DELIMITERS[fmt] and s in header[0]]
    if not found:
        return None
    return UsageError(
        f"{path}: its header is one column of names separated by {found[0]}; hanclf reads "
        f"{fmt} files separated by {'tabs' if fmt == 'tsv' else 'commas'}: save it so, or as "
        "Parquet (pandas: pd.read_csv(path, sep=...).to_parquet(...))"
    )


def _csv_reader(path: Path, fmt: str) -> pa_csv.CSVStreamingReader:
    # Every column is read as text: ids like 007 and labels like 1 stay exactly as written,
    # and a stray string in a numeric-looking column cannot fail mid-stream.
    delimiter = _DELIMITERS[fmt]
    header = pa_csv.open_csv(
        path, parse_options=pa_csv.ParseOptions(delimiter=delimiter)
    ).schema.names
    return pa_csv.open_csv(
        path,
        read_options=pa_csv.ReadOptions(block_size=1 << 22),
        parse_options=pa_csv.ParseOptions(delimiter=delimiter, newlines_in_values=True),
        convert_options=pa_csv.ConvertOptions(
            column_types={name: pa.string() for name in header},
            strings_can_be_null=False,
        ),
    )


def _header_schema(path: Path, fmt: str) -> pa.Schema:
    """The schema a Parquet footer or a CSV/TSV header gives (JSONL has none: an empty one)."""
    try:
        if fmt == "parquet":
            return _dataset(path).schema if path.is_dir() else pq.ParquetFile(path).schema_arrow
        if fmt in ("csv", "tsv"):
            return _csv_reader(path, fmt).schema
        return pa.schema([])
    except (pa.ArrowException, ValueError, OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, fmt, e) from None


# JSON Lines has no header: its columns are the keys of its first objects. Not of the first
# alone: Spark's writer leaves null fields out, so a first row without a text was a file
# "without a text column".
JSONL_HEADER_RECORDS = 1000


def column_names(path: Path) -> list[str]:
    """Column names of a table, read from its header or footer only (JSONL: the keys of its
    first JSONL_HEADER_RECORDS objects)."""
    fmt = check_input(path)
    if fmt != "jsonl":
        return _header_schema(path, fmt).names
    return _jsonl_keys(path, JSONL_HEADER_RECORDS)


def has_column(path: Path, name: str) -> bool:
    """Whether the table has column `name`; in a JSON Lines file, in any of its objects. For a
    column that decides which rows are used (split): one that appears only past the first
    objects still counts, or the test rows would be trained on."""
    return name in column_names(path) or input_format(path) == "jsonl" and name in _every_jsonl_key(path)


def _every_jsonl_key(path: Path) -> tuple[str, ...]:
    stat = path.stat()
    return _every_jsonl_key_of_version(path, stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=4)
def _every_jsonl_key_of_version(path: Path, mtime_ns: int, size: int) -> tuple[str, ...]:
    """The keys of all the file's objects, once per version of it: train asks for each split."""
    return tuple(_jsonl_keys(path, None))


def _jsonl_keys(path: Path, records: int | None) -> list[str]:
    """The keys of the first `records` objects of a JSON Lines file (None: of all), in the order
    first seen."""
    try:
        return list(dict.fromkeys(key for record in itertools.islice(_jsonl_records(path), records)
                                  for key in record))
    except (ValueError, OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, "jsonl", e) from None


def empty_batch(path: Path, columns: list[str]) -> pa.RecordBatch:
    """`columns` of the input without rows (each once, as iter_batches gives them), typed as
    its Parquet footer gives them, or as text for a CSV/TSV header."""
    types = {field.name: field.type for field in _header_schema(path, check_input(path))}
    columns = list(dict.fromkeys(columns))
    return pa.record_batch([pa.array([], types.get(c, pa.null())) for c in columns], names=columns)


def text_columns(text_column: TextColumns) -> list[str]:
    return [text_column] if isinstance(text_column, str) else list(text_column)


def require_columns(path: Path, wanted: dict[str, TextColumns | None]) -> None:
    """`wanted` maps a flag name (e.g. '--text-column') to the column(s) it names."""
    names = column_names(path)
    for flag, columns in wanted.items():
        for column in text_columns(columns) if columns is not None else []:
            if column not in names and input_format(path) == "jsonl":
                names = list(_every_jsonl_key(path))  # before an error, every object is looked at
            if column not in names:
                # An export with a title line above the header: names mostly empty.
                title = sum(not name.strip() for name in names) * 2 >= len(names) > 1
                hint = ("; its first line looks like a title, not the header (most names are "
                        "empty): remove the lines above the header") if title else f"; choose one with {flag}"
                raise _separated_otherwise(path, input_format(path), names) or UsageError(
                    f"{path}: no column '{column}' (columns: {', '.join(names)}){hint}"
                )


def iter_batches(path: Path, columns: list[str], batch_rows: int) -> Iterator[pa.RecordBatch]:
    """Stream `columns` of the table in record batches of at most about `batch_rows` rows."""
    fmt = check_input(path)
    columns = list(dict.fromkeys(columns))
    try:
        if fmt == "parquet" and path.is_dir():
            dataset = _dataset(path)
            _check_named_once(path, dataset.schema.names, columns)
            yield from dataset.to_batches(columns=columns, batch_size=batch_rows)  # in file order
        elif fmt == "parquet":
            file = pq.ParquetFile(path)
            _check_named_once(path, file.schema_arrow.names, columns)
            yield from file.iter_batches(batch_size=batch_rows, columns=columns)
        elif fmt in ("csv", "tsv"):
            reader = _csv_reader(path, fmt)
            _check_named_once(path, reader.schema.names, columns)
            for block in reader:
                for start in range(0, block.num_rows, batch_rows):
                    yield block.slice(start, batch_rows).select(columns)
        else:  # JSONL: objects cannot repeat a key
            records: list[dict] = []
            for record in _jsonl_records(path, columns):
                records.append(record)
                if len(records) == batch_rows:
                    yield _records_to_batch(records, columns)
                    records = []
            if records:
                yield _records_to_batch(records, columns)
    except (pa.ArrowException, ValueError, OSError, UnicodeDecodeError) as e:
        raise _unreadable(path, fmt, e) from None


def _check_named_once(path: Path, names: list[str], columns: list[str]) -> None:
    """Spreadsheet exports repeat column names; which copy to read cannot be told."""
    repeated = [column for column in columns if names.count(column) > 1]
    if repeated:
        raise UsageError(f"{path}: column '{repeated[0]}' appears {names.count(repeated[0])} times "
                         "among its columns; rename the copies so that each name is used once")


def _jsonl_records(path: Path, columns: Sequence[str] = ()) -> Iterator[dict]:
    """The objects of a JSON Lines file, one per non-blank line; a bad line names its number,
    as does one whose `columns` hold half of a character (other fields are not read)."""
    with open(path, encoding="utf-8-sig") as lines:  # a byte order mark (Windows tools) is skipped
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise HanclfError(
                    f"{path}: line {number} is not valid JSON ({e.msg}, column {e.colno}); "
                    "fix or remove that line"
                ) from None
            if not isinstance(record, dict):
                raise HanclfError(
                    f"{path}: line {number} is a JSON {type(record).__name__}, not an object; "
                    "each line must be one object such as {\"text\": ..., \"label\": ...}"
                )
            if ("\\ud" in line or "\\uD" in line) and not encodable([record.get(c) for c in columns]):
                raise UsageError(
                    f"{path}: line {number} holds half of a character (a lone \\ud800-\\udfff "
                    "escape, as a text cut in the middle of an emoji gives), which is no text; "
                    "remove it or the line"
                )
            yield record


def encodable(value: Any) -> bool:
    """Whether the strings in `value` (a str, or lists and dicts of them as JSON gives) are all
    text: JSON's escapes and Python's strings can hold half of a UTF-16 surrogate pair."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _records_to_batch(records: list[dict], columns: list[str]) -> pa.RecordBatch:
    """Columns typed as Arrow infers them: ints with nulls stay int64 (ids keep every digit).
    A column mixing types (labels 1 and "pos") is read as text, the JSON of each value, but
    booleans as "True"/"False" (vocab.as_text's, as they read in a batch of booleans alone)."""
    arrays = []
    for name in columns:
        values = [record.get(name) for record in records]
        try:
            arrays.append(pa.array(values))
        except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError):
            arrays.append(pa.array(
                [v if v is None or isinstance(v, str) else str(v) if isinstance(v, bool) else json.dumps(v)
                 for v in values],
                pa.string(),
            ))
    return pa.RecordBatch.from_arrays(arrays, names=columns)


def _as_text(column: pa.ChunkedArray) -> pa.ChunkedArray | pa.Array:
    """`column` as text, as _records_to_batch reads a column of mixed types: booleans as
    "True"/"False" (Arrow's cast writes "true"), lists and objects as JSON (Arrow has no cast)."""
    if pa.types.is_boolean(column.type):
        import pyarrow.compute as pc

        return pc.if_else(column, "True", "False")
    if pa.types.is_nested(column.type):
        return pa.array([None if v is None else json.dumps(v) for v in column.to_pylist()], pa.string())
    return column.cast(pa.string())


def read_table(path: Path, columns: list[str]) -> pa.Table:
    """The whole table (training data); an empty table is an error."""
    tables = [pa.Table.from_batches([b]) for b in iter_batches(path, columns, batch_rows=1 << 16)]
    if sum(t.num_rows for t in tables) == 0:
        raise UsageError(f"{path}: has columns but no rows")
    try:
        # JSON Lines chunks infer their own types: an all-null chunk is null, ints widen to float.
        table = pa.concat_tables(tables, promote_options="permissive")
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        # A column that is numbers in one chunk and text in another is compared as text.
        table = pa.concat_tables([pa.table([_as_text(c) for c in table.columns], names=table.column_names)
                                  for table in tables])
    # Parquet's decompressed pages are freed by now but held by Arrow's allocator: as much
    # again as the table (bench/results/train-memory-cpu.md).
    release_unused_arrow_memory()
    return table


def release_unused_arrow_memory() -> None:
    """Hand back to the system the memory that Arrow's allocator holds freed: mimalloc, Arrow's
    default on Linux, keeps it for Arrow's own later use, where tokenizing and training cannot
    reuse it."""
    pa.default_memory_pool().release_unused()


def text_values(where: object, text_column: TextColumns, table: pa.RecordBatch | pa.Table) -> list[str | None]:
    """The texts of `table`: one column's values as they are, or the values of several joined
    by COLUMN_SEPARATOR (null and empty ones left out; None where all are)."""
    values = []
    for column in text_columns(text_column):
        array = table.column(column)
        if pa.types.is_dictionary(array.type):  # pandas' category dtype, Parquet's dictionaries
            array = array.cast(array.type.value_type)
        if array.null_count == len(array):  # no text at all (an empty pandas column is float64)
            array = pa.nulls(len(array), pa.string())
        if pa.types.is_binary(array.type) or pa.types.is_large_binary(array.type) or _is_binary_view(array.type):
            # Hive and Impala write strings as Parquet's plain binary, not marked as UTF-8.
            try:
                array = array.cast(pa.large_string())
            except pa.ArrowInvalid:
                raise UsageError(_not_utf8(where, column, array)) from None
        if array.type not in STRING_TYPES:
            # A file's reader has --text-column; a Predictor reads the column the model was
            # trained on, and its caller (Ray, Spark) has no such flag to reach for.
            advice = ("choose the text column with --text-column" if isinstance(where, Path) else
                      "the model reads its text from this column: put the texts there as strings "
                      "(None for a missing one), e.g. by casting or renaming a column")
            raise UsageError(f"{where}: column '{column}' holds {array.type}, not text; {advice}")
        values.append(_python_values(where, column, array))
    if len(values) == 1:
        return values[0]
    # Not pyarrow's binary_join_element_wise: pyarrow 26 drops the rows where every value is
    # null from its result, which would shift every later row.
    return [COLUMN_SEPARATOR.join(filter(None, row)) or None for row in zip(*values)]


def _is_binary_view(type_: pa.DataType) -> bool:
    is_binary_view = getattr(pa.types, "is_binary_view", None)  # pyarrow 16 and later
    return is_binary_view is not None and is_binary_view(type_)


def column_values(where: object, table: pa.RecordBatch | pa.Table, column: str) -> list:
    """Column `column` of `table` as Python values (labels, splits, ids)."""
    return _python_values(where, column, table.column(column))


def _python_values(where: object, column: str, array: pa.Array | pa.ChunkedArray) -> list:
    # Arrow does not check that a string column holds UTF-8 (Hive and Spark may write Latin-1
    # bytes into one); Python's decoding does, which was a traceback.
    try:
        return array.to_pylist()
    except UnicodeDecodeError:
        raise UsageError(_not_utf8(where, column, array)) from None


def _not_utf8(where: object, column: str, array: pa.Array | pa.ChunkedArray) -> str:
    """The error for a column of text with bytes that are not UTF-8, quoting the first such value."""
    import pyarrow.compute as pc

    while pa.types.is_list(array.type) or pa.types.is_large_list(array.type):  # multi-label lists
        array = pc.list_flatten(array)
    if pa.types.is_dictionary(array.type):
        array = array.cast(array.type.value_type)
    first = None
    with contextlib.suppress(pa.ArrowException):  # where the value cannot be found, none is quoted
        for value in array.cast(pa.large_binary()).to_pylist():
            try:
                (value or b"").decode("utf-8")
            except UnicodeDecodeError:
                first = value
                break
    quoted = "" if first is None else \
        ', first in "' + first[:60].decode("utf-8", errors="backslashreplace") + ('..."' if len(first) > 60 else '"')
    return (f"{where}: column '{column}' holds bytes that are not UTF-8 text{quoted}; "
            "write the column as UTF-8 (re-encoded from its source's encoding, e.g. Latin-1)")


# What a reader says when the process, not the file, ran short: of threads (ulimit -u, a
# container's pids limit) or of memory (ulimit -v, a memory limit).
_OUT_OF_RESOURCES = ("failed to launch worker thread", "resource temporarily unavailable",
                     "cannot allocate memory", "out of memory", "bad_alloc")


def _unreadable(path: Path, fmt: str, error: BaseException) -> HanclfError:
    text = str(error).strip()
    reason = text.splitlines()[0] if text else type(error).__name__
    # A parse error quotes the row, whose text may be a log's "Out of memory".
    parse_error = text.startswith(("CSV parse error", "JSON parse error"))
    if isinstance(error, MemoryError) or not parse_error and any(w in text.lower() for w in _OUT_OF_RESOURCES):
        return HanclfError(
            f"could not start a thread or allocate memory while reading {path} ({reason}): the "
            "process's memory or thread limit is too low; raise it, or run fewer processes "
            "(predict --devices)"
        )
    if fmt != "parquet" and utf16_or_32(path):
        return HanclfError(f"{path}: is UTF-16 or UTF-32 text (Excel's \"Unicode Text\" and PowerShell 5 "
                           "save so), not UTF-8; save it as UTF-8")
    if fmt in _DELIMITERS and "Expected 1 columns" in text:
        with open(path, encoding="utf-8", errors="replace", newline="") as lines:
            header = next(csv.reader(lines, delimiter=_DELIMITERS[fmt]), [])
        wrong = _separated_otherwise(path, fmt, header)
        if wrong is not None:
            return wrong
    if "utf" in text.lower() and fmt != "parquet":
        line = _first_line_not_utf8(path)
        if line is not None:
            return HanclfError(f"{path}: line {line} is not valid UTF-8; save the file as UTF-8")
    hint = "save it as UTF-8" if "utf" in text.lower() else f"check that it is a valid {fmt} file"
    return HanclfError(f"{path}: cannot read as {fmt} ({reason}); {hint}")


def utf16_or_32(path: Path) -> bool:
    """Whether a text file opens with a UTF-16 or UTF-32 byte order mark (False for a file that
    cannot be read: the reader's own error says why)."""
    try:
        with open(path, "rb") as file:
            return file.read(4).startswith((b"\xff\xfe", b"\xfe\xff", b"\x00\x00\xfe\xff"))
    except OSError:
        return False


def _first_line_not_utf8(path: Path) -> int | None:
    """The number of the first line of a text file that is not UTF-8 (the readers say which
    column, not where)."""
    with open(path, "rb") as lines:
        for number, line in enumerate(lines, 1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return None


def same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one existing file (hard links and case-insensitive disks too)."""
    return a.exists() and b.exists() and os.path.samefile(a, b)


def refuse_stdout(path: Path) -> None:
    """An output named '-' (stdout to many tools) is refused before any other check of it."""
    if path.name == "-":
        raise UsageError(f"{path}: outputs are files (Parquet, CSV, JSON), not stdout; name a file")


def check_output(path: Path, force: bool, directory: bool = False, reads: Path | None = None) -> None:
    """Refuse before any work is done, not after, if the output cannot be written. The output
    is a file, or with `directory` a directory; --force replaces a file with a file and a
    directory with a directory, never one with the other, and never the input `reads` or a
    file inside it (a Parquet directory would read that file as part of its data next time)."""
    refuse_stdout(path)
    if path.is_symlink():  # renaming over it would replace the link (/dev/stdout) with a file
        raise UsageError(f"{path}: is a symbolic link; name the file itself ({path.resolve()}) or another path")
    if path.exists() and not path.is_file() and not path.is_dir():
        raise UsageError(f"{path}: is not a regular file (a device, pipe or socket); name a file to write")
    if reads is not None and same_file(path, reads):
        raise UsageError(f"{path}: is the input; write the output to another path")
    if reads is not None and reads.is_dir() and path.resolve().is_relative_to(reads.resolve()):
        raise UsageError(f"{path}: is inside the input directory {reads}, whose every Parquet file "
                         "is read as data; write the output elsewhere")
    if path.is_dir() and not directory:
        raise UsageError(f"{path}: is a directory; name a file to write")
    if directory and path.exists() and not path.is_dir():
        raise UsageError(f"{path}: is a file; name a directory to write")
    if directory and path.exists() and Path.cwd().resolve().is_relative_to(path.resolve()):
        raise UsageError(f"{path}: holds the current directory; name another directory to write")
    if path.exists() and not force:
        raise UsageError(f"{path}: already exists; pass --force to overwrite it")
    check_writable(path)


def check_writable(path: Path) -> None:
    """Refuse `path` if it cannot be written: missing folders (out/2026-11-27/) are made as the
    output is written, so the nearest one that exists must be a directory that can take them."""
    # Absolute: "." (or "", which is ".") has no parents of its own.
    parent = next(p for p in path.absolute().parents if os.path.lexists(p))  # a broken link counts: refused
    if not parent.is_dir():
        raise UsageError(f"{path}: {parent} is not a directory")
    if not os.access(parent, os.W_OK):
        raise UsageError(f"{path}: directory {parent} is not writable")


@contextlib.contextmanager
def created_parents(path: Path) -> Iterator[None]:
    """Create the missing parent directories of `path`; remove them again if the block fails."""
    created = []
    for directory in [p for p in path.parents if not p.exists()][::-1]:  # outermost first
        try:
            directory.mkdir()
        except FileExistsError:  # made meanwhile by another job (a day's partition): theirs
            if not directory.is_dir():  # or a link to nowhere (a volume not mounted)
                raise UsageError(f"{path}: {directory} is a broken link or not a directory") from None
            continue
        except OSError as e:
            raise cannot_create(directory, e) from None
        created.append(directory)
    try:
        yield
    except BaseException:
        for directory in reversed(created):
            with contextlib.suppress(OSError):
                directory.rmdir()
        raise


def write_json(path: Path, data: Any, escape_non_ascii: bool = False) -> None:
    """`data` as JSON (indent 1, a final newline) in UTF-8. `escape_non_ascii`: characters past
    ASCII written as \\uXXXX, as evaluate's and faithfulness's outputs have always had them; a
    model directory's files keep them as they are."""
    path.write_text(json.dumps(data, indent=1, ensure_ascii=escape_non_ascii) + "\n", encoding="utf-8")


def cannot_create(path: Path, error: OSError) -> HanclfError:
    """The error for an output, or a folder or file made beside it, that the file system refuses
    (a name too long, a virtual or read-only file system): a traceback before."""
    if error.errno == errno.ENAMETOOLONG:
        return UsageError(f"{path}: its name is too long for the file system (hanclf makes files "
                          "beside it with a few more characters); shorten it")
    return HanclfError(f"{path}: cannot be created there ({error.strerror or error}); write it elsewhere")


@contextlib.contextmanager
def atomic_output(path: Path, force: bool, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary path beside `path`; it replaces `path` only if the block succeeds.

    For a file, or with `directory` a directory (see check_output). Missing parent directories
    are made, and removed again if the block fails. An interrupted or failed run leaves no
    partial output.
    """
    check_output(path, force, directory)
    with created_parents(path):
        _remove_abandoned(path)
        try:
            tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent))
        except OSError as e:
            raise cannot_create(path, e) from None
        target = tmp / path.name
        lock = None
        try:
            lock = _lock(tmp)
            yield target
            try:
                if not force:
                    _place_new(target, path)
                elif path.is_dir() and not path.is_symlink():
                    old = tmp / ".replaced"
                    path.rename(old)
                    try:
                        target.rename(path)
                    except BaseException:
                        old.rename(path)  # else the earlier model went with the temporary folder
                        raise
                else:
                    os.replace(target, path)
            except PermissionError as e:
                raise HanclfError(f"{path}: cannot be replaced ({e.strerror}); {_why_not_replaced()}") from None
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
            if lock is not None:
                os.close(lock)


def _why_not_replaced() -> str:
    """What to do about a PermissionError on the final rename. On Windows another program holds
    the file open (attention.csv in Excel); elsewhere an open file never stops a rename, and the
    usual cause is another user's file in a sticky directory (/tmp)."""
    if sys.platform == "win32":
        return "close the programs that have it open (a spreadsheet, a viewer) and run again"
    return "another user's file in a directory that protects it (sticky, as /tmp)? write another path"


# The lock file in each of atomic_output's temporary directories, locked while its command runs.
LOCK_NAME = ".lock"


def _lock(tmp: Path) -> int | None:
    """Lock `tmp` as a live command's until the returned descriptor is closed. The lock file
    takes its name only once locked, so one found unlocked is a dead command's."""
    if fcntl is None:
        return None
    fd, name = tempfile.mkstemp(dir=tmp)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
    except OSError:  # a file system without locks: the directory is never taken for abandoned
        os.close(fd)
        return None
    os.rename(name, tmp / LOCK_NAME)
    return fd


def _remove_abandoned(path: Path) -> None:
    """Remove the temporary directories (`.NAME.*.tmp`) that commands killed outright
    (SIGKILL, the OOM killer) left beside `path`: each retry of a killed job added one, maybe
    with gigabytes of partial output. A running command holds its directory's lock, so its
    directory is left alone."""
    if fcntl is None:
        return
    for tmp in path.parent.glob(f".{glob.escape(path.name)}.*.tmp"):
        try:
            # Opened for writing: over NFS, only such a file can be locked exclusively.
            with open(tmp / LOCK_NAME, "r+") as lock:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                shutil.rmtree(tmp, ignore_errors=True)
        except OSError:  # locked (its command lives), or no lock file: not yet, or not ours
            continue


def _place_new(target: Path, path: Path) -> None:
    """Move `target` to `path`, which must still not exist: two jobs writing one output both
    passed check_output at their start, and the second to finish replaced the first's."""
    try:
        if target.is_dir():
            if path.exists():
                raise FileExistsError(path)
            target.rename(path)
        else:
            try:
                os.link(target, path)  # fails if `path` exists, atomically
            except FileExistsError:
                raise
            except OSError:  # a file system without hard links
                if path.exists():
                    raise FileExistsError(path) from None
                os.replace(target, path)
    except FileExistsError:
        raise UsageError(f"{path}: was written by another job while this one ran; it was left as "
                         "that job wrote it (pass --force to overwrite it)") from None
