"""The seam between a pool and the thing that runs its tasks.

A backend starts, wakes and stops workers; the pool (the ``WorkerHost``) decides everything
else. A worker's life, seen from the backend::

    start(slot) ──> host.take(slot) ──> run the task ──> host.done(slot, task, value, error) ──┐
                         ^   │ None: park until wake(slot)        returns the next task, None │
                         │   └ RETIRE: exit                       (park) or RETIRE (exit)     │
                         └────────────────────────────────────────────────────────────────────┘

A worker that dies under its task is reported with ``host.lost(slot, error)``; a worker that the
pool gave up on (``interrupt`` after a timeout) is reported gone with ``host.exited(slot)``.
Backends translate their native failures into workpool's exceptions here, at the seam.
"""

from __future__ import annotations

import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable
from typing import Any, ClassVar, Literal, Protocol

from .._engine import Directive, Next, WorkerSlot
from .._errors import WorkerCrashed
from .._events import logger
from .._task import Task

Interruption = Literal["timeout", "cancel"]


class WorkerHost(Protocol):
    """What a pool offers its backend's workers. Every method is thread-safe."""

    def take(self, slot: WorkerSlot) -> Next:
        """The first task for a new or woken worker: a task, None (park) or RETIRE."""

    def done(
        self, slot: WorkerSlot, task: Task[Any], value: Any, error: BaseException | None
    ) -> Next:
        """Report an attempt's end; returns the worker's next task, None (park) or RETIRE.

        Never called from the main thread, where a Ctrl-C lands: it takes the pool's lock in a
        form that a ``KeyboardInterrupt`` raised just after the lock is taken would leave held.
        """

    def idle_expired(self, slot: WorkerSlot) -> Directive | None:
        """A parked worker waited ``park_timeout()``: RETIRE, None (park again), or woken."""

    def park_timeout(self) -> float | None:
        """How long a parked worker waits before calling ``idle_expired``."""

    def lost(self, slot: WorkerSlot, error: BaseException | None) -> None:
        """The worker died (its task, if any, fails with ``error``)."""

    def exited(self, slot: WorkerSlot) -> None:
        """A worker that was interrupted after a timeout or cancel is gone at last."""

    def broken(self, slot: WorkerSlot, error: BaseException) -> None:
        """The worker's initializer raised: the pool is broken."""

    def reserve(self, slot: WorkerSlot, into: deque[Task[Any]]) -> None:
        """Append to ``into`` the next tasks for busy ``slot`` to have ahead of time, if any
        (see ``Scheduler.reserve``), under the pool's lock, so that ``recall`` (under it too)
        finds them there; ``take`` or ``done`` returns each later, in order, when it starts."""


class Backend(ABC):
    """Runs workers for a pool. One instance per pool."""

    name: ClassVar[str]

    def __init__(
        self,
        host: WorkerHost,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        self.host = host
        self.initializer = initializer
        self.initargs = initargs

    @staticmethod
    @abstractmethod
    def default_workers() -> int:
        """The worker count when the user names none."""

    @abstractmethod
    def start(self, slot: WorkerSlot) -> None:
        """Start a worker for ``slot``; it calls ``host.take(slot)`` when ready."""

    @abstractmethod
    def wake(self, slot: WorkerSlot) -> None:
        """``slot``'s parked worker has work: make it call ``host.take(slot)``."""

    @abstractmethod
    def interrupt(self, slot: WorkerSlot, task: Task[Any], why: Interruption) -> None:
        """Stop ``task`` running on ``slot`` (as far as this backend can)."""

    def recall(self, slot: WorkerSlot, task: Task[Any]) -> bool:
        """Take back ``task``, reserved for ``slot``, and every task reserved for it after
        ``task``: True if its worker will never run any of them (False: it may run them all).

        Called under the pool's lock, so it must not block for long. Backends that never
        reserve have nothing to take back.
        """
        return False

    def failed(
        self,
        slot: WorkerSlot,
        fault: Exception,
        what: str,
        task: Task[Any] | None,
        pid: int | None = None,
    ) -> None:
        """A fault of the pool's own (not a task's: those are its result) ended the ``what``
        serving ``slot``: log it and fail the task it held as if the worker had died (its retry
        policy applies), so that nothing waits for it forever; the pool starts another worker.
        """
        logger.exception("workpool: the %s of worker %s failed", what, slot.id)
        error = WorkerCrashed(
            None if task is None else task.id,
            pid=pid,
            reason=f"its {what} failed: {type(fault).__name__}: {fault}",
        )
        error.__cause__ = fault
        self.host.lost(slot, error)

    def close(self) -> None:  # noqa: B027  # optional: most backends keep nothing for later
        """The pool accepts no more tasks: let go of whatever was kept for later ones."""

    @abstractmethod
    def join(self, timeout: float | None) -> bool:
        """After the pool closed: wait for the workers to exit; False if some still run."""


def join_threads(
    threads: dict[int, threading.Thread],
    starting: threading.Lock,
    timeout: float | None,
) -> bool:
    """Join the workers' ``threads`` (a backend's listing, from which each removes itself as
    it ends) until none is left, or False at ``timeout``. A backend lists and starts a thread
    under ``starting``, read under it here, so that none is found listed but not started; and
    joins again, since one may start a replacement as it leaves. The calling thread, if listed
    (shutdown called from inside a task), is left alone."""
    deadline = None if timeout is None else time.monotonic() + timeout
    joined = {threading.current_thread()}  # and those already joined: each is joined once
    while True:
        if not threads:  # each left: none can be listed and not started yet
            return True
        with starting:
            listed = [thread for thread in threads.values() if thread not in joined]
        if not listed:
            return True
        for thread in listed:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if thread.is_alive():
                return False
            joined.add(thread)
