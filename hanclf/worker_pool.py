"""predict_file's worker processes: how many to start, the tasks they run (label texts on the
CPU, or only batch them for a model on a GPU in the main process), and the loop that hands
them slices of the input and takes their results back in input order. Where the processes come
from (a fork server, or spawned) is hanclf.workers.

A task reaches a worker as the name of its function in this module (how pickle sends
functions), so the task functions stay at module level here; hanclf.workers.PRELOAD loads this
module (through hanclf.predict) into the fork server, so that each worker starts with it.
"""

from __future__ import annotations

import functools
import os
import sys
import time
import warnings
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import torch

from hanclf.data import Truncation
from hanclf.errors import HanclfError, HanclfWarning, UsageError
from hanclf.io import input_format, parquet_rows
from hanclf.predictor import Batch, Predictor
from hanclf.workers import (
    MIN_ROWS_PER_PROCESS,
    TEXT_BYTES_PER_ROW,
    cgroup_memory_room,
    context,
    cores,
    main_module_importable,
    start_predict_worker,
    start_server,
)

if TYPE_CHECKING:
    from hanclf.predict import FileJob

PROCESS_MEMORY = 1 << 30  # what one predict process may use at its peak (bench/predict_memory.py)
WORKER_ROWS = 1_024  # rows per task sent to a worker: small, so the last ones are shared out evenly
# The guard that a script starting workers needs, as each worker imports the script and runs its
# top: said by worker_died, and by predict_file when it finds itself run in a worker.
GUARD_MAIN = 'from a script, call predict_file under `if __name__ == "__main__":`'


def worker_processes(devices: int | None, device: torch.device, input_path: Path) -> int:
    """How many processes label `input_path`: `devices` if given, else what the machine and the
    input size call for."""
    if devices is not None:
        if devices < 1:
            raise UsageError(f"--devices {devices}: must be at least 1")
        if devices > 1 and not main_module_importable():
            raise UsageError(f"--devices {devices}: worker processes import the calling script, "
                             "and one read from stdin has no file; save it as a file, or use 1")
        return devices
    if not main_module_importable():
        return 1
    # One single-threaded process per core: on the CPU the model's operations are too small for
    # several threads to help (2 threads ran 0.8x as fast as one). Tokenizing holds Python's
    # lock and runs ~8,000 docs/s a core, far below what one GPU labels, so with a GPU every
    # core but this process's tokenizes.
    by_rows = _estimated_rows(input_path) // MIN_ROWS_PER_PROCESS
    by_memory = _available_memory() // PROCESS_MEMORY
    by_cores = cores() - 1 if _model_in_this_process(device) else cores()
    return max(1, min(by_cores, by_rows, by_memory))


def _model_in_this_process(device: torch.device) -> bool:
    """Whether predict's workers leave the model to this process: on a GPU, one process feeding
    it batches made by all the others, instead of processes taking turns on it (16 processes,
    each with its own model and CUDA context, labelled 15,500 rows/s on an H200 where the
    model alone labels 74,000 docs/s)."""
    return device.type == "cuda"


def _estimated_rows(path: Path) -> int:
    if input_format(path) == "parquet":
        return parquet_rows(path)
    return path.stat().st_size // TEXT_BYTES_PER_ROW


def _available_memory() -> int:
    """MemAvailable of /proc/meminfo (Linux), or less where this process's container (cgroup)
    has less room left; elsewhere, no limit."""
    available = 1 << 62
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
    except OSError:
        pass
    return min(available, cgroup_memory_room())


