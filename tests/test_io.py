"""Reading tables in every format, streaming, and atomic outputs."""

from __future__ import annotations

import errno
import io
import json
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from hanclf.errors import HanclfError, UsageError
from hanclf.io import (
    JSONL_HEADER_RECORDS,
    LOCK_NAME,
    _unreadable,
    utf16_or_32,
    atomic_output,
    bar_on_stderr,
    check_input,
    check_output,
    column_names,
    created_parents,
    iter_batches,
    parquet_rows,
    read_table,
    require_columns,
    text_values,
)
from hanclf.vocab import normalize_label, normalize_labels

FRAME = pd.DataFrame({
    "id": ["a1", "a2", "a3", "a4"],
    "text": ["Good, really good.", 'She said "meh"; ok', "Crème brûlée — 10/10 👍", "x"],
    "label": [1, 5, 2, 10],
})


def write(frame: pd.DataFrame, path) -> None:
    suffix = path.suffix
    if suffix == ".csv":
        frame.to_csv(path, index=False)
    elif suffix == ".tsv":
        frame.to_csv(path, index=False, sep="\t")
    elif suffix == ".parquet":
        frame.to_parquet(path, index=False)
    else:
        frame.to_json(path, orient="records", lines=True, force_ascii=False)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".parquet", ".jsonl"])
def test_every_format_reads_the_same(tmp_path, suffix):
    path = tmp_path / f"data{suffix}"
    write(FRAME, path)
    assert column_names(path) == ["id", "text", "label"]
    table = read_table(path, ["text", "label"])
    assert table.column_names == ["text", "label"]
    assert table.column("text").to_pylist() == FRAME["text"].tolist()
    labels = [normalize_label(v) for v in table.column("label").to_pylist()]
    assert labels == ["1", "5", "2", "10"]


def test_csv_columns_are_strings(tmp_path):
    path = tmp_path / "ids.csv"
    path.write_text("id,text,label\n007,hello,1\n010,NA,2\n", encoding="utf-8")
    table = read_table(path, ["id", "text", "label"])
    assert table.column("id").to_pylist() == ["007", "010"]
    assert table.column("label").to_pylist() == ["1", "2"]
    assert table.column("text").to_pylist() == ["hello", "NA"]  # not a missing value


def test_csv_quoted_newlines_and_commas(tmp_path):
    texts = [f"doc {i}" for i in range(3000)]
    texts[0] = "first line\nsecond line, with a comma"
    texts[1500] = 'quoted "word",\n\nand a blank line, then more'
    path = tmp_path / "multi.csv"
    pd.DataFrame({"text": texts, "label": ["a"] * 3000}).to_csv(path, index=False)
    table = read_table(path, ["text", "label"])
    assert table.num_rows == 3000
    assert table.column("text").to_pylist() == texts


def test_iter_batches_streams_parquet(tmp_path):
    n = 50_000
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(n)], "label": [i % 7 for i in range(n)]})
    path = tmp_path / "big.parquet"
    frame.to_parquet(path, index=False, row_group_size=10_000)
    batches = list(iter_batches(path, ["label", "text", "label"], batch_rows=4096))
    sizes = [b.num_rows for b in batches]
    assert max(sizes) <= 4096
    assert len(batches) >= 13  # ceil(50000 / 4096): never the whole file at once
    assert sum(sizes) == n
    assert batches[0].schema.names == ["label", "text"]  # duplicates dropped, order kept
    texts = [t for b in batches for t in b.column("text").to_pylist()]
    labels = [x for b in batches for x in b.column("label").to_pylist()]
    assert texts == frame["text"].tolist()
    assert labels == frame["label"].tolist()


