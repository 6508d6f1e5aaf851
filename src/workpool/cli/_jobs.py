"""What one job of ``workpool run`` is: its command line, its process group, its record.

Each attempt starts the command in a new session (so in a process group of its own, out of
reach of the terminal's Ctrl-C) with stdin closed and stdout/stderr spooled to temporary files,
which bounds memory whatever the command prints and never blocks on a pipe that a grandchild
holds open. When the attempt ends for any reason, what is left of its group is killed: no job
leaves a process behind.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import signal
import subprocess
import tempfile
import threading
import time
from dataclasses import dataclass
from typing import IO, Any

import workpool

_POLL = 0.05
"""Seconds between looks at a job's deadline and at a kill request while its command runs."""

_PLACEHOLDER = re.compile(r"\{(#|//|/\.|/|\.|)\}")


def substitute(template: str, value: str, seq: int, quote: bool = False) -> str:
    """``template`` with every placeholder replaced by a part of the input ``value``.

    ``{}`` the input, ``{.}`` without its extension, ``{/}`` its basename, ``{//}`` its
    directory, ``{/.}`` its basename without extension, ``{#}`` the job number. ``quote``
    shell-quotes each replacement, for a command that a shell will parse.
    """

    def part(match: re.Match[str]) -> str:
        kind = match.group(1)
        if kind == "#":
            return str(seq)
        text = {
            "": value,
            ".": os.path.splitext(value)[0],
            "/": os.path.basename(value),
            "//": os.path.dirname(value),
            "/.": os.path.splitext(os.path.basename(value))[0],
        }[kind]
        return shlex.quote(text) if quote else text

    return _PLACEHOLDER.sub(part, template)


def command_line(template: list[str], value: str, seq: int, shell: bool) -> list[str]:
    """The argv that runs ``template`` for one input; without placeholders the input is appended.

    Without ``shell`` the command runs directly, so an input can never be parsed as shell
    syntax. With it, the words form one ``sh -c`` script and each replacement is quoted.
    """
    has_placeholder = any(_PLACEHOLDER.search(word) for word in template)
    if shell:
        script = " ".join(substitute(word, value, seq, quote=True) for word in template)
        if not has_placeholder:
            script += " " + shlex.quote(value)
        return ["/bin/sh", "-c", script]
    argv = [substitute(word, value, seq) for word in template]
    return argv if has_placeholder else [*argv, value]


@dataclass(frozen=True)
class Limits:
    """How each attempt is supervised."""

    timeout: float | None
    """Seconds an attempt may run before its group gets SIGTERM (None: no limit)."""
    term_grace: float
    """Seconds between that SIGTERM and a SIGKILL."""
    output_limit: int
    """The most bytes of stdout and of stderr kept in a record (the tail)."""
    retries: int = 0
    halt: int | None = None
    """After this many jobs failed (retries spent), start no more."""


@dataclass(frozen=True)
class Attempt:
    """How one run of a job's command ended."""

    exit_code: int
    """The command's exit status; 128 + N when signal N ended it, as shells report; never 0
    when it timed out."""
    signal: int | None
    timed_out: bool
    killed: bool
    """Stopped by ``workpool run`` itself: the grace period ran out, or a second Ctrl-C."""
    duration: float
    stdout: str
    stderr: str
    stdout_truncated: bool
    stderr_truncated: bool

    @property
    def status(self) -> str:
        if self.timed_out:
            return "timed_out"
        if self.killed:
            return "killed"
        return "succeeded" if self.exit_code == 0 else "failed"


class NotStarted(Exception):
    """The run was stopping when the job's turn came, so it never ran."""


class JobFailed(Exception):
    """An attempt ended with a non-zero status; the pool's retry policy sees this."""

    def __init__(self, attempt: Attempt) -> None:
        super().__init__(f"exit code {attempt.exit_code}")
        self.attempt = attempt


@dataclass
class Job:
    """One input and its command; ``last`` and ``attempts`` are filled in as it runs."""

    seq: int
    input: str
    argv: list[str]
    attempts: int = 0
    last: Attempt | None = None

    def record(self) -> dict[str, Any]:
        """The JSON object reported for this job (it must have run at least once)."""
        last = self.last
        assert last is not None
        return {
            "seq": self.seq,
            "input": self.input,
            "command": self.argv,
            "status": last.status,
            "exit_code": last.exit_code,
            "signal": last.signal,
            "timed_out": last.timed_out,
            "duration": round(last.duration, 6),
            "attempts": self.attempts,
            "stdout": last.stdout,
            "stderr": last.stderr,
            "stdout_truncated": last.stdout_truncated,
            "stderr_truncated": last.stderr_truncated,
        }


