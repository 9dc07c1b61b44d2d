"""Imported by predict's fork server alone (workers.PRELOAD), never by a command itself.

A worker that the fork server was still starting when Ctrl-C or SIGTERM stopped predict reads
the pool's semaphores after the main process has removed them, and its failure went to the
terminal as a 15-line traceback under "interrupted: no output was written". The fork server's
children report an error through sys.excepthook; this one stays silent for that case alone."""

from __future__ import annotations

import sys
import traceback
from types import TracebackType


def _started_after_its_pool_was_stopped(error: BaseException, tb: TracebackType | None) -> bool:
    return isinstance(error, FileNotFoundError) and any(
        frame.f_code.co_name == "__setstate__" and frame.f_code.co_filename.endswith("synchronize.py")
        for frame, _ in traceback.walk_tb(tb)
    )


def _excepthook(kind: type[BaseException], error: BaseException, tb: TracebackType | None) -> None:
    if not _started_after_its_pool_was_stopped(error, tb):
        sys.__excepthook__(kind, error, tb)


sys.excepthook = _excepthook
