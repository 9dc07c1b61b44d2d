"""Peak memory and speed of `hanclf predict` as the input grows: is memory flat in the row count?

For each --rows size this writes a Parquet file of review-like texts (~600 characters, several
sentences drawn from a fixed vocabulary; a null, an empty and a blank text and two 5 MB texts
among them; written in row groups of --chunk-rows with a ParquetWriter, so generating 10^6 rows
takes little memory) into a temporary directory, runs
`python -m hanclf predict` on it, and prints a markdown table of wall seconds, rows/s and peak
RSS of the largest process, and the memory of the whole job: the largest sum of the PSS of all
its processes at once (pages shared between processes counted once). Memory is read from /proc
(VmHWM, smaps_rollup) of the command and every process below it every 50 ms:
predict's workers are forks of a fork server, not children the command waits for, so
`/usr/bin/time -v` (or getrusage) would not see them. Linux only. Without --model it first trains a small model on
sample_data/train.csv (small dimensions, 3 epochs). Nothing generated is kept.

    python bench/predict_memory.py --rows 10000 100000 1000000 [--model DIR] [--output FILE.md]

Run nothing else heavy meanwhile: the numbers are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parent.parent

# A fixed review vocabulary: sentences are random words from these lists in a fixed shape.
SUBJECTS = ["The food", "Our waiter", "The pasta", "The soup", "My steak", "The dessert",
            "The service", "The room", "The coffee", "Our table", "The staff", "The menu",
            "The burger", "The salad", "The music", "The bill", "The curry", "The wine list"]
VERBS = ["was", "seemed", "felt", "looked", "turned out", "remained", "tasted", "came out"]
ADJECTIVES = ["wonderful", "awful", "superb", "bland", "friendly", "slow", "excellent",
              "terrible", "delicious", "greasy", "charming", "rude", "perfect", "cold", "fresh",
              "noisy", "cosy", "overpriced", "generous", "tiny", "crowded", "quiet", "spicy",
              "salty", "dry", "tender", "stale", "fantastic", "mediocre", "lovely"]
FILLERS = ["and", "but", "although", "because", "so", "even though", "while"]
TAILS = ["we waited a long time for a table", "my friend ordered the same thing twice",
         "the place was busy on a Friday evening", "parking near the station was easy",
         "they open at nine on weekdays", "the portions were bigger than expected",
         "we sat by the window facing the river", "the kitchen closes at ten",
         "the prices went up since last year", "it was my sister's birthday",
         "the host remembered our names", "there was live music in the back room"]
ENDS = [".", ".", ".", "!", "?"]


def sentence_pool(size: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    pool = []
    for _ in range(size):
        words = f"{rng.choice(SUBJECTS)} {rng.choice(VERBS)} {rng.choice(ADJECTIVES)}"
        if rng.random() < 0.7:
            words += f" {rng.choice(FILLERS)} {rng.choice(TAILS)}"
        pool.append(words + rng.choice(ENDS))
    return pool


ODD_ROWS = {3: None, 4: "", 5: "   \n\t"}  # null, empty and blank texts: flagged in empty_text
HUGE_CHARS = 5_000_000  # two 5 MB documents, one early and one in the middle


def write_input(path: Path, rows: int, chunk_rows: int, seed: int) -> float:
    """Write `rows` documents of about 600 characters, with the ODD_ROWS and two HUGE_CHARS
    documents among them; returns the mean text length."""
    pool = np.array(sentence_pool(20_000, seed), dtype=object)
    mean_len = float(np.mean([len(s) for s in pool])) + 1
    per_doc = max(1, round(600 / mean_len))
    rng = np.random.default_rng(seed)
    schema = pa.schema([("id", pa.string()), ("text", pa.string())])
    huge_rows = {7, rows // 2}
    total_chars = 0
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for start in range(0, rows, chunk_rows):
            n = min(chunk_rows, rows - start)
            picks = pool[rng.integers(0, len(pool), size=(n, per_doc))]
            texts = [" ".join(row) for row in picks]
            for row in range(start, start + n):
                if row in ODD_ROWS:
                    texts[row - start] = ODD_ROWS[row]
                elif row in huge_rows:
                    texts[row - start] = " ".join(pool[rng.integers(0, len(pool), HUGE_CHARS // 60)])
            total_chars += sum(len(t) for t in texts if t)
            ids = [f"r{i:09d}" for i in range(start, start + n)]
            writer.write_table(pa.table({"id": ids, "text": texts}, schema=schema))
    return total_chars / rows


def train_model(directory: Path) -> Path:
    model = directory / "model"
    command = [
        sys.executable, "-m", "hanclf", "train", str(ROOT / "sample_data" / "train.csv"),
        "--output", str(model), "--max-epochs", "3", "--accelerator", "cpu", "--quiet",
        "--set", "model.embed_dim=64", "--set", "model.word_hidden=32",
        "--set", "model.sent_hidden=32", "--set", "model.word_att_dim=32",
        "--set", "model.sent_att_dim=32", "--set", "train.patience=3",
    ]
    print("training:", " ".join(command[1:]), file=sys.stderr, flush=True)
    subprocess.run(command, check=True)
    return model


def process_tree(root: int) -> list[int]:
    """`root` and every process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", encoding="utf-8") as f:
                    parent = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue  # gone meanwhile
            children.setdefault(parent, []).append(int(entry))
    tree, todo = [], [root]
    while todo:
        pid = todo.pop()
        tree.append(pid)
        todo += children.get(pid, [])
    return tree


