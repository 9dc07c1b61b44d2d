"""How many rows a second can predict's main process handle besides the model, when it runs the
model and its workers tokenize and batch (the GPU's way; forced here on the CPU too)?

Runs hanclf.predict.predict_file with --devices workers and measures the main process's CPU
time, all its threads (reading, sending texts, receiving batches, building the output table,
writing), less the thread time spent running the model (on a GPU: queueing its work and waiting
for it). Rows over that time is the rate the main process could keep up with if the model cost
nothing: a ceiling for `hanclf predict` on a GPU whatever the GPU does.

    python bench/predict_main_process.py --model MODEL_DIR --data reviews.parquet --devices 2
"""

from __future__ import annotations

import argparse
import resource
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import torch

import hanclf.predict as predict
import hanclf.worker_pool as worker_pool
from hanclf.workers import start_server

T = TypeVar("T")


def process_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True, help="Parquet with a `text` column")
    parser.add_argument("--devices", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--device", default="auto", help="where the main process runs the model")
    args = parser.parse_args()

    worker_pool._model_in_this_process = lambda device: True  # the GPU's way, on any device
    in_model = 0.0
    queue_probs = predict.Predictor._queue_probs

    def in_the_model(work: Callable[[], T]) -> T:
        nonlocal in_model
        start = time.thread_time()
        try:
            return work()
        finally:
            in_model += time.thread_time() - start

    def timed_queue_probs(self, documents, batches) -> Callable[[], tuple[np.ndarray, np.ndarray]]:
        # Queueing the model's work, and on a GPU the wait for its result, count as the model's.
        result = in_the_model(lambda: queue_probs(self, documents, batches))
        return lambda: in_the_model(result)

    predict.Predictor._queue_probs = timed_queue_probs
    start_server()  # started before the clock, as the CLI starts it before its imports
    cpu, wall = process_cpu_seconds(), time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        result = predict.predict_file(args.model, args.data, Path(tmp) / "p.parquet",
                                      device=args.device, devices=args.devices)
    cpu, wall = process_cpu_seconds() - cpu, time.perf_counter() - wall
    rows, besides = result["rows"], cpu - in_model
    print(f"{rows} rows, {args.devices} workers, model on {args.device}: wall {wall:.2f} s; "
          f"main process CPU {cpu:.2f} s, {in_model:.2f} s of it in the model's forward")
    print(f"besides the model: {besides:.2f} s, {1e6 * besides / rows:.1f} us a row, "
          f"at most {rows / besides:,.0f} rows/s (model load and start-up included: run two "
          "input sizes for the cost per row at the margin)")
    if torch.cuda.is_available():
        # What the model's batches need against what PyTorch's allocator held on to: the third
        # lease saw 16-19 GiB held by each process running the model.
        print(f"GPU memory of this process: peak allocated {torch.cuda.max_memory_allocated() / 2**30:.2f} GiB, "
              f"peak reserved {torch.cuda.max_memory_reserved() / 2**30:.2f} GiB")


if __name__ == "__main__":
    main()
