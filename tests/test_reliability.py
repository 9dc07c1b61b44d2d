"""Reliability: Ctrl-C mid-run, large and odd inputs, a 5 MB document, mixed label types, and
the same predictions whatever the input format.

Every test checks values in the files written, not only that a command ran. Inputs are made
here (seeded); the model is conftest's tiny one unless a test trains its own (1 epoch, tiny).
"""

from __future__ import annotations

import concurrent.futures.process
import json
import multiprocessing
import os
import random
import signal
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor, wait
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml
from typer.testing import CliRunner

from hanclf.cli.main import app
from hanclf.predict import ROW_GROUP_ROWS, Predictor
from hanclf.worker_pool import _stop_workers
from hanclf.tokenize import tokenize

pytestmark = pytest.mark.slow  # ~60 s in all on 2 CPU cores (a few predicts of 10^5 rows)

WORDS = (
    "the food was wonderful awful great slow we went there on a sunday parking easy menu "
    "service friendly table waited soup dessert price fair staff loud quiet"
).split()
TINY = [  # a 1-epoch model in a second or two
    "--set", "model.embed_dim=8", "--set", "model.word_hidden=4", "--set", "model.sent_hidden=4",
    "--set", "model.word_att_dim=4", "--set", "model.sent_att_dim=4", "--set", "data.min_count=1",
    "--max-epochs", "1", "--accelerator", "cpu", "--seed", "0",
]


def cli(*args: str | Path) -> str:
    """Run a command in-process; it must succeed. Returns stderr (where hanclf reports)."""
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, (result.output, result.exception)
    return result.stderr


def short_texts(n: int, seed: int, words: int = 10) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=words)) for _ in range(n)]


def huge_text(chars: int, seed: int, words_per_sentence: int = 12) -> str:
    """`chars` characters of sentences of `words_per_sentence` words each."""
    rng = random.Random(seed)
    parts, size = [], 0
    while size < chars:
        sentence = " ".join(rng.choices(WORDS, k=words_per_sentence)).capitalize() + ". "
        parts.append(sentence)
        size += len(sentence)
    return "".join(parts)


def leftovers(directory: Path, name: str) -> list[str]:
    """Temporary entries atomic_output makes beside `name` (`.NAME.*.tmp`)."""
    return sorted(p.name for p in directory.iterdir() if p.name.startswith(f".{name}."))


# --- 1. Ctrl-C ---------------------------------------------------------------------------------