def test_a_directory_of_parquet_files_reads_as_one_table_in_file_order(tmp_path):
    # As Spark writes: part files (here named so that creation order is not path order) beside
    # _SUCCESS and .crc files, which are not data.
    spark = tmp_path / "spark.parquet"
    spark.mkdir()
    parts = {"part-00010.parquet": range(200, 300), "part-00002.parquet": range(100, 200),
             "part-00001.parquet": range(0, 100)}
    for name, rows in parts.items():
        pd.DataFrame({"text": [f"t{i}" for i in rows], "label": list(rows)}).to_parquet(spark / name, index=False)
    (spark / "_SUCCESS").write_text("")
    (spark / ".part-00001.parquet.crc").write_bytes(b"crc")
    assert check_input(spark) == "parquet"
    assert column_names(spark) == ["text", "label"] and parquet_rows(spark) == 300
    batches = list(iter_batches(spark, ["text", "label"], batch_rows=64))
    assert max(b.num_rows for b in batches) <= 64
    assert [x for b in batches for x in b.column("label").to_pylist()] == list(range(300))
    assert read_table(spark, ["text"]).column("text").to_pylist() == [f"t{i}" for i in range(300)]


def test_a_directory_with_key_value_folders_gets_their_columns(tmp_path):
    for label in ("neg", "pos"):
        (tmp_path / f"label={label}").mkdir()
        pd.DataFrame({"text": [f"{label} {i}" for i in range(3)]}).to_parquet(
            tmp_path / f"label={label}" / "part-0.parquet", index=False)
    table = read_table(tmp_path, ["text", "label"])
    assert table.column("label").to_pylist() == ["neg"] * 3 + ["pos"] * 3
    assert table.column("text").to_pylist()[3] == "pos 0"


def test_a_directory_without_parquet_files_is_refused(tmp_path):
    (tmp_path / "notes.txt").write_text("not data")
    (tmp_path / "_hidden.parquet").write_text("not data either")
    with pytest.raises(UsageError, match="is a directory without .parquet files"):
        check_input(tmp_path)


def test_iter_batches_jsonl_chunks(tmp_path):
    path = tmp_path / "d.jsonl"
    write(pd.DataFrame({"text": [f"t{i}" for i in range(10)], "label": range(10)}), path)
    batches = list(iter_batches(path, ["text"], batch_rows=4))
    assert [b.num_rows for b in batches] == [4, 4, 2]
    assert [t for b in batches for t in b.column("text").to_pylist()] == [f"t{i}" for i in range(10)]


def test_jsonl_with_a_byte_order_mark_is_read_as_csv_is(tmp_path):
    # Windows tools write UTF-8 with a BOM: line 1 was "not valid JSON".
    path = tmp_path / "bom.jsonl"
    path.write_text('{"text": "Good.", "label": "pos"}\n{"text": "Bad.", "label": "neg"}\n', encoding="utf-8-sig")
    assert column_names(path) == ["text", "label"]
    assert read_table(path, ["text", "label"]).to_pylist() == [
        {"text": "Good.", "label": "pos"}, {"text": "Bad.", "label": "neg"}]


