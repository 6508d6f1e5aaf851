"""What ``workpool run`` shows on stderr: a live progress bar on a terminal, plain lines elsewhere.

Results go to stdout (or a file) and nothing else does, so the output stays machine-readable
whatever the display does.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass
from types import TracebackType
from typing import IO

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


@dataclass
class Counts:
    """The jobs of a run, by how they ended."""

    submitted: int = 0
    settled: int = 0
    succeeded: int = 0
    failed: int = 0
    timed_out: int = 0
    killed: int = 0
    not_started: int = 0
    skipped: int = 0

    def add(self, status: str) -> None:
        setattr(self, status, getattr(self, status) + 1)

    @property
    def failures(self) -> int:
        return self.failed + self.timed_out + self.killed

    @property
    def done(self) -> int:
        return self.succeeded + self.failures


class Display:
    """Plain notices and a summary on stderr; the base for the live display."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        self.quiet = quiet
        self.console = Console(
            file=stream or sys.stderr, highlight=False, soft_wrap=True, emoji=False
        )

    def __enter__(self) -> Display:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    def update(self, counts: Counts, total: int | None, note: str | None) -> None:
        """Show progress (a plain display shows none)."""

    def notice(self, text: str) -> None:
        """Tell the user something happened (a stop, a kill): always shown, even when quiet."""
        self.console.print(text, markup=False)

    def write(self, stream: IO[str], line: str) -> None:
        """Write a result line to ``stream``."""
        stream.write(line)
        stream.flush()

    def summary(self, counts: Counts, elapsed: float) -> None:
        if self.quiet:
            return
        parts = [f"{counts.succeeded} succeeded", f"{counts.failed} failed"]
        parts += [
            f"{number} {label}"
            for number, label in (
                (counts.timed_out, "timed out"),
                (counts.killed, "killed"),
                (counts.not_started, "not started"),
                (counts.skipped, "skipped (done before)"),
            )
            if number
        ]
        rate = counts.done / elapsed if elapsed > 0 else 0.0
        self.notice(
            f"workpool: {counts.done} jobs in {elapsed:.2f} s ({rate:.1f}/s): " + ", ".join(parts)
        )


class LiveDisplay(Display):
    """A progress bar with done, failed, rate and time left, redrawn in place."""

    def __init__(self, quiet: bool = False, stream: IO[str] | None = None) -> None:
        super().__init__(quiet, stream)
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("[red]{task.fields[failed]} failed[/]"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("ETA"),
            TimeRemainingColumn(),
            console=self.console,
            redirect_stdout=False,  # results are written to the stream given, never captured
            redirect_stderr=False,
        )
        self.task: TaskID | None = None

    def __enter__(self) -> Display:
        self.progress.start()
        self.task = self.progress.add_task("running", total=None, failed=0, rate="")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.progress.stop()

    def update(self, counts: Counts, total: int | None, note: str | None) -> None:
        if self.task is None:
            return
        elapsed = self.progress.tasks[0].elapsed or 0.0
        rate = f"{counts.done / elapsed:.1f}/s" if elapsed > 0 else ""
        self.progress.update(
            self.task,
            completed=counts.done,
            total=total,
            failed=counts.failures,
            rate=rate,
            description=note or "running",
        )

    def notice(self, text: str) -> None:
        self.progress.console.print(text, markup=False)

    def write(self, stream: IO[str], line: str) -> None:
        if stream.isatty():  # the same terminal as the bar: print above it, not through it
            self.progress.console.print(line.rstrip("\n"), markup=False, soft_wrap=True)
        else:
            super().write(stream, line)
