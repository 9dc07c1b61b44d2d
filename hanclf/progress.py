"""How long-running commands (predict, explain, evaluate, faithfulness) show how far they have
got: a bar on stderr where it shows as one, else a line in the log every PROGRESS_LOG_SECONDS."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from hanclf.io import PROGRESS_LOG_SECONDS, bar_on_stderr, known_rows, time_left


class RowProgress:
    """Rows done so far, out of `total` (None: not known): a bar on stderr (`bar` None: where
    stderr shows one), or else a line through `log` every PROGRESS_LOG_SECONDS ('labelled 800
    rows of ...', `done` naming what was done to them, `unit` what they are). A context manager:
    the bar goes at the end."""

    def __init__(self, total: int | None, bar: bool | None, log: Callable[[str], None], done: str = "labelled",
                 unit: str = "rows") -> None:
        self.total, self.log, self.done, self.unit = total, log, done, unit
        self.started = self.logged = time.perf_counter()
        self.first: tuple[float, int] | None = None  # when the first rows were done, and how many
        self.bar: Progress | None = None
        if bar or (bar is None and bar_on_stderr()):
            columns = [TextColumn(done), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn()]
            self.bar = Progress(*columns, console=Console(stderr=True), transient=True)
            self.task = self.bar.add_task(done, total=total)

    @classmethod
    def of_input(cls, path: Path, progress: bool | None, log: Callable[[str], None], done: str) -> RowProgress:
        """For the rows of input `path`; `progress`: a bar, None where stderr shows one."""
        return cls(known_rows(path), progress, log, done)

    def __enter__(self) -> RowProgress:
        if self.bar is not None:
            self.bar.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()

    def __call__(self, rows: int) -> None:
        now = time.perf_counter()
        self.first = self.first or (now, rows)
        if self.bar is not None:
            self.bar.update(self.task, completed=rows)
        elif now - self.logged >= PROGRESS_LOG_SECONDS:
            self.logged = now
            # The pace since the first rows were done: start-up (model, workers) is not part of it.
            since, done_then = self.first
            rate = (rows - done_then) / (now - since) if rows > done_then else rows / max(now - self.started, 1e-9)
            line = f"{self.done} {rows} {self.unit}"
            if self.total:
                left = (self.total - rows) / max(rate, 1e-9)
                line += f" of {self.total} ({rows / self.total:.0%}), {time_left(left)}"
            self.log(f"{line}, {rate:.0f} {self.unit}/s")