def memory_kb(pid: int) -> tuple[int, int]:
    """(peak RSS, PSS) of a process in kB; (0, 0) once it is gone. PSS shares each page among
    the processes that map it, so PSS adds up over processes and RSS does not."""
    fields = {}
    try:
        for name in ("status", "smaps_rollup"):
            with open(f"/proc/{pid}/{name}", encoding="utf-8") as f:
                for line in f:
                    if line.startswith(("VmHWM:", "Pss:")):
                        key, value = line.split()[:2]
                        fields[key] = int(value)
    except OSError:
        pass
    return fields.get("VmHWM:", 0), fields.get("Pss:", 0)


def run_measured(command: list[str]) -> tuple[subprocess.CompletedProcess, float, float, float]:
    """Run `command`; returns it finished, its wall seconds, the largest peak RSS of one of its
    processes and the largest sum of their PSS at one sample, in MiB."""
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)
        largest = total = 0
        while proc.poll() is None:
            sample = [memory_kb(pid) for pid in process_tree(proc.pid)]
            largest = max([largest, *(hwm for hwm, _ in sample)])
            total = max(total, sum(pss for _, pss in sample))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        err.seek(0)
        finished = subprocess.CompletedProcess(command, proc.returncode, "", err.read())
    return finished, wall, largest / 1024, total / 1024