def write_in_workers(
    job: FileJob, path: Path, batches: Iterator[pa.RecordBatch], predictor: Predictor,
    model_dir: Path, processes: int,
) -> int:
    """job.write, with `processes` worker processes labelling tasks of WORKER_ROWS rows, or,
    where the model stays in this process (a GPU), making its batches.

    Tasks go to whichever worker is free; at most two per worker are in flight, which bounds
    memory, and results are taken in submission order, which keeps the output in input order."""
    model_here = _model_in_this_process(predictor.device)
    start_server()
    # The workers' own copies of the model stay on the CPU; with the model here, they only
    # batch, as this process will run them (its batch size, not the CPU's default).
    threads = 1 if model_here else max(1, cores() // processes)
    pool = ProcessPoolExecutor(processes, mp_context=context(), initializer=start_predict_worker,
                               initargs=(os.getpid(), model_dir, threads, predictor.batch_size))
    work = _batch_texts if model_here else functools.partial(_predict_texts, top_k=job.top_k, threshold=job.threshold)

    def labelled() -> Iterator[tuple[pa.RecordBatch, pa.Table]]:
        in_flight: deque[tuple[pa.RecordBatch, Future]] = deque()
        # With the model here: tasks whose batches are queued on the GPU. Each task's table is
        # built once the next task is queued, so the GPU computes while this process builds
        # tables, writes and takes in batches.
        on_model: deque[tuple[pa.RecordBatch, Callable[[], tuple[np.ndarray, np.ndarray]]]] = deque()

        def submit(texts: list[str | None]) -> Future:
            try:
                return pool.submit(work, texts)
            except OSError as error:
                # CPython (3.11.7 read) may start a new worker on the pipes of a pool that it is
                # tearing down because another worker died; the tasks in flight, already
                # failed, then say that a worker died.
                if any(future.done() and isinstance(future.exception(), BrokenProcessPool)
                       for _, future in in_flight):
                    raise BrokenProcessPool() from error
                raise

        def done() -> Iterator[tuple[pa.RecordBatch, pa.Table]]:
            part, result = in_flight.popleft()
            made, truncation = result.result()
            predictor.add_truncation(truncation)
            if not model_here:
                yield part, made
                return
            on_model.append((part, predictor._queue_probs(part.num_rows, made)))
            if len(on_model) > 1:
                yield from_model()

        def from_model() -> tuple[pa.RecordBatch, pa.Table]:
            part, probs_and_no_word = on_model.popleft()
            return part, predictor._table(*probs_and_no_word(), job.top_k, job.threshold)

        for batch in batches:
            for offset in range(0, batch.num_rows, WORKER_ROWS):
                part = batch.slice(offset, WORKER_ROWS)
                in_flight.append((part, submit(job.texts(part))))
                while len(in_flight) > 2 * processes:
                    yield from done()
        while in_flight:
            yield from done()
        while on_model:
            yield from_model()

    try:
        return job.write(path, labelled())
    except BrokenProcessPool:
        _unblock_broken_pool(pool)
        raise worker_died() from None
    except KeyboardInterrupt:
        _stop_workers(pool)
        raise
    finally:
        pool.shutdown(cancel_futures=True)


def worker_died() -> HanclfError:
    """Why a worker may have died, the likelier cause first: under a script, a missing guard
    (its workers' tracebacks say so at length); under the CLI (which has the guard), a notebook
    or an interactive session (which need none), memory."""
    main = sys.modules.get("__main__")
    spec = getattr(main, "__spec__", None)
    # Path(...).stem: on Windows the command is hanclf.exe
    cli = spec is not None and spec.name.split(".")[0] == "hanclf" or Path(sys.argv[0]).stem == "hanclf"
    memory = "out of memory? try fewer --devices" if cli else "out of memory? try fewer devices"
    script = not cli and getattr(main, "__file__", None) is not None
    causes = f"{GUARD_MAIN}; or {memory}" if script else memory
    return HanclfError(f"a predict worker process died (its own error, if any, is printed above): {causes}")


def _unblock_broken_pool(pool: ProcessPoolExecutor) -> None:
    """Before Python 3.11.5 (CPython gh-94777), a pool whose worker died never finished shutting
    down when a task was being written to its call queue's pipe, which no process reads any
    more: each task of WORKER_ROWS texts outgrows the pipe's buffer, and predict_file hung for
    ever instead of saying that a worker died (seen on 3.10.13). Closing this process's end of
    the pipe, as later Pythons do themselves, fails that write and lets the shutdown go on."""
    if sys.version_info < (3, 11, 5):
        reader = getattr(getattr(pool, "_call_queue", None), "_reader", None)  # CPython's own
        if reader is not None:
            reader.close()


def _stop_workers(pool: ProcessPoolExecutor, seconds: float = 2.0) -> None:
    """Shut the pool down, terminating workers still alive after `seconds`: a graceful shutdown
    once waited for ever on a worker blocked on the pool's queue, and Ctrl-C never returned (1
    of ~24 tries in a review). Terminating them all at once instead left a worker that was
    being forked to fail on the pool's removed semaphore and print a traceback."""
    workers = list((getattr(pool, "_processes", None) or {}).values())  # CPython's own table
    manager = getattr(pool, "_executor_manager_thread", None)
    pool.shutdown(wait=False, cancel_futures=True)
    deadline = time.monotonic() + seconds
    for worker in workers:
        worker.join(max(0.0, deadline - time.monotonic()))
        if worker.is_alive():
            worker.terminate()
    # Python's exit wakes the pool's manager thread through a pipe that the thread closes as it
    # ends, with no lock between them (CPython 3.11): racing, it printed "Exception ignored ...
    # Bad file descriptor" after the command's last line. Ended here, it is not woken.
    if manager is not None:
        manager.join(max(0.0, deadline - time.monotonic()) + 1.0)


# The model of a worker process of write_in_workers, loaded once by start_worker.
_worker_predictor: Predictor | None = None


def start_worker(model_dir: Path, threads: int, batch_size: int) -> None:
    """In a worker, after become_worker (see start_predict_worker): load its Predictor, on the
    CPU with `threads` threads, once for all the tasks it will run."""
    global _worker_predictor
    torch.set_num_threads(threads)
    with warnings.catch_warnings():  # the main process, which loaded the model too, has said it
        warnings.simplefilter("ignore", HanclfWarning)
        _worker_predictor = Predictor(model_dir, "cpu", batch_size)


def _predict_texts(
    texts: list[str | None], top_k: int, threshold: float | None
) -> tuple[pa.Table, Truncation]:
    """A worker's task on the CPU: the predictions of `texts`, and what the caps cut of them,
    which the main process adds to its own Predictor's truncation."""
    _worker_predictor.truncation = Truncation()
    return _worker_predictor.predict_table(texts, top_k, threshold), _worker_predictor.truncation


def _batch_texts(texts: list[str | None]) -> tuple[list[Batch], Truncation]:
    """A worker's task when the model is in the main process: the batches of `texts`, and what
    the caps cut of them."""
    _worker_predictor.truncation = Truncation()
    return list(_worker_predictor.batches(texts)), _worker_predictor.truncation
