"""The engine of ``workpool run``: reads inputs, runs jobs on a thread ``Pool``, reports them.

Three threads take part. A reader thread turns input lines into jobs and submits them; the
pool's bounded queue makes it wait while the workers are busy, so memory stays constant however
long the input is. Pool workers run one job each (``_jobs.run_job``). The main thread owns
everything else: it writes each job's record as it finishes, draws the progress, and acts on
signals, which Python delivers only to it. A signal handler merely notes the signal; the main
loop wakes at least every ``_TICK`` seconds to act on it, so nothing subtle runs in a handler.
"""

from __future__ import annotations

import collections
import json
import math
import os
import queue
import shlex
import signal
import sys
import threading
import time
from collections.abc import Iterable, Iterator
from concurrent.futures import CancelledError, Future
from dataclasses import dataclass, field
from typing import IO, Any

import workpool

from ._display import Counts, Display
from ._jobs import (
    Attempt,
    Job,
    JobFailed,
    Limits,
    NotStarted,
    ProcessGroups,
    command_line,
    run_job,
)

_TICK = 0.1
"""Seconds between the main loop's looks at signals, the grace period and the display."""


@dataclass(frozen=True)
class Plan:
    """Everything ``workpool run`` was asked to do, checked."""

    template: list[str]
    shell: bool
    jobs: int
    limits: Limits
    retries: int
    retry_delay: float
    keep_order: bool
    halt: int | None
    grace: float
    done_before: collections.Counter[str] = field(default_factory=collections.Counter)
    """How many times each input already succeeded in the resume journal: skipped this time."""