def run_predict(model: Path, source: Path, out: Path, batch_size: int | None,
                devices: int | None) -> dict[str, float]:
    command = [sys.executable, "-m", "hanclf", "predict", str(model), str(source),
               "--output", str(out), "--id-column", "id", "--force"]
    if batch_size:
        command += ["--batch-size", str(batch_size)]
    if devices:
        command += ["--devices", str(devices)]
    proc, wall, rss, job_rss = run_measured(command)
    if proc.returncode != 0:
        raise RuntimeError(f"predict failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    inner = re.search(r"wrote .*: (\d+) rows in ([\d.]+)s", proc.stderr)
    meta = pq.ParquetFile(out).metadata
    flagged = pq.read_table(out, columns=["empty_text"]).column("empty_text").to_pylist()
    return {"wall": wall, "rss": rss, "job_rss": job_rss, "predict_s": float(inner.group(2)) if inner else float("nan"),
            "out_rows": meta.num_rows, "row_groups": meta.num_row_groups,
            "empty_rows": [i for i, flag in enumerate(flagged) if flag]}


def machine() -> list[str]:
    import torch

    cpu = "unknown"
    with open("/proc/cpuinfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    mem = ""
    with open("/proc/meminfo", encoding="utf-8") as f:
        for line in f:
            if line.startswith("MemTotal:"):
                mem = f"{int(line.split()[1]) / 1024 / 1024:.0f} GiB RAM"
    return [
        f"CPU: {cpu}, {os.cpu_count()} cores ({usable} usable), {mem}",
        f"torch {torch.__version__} ({torch.get_num_threads()} threads), pyarrow {pa.__version__}, "
        f"Python {platform.python_version()}, {platform.system()} {platform.release()}",
        f"load average at start: {' '.join(open('/proc/loadavg').read().split()[:3])}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--model", type=Path, help="model directory [default: train a small one]")
    parser.add_argument("--batch-size", type=int, help="passed to predict [default: its own]")
    parser.add_argument("--devices", type=int, help="passed to predict [default: its own, a worker "
                        "process per core for large inputs]")
    parser.add_argument("--chunk-rows", type=int, default=50_000,
                        help="rows per generated row group (default 50000)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        sys.exit("this benchmark reads memory from /proc: Linux only")

    lines = ["# `hanclf predict`: peak memory against input size", ""]
    lines += [f"- {line}" for line in machine()]
    with tempfile.TemporaryDirectory(prefix="hanclf-bench-") as tmp:
        work = Path(tmp)
        model = args.model or train_model(work)
        config = (model / "config.yaml").read_text()
        dims = re.findall(r"^\s+(embed_dim|word_hidden|sent_hidden): (\d+)", config, re.M)
        lines.append(f"- model: {args.model or 'small model trained on sample_data (3 epochs)'} "
                     f"({', '.join(f'{k} {v}' for k, v in dims)})")
        lines.append(f"- predict --batch-size {args.batch_size or 'default (64 on the CPU, 1,024 on a GPU)'}; input row "
                     f"groups of {args.chunk_rows} rows; --devices {args.devices or 'default'}; "
                     "`python -m hanclf predict`, wall including start-up and model load; memory "
                     "from /proc every 50 ms: peak RSS of the largest process (main, fork server or "
                     "worker), and the whole job: the largest sum of their PSS at one sample (shared "
                     "pages counted once)")
        lines.append("")
        table = ["| rows | input MiB | mean chars | wall s | predict s | rows/s | peak RSS MiB, largest process | peak PSS MiB, all processes | out row groups |",
                 "|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for rows in args.rows:
            source, out = work / f"in_{rows}.parquet", work / f"out_{rows}.parquet"
            started = time.perf_counter()
            chars = write_input(source, rows, args.chunk_rows, args.seed)
            print(f"{rows} rows: input written in {time.perf_counter() - started:.1f}s, "
                  f"predicting...", file=sys.stderr, flush=True)
            result = run_predict(model, source, out, args.batch_size, args.devices)
            # One output row per input row, and exactly the null/empty/blank ones flagged.
            assert result["out_rows"] == rows, result
            assert result["empty_rows"] == sorted(ODD_ROWS), result["empty_rows"][:10]
            rate = rows / result["predict_s"]
            table.append(
                f"| {rows:,} | {source.stat().st_size / 2**20:.1f} | {chars:.0f} | "
                f"{result['wall']:.1f} | {result['predict_s']:.1f} | {rate:,.0f} | "
                f"{result['rss']:.0f} | {result['job_rss']:.0f} | {result['row_groups']} |"
            )
            print(table[-1], file=sys.stderr, flush=True)
            source.unlink()
            out.unlink()
    lines += table
    lines += ["", "rows/s = rows / predict s (hanclf's own timing, without start-up)."]
    print_report(lines, args.output)


def print_report(lines: list[str], output: Path | None) -> None:
    """The report (markdown) on stdout, and into `output` where given."""
    report = "\n".join(lines) + "\n"
    print(report)
    if output:
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(report, encoding="utf-8")


if __name__ == "__main__":
    main()
