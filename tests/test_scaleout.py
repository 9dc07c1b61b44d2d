"""Scoring outside one process: the framework-free Predictor, `predict --devices N` (worker
processes, each on slices of the rows), and the Ray Data and Spark recipes of the README (run
when ray / pyspark and a JVM are installed, skipped with the reason otherwise)."""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from typer.testing import CliRunner

import hanclf.predict
import hanclf.predictor
import hanclf.worker_pool
import hanclf.workers
from hanclf.cli.main import app
from hanclf.data import Truncation
from hanclf.errors import UsageError
from hanclf.predict import Predictor, predict_file
from hanclf.worker_pool import worker_died, worker_processes
from hanclf.workers import likely_to_use_workers
from tests.conftest import words_past_the_caps

WORDS = "the food was wonderful awful great slow we went there on a sunday parking".split()


def invoke(*args: str | Path) -> str:
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exit_code == 0, result.output
    return result.output


def assert_same_predictions(a: pa.Table, b: pa.Table) -> None:
    """Equal prediction files but for the last bit of a probability: worker processes put other
    rows in a document's batch, and on some CPUs (an Intel Xeon here; not an AMD EPYC) the
    kernels round a row differently in batches of other sizes."""
    assert a.schema == b.schema and a.schema.metadata == b.schema.metadata
    for name in a.column_names:
        x, y = a.column(name).to_pylist(), b.column(name).to_pylist()
        if name in ("pred_prob", "top_probs"):
            np.testing.assert_allclose(np.array(x, float), np.array(y, float), rtol=0, atol=1e-6)
        else:
            assert x == y, name


@pytest.fixture(scope="module")
def reviews(tmp_path_factory) -> Path:
    """5,000 short reviews with string ids, in 7 row groups of unequal size."""
    rng = random.Random(0)
    texts = [" ".join(rng.choices(WORDS, k=9)) + ". " + " ".join(rng.choices(WORDS, k=6)) + "!"
             for _ in range(5_000)]
    texts[17], texts[4_999] = None, "   "
    path = tmp_path_factory.mktemp("scaleout") / "reviews.parquet"
    table = pa.table({"id": [f"r{i:05d}" for i in range(5_000)], "text": texts,
                      "stars": [i % 5 + 1 for i in range(5_000)]})
    with pq.ParquetWriter(path, table.schema) as writer:
        for start, stop in [(0, 100), (100, 1_900), (1_900, 2_000), (2_000, 3_000), (3_000, 3_001),
                            (3_001, 4_500), (4_500, 5_000)]:
            writer.write_table(table.slice(start, stop - start))
    return path


def test_predictor_on_arrow_and_pandas_matches_the_cli(model_dir, reviews, tmp_path):
    out = tmp_path / "cli.parquet"
    invoke("predict", model_dir, reviews, "-o", out, "--id-column", "id", "--keep-columns", "stars", "--device", "cpu")
    cli = pq.read_table(out)
    predictor = Predictor(model_dir, device="cpu")
    table = pq.read_table(reviews)
    arrow = predictor(table)
    assert arrow.column_names == ["id", "text", "stars", *predictor.output_schema().names]
    assert arrow.select(cli.column_names).equals(cli.replace_schema_metadata(None))
    batch = predictor(table.to_batches()[1])  # a RecordBatch is accepted too
    assert batch.column("pred_label").to_pylist() == cli.column("pred_label").to_pylist()[100:1_900]
    frame = predictor(table.slice(0, 300).to_pandas().set_index("id"))
    assert list(frame["pred_label"]) == cli.column("pred_label").to_pylist()[:300]
    assert frame.index.tolist() == cli.column("id").to_pylist()[:300]  # the caller's index kept
    assert frame["empty_text"].tolist() == [i == 17 for i in range(300)]
    with pytest.raises(TypeError, match="a list of texts"):
        predictor.predict_proba("one review, which is not a list of texts")
    with pytest.raises(UsageError, match="the batch has no column 'text'.*columns: id, body"):
        predictor(pd.DataFrame({"id": [1], "body": ["Nice."]}))
    for labelled in (arrow, frame):  # never two columns of one name
        with pytest.raises(UsageError, match="already has the column.s. pred_label, pred_prob, empty_text"):
            predictor(labelled)


