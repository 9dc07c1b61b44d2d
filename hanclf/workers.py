"""Where predict's worker processes come from; standard library only, so that the CLI can start
the fork server before it imports torch.

On Linux workers are forks of a fork server: one process that imports torch and hanclf
once, while the main process does its own imports and reads the model, so that every worker is
ready in a fraction of a second instead of after ~1.5 s of imports of its own. The server never
touches a GPU, so its forks can use CUDA (a fork of a process that did cannot). Elsewhere
(macOS, Windows) workers are spawned: each starts a fresh interpreter (see context()).
"""

from __future__ import annotations

import contextlib
import ctypes
import math
import multiprocessing
import multiprocessing.forkserver
import multiprocessing.resource_tracker
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from multiprocessing.context import BaseContext
from pathlib import Path

# predict_file's module, and through it all that its workers run (hanclf.worker_pool: its task
# functions, found by name) and what a caller's main module imports with it (rich). Not
# "__main__": run in the server, a script that calls predict_file without
# `if __name__ == "__main__":` would start doing so there. Each worker imports the main module
# itself, as a spawned one would (the CLI's takes ~0.1 s once hanclf is loaded). And the
# server's own error hook (hanclf.forkserver_hook).
PRELOAD = ["hanclf.predict", "hanclf.forkserver_hook"]
MIN_ROWS_PER_PROCESS = 1_024  # 2 workers already beat one process at 1,500 rows (forked workers)
TEXT_BYTES_PER_ROW = 500  # rows of CSV/JSONL, estimated from the size: a few hundred bytes each
# The smallest input that the default gives two workers, by that estimate (~1 MB).
LIKELY_WORKERS_BYTES = 2 * MIN_ROWS_PER_PROCESS * TEXT_BYTES_PER_ROW


CGROUP = Path("/sys/fs/cgroup")  # a container's own limits (cgroup v2 files, or v1 folders)


def cores(cgroup: Path = CGROUP) -> int:
    """CPU cores this process may run on: fewer than the machine's under taskset, or under a
    container's CPU quota (Kubernetes' limits.cpu), rounded up."""
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    quota_period = _read_numbers(cgroup / "cpu.max")  # "QUOTA PERIOD"; "max PERIOD" for none
    if len(quota_period) != 2:  # cgroup v1, a quota of -1 for none
        quota_period = (_read_numbers(cgroup / "cpu" / "cpu.cfs_quota_us")
                        + _read_numbers(cgroup / "cpu" / "cpu.cfs_period_us"))
    if len(quota_period) == 2 and min(quota_period) > 0:
        allowed = min(allowed, max(1, math.ceil(quota_period[0] / quota_period[1])))
    return allowed


@contextlib.contextmanager
def threads_within_quota() -> Iterator[None]:
    """torch's threads at most the cores this process may use (a container's CPU quota) unless
    OMP_NUM_THREADS is set; as they were afterwards. torch counts the machine's cores: a pod
    limited to 2 CPUs on a 64-core node ran 32 threads, which the quota then throttles (threads
    sharing cores ran the model 12x slower: README, "Do not share the cores")."""
    import torch

    before = torch.get_num_threads()
    if "OMP_NUM_THREADS" not in os.environ:
        torch.set_num_threads(min(before, cores()))
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cgroup_memory_room(cgroup: Path = CGROUP) -> int:
    """Bytes this process's container may still allocate (its memory limit less what it uses);
    very large where there is no limit. The machine's free memory says nothing of a container
    limited to less: workers counted by it were killed by the OOM killer."""
    for limit_file, usage_file in (("memory.max", "memory.current"),
                                   ("memory/memory.limit_in_bytes", "memory/memory.usage_in_bytes")):
        limit, usage = _read_numbers(cgroup / limit_file), _read_numbers(cgroup / usage_file)
        if limit and usage:
            return max(0, limit[0] - usage[0])
    return 1 << 62


def _read_numbers(path: Path) -> list[int]:
    """The whole numbers of a one-line cgroup file; [] for a missing file or 'max' (no limit)."""
    try:
        return [int(word) for word in path.read_text().split()]
    except (OSError, ValueError):
        return []


def context() -> BaseContext:
    """How predict starts its workers: forks of a server that imported torch once (Linux), else
    spawned. macOS offers a fork server too, but its forks copy a process that runs torch's and
    pyarrow's threads, which macOS's system libraries do not survive reliably (why Python spawns
    there by default): spawned workers cost about a second more to start."""
    if sys.platform == "darwin" or "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    forkserver = multiprocessing.get_context("forkserver")
    forkserver.set_forkserver_preload(PRELOAD)
    return forkserver


