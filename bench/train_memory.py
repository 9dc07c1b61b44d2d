"""Peak memory and time of `hanclf train` as the training set grows: how much memory a row costs.

For each --rows size this writes a Parquet file (columns id, text, sentiment, rating; with
--split a split column too, else train holds out a random 10%) of IMDb reviews: the train split
of --source, its 20,017 reviews first as they are, then again as often as needed, each further
copy of a review with its sentences in a seeded random order (a different document with the
same words: the vocabulary stays IMDb's, where a real set of 10^6 reviews would have more
words). It runs `python -m hanclf train` on it with a small model, one epoch, random
embeddings, and prints a markdown table: peak RSS of the largest process, the most processes
at once (train forks a tokenizing worker per core), the whole job's peak (the largest sum of
the PSS of all its processes at one sample: pages shared by the forks counted once), the
memory per 1,000 rows, and the seconds train logs for preparing the data ("prepared in") and
for the epoch (metrics.json's epoch_seconds). With --steps the epoch stops after that many
training steps (see limited_train). Memory is read from /proc every 50 ms as in
bench/predict_memory.py. Linux only. Nothing generated is kept.

    python bench/train_memory.py --rows 30000 100000 300000 1000000 --steps 50 [--split] [--output FILE.md]

Run nothing else heavy meanwhile: the numbers are only meaningful on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

sys.path.insert(0, str(Path(__file__).resolve().parent))
from predict_memory import machine, memory_kb, print_report, process_tree  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "data" / "imdb_reviews.parquet"  # the review sets beside the project
SMALL_MODEL = ["--set", "model.embed_dim=16", "--set", "model.word_hidden=8", "--set", "model.sent_hidden=8",
               "--max-epochs", "1", "--embeddings", "random", "--accelerator", "cpu"]
# A sentence ends after . ! or ? and spaces, or at an HTML line break (IMDb's <br /><br />).
SENTENCE_END = re.compile(r"(?<=[.!?])\s+|<br\s*/?>(?:\s*<br\s*/?>)*")


SPLITS = ["train"] * 8 + ["valid", "test"]  # the split column's values, row after row (--split)


def write_input(path: Path, source: Path, rows: int, chunk_rows: int, seed: int, split: bool = False) -> float:
    """Write `rows` labelled reviews (see the module's docstring), with a split column if
    `split`; returns the mean text length."""
    table = pq.read_table(source, columns=["split", "text", "sentiment", "rating"])
    train = table.filter(pa.compute.equal(table.column("split"), "train"))
    texts = train.column("text").to_pylist()
    sentiments = train.column("sentiment").to_pylist()
    ratings = train.column("rating").to_pylist()
    sentences = [SENTENCE_END.split(t) for t in texts]
    rng = np.random.default_rng(seed)
    fields = [("id", pa.string()), ("text", pa.string()), ("sentiment", pa.string()), ("rating", pa.int64())]
    schema = pa.schema(fields + [("split", pa.string())] * split)
    total_chars = 0
    with pq.ParquetWriter(path, schema, compression="snappy") as writer:
        for start in range(0, rows, chunk_rows):
            positions = range(start, min(rows, start + chunk_rows))
            batch = []
            for i in positions:
                review, copy = i % len(texts), i // len(texts)
                if copy == 0:
                    batch.append(texts[review])
                else:
                    parts = sentences[review]
                    batch.append(" ".join(parts[j] for j in rng.permutation(len(parts))))
            total_chars += sum(map(len, batch))
            columns = {
                "id": [f"r{i:09d}" for i in positions],
                "text": batch,
                "sentiment": [sentiments[i % len(texts)] for i in positions],
                "rating": [ratings[i % len(texts)] for i in positions],
            }
            if split:
                columns["split"] = [SPLITS[i % len(SPLITS)] for i in positions]
            writer.write_table(pa.table(columns, schema=schema))
    return total_chars / rows


def limited_train(steps: int, argv: list[str]) -> None:
    """`hanclf train` with Lightning's limit_train_batches: the epoch stops after `steps`
    training steps (validation still covers every document). train has no such setting, and a
    full epoch of 10^6 reviews takes ~50 minutes on 2 cores; the data is read, tokenized and
    encoded whole all the same."""
    import pytorch_lightning as pl

    from hanclf.cli.main import main as hanclf_main

    trainer_init = pl.Trainer.__init__

    def init(self, *args, **kwargs):
        trainer_init(self, *args, limit_train_batches=steps, **kwargs)

    pl.Trainer.__init__ = init
    sys.argv = ["hanclf", *argv]
    hanclf_main()


def run_train(data: Path, model: Path, extra: list[str], steps: int | None) -> dict[str, float]:
    start = [sys.executable, "-m", "hanclf"] if steps is None else [sys.executable, __file__, "--steps", str(steps), "--"]
    command = [*start, "train", str(data), "--output", str(model),
               "--label-column", "sentiment", "--quiet", "--force", *SMALL_MODEL, *extra]
    started = time.perf_counter()
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=err, text=True)
        largest = job = processes = 0
        while proc.poll() is None:
            sample = [memory_kb(pid) for pid in process_tree(proc.pid)]
            largest = max([largest, *(hwm for hwm, _ in sample)])
            job = max(job, sum(pss for _, pss in sample))
            processes = max(processes, sum(1 for _, pss in sample if pss))
            time.sleep(0.05)
        wall = time.perf_counter() - started
        err.seek(0)
        log = err.read()
    if proc.returncode != 0:
        raise RuntimeError(f"train failed ({proc.returncode}):\n{log[-4000:]}")
    prepared = re.search(r"\(prepared in ([\d.]+)s\)", log)
    metrics = json.loads((model / "metrics.json").read_text())
    return {"wall": wall, "rss": largest / 1024, "job": job / 1024, "processes": processes,
            "prepare_s": float(prepared.group(1)) if prepared else float("nan"),
            "epoch_s": sum(metrics["epoch_seconds"]), "vocab": metrics["vocab_size"],
            "accuracy": metrics["valid"]["accuracy"]}


def commit() -> str:
    try:
        head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
                              capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(ROOT), "status", "--porcelain", "--", "hanclf"],
                               capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + (" (hanclf/ modified)" if dirty else "")


def main() -> None:
    if sys.argv[1:2] == ["--steps"] and "--" in sys.argv:  # the command run_train runs
        limited_train(int(sys.argv[2]), sys.argv[sys.argv.index("--") + 1 :])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rows", type=int, nargs="+", default=[30_000, 100_000, 300_000, 1_000_000])
    parser.add_argument("--source", type=Path, default=SOURCE,
                        help="IMDb reviews (columns split, text, sentiment, rating) [default: %(default)s]")
    parser.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                        help="passed on to train (repeatable), after the small model's settings")
    parser.add_argument("--split", action="store_true", help="write a split column too: of every 10 rows "
                        "8 train, 1 valid, 1 test (train then reads the file once for each split) "
                        "[default: none: train holds out a random 10%%]")
    parser.add_argument("--steps", type=int, help="training steps of the epoch, at most (Lightning's "
                        "limit_train_batches) [default: the whole epoch]")
    parser.add_argument("--chunk-rows", type=int, default=50_000, help="rows per generated row group")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, help="also write the report (markdown) here")
    args = parser.parse_args()
    if not Path("/proc/self/status").exists():
        sys.exit("this benchmark reads memory from /proc: Linux only")
    extra = [arg for setting in args.sets for arg in ("--set", setting)]

    lines = ["# `hanclf train`: peak memory and time against the training set's size", ""]
    lines += [f"- {line}" for line in machine()]
    lines.append(f"- commit {commit()}")
    lines.append(f"- `python bench/train_memory.py {' '.join(sys.argv[1:])}`, which runs `python -m hanclf train "
                 f"DATA --output MODEL --label-column sentiment --quiet --force {' '.join(SMALL_MODEL + extra)}`"
                 + (f" with Lightning's limit_train_batches={args.steps} (the epoch stops after {args.steps} "
                    "training steps; validation covers every document)" if args.steps else ""))
    lines.append("- DATA: IMDb train reviews repeated, later copies with their sentences shuffled; "
                 + ("a split column, 8 rows of 10 train, 1 valid, 1 test" if args.split
                    else "no split column: train holds out a random 10% for validation"))
    lines.append("- memory from /proc every 50 ms: peak RSS of the largest process, and the whole job: "
                 "the largest sum of its processes' PSS at one sample (pages shared by the forked "
                 "tokenizing workers counted once)")
    lines.append("")
    table = ["| rows | input MiB | mean chars | processes | peak RSS MiB, largest process | peak PSS MiB, "
             "whole job | MiB per 1k rows (largest) | prepared s | epoch s | wall s | vocabulary | valid acc |",
             "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    with tempfile.TemporaryDirectory(prefix="hanclf-bench-") as tmp:
        work = Path(tmp)
        for rows in args.rows:
            data, model = work / f"train_{rows}.parquet", work / f"model_{rows}"
            started = time.perf_counter()
            chars = write_input(data, args.source, rows, args.chunk_rows, args.seed, args.split)
            print(f"{rows} rows: input written in {time.perf_counter() - started:.1f}s, training...",
                  file=sys.stderr, flush=True)
            r = run_train(data, model, extra, args.steps)
            table.append(
                f"| {rows:,} | {data.stat().st_size / 2**20:.1f} | {chars:.0f} | {r['processes']} | "
                f"{r['rss']:,.0f} | {r['job']:,.0f} | {r['rss'] / rows * 1000:.1f} | {r['prepare_s']:.1f} | "
                f"{r['epoch_s']:.1f} | {r['wall']:.1f} | {r['vocab']:,} | {r['accuracy']:.4f} |"
            )
            print(table[-1], file=sys.stderr, flush=True)
            data.unlink()
    lines += table
    lines += ["", "processes: the most alive at once (train and its forked tokenizing workers). "
              "prepared s: train's own log (reading, tokenizing, vocabulary, encoding, model); epoch s: "
              "metrics.json's epoch_seconds (the epoch's training and validation)."]
    print_report(lines, args.output)


if __name__ == "__main__":
    main()
