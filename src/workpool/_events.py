"""Events: what a pool tells the observers attached to it.

An ``Observer`` receives each event as a method call, in the order the pool saw them: for one
task, ``task_submitted`` (just before it is queued, in the submitting thread, so a tracer can
capture the submitter's context), then ``task_rejected`` if the pool refused it (a full queue, a
closed pool), or per attempt ``task_started`` and either ``task_retried`` or ``task_finished``
(once, last; a task cancelled while queued goes straight to it). Calls are made outside the
pool's lock, from whichever thread made the event happen (the submitter, a worker, the timer),
so an observer must be thread-safe.
An observer that raises is logged on the ``workpool`` logger and never breaks the pool. With no
observer attached, an event costs one truth test.
"""

from __future__ import annotations

import logging
from typing import Any

from ._engine import RETIRE
from ._task import Task

logger = logging.getLogger("workpool")


class Observer:
    """Receives a pool's events; every method does nothing unless overridden."""

    def task_submitted(self, task: Task[Any]) -> None:
        """``task`` was queued."""

    def task_rejected(self, task: Task[Any], error: BaseException) -> None:
        """The pool refused ``task`` with ``error`` (QueueFull, PoolClosed, ...): it never ran."""

    def task_started(self, task: Task[Any]) -> None:
        """An attempt of ``task`` started (``task.attempts`` is its number)."""

    def task_retried(self, task: Task[Any], error: BaseException) -> None:
        """An attempt failed with ``error``; the task will run again after its backoff."""

    def task_finished(self, task: Task[Any], error: BaseException | None) -> None:
        """``task`` ended in ``task.state``; ``error`` is what it failed with, if anything."""

    def worker_started(self, worker: int) -> None:
        """A worker was started."""

    def worker_stopped(self, worker: int, reason: str) -> None:
        """A worker left: ``"retired"`` (idle, resized, recycled, shutdown) or ``"lost"``
        (it died, or was stopped or abandoned after a timeout or a cancel)."""

    def pool_changed(self, event: str) -> None:
        """The pool was ``"paused"``, ``"resumed"``, ``"resized"``, ``"closed"`` or ``"broken"``."""


class LoggingObserver(Observer):
    """Logs every event on a ``logging`` logger, with the facts in ``extra`` for structured logs.

    Task failures log at WARNING, everything else at DEBUG.
    """

    def __init__(self, logger_: logging.Logger | None = None) -> None:
        self.logger = logger_ or logger

    def _task(self, level: int, what: str, task: Task[Any], **facts: Any) -> None:
        if self.logger.isEnabledFor(level):
            fields = {"task_id": task.id, "task_name": task.name, "attempt": task.attempts}
            fields.update(facts)
            self.logger.log(level, "task %s %s %s", task.id, task.name, what, extra=fields)

    def task_submitted(self, task: Task[Any]) -> None:
        self._task(logging.DEBUG, "submitted", task)

    def task_rejected(self, task: Task[Any], error: BaseException) -> None:
        self._task(logging.INFO, f"rejected: {error!r}", task, error=repr(error))

    def task_started(self, task: Task[Any]) -> None:
        self._task(logging.DEBUG, "started", task)

    def task_retried(self, task: Task[Any], error: BaseException) -> None:
        self._task(logging.INFO, f"will retry after {error!r}", task, error=repr(error))

    def task_finished(self, task: Task[Any], error: BaseException | None) -> None:
        state = task.state.value
        if error is None or state == "cancelled":
            self._task(logging.DEBUG, state, task, state=state)
        else:
            self._task(logging.WARNING, f"{state}: {error!r}", task, state=state, error=repr(error))

    def worker_started(self, worker: int) -> None:
        self.logger.debug("worker %d started", worker, extra={"worker": worker})

    def worker_stopped(self, worker: int, reason: str) -> None:
        level = logging.WARNING if reason == "lost" else logging.DEBUG
        self.logger.log(level, "worker %d %s", worker, reason, extra={"worker": worker})

    def pool_changed(self, event: str) -> None:
        self.logger.info("pool %s", event, extra={"pool_event": event})


def announce(observers: tuple[Observer, ...], worker: int, next_task: object) -> None:
    """Tell observers what a worker's request for work came to (a task, RETIRE, or a park)."""
    if next_task is RETIRE:
        emit(observers, "worker_stopped", worker, "retired")
    elif next_task is not None:
        emit(observers, "task_started", next_task)


def emit(observers: tuple[Observer, ...], event: str, *args: Any) -> None:
    """Call ``event`` on every observer; log and swallow what one raises."""
    for observer in observers:
        try:
            getattr(observer, event)(*args)
        except Exception:
            logger.exception("observer %r raised in %s", observer, event)