class Runner:
    """One run of ``workpool run``: ``Runner(...).run()`` returns the exit status."""

    def __init__(
        self, plan: Plan, inputs: Iterable[str], results: list[IO[str]], display: Display
    ) -> None:
        self.plan = plan
        self.inputs = inputs
        self.results = results
        self.display = display
        self.counts = Counts()
        self.groups = ProcessGroups()
        self.pool = workpool.Pool(plan.jobs, queue_size=plan.jobs)
        self.retry = workpool.RetryPolicy(
            retry_on=(JobFailed,),
            retry_if=lambda _: not self.groups.stopping,  # once stopping, no new attempts
            base_delay=plan.retry_delay,
            max_delay=max(plan.retry_delay, 10.0),
        )
        self.finished: queue.SimpleQueue[tuple[Job, Future[Attempt] | None]] = queue.SimpleQueue()
        self.order: collections.deque[int] = collections.deque()
        self.ready: dict[int, dict[str, Any] | None] = {}
        self.reading_done = threading.Event()
        self.reader_error: str | None = None
        self.signals: list[int] = []
        self.stop_at: float | None = None
        self.stop_signal: int | None = None
        self.killed = False
        self.started = time.monotonic()

    # -- the main thread ----------------------------------------------------------------------

    def run(self) -> int:
        handled = (signal.SIGINT, signal.SIGTERM)
        previous = {signum: signal.signal(signum, self._on_signal) for signum in handled}
        reader = threading.Thread(target=self._read, name="workpool-run-reader", daemon=True)
        try:
            reader.start()
            with self.display:
                self._loop()
        finally:
            self.groups.kill_all()  # a last sweep: no process outlives the command
            self.pool.shutdown(wait=True, cancel_futures=True)
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        self.display.summary(self.counts, time.monotonic() - self.started)
        return self._status()

    def _on_signal(self, signum: int, frame: object) -> None:
        self.signals.append(signum)  # acted on by the main loop within a tick

    def _loop(self) -> None:
        while True:
            self._act_on_signals()
            self._check_grace()
            try:
                item = self.finished.get(timeout=_TICK)
                while True:
                    self._settle(*item)
                    item = self.finished.get_nowait()
            except queue.Empty:
                pass
            self._emit_ready()
            self.display.update(self.counts, self._total(), self._stopping_note())
            # Once stopping, the reader may be blocked on an input that never comes: not waited for.
            no_more = self.reading_done.is_set() or self.stop_at is not None
            if no_more and self.counts.settled == self.counts.submitted:
                return

    def _act_on_signals(self) -> None:
        while self.signals:
            signum = self.signals.pop(0)
            if self.stop_at is None:
                self._stop(signal.Signals(signum).name, signum)
            else:
                self._kill(f"{signal.Signals(signum).name} again")

    def _stop(self, why: str, signum: int | None = None, notify: bool = True) -> None:
        """Read no more input and start nothing new; running jobs get the grace period."""
        if self.stop_at is not None:
            return
        self.stop_at = time.monotonic()
        self.stop_signal = signum
        self.groups.stopping = True
        self.pool.shutdown(wait=False, cancel_futures=True)
        if not notify:
            return
        running = len(self.groups)
        again = "Ctrl-C again" if signum is not None else "Ctrl-C"
        self.display.notice(
            f"workpool: {why}: starting no new jobs; waiting up to {self.plan.grace:g} s for "
            f"{running} running (then killed; {again} to kill them now)"
        )

    def _check_grace(self) -> None:
        stop_at = self.stop_at
        if (
            stop_at is not None
            and not self.killed
            and time.monotonic() >= stop_at + self.plan.grace
        ):
            self._kill("grace period over")

    def _kill(self, why: str) -> None:
        if self.killed:
            return
        self.killed = True
        self.pool.shutdown(wait=False, cancel_futures=True)
        count = self.groups.kill_all()
        self.display.notice(f"workpool: {why}: killing {count} running jobs")

    def _stopping_note(self) -> str | None:
        if self.stop_at is None:
            return None
        if self.killed:
            return "killing running jobs"
        left = math.ceil(max(0.0, self.stop_at + self.plan.grace - time.monotonic()))
        return f"stopping: {len(self.groups)} running, killed in {left} s (Ctrl-C: at once)"

    def _total(self) -> int | None:
        """The number of jobs to run, once the whole input has been read."""
        return self.counts.submitted if self.reading_done.is_set() else None

    # -- results ------------------------------------------------------------------------------

    def _settle(self, job: Job, task: Future[Attempt] | None) -> None:
        """Count a finished job and queue its record; a job that never ran has none."""
        self.counts.settled += 1
        if task is not None and job.last is None and not task.cancelled():
            error = task.exception()
            if error is not None and not isinstance(error, (CancelledError, NotStarted)):
                job.last = _crashed(error)  # a bug of ours, reported as the job's failure
        if job.last is None:
            self.counts.not_started += 1
            self.ready[job.seq] = None
            return
        record = job.record()
        self.counts.add(record["status"])
        self.ready[job.seq] = record
        if self.plan.halt is not None and self.counts.failures >= self.plan.halt:
            self._stop(f"{self.counts.failures} failed jobs (--halt {self.plan.halt})")

    def _emit_ready(self) -> None:
        if not self.plan.keep_order:
            for record in self.ready.values():
                if record is not None:
                    self._write(record)
            self.ready.clear()
            return
        while self.order and self.order[0] in self.ready:
            record = self.ready.pop(self.order.popleft())
            if record is not None:
                self._write(record)

    def _write(self, record: dict[str, Any]) -> None:
        line = json.dumps(record) + "\n"
        for stream in list(self.results):
            try:
                self.display.write(stream, line)
            except BrokenPipeError:
                # The reader went away (``| head``): nobody wants more, so stop everything.
                self.results.remove(stream)
                _silence(stream)
                self._stop("output closed", notify=False)
                self._kill("output closed")

    def _status(self) -> int:
        if self.reader_error is not None:
            return 2
        if self.stop_signal is not None:
            return 128 + self.stop_signal  # as a shell reports a command its signal stopped
        return 1 if self.counts.failures or self.stop_at is not None else 0

    # -- the reader thread --------------------------------------------------------------------

    def _read(self) -> None:
        try:
            for job in self._jobs():
                if self.stop_at is not None:
                    return
                self._submit(job)
        except OSError as error:
            self.reader_error = f"cannot read the input: {error}"
            self.display.notice(f"workpool: {self.reader_error}")
        finally:
            self.reading_done.set()

    def _jobs(self) -> Iterator[Job]:
        """The jobs still to run: every input but those the journal says already succeeded."""
        done_before = collections.Counter(self.plan.done_before)
        for seq, value in enumerate(self.inputs, start=1):
            if done_before[value] > 0:
                done_before[value] -= 1
                self.counts.skipped += 1
                continue
            yield Job(seq, value, command_line(self.plan.template, value, seq, self.plan.shell))

    def _submit(self, job: Job) -> None:
        if self.plan.keep_order:
            self.order.append(job.seq)
        self.counts.submitted += 1
        options = self.pool.options(retries=self.plan.retries, retry=self.retry)
        try:
            task = options.submit(run_job, job, self.groups, self.plan.limits)
        except workpool.PoolClosed:
            self.finished.put((job, None))  # stopped while it waited for room: never ran
            return
        task.add_done_callback(lambda done: self.finished.put((job, done)))


def dry_run(plan: Plan, inputs: Iterable[str], out: IO[str]) -> int:
    """Print the command each job would run, one a line, shell-quoted; run nothing."""
    runner_counts = collections.Counter(plan.done_before)
    for seq, value in enumerate(inputs, start=1):
        if runner_counts[value] > 0:
            runner_counts[value] -= 1
            continue
        out.write(shlex.join(command_line(plan.template, value, seq, plan.shell)) + "\n")
    out.flush()
    return 0


def _crashed(error: BaseException) -> Attempt:
    return Attempt(
        exit_code=1,
        signal=None,
        timed_out=False,
        killed=False,
        duration=0.0,
        stdout="",
        stderr=f"workpool: the job could not run: {error!r}\n",
        stdout_truncated=False,
        stderr_truncated=False,
    )


def _silence(stream: IO[str]) -> None:
    """Point a closed output at /dev/null, so that Python's exit flush does not fail on it."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, stream.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    if stream is sys.stdout:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115  # lives until exit, as stdout does