class ProcessGroups:
    """Every job's live process group, so that all of them can be killed at once."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._live: set[int] = set()
        self._failures = 0
        self.stopping = False
        self.killing = False

    def spawn(
        self, argv: list[str], stdout: IO[bytes], stderr: IO[bytes]
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` as the leader of a new group, unless everything is being killed."""
        with self._lock:  # a kill_all never misses a group started while it runs
            if self.stopping or self.killing:
                raise NotStarted
            process = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=stderr,
                start_new_session=True,
            )
            self._live.add(process.pid)
        return process

    def release(self, process: subprocess.Popen[bytes]) -> None:
        """The leader has exited: kill whatever it left in its group, and forget the group."""
        _signal_group(process.pid, signal.SIGKILL)
        with self._lock:
            self._live.discard(process.pid)

    def count_failure(self, halt: int | None) -> None:
        """One more job failed for good; at ``halt`` of them, start no more."""
        with self._lock:
            self._failures += 1
            if halt is not None and self._failures >= halt:
                self.stopping = True

    def kill_all(self) -> int:
        """SIGKILL every live group, and start no more; returns how many were killed."""
        with self._lock:
            self.killing = True
            live = list(self._live)
        for pgid in live:
            _signal_group(pgid, signal.SIGKILL)
        return len(live)

    def __len__(self) -> int:
        with self._lock:
            return len(self._live)


def _signal_group(pgid: int, signum: int) -> None:
    # The group may be gone already (PermissionError: macOS says so for a zombie leader).
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, signum)


def run_job(job: Job, groups: ProcessGroups, limits: Limits) -> Attempt:
    """Run one attempt of ``job`` as a pool task; raises ``JobFailed`` if it did not succeed."""
    context = workpool.current_task()
    job.attempts = context.attempt
    attempt = _attempt(job.argv, groups, limits, context)
    job.last = attempt
    if attempt.status != "succeeded":
        if context.attempt > limits.retries:
            groups.count_failure(limits.halt)
        raise JobFailed(attempt)
    return attempt


def _attempt(
    argv: list[str], groups: ProcessGroups, limits: Limits, context: workpool.TaskContext
) -> Attempt:
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        try:
            process = groups.spawn(argv, out, err)
        except OSError as error:
            # What a shell reports: 127 when the command is not found, 126 when not runnable.
            code = 127 if isinstance(error, FileNotFoundError) else 126
            err.write(f"workpool: cannot run {argv[0]!r}: {error.strerror}\n".encode())
            return _ended(code, False, False, 0.0, out, err, limits)
        try:
            code, timed_out, killed = _supervise(process, groups, limits, context, started)
        finally:
            groups.release(process)
        return _ended(code, timed_out, killed, time.monotonic() - started, out, err, limits)


def _supervise(
    process: subprocess.Popen[bytes],
    groups: ProcessGroups,
    limits: Limits,
    context: workpool.TaskContext,
    started: float,
) -> tuple[int, bool, bool]:
    """Wait for the command; returns its return code, whether it timed out, whether killed."""
    deadline = None if limits.timeout is None else started + limits.timeout
    while True:
        try:
            code = process.wait(timeout=_POLL)
        except subprocess.TimeoutExpired:
            pass
        else:
            return code, False, groups.killing and code < 0  # killed by ``kill_all``
        if groups.killing or context.cancelled:
            _signal_group(process.pid, signal.SIGKILL)
            return process.wait(), False, True
        if deadline is not None and time.monotonic() >= deadline:
            _signal_group(process.pid, signal.SIGTERM)
            try:
                return process.wait(timeout=limits.term_grace), True, False
            except subprocess.TimeoutExpired:
                _signal_group(process.pid, signal.SIGKILL)
                return process.wait(), True, False


def _ended(
    returncode: int,
    timed_out: bool,
    killed: bool,
    duration: float,
    out: IO[bytes],
    err: IO[bytes],
    limits: Limits,
) -> Attempt:
    signum = -returncode if returncode < 0 else None
    if signum is not None:
        code = 128 + signum
    else:
        code = 124 if timed_out and returncode == 0 else returncode  # 124: as timeout(1) does
    stdout, stdout_truncated = _tail(out, limits.output_limit)
    stderr, stderr_truncated = _tail(err, limits.output_limit)
    return Attempt(
        exit_code=code,
        signal=signum,
        timed_out=timed_out,
        killed=killed,
        duration=duration,
        stdout=stdout,
        stderr=stderr,
        stdout_truncated=stdout_truncated,
        stderr_truncated=stderr_truncated,
    )


def _tail(spool: IO[bytes], limit: int) -> tuple[str, bool]:
    """The last ``limit`` bytes written to ``spool``, decoded, and whether that cut anything."""
    size = spool.seek(0, os.SEEK_END)
    spool.seek(max(0, size - limit))
    return spool.read().decode("utf-8", errors="replace"), size > limit