def become_worker(main_pid: int) -> None:
    """In a worker: Ctrl-C is the main process's to handle (it stops the workers and removes its
    temporary output; SIGTERM, which it also sends to stop them, stays fatal), and the worker
    exits within a second of the main process `main_pid` dying. A main process killed outright
    (SIGKILL, the OOM killer) left its workers waiting for tasks for ever, and with them the
    fork server, which they keep alive.

    A forked worker inherits the CLI's SIGTERM handler, which raises KeyboardInterrupt: the
    pool's own shutdown (SIGTERM to each worker) then printed a worker's traceback."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    if sys.platform == "win32":
        # Not os.kill(main_pid, 0): there signal 0 is CTRL_C_EVENT, a Ctrl-C sent to the console
        # every second, never a probe. Workers are spawned there, children of the main process,
        # whose handle is their parent's sentinel.
        parent = multiprocessing.parent_process()
        if parent is not None and parent.pid == main_pid:
            threading.Thread(target=_exit_after, args=(parent,), daemon=True).start()
        return
    if os.getppid() == main_pid:
        _die_with_parent()

    def exit_when_main_is_gone() -> None:
        while True:
            time.sleep(1.0)
            try:
                os.kill(main_pid, 0)
            except ProcessLookupError:
                os._exit(1)
            except PermissionError:  # alive, under another user's id
                pass

    threading.Thread(target=exit_when_main_is_gone, daemon=True).start()


def start_predict_worker(main_pid: int, *args: object) -> None:
    """The initializer of predict's workers: become_worker(main_pid), then
    hanclf.worker_pool.start_worker(*args). It lives here, away from torch: a spawned worker
    (Windows) imports the module of its initializer before calling it, and a Ctrl-C during
    those seconds of imports printed every worker's traceback."""
    become_worker(main_pid)
    from hanclf.worker_pool import start_worker

    start_worker(*args)


def _exit_after(process: multiprocessing.process.BaseProcess) -> None:
    process.join()
    os._exit(1)


PR_SET_PDEATHSIG = 1  # from <sys/prctl.h>


def _die_with_parent() -> None:
    """On Linux, the kernel kills this process as soon as its parent dies: train's tokenizing
    workers (forks of the main process) otherwise finished their task, found the pipe to the
    killed main process broken, and printed a traceback each into the job's log, which read as
    a bug rather than the OOM kill it was. (Predict's workers are forks of the fork server.)"""
    if sys.platform.startswith("linux"):  # elsewhere become_worker's watching thread ends it
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)  # libc's, in this process


def main_module_importable() -> bool:
    """Whether workers can import the caller's main module, as they do (see PRELOAD): not a
    script read from stdin (`python - < job.py`, a shell heredoc), whose file name '<stdin>'
    names no file. An interactive session or a notebook has no main file, and needs none."""
    main = sys.modules.get("__main__")
    if getattr(getattr(main, "__spec__", None), "name", None):
        return True  # python -m package: imported by its name
    path = getattr(main, "__file__", None)
    return path is None or os.path.isfile(path)


def likely_to_use_workers(input_path: Path, devices: int | None) -> bool:
    """A cheap guess, before torch is imported, at whether predict_file(input_path,
    devices=devices) will start workers."""
    try:
        if input_path.is_dir():  # a Parquet dataset
            size = sum(p.stat().st_size for p in input_path.rglob("*") if p.is_file())
        else:
            size = input_path.stat().st_size
    except OSError:
        return False  # predict_file names the problem
    if devices is not None:
        return devices > 1
    return cores() > 1 and size >= LIKELY_WORKERS_BYTES


def start_server() -> None:
    """Start the fork server unless it runs already (where workers are its forks).

    It starts with Ctrl-C blocked, as do its forks: Ctrl-C is the main process's to handle, and
    one during the server's imports would print a traceback of its own. Blocked, not ignored,
    here: one that comes meanwhile waits for this process's handler (ignored, it was lost, and
    the command ran on to the end)."""
    if context().get_start_method() != "forkserver":
        return
    # The resource tracker, which the server needs, unblocks signals once it has started it.
    multiprocessing.resource_tracker.ensure_running()
    # Blocked in this thread, whose mask the server inherits (through exec too); a Ctrl-C
    # meanwhile waits, or goes to another thread, and its handler runs either way.
    mask = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        multiprocessing.forkserver.ensure_running()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, mask)


def start_early(input_path: Path, devices: int | None) -> None:
    """Start the fork server now if predict_file is likely to need it, so that its imports
    overlap the caller's (the CLI calls this before it imports torch). A wrong guess costs
    either the time it would have saved or a server that is never used."""
    if likely_to_use_workers(input_path, devices):
        start_server()


def release_freed_memory() -> None:
    """Hand back to the system the memory freed inside the C heap (glibc's malloc_trim; nothing
    elsewhere). glibc keeps what Python frees there for the heap's later use, and the arrays
    and objects made after it do not fit those holes: the texts of 270,000 IMDb reviews, freed
    once tokenized, stayed in train's RSS to the end (bench/results/train-memory-cpu.md)."""
    if not sys.platform.startswith("linux"):
        return
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError):  # a C library without it (musl)
        pass