def test_a_predictor_tokenizes_a_large_batch_a_slice_at_a_time(model_dir, reviews, monkeypatch):
    # A Ray batch or a Spark Arrow batch may hold 100,000s of texts: tokenized all at once, a
    # batch of 250,000 Yelp reviews took a worker's memory from 0.7 to 3.9 GiB.
    monkeypatch.setattr(hanclf.predictor, "PREDICT_CHUNK_ROWS", 700)
    tokenized: list[int] = []
    tokenize = hanclf.predictor.tokenize_texts
    monkeypatch.setattr(hanclf.predictor, "tokenize_texts",
                        lambda texts, *args: tokenized.append(len(texts)) or tokenize(texts, *args))
    predictor = Predictor(model_dir, device="cpu")
    table = pq.read_table(reviews)
    labelled = predictor(table, top_k=2)
    assert tokenized == [700] * 7 + [100]  # 5,000 texts, never more than 700 at once
    by_slice = pa.concat_tables(predictor(table.slice(i, 700), top_k=2) for i in range(0, 5_000, 700))
    assert labelled.equals(by_slice)
    tokenized.clear()
    probs = predictor.predict_proba(table.column("text"))
    assert tokenized == [700] * 7 + [100] and probs.shape == (5_000, len(predictor.labels))
    best = probs.max(axis=1)
    np.testing.assert_allclose(best, labelled.column("pred_prob").to_numpy(), rtol=0, atol=1e-6)
    assert labelled.column("empty_text").to_pylist() == [i in (17, 4_999) for i in range(5_000)]
    assert predictor.predict_proba([]).shape == (0, len(predictor.labels))
    assert predictor.predict_table([]).num_rows == 0


def test_a_batch_whose_text_column_is_not_text_is_told_what_to_do_without_a_cli_flag(model_dir, tmp_path):
    # In Ray or Spark (a text column read as numbers) there is no --text-column to choose: the
    # Predictor reads the model's own column.
    predictor = Predictor(model_dir, device="cpu")
    with pytest.raises(UsageError) as error:
        predictor(pa.table({"id": [1, 2], "text": pa.array([5, 4], pa.int64())}))
    assert str(error.value) == (
        "the batch: column 'text' holds int64, not text; the model reads its text from this column: "
        "put the texts there as strings (None for a missing one), e.g. by casting or renaming a column")
    path = tmp_path / "numbers.parquet"  # a file, read by predict: the flag is the answer there
    pq.write_table(pa.table({"id": [1, 2], "text": pa.array([5, 4], pa.int64())}), path)
    with pytest.raises(UsageError, match=r"numbers.parquet: column 'text' holds int64, not text; "
                                         "choose the text column with --text-column$"):
        predict_file(model_dir, path, tmp_path / "p.parquet", device="cpu")