@pytest.mark.parametrize("stop, code, said", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_stop_before_a_commands_work_begins_is_reported(stop, code, said):
    # Before _run takes over (a command importing torch), Typer took the signal for Ctrl-C and
    # exited 130 without a word. A command that is signalled as it starts stands in for that.
    script = ("import os, signal, sys\n"
              "from hanclf.cli import main as cli\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal\n"
              f"cli.app.command('starting')(lambda: os.kill(os.getpid(), {int(stop)}))\n"
              "sys.argv = ['hanclf', 'starting']\n"
              "cli.main()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (code, f"{said}: no output was written\n")
    if stop == signal.SIGTERM:
        # After its work (its last line, say), outputs may be in place: no claim that none is.
        after = script.replace("lambda: os.kill(", "lambda: cli._run(lambda: None) or os.kill(")
        proc = subprocess.run([sys.executable, "-c", after], capture_output=True, text=True, timeout=120)
        assert (proc.returncode, proc.stderr) == (code, f"{said}\n")


@pytest.mark.parametrize("stop, code, said", [(signal.SIGINT, 130, "interrupted"),
                                              (signal.SIGTERM, 143, "terminated (SIGTERM)")])
def test_a_stop_while_a_command_imports_stops_it_though_an_import_swallowed_it(tmp_path, stop, code, said):
    # torch's C import of numpy swallows any exception, the KeyboardInterrupt of a stop included:
    # `train` stopped as it imported ran on to its end, exit 0 (or, with numpy left half-imported,
    # failed with a traceback, exit 1). An import that swallows it stands in for that.
    out = tmp_path / "out.txt"
    script = ("import os, signal, sys\n"
              "from hanclf.cli import main as cli\n"
              "signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal\n"
              "def starting():\n"
              "    try:\n"
              f"        os.kill(os.getpid(), {int(stop)})\n"
              "    except BaseException:\n"
              "        pass\n"
              f"    cli._run(lambda: open({str(out)!r}, 'w').write('done'))\n"
              "cli.app.command('starting')(starting)\n"
              "sys.argv = ['hanclf', 'starting']\n"
              "cli.main()\n")
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (proc.returncode, proc.stderr) == (code, f"{said}: no output was written\n")
    assert not out.exists()


def test_a_bugs_traceback_in_a_log_keeps_its_error_on_one_line():
    # rich's boxed traceback wrapped at 80 columns, cutting the error's line in two.
    code = ("import sys\n"
            "from hanclf.cli import main as cli\n"
            "def failing():\n    raise RuntimeError('a bug, described at length: ' + 'x' * 120)\n"
            "cli.app.command('failing')(failing)\n"
            "sys.argv = ['hanclf', 'failing']\n"
            "cli.main()\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert lines[0] == "Traceback (most recent call last):"
    assert lines[-1] == "RuntimeError: a bug, described at length: " + "x" * 120


# SIGTERM is what `timeout`, Airflow and Kubernetes send: the same clean-up as Ctrl-C.
@pytest.mark.parametrize("stop, code, said", [(signal.SIGINT, 130, "interrupted:"),
                                              (signal.SIGTERM, 143, "terminated (SIGTERM):")])
def test_ctrl_c_or_sigterm_during_predict_stops_cleanly_and_leaves_nothing(model_dir, tmp_path, stop, code, said):
    n = 400_000  # ~15 s of work at --batch-size 4096; interrupted after ~1/4 of it
    table = pa.table({"id": pa.array(range(n), pa.int64()), "text": short_texts(n, seed=1)})
    source = tmp_path / "big.parquet"
    pq.write_table(table, source)
    work = tmp_path / "work"
    work.mkdir()
    out = work / "out.parquet"
    proc = subprocess.Popen(
        [sys.executable, "-m", "hanclf", "predict", str(model_dir), str(source), "-o", str(out),
         "--batch-size", "4096"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        # A shell's background job may inherit SIGINT ignored; a user's terminal never does.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        env={**os.environ, "COLUMNS": "200"},
    )
    try:
        # Clearly working: the first row group (ROW_GROUP_ROWS rows) is in the temporary file.
        deadline = time.monotonic() + 50
        partial: list[Path] = []
        while not partial and time.monotonic() < deadline and proc.poll() is None:
            partial = [p for p in work.glob(".out.parquet.*.tmp/out.parquet") if p.stat().st_size > 0]
            time.sleep(0.05)
        assert partial, f"no partial output appeared within 50 s (exit {proc.poll()})"
        assert proc.poll() is None, "predict finished before it could be interrupted"
        proc.send_signal(stop)
        stdout, stderr = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == code, stderr
    lines = stderr.strip().splitlines()
    assert lines and lines[-1].startswith(said), stderr
    assert "Traceback" not in stderr and "KeyboardInterrupt" not in stderr, stderr
    assert "wrote" not in stderr and "--resume" not in stderr and stdout == ""
    assert not out.exists()
    assert leftovers(work, "out.parquet") == []
    assert list(work.iterdir()) == []


def test_stopped_workers_leave_no_pool_thread_for_pythons_exit_to_race(monkeypatch):
    # A SIGTERM to predict's process group kills the workers with the main process's stop. The
    # pool's manager thread, still running then, closed its wake-up pipe while Python's exit
    # wrote to it: now and then a 14-line "Exception ignored ... Bad file descriptor". The
    # thread is slowed here as a loaded machine slows it (it ended in time when idle).
    manager_class = concurrent.futures.process._ExecutorManagerThread
    end = manager_class.join_executor_internals
    monkeypatch.setattr(manager_class, "join_executor_internals", lambda self, *args: (time.sleep(0.5), end(self, *args)))
    pool = ProcessPoolExecutor(2, mp_context=multiprocessing.get_context("spawn"))
    started = [pool.submit(os.getpid) for _ in range(2)]
    wait(started)
    pool.submit(time.sleep, 60)
    manager = pool._executor_manager_thread
    for worker in list(pool._processes.values()):
        os.kill(worker.pid, signal.SIGTERM)
    _stop_workers(pool)
    assert not manager.is_alive()


def descendants(pid: int) -> set[int]:
    """Every process below `pid`, from /proc (Linux)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                parent = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children.setdefault(parent, []).append(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.add(child)
            todo.append(child)
    return found


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads /proc")
def test_workers_exit_when_their_main_process_is_killed_outright(model_dir, tmp_path):
    # SIGKILL or the OOM killer gives the main process no chance to stop its workers; they kept
    # waiting for tasks for ever (and kept the fork server alive).
    n = 60_000
    source = tmp_path / "in.parquet"
    pq.write_table(pa.table({"text": short_texts(n, seed=3)}), source)
    proc = subprocess.Popen([sys.executable, "-m", "hanclf", "predict", str(model_dir), str(source),
                             "-o", str(tmp_path / "out.parquet"), "--devices", "2"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    workers: set[int] = set()
    try:
        deadline = time.monotonic() + 60
        while len(workers) < 3 and time.monotonic() < deadline and proc.poll() is None:
            workers = descendants(proc.pid)  # the fork server, its 2 workers (and the tracker)
            time.sleep(0.1)
        assert len(workers) >= 3 and proc.poll() is None, (workers, proc.poll())
        time.sleep(1.0)  # workers started and waiting or working
        proc.kill()
        proc.wait()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and any(Path(f"/proc/{p}").exists() for p in workers):
            time.sleep(0.2)
        alive = [p for p in workers if Path(f"/proc/{p}").exists()
                 and (Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z")]
        assert alive == [], f"still running 10 s after their main process was killed: {alive}"
    finally:
        proc.kill()
        for pid in workers:  # the old code's orphans, so that they outlive no test run
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


# --- 2. large and odd data ---------------------------------------------------------------------


def test_predict_200k_rows_with_nulls_blanks_and_two_5mb_rows(model_dir, tmp_path):
    n = 200_000
    rng = random.Random(2)
    texts: list[str | None] = list(short_texts(n, seed=2))
    blank = {"": [17, 8_191, 150_001], " ": [8_192], "  \t\n ": [99_999, 100_000],
             "\u00a0\u3000": [123_456]}  # no-break and ideographic spaces are whitespace too
    nulls = [0, 5, 100_001, n - 1, *range(40_960, 49_152)]  # one whole input batch of nulls
    huge = [77_777, 160_000]
    for value, rows in blank.items():
        for i in rows:
            texts[i] = value
    for i in nulls:
        texts[i] = None
    huge_texts = {i: huge_text(5_000_000, seed=i) for i in huge}
    for i, text in huge_texts.items():
        texts[i] = text
    empty_rows = {i for rows in blank.values() for i in rows} | set(nulls)
    ids = list(range(10 * n, 11 * n))
    rng.shuffle(ids)  # not sorted: the order check below means something
    source = tmp_path / "odd.parquet"
    pq.write_table(pa.table({"id": pa.array(ids, pa.int64()), "text": pa.array(texts, pa.string())}), source)
    assert pq.ParquetFile(source).metadata.num_rows == n

    out = tmp_path / "pred.parquet"
    cli("predict", model_dir, source, "-o", out, "--id-column", "id", "--batch-size", "4096", "--device", "cpu")

    meta = pq.ParquetFile(out).metadata
    assert meta.num_rows == n
    # Written as it goes: one row group per ROW_GROUP_ROWS rows, not one for the whole file.
    # Groups of ROW_GROUP_ROWS but the last (they were cut as batches fell: 100,352 + ...).
    sizes = [meta.row_group(g).num_rows for g in range(meta.num_row_groups)]
    assert sizes == [ROW_GROUP_ROWS] * (n // ROW_GROUP_ROWS) + ([n % ROW_GROUP_ROWS] if n % ROW_GROUP_ROWS else [])
    assert len(sizes) > 1
    pred = pq.read_table(out)
    assert pred.column_names == ["id", "pred_label", "pred_prob", "empty_text"]
    assert pred.schema.field("id").type == pa.int64()
    assert pred.column("id").to_pylist() == ids
    empty = np.asarray(pred.column("empty_text").to_pylist())
    assert set(np.flatnonzero(empty).tolist()) == empty_rows
    prob = pred.column("pred_prob").to_numpy()
    assert np.isfinite(prob).all() and (prob > 0).all() and (prob <= 1).all()
    assert pred.column("pred_prob").null_count == pred.column("pred_label").null_count == 0
    assert set(pred.column("pred_label").to_pylist()) <= {"mix", "neg", "pos"}

    predictor = Predictor(model_dir, device="cpu")
    # Empty documents get the model's prior: the same answer for every one of them.
    empty_probs = prob[sorted(empty_rows)]
    np.testing.assert_allclose(empty_probs, empty_probs[0], rtol=0, atol=1e-6)
    np.testing.assert_allclose(empty_probs[0], predictor.predict_proba([""]).max(), atol=1e-6)
    # A 5 MB row is read up to max_sentences: it scores as its first 20 KB does.
    for i, text in huge_texts.items():
        prefix = text[:20_000]
        assert len(tokenize(prefix)) > predictor.artifact.config.data.max_sentences
        assert prob[i] == pytest.approx(predictor.predict_proba([prefix]).max(), abs=1e-5)
    # And the ordinary rows score as the library scores them.
    sample = [i for i in range(0, n, 9_973) if i not in empty_rows and i not in huge_texts]
    expected = predictor.predict_proba([texts[i] for i in sample]).max(axis=1)
    np.testing.assert_allclose(prob[sample], expected, rtol=0, atol=1e-5)


# --- 3. a 5 MB document in train and explain --------------------------------------------------


def test_a_5mb_document_trains_and_is_explained_up_to_the_caps(data_dir, tmp_path):
    frame = pd.read_csv(data_dir / "train.csv").head(150)
    big = huge_text(5_000_000, seed=3, words_per_sentence=12)
    frame.loc[7, "text"] = big  # label stays; the text is 5 MB of 12-word sentences
    train_csv = tmp_path / "train.csv"
    frame.to_csv(train_csv, index=False)
    assert train_csv.stat().st_size > 5_000_000
    model = tmp_path / "model"
    # Caps below the big document's size in both directions: 5 sentences, 7 words each.
    cli("train", train_csv, "-o", model, *TINY, "--set", "data.max_sentences=5",
        "--set", "data.max_words=7")
    metrics = json.loads((model / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1
    config = yaml.safe_load((model / "config.yaml").read_text())
    cap_s, cap_w = config["data"]["max_sentences"], config["data"]["max_words"]
    assert (cap_s, cap_w) == (5, 7)

    out = tmp_path / "attention.csv"
    cli("explain", model, train_csv, "-o", out, "--id-column", "id", "--limit", "40")
    att = pd.read_csv(out, keep_default_na=False)
    counts = att.groupby("doc_id").size()
    assert len(counts) == 40
    assert counts.max() <= cap_s * cap_w
    big_id = frame.loc[7, "id"]
    doc = att[att["doc_id"] == big_id]
    assert len(doc) == cap_s * cap_w  # 5 sentences of 12 words, each cut to 7
    assert doc.groupby("sent_idx").size().tolist() == [cap_w] * cap_s
    first = big.split(". ")[0].split()
    assert doc[doc["sent_idx"] == 0]["token"].tolist() == first[:cap_w]
    # The attention of what was kept still sums to 1 per sentence and over sentences.
    np.testing.assert_allclose(doc.groupby("sent_idx")["word_att"].sum(), 1.0, atol=1e-4)
    np.testing.assert_allclose(doc.groupby("sent_idx")["sent_att"].first().sum(), 1.0, atol=1e-4)


# --- 4. label types ----------------------------------------------------------------------------


def labelled_rows(n: int, label_of: dict[str, object], seed: int) -> list[dict[str, object]]:
    """Documents whose first word decides the label, so 1 epoch is enough to learn something."""
    rng = random.Random(seed)
    cues = list(label_of)
    return [
        {"id": f"x{i}", "text": f"{cues[i % len(cues)]} " + " ".join(rng.choices(WORDS, k=8)) + ".",
         "label": label_of[cues[i % len(cues)]]}
        for i in range(n)
    ]


def test_mixed_int_and_string_labels_in_jsonl_are_text_labels(tmp_path):
    # Labels are compared as text (vocab.normalize_label): the int 1 and the string "pos" are
    # two labels "1" and "pos"; since not all are integers they sort and come back as strings.
    # Rows alternate, so every JSON Lines chunk the reader sees holds both types.
    rows = labelled_rows(200, {"good": 1, "bad": "pos"}, seed=4)
    data = tmp_path / "mixed.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    model = tmp_path / "model"
    cli("train", data, "-o", model, *TINY)
    assert json.loads((model / "labels.json").read_text())["labels"] == ["1", "pos"]
    out = tmp_path / "pred.parquet"
    cli("predict", model, data, "-o", out, "--id-column", "id")
    pred = pq.read_table(out)
    assert pred.schema.field("pred_label").type == pa.string()
    assert set(pred.column("pred_label").to_pylist()) <= {"1", "pos"}


def test_mixed_label_types_across_jsonl_read_chunks(tmp_path):
    # The reader takes JSON Lines in chunks of 65536 rows: ints only in the first chunk, strings
    # in the next, must still be the labels "1" and "pos" (not a crash merging int64 and string).
    rows = [{"text": "good food", "label": 1}] * 65_536 + [{"text": "bad food", "label": "pos"}] * 64
    data = tmp_path / "chunks.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    model = tmp_path / "model"
    result = CliRunner().invoke(app, ["train", str(data), "-o", str(model), *TINY,
                                      "--valid-fraction", "0.01"])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert result.exit_code == 0, result.stderr
    assert json.loads((model / "labels.json").read_text())["labels"] == ["1", "pos"]


def test_float_labels_1_0_and_2_0_in_parquet_are_integers(tmp_path):
    rows = labelled_rows(200, {"good": 1.0, "bad": 2.0}, seed=5)
    data = tmp_path / "floats.parquet"
    pq.write_table(pa.Table.from_pylist(rows), data)
    assert pq.read_schema(data).field("label").type == pa.float64()
    model = tmp_path / "model"
    cli("train", data, "-o", model, *TINY)
    assert json.loads((model / "labels.json").read_text())["labels"] == ["1", "2"]
    out = tmp_path / "pred.parquet"
    cli("predict", model, data, "-o", out, "--id-column", "id", "--top-k", "-1")
    pred = pq.read_table(out)
    assert pred.schema.field("pred_label").type == pa.int64()
    assert pred.schema.field("top_labels").type == pa.list_(pa.int64())
    assert set(pred.column("pred_label").to_pylist()) <= {1, 2}
    assert all(sorted(t) == [1, 2] for t in pred.column("top_labels").to_pylist())
    assert json.loads(pq.read_schema(out).metadata[b"hanclf"])["labels"] == ["1", "2"]


# --- 5. same predictions from every input format -----------------------------------------------


def test_csv_and_jsonl_inputs_predict_the_same_as_parquet(model_dir, tmp_path):
    n = 20_000  # more than one input batch (8192 rows) and one JSON Lines chunk
    texts: list[str | None] = list(short_texts(n, seed=6, words=14))
    odd = [
        None, "", "   ", "NaN", "null", "NA", "1e5", "12345", "true", "2020-01-01",
        'quoted "words", commas, and\na newline', "line one\r\nline two", "tab\tseparated",
        "Café crème, naïve façade — 東京 🍣 :)", "<br/>The food was wonderful!<br/>",
    ]
    for j, value in enumerate(odd):
        texts[j * 1_301] = value
    ids = [f"{i:07d}" for i in range(n)]  # leading zeros must survive every format
    frame = pd.DataFrame({"id": ids, "text": texts})
    parquet, csv, jsonl = tmp_path / "in.parquet", tmp_path / "in.csv", tmp_path / "in.jsonl"
    pq.write_table(pa.table({"id": pa.array(ids, pa.string()), "text": pa.array(texts, pa.string())}), parquet)
    frame.to_csv(csv, index=False)
    jsonl.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in zip(ids, texts)),
                     encoding="utf-8")

    preds = {}
    for source in (parquet, csv, jsonl):
        out = tmp_path / f"pred_{source.suffix[1:]}.parquet"
        cli("predict", model_dir, source, "-o", out, "--id-column", "id", "--top-k", "2",
            "--batch-size", "1024")
        preds[source.suffix] = pq.read_table(out).to_pydict()
    base = preds[".parquet"]
    assert base["id"] == ids
    assert sum(base["empty_text"]) == 3  # None, "", "   " (CSV reads the null as "")
    for fmt in (".csv", ".jsonl"):
        other = preds[fmt]
        assert other.keys() == base.keys(), fmt
        assert other["id"] == ids, fmt
        assert other["empty_text"] == base["empty_text"], fmt
        assert other["pred_label"] == base["pred_label"], fmt
        assert other["top_labels"] == base["top_labels"], fmt
        np.testing.assert_allclose(other["pred_prob"], base["pred_prob"], rtol=0, atol=1e-6)
        np.testing.assert_allclose(np.array(other["top_probs"]), np.array(base["top_probs"]),
                                   rtol=0, atol=1e-6)


def test_jsonl_integer_ids_with_a_missing_one_are_copied_exactly(model_dir, tmp_path):
    # 64-bit ids (tweet/snowflake-like) are the join key: a null among them must not turn the
    # column into float64, which maps neighbouring ids to one value.
    ids: list[int | None] = [2**60 + i for i in range(50)]
    ids[10] = None
    data = tmp_path / "ids.jsonl"
    data.write_text("".join(json.dumps({"id": i, "text": f"the food was great {n}"}) + "\n"
                            for n, i in enumerate(ids)), encoding="utf-8")
    out = tmp_path / "pred.parquet"
    cli("predict", model_dir, data, "-o", out, "--id-column", "id")
    pred = pq.read_table(out)
    assert pred.schema.field("id").type == pa.int64()
    assert pred.column("id").to_pylist() == ids