def test_a_jsonl_files_columns_are_the_keys_of_its_objects_not_of_its_first(tmp_path):
    # Spark writes no null fields: a first row without a text made the file one "without a
    # text column", and one without a label a file "without a label column".
    path = tmp_path / "spark.jsonl"
    records = [{"id": "a"}, {"id": "b", "text": "Good.", "label": "pos"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert column_names(path) == ["id", "text", "label"]
    require_columns(path, {"--text-column": "text", "--label-column": "label"})
    assert read_table(path, ["id", "text"]).to_pylist() == [{"id": "a", "text": None}, {"id": "b", "text": "Good."}]


def test_a_jsonl_key_seen_only_past_the_first_objects_is_found_before_an_error(tmp_path):
    path = tmp_path / "late.jsonl"
    records = [{"text": f"t{i}"} for i in range(JSONL_HEADER_RECORDS)] + [{"text": "last", "note": "x"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    assert column_names(path) == ["text"]  # the header's share only
    require_columns(path, {"--id-column": "note"})  # yet the whole file is looked at before a refusal
    with pytest.raises(UsageError, match=r"no column 'label' \(columns: text, note\)"):
        require_columns(path, {"--label-column": "label"})


def test_header_only_is_an_error(tmp_path):
    path = tmp_path / "empty.csv"
    path.write_text("text,label\n")
    with pytest.raises(UsageError, match="has columns but no rows"):
        read_table(path, ["text", "label"])


@pytest.mark.parametrize("suffix, content, separator", [
    (".csv", "id;text;label\n1;Great food, nice staff;pos\n", "';'"),
    (".csv", "id\ttext\tlabel\n1\tGreat food\tpos\n", "tabs"),
    (".tsv", "id,text,label\n1,Great food,pos\n", "','"),
])
def test_a_file_separated_otherwise_is_named_so(tmp_path, suffix, content, separator):
    # A semicolon CSV (Excel in much of Europe) failed with "Expected 1 columns, got 2" or
    # "no column 'text' (columns: id;text;label)", saying nothing of the separator.
    path = tmp_path / f"data{suffix}"
    path.write_text(content)
    with pytest.raises(UsageError) as err:
        require_columns(path, {"--text-column": "text"})
    assert str(err.value).startswith(f"{path}: its header is one column of names separated by {separator}")


def test_a_one_column_file_may_have_a_separator_in_its_name(tmp_path):
    path = tmp_path / "one.tsv"
    path.write_text('"comment, translated"\nThe food was great.\n')
    require_columns(path, {"--text-column": "comment, translated"})
    assert read_table(path, ["comment, translated"]).column(0).to_pylist() == ["The food was great."]


def test_check_input_errors(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    (tmp_path / "data.xlsx").write_text("x")
    cases = {
        tmp_path / "missing.csv": "no such file",
        tmp_path: "is a directory",
        tmp_path / "empty.csv": "file is empty",
        tmp_path / "data.xlsx": "unknown file type '.xlsx'",
    }
    for path, message in cases.items():
        with pytest.raises(UsageError, match=message) as err:
            check_input(path)
        assert str(path) in str(err.value)


def test_require_columns_names_the_missing_column(tmp_path):
    path = tmp_path / "d.csv"
    write(FRAME, path)
    require_columns(path, {"--text-column": "text", "--id-column": None})
    with pytest.raises(UsageError, match="no column 'review'.*--text-column"):
        require_columns(path, {"--text-column": "review"})
    with pytest.raises(UsageError, match="no column 'title'.*--text-column"):
        require_columns(path, {"--text-column": ["text", "title"]})


def test_several_text_columns_join_row_by_row():
    table = pa.table({
        "title": ["Great", None, None, "", "Meh"],
        "text": ["Loved it.", "No title.", None, "   ", None],
    })
    assert text_values("t", ["title", "text"], table) == [
        "Great\n\nLoved it.", "No title.", None, "   ", "Meh",  # rows stay aligned
    ]
    assert text_values("t", "title", table) == table.column("title").to_pylist()  # one: as is
    with pytest.raises(UsageError, match="t: column 'n' holds int64, not text"):
        text_values("t", ["text", "n"], table.append_column("n", pa.array(range(5))))


def test_check_output(tmp_path):
    existing = tmp_path / "out.csv"
    existing.write_text("old")
    with pytest.raises(UsageError, match="already exists; pass --force"):
        check_output(existing, force=False)
    check_output(existing, force=True)
    check_output(tmp_path / "new.csv", force=False)
    check_output(tmp_path / "no_dir" / "sub" / "out.csv", force=True)  # atomic_output makes them
    with pytest.raises(UsageError, match=f"out.csv: {existing} is not a directory"):
        check_output(existing / "sub" / "out.csv", force=True)


def test_check_output_replaces_only_the_same_kind(tmp_path, monkeypatch):
    (tmp_path / "file").write_text("old")
    (tmp_path / "dir").mkdir()
    check_output(tmp_path / "file", force=True)
    check_output(tmp_path / "dir", force=True, directory=True)
    with pytest.raises(UsageError, match="dir: is a directory; name a file"):
        check_output(tmp_path / "dir", force=True)
    with pytest.raises(UsageError, match="file: is a file; name a directory"):
        check_output(tmp_path / "file", force=True, directory=True)
    monkeypatch.chdir(tmp_path / "dir")
    for inside in (Path("."), tmp_path / "dir", tmp_path):  # never the directory we stand in
        with pytest.raises(UsageError, match="holds the current directory"):
            check_output(inside, force=True, directory=True)


def test_atomic_output_failure_leaves_old_file(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(RuntimeError), atomic_output(path, force=True) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert path.read_text() == "old"
    assert list(tmp_path.iterdir()) == [path]  # no temporary left behind


def test_atomic_output_failure_leaves_nothing_new(tmp_path):
    path = tmp_path / "out.csv"
    with pytest.raises(RuntimeError), atomic_output(path, force=False) as tmp:
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []


def test_atomic_output_replaces_file_with_force(tmp_path):
    path = tmp_path / "out.csv"
    path.write_text("old")
    with pytest.raises(UsageError), atomic_output(path, force=False):
        pass
    with atomic_output(path, force=True) as tmp:
        assert tmp.parent.parent == tmp_path and tmp != path
        tmp.write_text("new")
        assert path.read_text() == "old"  # not yet replaced inside the block
    assert path.read_text() == "new"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_output_directory(tmp_path):
    path = tmp_path / "model"
    with atomic_output(path, force=False, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("v1")
    assert (path / "weights.bin").read_text() == "v1"
    # replacing a directory: the old contents are gone, not merged
    with atomic_output(path, force=True, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "other.bin").write_text("v2")
    assert sorted(p.name for p in path.iterdir()) == ["other.bin"]
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_output_directory_failure_keeps_old(tmp_path):
    path = tmp_path / "model"
    path.mkdir()
    (path / "weights.bin").write_text("v1")
    with pytest.raises(RuntimeError), atomic_output(path, force=True, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("half")
        raise RuntimeError("boom")
    assert (path / "weights.bin").read_text() == "v1"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_output_directory_keeps_the_old_one_when_the_new_cannot_be_moved_in(tmp_path, monkeypatch):
    # The old directory is moved aside first; when moving the new one in then failed, the old
    # one was deleted with the temporary folder: neither model was left.
    path = tmp_path / "model"
    path.mkdir()
    (path / "weights.bin").write_text("v1")
    rename = Path.rename

    def failing_for_the_new(self, target):
        if self.name == "model" and self.parent != tmp_path:
            raise OSError(39, "Directory not empty")
        return rename(self, target)

    monkeypatch.setattr(Path, "rename", failing_for_the_new)
    with pytest.raises(OSError), atomic_output(path, force=True, directory=True) as tmp:
        tmp.mkdir()
        (tmp / "weights.bin").write_text("v2")
    assert (path / "weights.bin").read_text() == "v1"
    assert list(tmp_path.iterdir()) == [path]


def test_atomic_output_makes_missing_folders_and_removes_them_if_it_fails(tmp_path):
    (tmp_path / "out").mkdir()
    path = tmp_path / "out" / "2026-11-27" / "a" / "p.csv"
    with pytest.raises(RuntimeError), atomic_output(path, force=False) as tmp:
        assert path.parent.is_dir()
        tmp.write_text("partial")
        raise RuntimeError("boom")
    assert list(tmp_path.rglob("*")) == [tmp_path / "out"]  # as it was
    with atomic_output(path, force=False) as tmp:
        tmp.write_text("done")
    assert path.read_text() == "done"
    assert sorted(p.name for p in path.parent.iterdir()) == ["p.csv"]


def test_a_folder_another_job_made_meanwhile_is_left_to_it(tmp_path, monkeypatch):
    # Jobs writing one day's partition start together: the folder made by another job between
    # this one's look and its mkdir is not this job's to make, nor to remove.
    day = tmp_path / "2026-11-27"
    make = Path.mkdir

    def another_job_first(self, *args, **kwargs):
        make(self, *args, **kwargs)
        raise FileExistsError(self)

    monkeypatch.setattr(Path, "mkdir", another_job_first)
    with pytest.raises(RuntimeError), created_parents(day / "a" / "p.csv"):
        raise RuntimeError("boom")
    assert list(tmp_path.rglob("*")) == [day, day / "a"]


# A command writing `argv[1]` that prints its temporary directory, then waits to be killed.
WRITER = """
import sys, time
from pathlib import Path
from hanclf.io import atomic_output
with atomic_output(Path(sys.argv[1]), force=False) as tmp:
    tmp.write_bytes(b"partial")
    print(tmp.parent, flush=True)
    time.sleep(120)
"""


@pytest.mark.skipif(sys.platform == "win32", reason="flock")
def test_temporaries_of_killed_commands_are_removed_not_those_of_live_ones(tmp_path):
    path = tmp_path / "p.parquet"
    command = [sys.executable, "-c", WRITER, str(path)]
    writers = [subprocess.Popen(command, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    try:
        killed, live = (Path(writer.stdout.readline().strip()) for writer in writers)
        writers[0].kill()  # SIGKILL: no clean-up ran
        writers[0].wait()
        other = tmp_path / ".q.parquet.abc.tmp"  # another output's, abandoned too
        other.mkdir()
        (other / LOCK_NAME).touch()
        assert (killed / "p.parquet").read_bytes() == b"partial"
        with atomic_output(path, force=False) as tmp:
            assert not killed.exists()
            assert (live / "p.parquet").read_bytes() == b"partial"  # still being written
            tmp.write_text("new")
        assert path.read_text() == "new"
        left = sorted(p.name for p in tmp_path.iterdir())
        assert left == sorted([live.name, other.name, "p.parquet"])
    finally:
        for writer in writers:
            writer.kill()
            writer.wait()


@pytest.mark.parametrize("error", [
    pa.ArrowException("Unknown error: Failed to launch worker thread: "
                      "Resource temporarily unavailable"),
    OSError(errno.EAGAIN, "Resource temporarily unavailable"),
    pa.ArrowMemoryError("Out of memory: malloc of size 67108864 failed"),
    MemoryError("std::bad_alloc"),
])
def test_running_out_of_threads_or_memory_is_not_blamed_on_the_file(tmp_path, error):
    # Seen under `ulimit -v`: "mid.parquet: cannot read as parquet (...); check that it is a
    # valid parquet file", for a file that was fine.
    path = tmp_path / "mid.parquet"
    found = _unreadable(path, "parquet", error)
    assert type(found) is HanclfError and found.exit_code == 1
    assert str(found) == (
        f"could not start a thread or allocate memory while reading {path} ({str(error)}): the "
        "process's memory or thread limit is too low; raise it, or run fewer processes "
        "(predict --devices)"
    )
    bad = _unreadable(path, "parquet", pa.ArrowInvalid("Parquet magic bytes not found in footer"))
    assert str(bad).endswith("check that it is a valid parquet file")
    # A parse error quoting a row of log text is the file's.
    logs = tmp_path / "logs.csv"
    logs.write_text('text,label\n"kernel: Out of memory: Killed process 1234",neg,extra\n')
    quoted = _unreadable(logs, "csv", pa.ArrowInvalid('CSV parse error: Expected 2 columns, got 3: "kernel: Out of memory: Killed process 1234",neg,extra'))
    assert str(quoted).endswith("check that it is a valid csv file")


def test_an_output_under_a_broken_link_is_refused_in_one_line(tmp_path):
    # A volume not mounted: the link's folder "did not exist", so it was made... through the
    # link, which failed with a traceback.
    (tmp_path / "volume").symlink_to(tmp_path / "not_mounted")
    with pytest.raises(UsageError, match=r"volume is not a directory$"):
        check_output(tmp_path / "volume" / "day" / "p.parquet", force=False)


def test_iter_batches_csv_honours_batch_rows(tmp_path):
    path = tmp_path / "many.csv"
    pd.DataFrame({"text": [f"t{i}" for i in range(20_000)], "label": 1}).to_csv(path, index=False)
    batches = list(iter_batches(path, ["text"], batch_rows=4096))
    assert sum(b.num_rows for b in batches) == 20_000
    assert max(b.num_rows for b in batches) <= 4096


def test_jsonl_types_may_change_between_chunks(tmp_path):
    n = 70_000  # more than read_table's 65,536-row chunks
    path = tmp_path / "big.jsonl"
    labels = [None if i == 69_000 else i % 3 for i in range(n)]
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": x}) + "\n"
                            for i, x in enumerate(labels)))
    table = read_table(path, ["text", "label"])
    assert table.num_rows == n
    got = [normalize_label(v) for v in table.column("label").to_pylist()]
    assert got == [normalize_label(x) for x in labels]


@pytest.mark.parametrize("directory", [False, True])
def test_an_output_another_job_wrote_meanwhile_is_not_replaced_without_force(tmp_path, directory):
    # Both jobs passed check_output at their start; the second to finish replaced the first's.
    path = tmp_path / ("model" if directory else "pred.parquet")
    with pytest.raises(UsageError, match="written by another job while this one ran"):
        with atomic_output(path, force=False, directory=directory) as tmp:
            if directory:
                tmp.mkdir()
                (tmp / "weights").write_text("ours")
                path.mkdir()
                (path / "weights").write_text("theirs")
            else:
                tmp.write_text("ours")
                path.write_text("theirs")
    kept = path / "weights" if directory else path
    assert kept.read_text() == "theirs"
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]  # no temporary left
    with atomic_output(path, force=True, directory=directory) as tmp:  # --force: last one wins
        if directory:
            tmp.mkdir()
            (tmp / "weights").write_text("ours")
        else:
            tmp.write_text("ours")
    assert kept.read_text() == "ours"


def test_a_parquet_folder_reads_the_columns_of_all_its_files(tmp_path):
    # pandas writes an empty partition's text columns as type null; pyarrow took the first
    # file's schema, so such a file sorting first made the folder unreadable.
    folder = tmp_path / "daily"
    folder.mkdir()
    pd.DataFrame({"id": pd.Series([], dtype=object), "text": pd.Series([], dtype=object)}).to_parquet(folder / "part-0.parquet")
    pd.DataFrame({"id": ["a", "b"], "text": ["Great food.", "Awful."], "extra": [1, 2]}).to_parquet(folder / "part-1.parquet")
    assert column_names(folder) == ["id", "text", "extra"]
    rows = [row for b in iter_batches(folder, ["id", "text", "extra"], 100) for row in b.to_pylist()]
    assert rows == [{"id": "a", "text": "Great food.", "extra": 1}, {"id": "b", "text": "Awful.", "extra": 2}]
    pd.DataFrame({"id": [7], "text": ["Fine."]}).to_parquet(folder / "part-2.parquet")  # ids as numbers
    with pytest.raises(UsageError, match="part-2.parquet: its column types do not agree"):
        column_names(folder)


def test_a_parquet_file_without_rows_has_no_say_in_a_folders_types(tmp_path):
    # pandas 3 types an empty frame's columns float64: beside text in the other files, the
    # folder was "part-1.parquet: its column types do not agree" (the file with the data named).
    folder = tmp_path / "daily"
    folder.mkdir()
    pd.DataFrame({"id": pd.Series([], dtype="float64"), "text": pd.Series([], dtype="float64"),
                  "only_here": pd.Series([], dtype="float64")}).to_parquet(folder / "part-0.parquet")
    pd.DataFrame({"id": ["a", "b"], "text": ["Great food.", "Awful."]}).to_parquet(folder / "part-1.parquet")
    assert column_names(folder) == ["id", "text", "only_here"]
    rows = [row for b in iter_batches(folder, ["id", "text", "only_here"], 100) for row in b.to_pylist()]
    assert rows == [{"id": "a", "text": "Great food.", "only_here": None},
                    {"id": "b", "text": "Awful.", "only_here": None}]


def test_a_hive_table_folder_reads_its_extensionless_data_files(tmp_path):
    # Hive names its files 000000_0: beside *.parquet ones they were skipped without a word.
    frame = pd.DataFrame({"text": [f"t{i}" for i in range(6)], "label": ["pos", "neg"] * 3})
    frame.iloc[:2].to_parquet(tmp_path / "000000_0")
    frame.iloc[2:4].to_parquet(tmp_path / "000001_0")
    frame.iloc[4:].to_parquet(tmp_path / "000002_0.parquet")
    (tmp_path / "README").write_text("not data: no Parquet magic")
    assert read_table(tmp_path, ["text"]).column("text").to_pylist() == [f"t{i}" for i in range(6)]


@pytest.mark.parametrize("term, shown", [("xterm-256color", True), ("dumb", False)])
def test_a_progress_bar_shows_on_terminals_that_redraw_lines(monkeypatch, term, shown):
    # On TERM=dumb rich draws no bar, and a command that chose the bar printed no progress at all.
    # stderr's isatty() says terminal or not (TTY_COMPATIBLE, which would too, is rich>=14 only).
    for forcing in ("TTY_COMPATIBLE", "FORCE_COLOR"):
        monkeypatch.delenv(forcing, raising=False)
    monkeypatch.setenv("TERM", term)
    monkeypatch.setattr(sys, "stderr", _Stream(tty=True))  # as a terminal would be
    assert bar_on_stderr() is shown
    monkeypatch.setattr(sys, "stderr", _Stream(tty=False))  # a file or a pipe
    assert bar_on_stderr() is False
    monkeypatch.setenv("FORCE_COLOR", "1")  # colours in a CI log: still no bar there
    assert bar_on_stderr() is False


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self) -> bool:
        return self.tty


def test_a_text_column_of_utf8_bytes_is_read_as_text(tmp_path):
    # Hive and Impala write strings as Parquet's plain binary: "holds binary, not text; choose
    # the text column with --text-column", of the text column itself.
    table = pa.table({"text": pa.array([b"Caf\xc3\xa9 cr\xc3\xa8me.", None], pa.binary())})
    assert text_values(tmp_path / "t.parquet", "text", table) == ["Café crème.", None]
    table = pa.table({"text": pa.array([b"Good.", b"Caf\xe9"], pa.large_binary())})
    with pytest.raises(UsageError, match="column 'text' holds bytes that are not UTF-8 text"):
        text_values(tmp_path / "t.parquet", "text", table)


def test_a_file_that_cannot_be_opened_is_no_utf16_file(tmp_path):
    # Sniffing the byte order mark inside the error handler raised its own PermissionError.
    assert not utf16_or_32(tmp_path)  # a directory: open() fails
    (tmp_path / "u16.csv").write_bytes("text\n".encode("utf-16"))
    assert utf16_or_32(tmp_path / "u16.csv")


def test_half_a_character_in_a_jsonl_field_not_read_is_left_alone(tmp_path):
    # A lone surrogate escape (a text cut mid-emoji) is refused in the columns read, with its
    # line; in a field, key or nested list that is not read it refused the whole file.
    path = tmp_path / "notes.jsonl"
    path.write_text('{"text": "Fine.", "note": "cut \\ud83d"}\n'
                    '{"text": "Good \\ud83d\\ude00", "tags": ["a", ["b\\ud83d"]], "k\\udc00": 1}\n')
    rows = [row for batch in iter_batches(path, ["text"], 10) for row in batch.column("text").to_pylist()]
    assert rows == ["Fine.", "Good \U0001f600"]
    assert "note" in column_names(path)
    with pytest.raises(UsageError, match="line 1 holds half of a character"):
        list(iter_batches(path, ["text", "note"], 10))


def test_jsonl_booleans_read_alike_in_every_batch(tmp_path, monkeypatch):
    # A batch holding one non-boolean label read its booleans as JSON's "true", a batch of
    # booleans alone as "True": one file's rows were two labels each, and accuracy was wrong.
    import hanclf.io as io

    path = tmp_path / "b.jsonl"
    labels = [True, False, True, "unsure", False, True]
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": v}) + "\n" for i, v in enumerate(labels)))
    read = [v for b in iter_batches(path, ["label"], 3) for v in b.column("label").to_pylist()]
    assert [normalize_label(v) for v in read] == ["True", "False", "True", "unsure", "False", "True"]
    # Training reads the file's batches into one table: a boolean batch cast to text said "true".
    monkeypatch.setattr(io, "iter_batches", lambda p, c, batch_rows: iter_batches(p, c, 3))
    table = read_table(path, ["label"])
    assert [normalize_label(v) for v in table.column("label").to_pylist()] == ["True", "False", "True", "unsure", "False", "True"]


def test_jsonl_label_lists_in_one_batch_and_strings_in_another_are_read(tmp_path, monkeypatch):
    # Arrow cannot cast a list to text: joining such batches for training was a traceback.
    import hanclf.io as io

    path = tmp_path / "m.jsonl"
    labels = [["a", "b"], ["a"], ["b"], "a,b", "a", "b"]
    path.write_text("".join(json.dumps({"text": "t", "label": v}) + "\n" for v in labels))
    monkeypatch.setattr(io, "iter_batches", lambda p, c, batch_rows: iter_batches(p, c, 3))
    read = read_table(path, ["label"]).column("label").to_pylist()
    assert normalize_labels(read, multi_label=True, separator=",") == [
        ["a", "b"], ["a"], ["b"], ["a", "b"], ["a"], ["b"]]


def test_a_column_both_in_the_files_and_a_key_value_folder(tmp_path):
    # Of one type (Polars keeps the key in its files), the folder reads as before.
    for lang in ("en", "fr"):
        (tmp_path / "a" / f"lang={lang}").mkdir(parents=True)
        pq.write_table(pa.table({"text": ["Great food."], "lang": [lang]}), tmp_path / "a" / f"lang={lang}" / "part-0.parquet")
    assert read_table(tmp_path / "a", ["text", "lang"]).column("lang").to_pylist() == ["en", "fr"]
    # Of two (int32 from the folder's name, int64 in the file), it was "cannot read as parquet
    # (Unable to merge ...); check that it is a valid parquet file".
    (tmp_path / "b" / "year=2023").mkdir(parents=True)
    pq.write_table(pa.table({"text": ["Great food."], "year": [2023]}), tmp_path / "b" / "year=2023" / "part-0.parquet")
    with pytest.raises(UsageError, match="part-0.parquet: column 'year' is both inside the file and a key=value folder"):
        column_names(tmp_path / "b")


def test_a_list_column_of_bytes_that_are_not_utf8_is_named(tmp_path):
    # Multi-label labels as lists: finding the value to quote was a cast traceback.
    from hanclf.io import column_values

    latin1 = pa.array([b"food", "caf\xe9".encode("latin-1")], pa.binary()).view(pa.string())
    table = pa.table({"labels": pa.ListArray.from_arrays(pa.array([0, 1, 2]), latin1)})
    with pytest.raises(UsageError, match="x.parquet: column 'labels' holds bytes that are not UTF-8 text, first in \"caf"):
        column_values(tmp_path / "x.parquet", table, "labels")