def test_predict_in_two_workers_equals_one_process(model_dir, reviews, tmp_path, monkeypatch):
    # Small tasks, so that more are sent than may be in flight and they finish out of order.
    monkeypatch.setattr(hanclf.worker_pool, "WORKER_ROWS", 700)
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    assert "processes" not in invoke("predict", model_dir, reviews, "-o", one, "--top-k", "2", "--devices", "1", "--device", "cpu")
    said = invoke("predict", model_dir, reviews, "-o", two, "--top-k", "2", "--devices", "2", "--device", "cpu")
    said = " ".join(said.split())  # the console wraps long lines at the terminal's width
    assert "5000 rows" in said and "2 worker processes" in said
    a, b = pq.read_table(one), pq.read_table(two)
    assert b.num_rows == 5_000 and b.column("row_id").to_pylist() == list(range(5_000))
    assert_same_predictions(a, b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["one.parquet", "two.parquet"]


def test_predict_workers_read_csv_too(model_dir, reviews, tmp_path):
    csv = tmp_path / "reviews.csv"
    pq.read_table(reviews).slice(0, 3_000).to_pandas().to_csv(csv, index=False)
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    invoke("predict", model_dir, csv, "-o", one, "--id-column", "id", "--devices", "1", "--device", "cpu")
    invoke("predict", model_dir, csv, "-o", two, "--id-column", "id", "--devices", "2", "--device", "cpu")
    a, b = pq.read_table(one), pq.read_table(two)
    assert b.column("id").to_pylist() == [f"r{i:05d}" for i in range(3_000)]
    assert_same_predictions(a, b)


# Run before predict_file by the script below: the pool then starts its second worker only
# after the first has died and the pool has begun to tear itself down (closed its pipes), a race
# that CPython loses now and then (it failed a CI run with "OSError: [Errno 9] Bad file
# descriptor" in place of hanclf's message).
LATE_SECOND_WORKER = (
    "import time\n"
    "from concurrent.futures import ProcessPoolExecutor\n"
    "spawn = ProcessPoolExecutor._spawn_process\n"
    "def late_spawn(pool):\n"
    "    if pool._processes:\n"
    "        time.sleep(2)\n"
    "    spawn(pool)\n"
    "ProcessPoolExecutor._spawn_process = late_spawn\n"
)


@pytest.mark.slow
@pytest.mark.parametrize("second_worker", ["as_usual", "late"])
def test_a_script_without_a_main_guard_gets_told_why_workers_died(model_dir, reviews, tmp_path, second_worker):
    # Workers import the calling script again; unguarded, it calls predict_file from inside a
    # worker, which refuses to start workers there, and the worker dies.
    out = tmp_path / "p.parquet"
    script = tmp_path / "label.py"
    script.write_text(
        (LATE_SECOND_WORKER if second_worker == "late" else "")
        + "from pathlib import Path\n"
        "from hanclf.predict import predict_file\n"
        f"predict_file(Path({str(model_dir)!r}), Path({str(reviews)!r}), Path({str(out)!r}), "
        "device='cpu', devices=2)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode != 0
    last_line = result.stderr.strip().splitlines()[-1]
    assert "HanclfError: a predict worker process died" in last_line
    assert 'if __name__ == "__main__":' in last_line
    assert not out.exists() and list(tmp_path.iterdir()) == [script]



@pytest.mark.slow
def test_a_script_read_from_stdin_runs_in_one_process_by_default(model_dir, reviews, tmp_path):
    # `python - < job.py` or a shell heredoc: workers could not import a main module named
    # '<stdin>', so the default stays in this process and asking for workers is refused.
    out = tmp_path / "p.parquet"
    script = (
        "from pathlib import Path\n"
        "from hanclf.errors import UsageError\n"
        "from hanclf.predict import predict_file\n"
        f"model, data, out = Path({str(model_dir)!r}), Path({str(reviews)!r}), Path({str(out)!r})\n"
        "print(predict_file(model, data, out, device='cpu', devices=None)['processes'])\n"
        "try:\n"
        "    predict_file(model, data, out, device='cpu', devices=2, force=True)\n"
        "except UsageError as e:\n"
        "    print(e)\n"
    )
    result = subprocess.run([sys.executable, "-"], input=script, capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    processes, refusal = result.stdout.strip().splitlines()
    assert processes == "1" and pq.read_table(out).num_rows == 5_000
    assert refusal.startswith("--devices 2: worker processes import the calling script")

@pytest.mark.slow
def test_a_worker_killed_mid_run_is_reported_and_leaves_no_output(model_dir, reviews, tmp_path):
    # As the kernel's OOM killer would: a worker is killed at its second task, rows already done.
    out = tmp_path / "p.parquet"
    script = tmp_path / "label.py"
    script.write_text(
        "import os, signal\n"
        "from pathlib import Path\n"
        "import hanclf.predict, hanclf.worker_pool\n"
        "label = hanclf.worker_pool._predict_texts\n"
        "tasks = 0\n"
        "def killed_at_second_task(*args, **kwargs):\n"
        "    global tasks\n"
        "    tasks += 1\n"
        "    if tasks == 2:\n"
        "        os.kill(os.getpid(), signal.SIGKILL)\n"
        "    return label(*args, **kwargs)\n"
        "hanclf.worker_pool._predict_texts = killed_at_second_task\n"
        "if __name__ == '__main__':\n"
        f"    hanclf.predict.predict_file(Path({str(model_dir)!r}), Path({str(reviews)!r}), "
        f"Path({str(out)!r}), device='cpu', devices=2)\n"
    )
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    assert result.returncode == 1
    # From a script: the missing guard first (the likelier cause there), then memory.
    assert result.stderr.strip().splitlines()[-1] == (
        "hanclf.errors.HanclfError: a predict worker process died (its own error, if any, is "
        'printed above): from a script, call predict_file under `if __name__ == "__main__":`; '
        "or out of memory? try fewer devices"
    )
    assert not out.exists() and list(tmp_path.iterdir()) == [script]


@pytest.mark.parametrize("main, argv0, causes", [
    (types.SimpleNamespace(__file__="job.py", __spec__=None), "job.py",
     'from a script, call predict_file under `if __name__ == "__main__":`; or out of memory? try fewer devices'),
    (types.SimpleNamespace(__spec__=None), "", "out of memory? try fewer devices"),  # a notebook, a REPL
    (types.SimpleNamespace(__file__="/venv/bin/hanclf", __spec__=None), "/venv/bin/hanclf",
     "out of memory? try fewer --devices"),
], ids=["script", "notebook", "cli"])
def test_a_workers_death_is_explained_for_where_it_ran(monkeypatch, main, argv0, causes):
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(sys, "argv", [argv0])
    assert str(worker_died()) == f"a predict worker process died (its own error, if any, is printed above): {causes}"


def test_more_workers_than_cores_are_noted(model_dir, reviews, tmp_path, monkeypatch):
    monkeypatch.setattr(hanclf.predict, "cores", lambda: 1)
    lines = []
    predict_file(model_dir, reviews, tmp_path / "p.parquet", device="cpu", devices=2, log=lines.append)
    assert lines == ["note: --devices 2 is more than the CPU cores this process may use (1): the workers "
                     "take turns on them, which is slower than one worker per core"]


def test_predict_uses_no_more_threads_than_the_containers_cpu_quota(model_dir, reviews, tmp_path, monkeypatch):
    # torch counts the machine's cores, not a pod's limits.cpu: on a 64-core node, 32 threads.
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(hanclf.workers, "cores", lambda: 1)
    threads = torch.get_num_threads()
    torch.set_num_threads(4)
    seen = []
    table = Predictor.predict_table
    monkeypatch.setattr(Predictor, "predict_table", lambda self, *a, **k: seen.append(torch.get_num_threads()) or table(self, *a, **k))
    try:
        predict_file(model_dir, reviews, tmp_path / "p.parquet", device="cpu", devices=1)
        assert seen and set(seen) == {1} and torch.get_num_threads() == 4  # the caller's again afterwards
        monkeypatch.setenv("OMP_NUM_THREADS", "4")  # the user's choice stands
        seen.clear()
        predict_file(model_dir, reviews, tmp_path / "p.parquet", device="cpu", devices=1, force=True)
        assert set(seen) == {4}
    finally:
        torch.set_num_threads(threads)


@pytest.mark.parametrize("version", ["v2", "v1"])
def test_a_containers_cpu_quota_and_memory_limit_bound_the_workers(tmp_path, version):
    # Kubernetes' limits: the machine's cores and free memory overstate them (workers were
    # OOM-killed in a 750 MiB container).
    if version == "v2":
        (tmp_path / "cpu.max").write_text("150000 100000\n")  # 1.5 CPUs
        (tmp_path / "memory.max").write_text(f"{1 << 30}\n")
        (tmp_path / "memory.current").write_text(f"{300 << 20}\n")
    else:
        (tmp_path / "cpu").mkdir(), (tmp_path / "memory").mkdir()
        (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("150000\n")
        (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
        (tmp_path / "memory" / "memory.limit_in_bytes").write_text(f"{1 << 30}\n")
        (tmp_path / "memory" / "memory.usage_in_bytes").write_text(f"{300 << 20}\n")
    assert hanclf.workers.cores(tmp_path) == min(2, hanclf.workers.cores(tmp_path / "none"))
    assert hanclf.workers.cgroup_memory_room(tmp_path) == (1 << 30) - (300 << 20)
    unlimited = tmp_path / "unlimited"
    unlimited.mkdir()
    (unlimited / "cpu.max").write_text("max 100000\n")
    (unlimited / "memory.max").write_text("max\n")
    (unlimited / "memory.current").write_text(f"{300 << 20}\n")
    assert hanclf.workers.cores(unlimited) == hanclf.workers.cores(tmp_path / "none")
    assert hanclf.workers.cgroup_memory_room(unlimited) >= 1 << 60


def test_default_worker_count_follows_cores_rows_and_memory(reviews, monkeypatch):
    cpu = torch.device("cpu")
    monkeypatch.setattr(hanclf.worker_pool, "cores", lambda: 8)
    monkeypatch.setattr(hanclf.worker_pool, "_available_memory", lambda: 64 << 30)
    monkeypatch.setattr(hanclf.worker_pool, "MIN_ROWS_PER_PROCESS", 1_000)
    assert worker_processes(None, cpu, reviews) == 5  # 5,000 rows: 5 processes of >= 1,000 rows
    monkeypatch.setattr(hanclf.worker_pool, "MIN_ROWS_PER_PROCESS", 100)
    assert worker_processes(None, cpu, reviews) == 8  # then one per core
    monkeypatch.setattr(hanclf.worker_pool, "_available_memory", lambda: 3 << 30)
    assert worker_processes(None, cpu, reviews) == 3  # then what memory allows
    monkeypatch.undo()
    monkeypatch.setattr(hanclf.worker_pool, "cores", lambda: 8)
    monkeypatch.setattr(hanclf.worker_pool, "MIN_ROWS_PER_PROCESS", 100)
    monkeypatch.setattr(hanclf.worker_pool, "cgroup_memory_room", lambda: 2 << 30)
    assert worker_processes(None, cpu, reviews) == 2  # a container's room, not the machine's
    monkeypatch.setattr(hanclf.worker_pool, "MIN_ROWS_PER_PROCESS", 10_000)
    assert worker_processes(None, cpu, reviews) == 1  # a small input stays in this process
    assert worker_processes(4, cpu, reviews) == 4  # --devices N is taken as given


def test_with_the_model_on_a_gpu_every_core_but_one_batches(reviews, monkeypatch):
    gpu = torch.device("cuda")
    monkeypatch.setattr(hanclf.worker_pool, "cores", lambda: 8)
    monkeypatch.setattr(hanclf.worker_pool, "_available_memory", lambda: 64 << 30)
    monkeypatch.setattr(hanclf.worker_pool, "MIN_ROWS_PER_PROCESS", 100)
    assert worker_processes(None, gpu, reviews) == 7  # this process runs the model
    assert worker_processes(12, gpu, reviews) == 12


def test_workers_that_only_batch_for_a_model_here_equal_one_process(model_dir, reviews, tmp_path, monkeypatch):
    """The GPU's way (workers tokenize and batch, this process runs the model), run on the CPU:
    each task's model work is queued before the task before it is turned into a table."""
    monkeypatch.setattr(hanclf.worker_pool, "WORKER_ROWS", 700)
    monkeypatch.setattr(hanclf.worker_pool, "_model_in_this_process", lambda device: True)
    steps: list[str] = []
    batches, queue_probs, table = Predictor.batches, Predictor._queue_probs, Predictor._table

    def spy(name, method):
        def called(self, *args, **kwargs):
            steps.append(name)
            return method(self, *args, **kwargs)
        return called

    monkeypatch.setattr(Predictor, "batches", spy("batch", batches))
    monkeypatch.setattr(Predictor, "_queue_probs", spy("queue", queue_probs))
    monkeypatch.setattr(Predictor, "_table", spy("table", table))
    one, two = tmp_path / "one.parquet", tmp_path / "two.parquet"
    predict_file(model_dir, reviews, one, top_k=2, device="cpu", devices=1)
    assert steps == ["batch", "queue", "table"]  # one process: one input batch of 5,000 rows
    steps.clear()
    predict_file(model_dir, reviews, two, top_k=2, device="cpu", devices=2)
    # 5,000 rows in 8 tasks of up to 700, batched by the workers (no "batch" here); task k + 1
    # is queued before task k's table is built.
    assert steps == ["queue"] + ["queue", "table"] * 7 + ["table"]
    assert_same_predictions(pq.read_table(one), pq.read_table(two))


def test_what_the_caps_cut_is_counted_alike_in_one_process_and_in_workers(capped_model_dir, reviews, tmp_path,
                                                                            monkeypatch):
    """Each worker counts what the caps cut of its own tasks' texts, whether it labels them or
    batches them for the model in this process; predict adds them up to what one process counts."""
    monkeypatch.setattr(hanclf.worker_pool, "WORKER_ROWS", 700)
    texts = pq.read_table(reviews).column("text").to_pylist()
    # Every review is a sentence of 10 tokens and one of 7, of which 4 and 4 are read; two
    # reviews have no text.
    expected = {"cut": 4_998, "words": 4_998 * 17, "unread_words": 4_998 * 9}
    assert tuple(expected.values()) == words_past_the_caps(texts, 3, 4)
    notes = []
    for devices, model_here in ((1, False), (2, False), (2, True)):
        monkeypatch.setattr(hanclf.worker_pool, "_model_in_this_process", lambda device, here=model_here: here)
        lines: list[str] = []
        result = predict_file(capped_model_dir, reviews, tmp_path / "p.parquet", device="cpu", devices=devices,
                              force=True, log=lines.append)
        assert result["processes"] == devices
        assert {name: result[name] for name in expected} == expected
        notes += [line for line in lines if line.startswith("note:")]
    assert len(notes) == 3 and len(set(notes)) == 1 and " 53% of the input's words " in notes[0]
    predictor = Predictor(capped_model_dir, device="cpu")  # as Ray's and Spark's recipes use it
    for start in range(0, 5_000, 2_000):
        predictor(pq.read_table(reviews).slice(start, 2_000))
    assert predictor.truncation == Truncation(5_000, *expected.values(), empty=2)


def test_the_cli_starts_the_fork_server_early_only_when_workers_are_likely(tmp_path, monkeypatch):
    # The guess must hold before torch is imported: file size and cores only.
    monkeypatch.setattr(hanclf.workers, "cores", lambda: 2)
    small, large = tmp_path / "small.csv", tmp_path / "large.csv"
    small.write_bytes(b"x" * 1_000)
    large.write_bytes(b"x" * hanclf.workers.LIKELY_WORKERS_BYTES)
    assert likely_to_use_workers(large, None) and not likely_to_use_workers(small, None)
    assert likely_to_use_workers(small, 2)  # --devices 2 asks for workers whatever the size
    assert not likely_to_use_workers(large, 1)
    assert not likely_to_use_workers(tmp_path / "missing.csv", None)
    assert not likely_to_use_workers(tmp_path / "missing.csv", 2)  # an error comes, not workers
    folder = tmp_path / "parts"  # a Parquet dataset: the size of its files
    folder.mkdir()
    (folder / "part-0.parquet").write_bytes(b"x" * 1_000)
    assert not likely_to_use_workers(folder, None)
    (folder / "part-1.parquet").write_bytes(b"x" * hanclf.workers.LIKELY_WORKERS_BYTES)
    assert likely_to_use_workers(folder, None)
    monkeypatch.setattr(hanclf.workers, "cores", lambda: 1)
    assert not likely_to_use_workers(large, None)  # one core: the default is one process


def run_script(tmp_path, source: str) -> subprocess.CompletedProcess:
    """`source` run as a script of its own, in a session of its own (a process group that its
    signals reach alone)."""
    script = tmp_path / "script.py"
    script.write_text(source)
    return subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120,
                          start_new_session=True)


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
def test_ctrl_c_while_the_fork_server_imports_torch_does_not_kill_it(tmp_path):
    # A terminal's Ctrl-C reaches the whole process group, the fork server included, possibly
    # during its imports; the main process handles it, the server must live on silently.
    result = run_script(tmp_path,
        "import os, signal, time\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from hanclf.workers import context, start_server\n"
        "if __name__ == '__main__':\n"
        "    start_server()\n"
        "    time.sleep(0.5)  # the server imports torch for a second or more\n"
        "    signal.signal(signal.SIGINT, signal.SIG_IGN)  # this process plays a handled Ctrl-C\n"
        "    os.killpg(0, signal.SIGINT)\n"
        "    with ProcessPoolExecutor(1, mp_context=context()) as pool:\n"
        "        print(pool.submit(os.getppid).result() != os.getpid())\n"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "True\n", "")


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
def test_ctrl_c_while_the_fork_server_starts_is_not_lost(tmp_path):
    # The server was started with Ctrl-C ignored in this process: one that came meanwhile was
    # dropped, and predict ran on to its end and exited 0.
    result = run_script(tmp_path,
        "import multiprocessing.forkserver, os, signal\n"
        "from hanclf.workers import start_server\n"
        "if __name__ == '__main__':\n"
        "    signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal\n"
        "    start = multiprocessing.forkserver.ensure_running\n"
        "    def interrupted_while_starting():\n"
        "        os.kill(os.getpid(), signal.SIGINT)\n"
        "        start()\n"
        "    multiprocessing.forkserver.ensure_running = interrupted_while_starting\n"
        "    try:\n"
        "        start_server()\n"
        "    except KeyboardInterrupt:\n"
        "        print('interrupted')\n"
    )
    assert (result.returncode, result.stdout, result.stderr) == (0, "interrupted\n", "")


@pytest.mark.skipif(sys.platform == "win32", reason="no fork server on Windows")
def test_a_worker_started_after_its_pool_was_stopped_fails_silently(tmp_path):
    # Ctrl-C while the fork server started a worker: the worker found the pool's semaphores
    # removed and printed a 15-line traceback under predict's "interrupted" line. Its error, as
    # a fork server's child reports it (sys.excepthook), in the pool's own code and elsewhere:
    result = run_script(tmp_path,
        "import sys\n"
        "from concurrent.futures import ProcessPoolExecutor\n"
        "from hanclf.workers import context\n"
        "def report(filename):\n"
        "    code = compile('def __setstate__():\\n    raise FileNotFoundError(2, \"gone\")\\n', filename, 'exec')\n"
        "    space = {}\n"
        "    exec(code, space)\n"
        "    try:\n"
        "        space['__setstate__']()\n"
        "    except FileNotFoundError:\n"
        "        sys.excepthook(*sys.exc_info())\n"
        "    return sys.excepthook.__module__\n"
        "if __name__ == '__main__':\n"
        "    with ProcessPoolExecutor(1, mp_context=context()) as pool:\n"
        "        print(pool.submit(report, '/usr/lib/python3/multiprocessing/synchronize.py').result())\n"
        "        print(pool.submit(report, '/home/me/mine.py').result())\n"
    )
    assert result.returncode == 0 and result.stdout == "hanclf.forkserver_hook\n" * 2
    assert result.stderr.count("FileNotFoundError: [Errno 2] gone") == 1 and "mine.py" in result.stderr


@pytest.mark.slow
def test_ray_data_map_batches_recipe(model_dir, reviews, tmp_path):
    ray = pytest.importorskip("ray", reason="ray not installed (pip install 'hanclf[ray]')")
    # Logical CPUs: two predictor actors hold one each, and the Parquet read tasks need their own.
    ray.init(num_cpus=4, include_dashboard=False, log_to_driver=False, ignore_reinit_error=True)
    try:
        # The README's recipe: one Predictor per actor, loaded once, called on Arrow batches.
        predictions = ray.data.read_parquet(str(reviews)).map_batches(
            Predictor, fn_constructor_kwargs={"model_dir": str(model_dir), "device": "cpu"},
            fn_kwargs={"top_k": 2}, batch_format="pyarrow", batch_size=1_024,
            compute=ray.data.ActorPoolStrategy(size=2),
        )
        out = tmp_path / "ray_out"
        predictions.write_parquet(str(out))
    finally:
        ray.shutdown()
    got = pq.read_table(out).to_pandas().sort_values("id").reset_index(drop=True)
    expected = Predictor(model_dir, device="cpu")(pq.read_table(reviews), top_k=2).to_pandas()
    assert len(got) == 5_000  # Ray reorders rows: compare by id
    pd.testing.assert_series_equal(got["pred_label"], expected["pred_label"], check_dtype=False)
    assert got["top_labels"].map(list).tolist() == expected["top_labels"].map(list).tolist()
    assert (got["pred_prob"] - expected["pred_prob"]).abs().max() < 1e-6


@pytest.mark.slow
def test_spark_map_in_arrow_recipe(model_dir, reviews):
    pytest.importorskip("pyspark", reason="pyspark not installed (pip install 'hanclf[spark]')")
    if shutil.which("java") is None:
        pytest.skip("no JVM (java) on this machine: Spark needs one")
    from pyspark.sql import SparkSession
    from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema

    spark = (SparkSession.builder.master("local[2]").appName("hanclf-test")
             .config("spark.ui.enabled", "false").getOrCreate())
    try:
        model = str(model_dir)

        def label_partition(batches):
            predictor = Predictor(model, device="cpu")  # once per partition
            for batch in batches:
                yield from predictor(batch).to_batches()

        frame = spark.read.parquet(str(reviews))
        schema = pa.schema(list(to_arrow_schema(frame.schema)) + list(Predictor(model, device="cpu").output_schema()))
        got = frame.mapInArrow(label_partition, from_arrow_schema(schema)).toPandas()
    finally:
        spark.stop()
    got = got.sort_values("id").reset_index(drop=True)
    expected = Predictor(model_dir, device="cpu")(pq.read_table(reviews)).to_pandas()
    assert len(got) == 5_000
    assert got["pred_label"].tolist() == expected["pred_label"].tolist()
    assert (got["pred_prob"] - expected["pred_prob"]).abs().max() < 1e-6


def test_bench_of_the_main_process_counts_rows_and_splits_its_time(model_dir, reviews):
    """bench/predict_main_process.py, which bench/gpu.sh runs on a lent GPU: it must keep working
    with predict's internals it patches (a broken one would waste GPU minutes)."""
    script = Path(__file__).resolve().parent.parent / "bench" / "predict_main_process.py"
    result = subprocess.run([sys.executable, str(script), "--model", str(model_dir), "--data",
                             str(reviews), "--devices", "2", "--device", "cpu"],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr
    cpu, in_model = map(float, re.search(r"main process CPU ([\d.]+) s, ([\d.]+) s of it in the model",
                                          result.stdout).groups())
    besides = float(re.search(r"besides the model: ([\d.]+) s", result.stdout).group(1))
    assert result.stdout.startswith("5000 rows, 2 workers")
    assert 0 < in_model < cpu and besides == pytest.approx(cpu - in_model, abs=0.011)
