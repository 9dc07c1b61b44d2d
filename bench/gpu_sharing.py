"""Does a GPU label as many documents a second for K processes as for one? The model alone
(no reading, tokenizing or writing): each of K processes loads the model, encodes the same
reviews once, then labels them in batches for --seconds; the figure is all processes'
documents over the wall time. predict's workers shared a GPU this way until the model moved
to predict's main process (workers now only tokenize and batch for it); on an H200 16 of them
labelled 15,525 docs/s end to end where one process's model alone did 74,455: this tells
whether taking turns on the GPU, rather than tokenizing, was what cost.

    python bench/gpu_sharing.py --model MODEL_DIR --data local_data/imdb_reviews.parquet \
        [--rows 8192] [--processes 1 4 16] [--seconds 10]
"""

from __future__ import annotations

import argparse
import multiprocessing
import time
from pathlib import Path

import pyarrow.parquet as pq


def label_for(model: str, texts: list[str], seconds: float, start: multiprocessing.Barrier, out) -> None:
    from hanclf.data import tokenize_texts
    from hanclf.predict import Predictor

    predictor = Predictor(model)
    docs = tokenize_texts(texts, predictor.artifact.config.data).encoded(predictor.artifact.vocab)
    predictor._probs(len(docs), predictor._batches(docs))  # warm-up: CUDA context, cuDNN plans
    start.wait()
    began, labelled = time.perf_counter(), 0
    while time.perf_counter() - began < seconds:
        predictor._probs(len(docs), predictor._batches(docs))
        labelled += len(docs)
    out.put((labelled, time.perf_counter() - began))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--processes", type=int, nargs="+", default=[1, 4, 16])
    parser.add_argument("--seconds", type=float, default=10.0)
    args = parser.parse_args()
    texts = pq.read_table(args.data, columns=["text"]).column("text").to_pylist()[: args.rows]
    spawn = multiprocessing.get_context("spawn")
    print("| processes | docs/s, all together | per process |")
    print("|---:|---:|---:|")
    for k in args.processes:
        start, out = spawn.Barrier(k), spawn.Queue()
        workers = [spawn.Process(target=label_for, args=(args.model, texts, args.seconds, start, out))
                   for _ in range(k)]
        for w in workers:
            w.start()
        results = [out.get() for _ in workers]
        for w in workers:
            w.join()
        total = sum(n for n, _ in results) / max(s for _, s in results)
        print(f"| {k} | {total:,.0f} | {total / k:,.0f} |")


if __name__ == "__main__":
    main()
