"""The parent's hold on one worker process: its pipe, the tasks sent to it, how it is stopped.

A ``ChildHandle`` is what a process worker's slot holds. Its proxy thread sends and receives
through it; ``interrupt`` and ``recall``, from other threads, use it under its ``lock``.
"""

from __future__ import annotations

import contextlib
import itertools
import multiprocessing
import os
import sys
import threading
from collections import deque
from multiprocessing.connection import Connection
from typing import Any

from .._task import Task
from . import _child
from ._parking import Parker
from .base import Interruption

AHEAD_MAX_BYTES = 32 * 1024 if sys.platform == "linux" else 2 * 1024
"""The tasks sent ahead must fit in the pipe's buffer together, so that sending never waits
for the child (a socket pair buffers at least 200 KiB on Linux, 8 KiB on macOS)."""

_RECALL_WAIT = 0.1
"""How long ``recall`` waits for the child's dispatch lock (held by a child killed under it?)."""


class ChildHandle:
    """One child process and what its proxy, ``interrupt`` and ``recall`` share about it.

    A short task's successors are sent *ahead*, while the child still runs it, so that the child
    never waits for the parent between them: ``unsent`` holds the tasks reserved for it that are
    not in its pipe yet, ``sent`` those that are, in order (sent ones first); each leaves when it
    starts. Each message is numbered; the child records the number of each it reads in
    ``dispatch.seen`` and skips those whose numbers ``recall`` wrote in ``dispatch.skip``, both
    under ``dispatch.lock``, so a recalled task surely never runs.
    """

    __slots__ = (
        "conn",
        "current",
        "dispatch",
        "kill_at",
        "lock",
        "numbered",
        "over_memory",
        "parker",
        "process",
        "replies",
        "sent",
        "sent_bytes",
        "stopping",
        "too_big",
        "unread",
        "unsent",
    )

    def __init__(self) -> None:
        self.parker = Parker()
        self.lock = threading.Lock()  # orders interrupt() and recall() against the proxy
        self.process: multiprocessing.process.BaseProcess | None = None
        self.conn: Connection | None = None
        self.replies: _child.Frames | None = None  # reads the pipe once the child is up
        self.dispatch: _child.Dispatch | None = None
        self.current: Task[Any] | None = None  # the task the child runs, if any
        self.unsent: deque[Task[Any]] = deque()  # reserved for it, not in its pipe yet
        self.sent: deque[tuple[Task[Any], int, int]] = deque()  # (task, number, size) in it
        self.sent_bytes = 0  # the size of the messages in ``sent`` and ``unread``
        self.unread: deque[tuple[int, int]] = deque()  # (number, size) taken back, maybe unread
        self.numbered = 0  # messages numbered so far
        self.too_big: Task[Any] | None = None  # too big to wait in the pipe: sent as it starts
        self.over_memory = False  # past max_memory_per_worker: it retires, none is sent ahead
        self.stopping: Interruption | None = None  # why it is being killed
        self.kill_at: float | None = None  # when SIGTERM's grace ends

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    # -- sending and taking back --------------------------------------------------------------

    def send(self, payload: bytes | None, ahead: list[bytes]) -> None:
        """Send the task to start (if it is not in the pipe already), then those sent ahead,
        in one write where the platform lets us (a socket pair: not on Windows)."""
        conn = self.conn
        assert conn is not None
        if payload is not None and (not ahead or len(payload) > AHEAD_MAX_BYTES):
            conn.send_bytes(payload)
            payload = None
        if not ahead:
            return
        if payload is not None:
            ahead.insert(0, payload)
        if sys.platform == "win32":
            for message in ahead:
                conn.send_bytes(message)
            return
        joined = b"".join(_child.frame(message) for message in ahead)
        fd = conn.fileno()
        data = memoryview(joined)[_child.send_now(fd, joined) :]  # it fits: it goes at once
        while data:
            data = data[os.write(fd, data) :]

    def recall(self, task: Task[Any]) -> bool:
        """``Backend.recall``, under ``lock``: take back ``task`` and every task after it."""
        sent, unsent = self.sent, self.unsent
        at = next((i for i, entry in enumerate(sent) if entry[0] is task), None)
        if at is None:  # not in the pipe: it (and all after it) never will be
            if task in unsent:
                while unsent.pop() is not task:
                    pass
            return True
        if not self._take_back([number for _, number, _ in itertools.islice(sent, at, None)]):
            return False  # it has begun: treat them all as started
        while len(sent) > at:
            _, number, size = sent.pop()
            self.unread.append((number, size))  # still in the pipe, to be skipped
        unsent.clear()
        return True

    def _take_back(self, numbers: list[int]) -> bool:
        """Have the child skip messages ``numbers`` (ascending): False if it read the first."""
        dispatch, process = self.dispatch, self.process
        assert dispatch is not None
        assert process is not None
        if not process.is_alive():
            # It reads nothing more, and may have died holding the dispatch lock: what it read
            # before it died is all that can have started.
            return bool(dispatch.seen.value < numbers[0])
        return dispatch.take_back(numbers, _RECALL_WAIT)

    # -- life and death -----------------------------------------------------------------------

    def alive(self) -> bool:
        """Whether an idle child can take a task. Its pipe is checked too: under forkserver,
        ``is_alive()`` learns of a death only once the server reports it, a moment later, while
        an idle child's pipe is readable only if the child closed it by dying."""
        if self.process is None or self.conn is None or not self.process.is_alive():
            return False
        try:
            return not self.conn.poll(0)
        except OSError:
            return False

    def signal(self, *, kill: bool) -> None:
        """SIGKILL if ``kill``, else SIGTERM; nothing if the child is gone already."""
        process = self.process
        if process is None or process.exitcode is not None:
            return
        try:
            if kill:
                process.kill()
                self.kill_at = None
            else:
                process.terminate()
        except (OSError, ValueError):
            pass  # it is already gone, or closed

    def reap(self) -> int | None:
        """Wait for a dying child; its exit code, or minus the signal that killed it."""
        process = self.process
        assert process is not None
        process.join(5.0)
        if process.exitcode is None:
            self.signal(kill=True)
            process.join()
        return process.exitcode

    def stop(self, grace: float) -> None:
        """Ask the child to exit, and make sure it does (and is reaped) before its proxy
        leaves: SIGTERM if it has not exited a second after being asked, SIGKILL ``grace``
        seconds later."""
        process, conn = self.process, self.conn
        if process is None:
            return
        if conn is not None:
            with contextlib.suppress(OSError):  # it is already gone
                conn.send_bytes(_child.STOP)
        process.join(grace + 1.0)  # it exits as soon as it reads STOP; longer means it hangs
        if process.exitcode is None:
            self.signal(kill=False)
            process.join(grace)
        if process.exitcode is None:
            self.signal(kill=True)
            process.join()
        if conn is not None:
            conn.close()
        if self.replies is not None:
            self.replies.close()
