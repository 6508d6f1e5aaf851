"""workpool's exception tree.

::

    WorkpoolError
    ├── QueueFull          the queue is at queue_size and the call would not wait
    ├── PoolClosed         the pool is shut down (also a RuntimeError, as the stdlib raises)
    ├── TaskTimeout        a task ran past its timeout (also a TimeoutError)
    ├── WorkerCrashed      the worker died under a task (also a BrokenProcessPool)
    └── BrokenPool         a worker initializer failed; the pool runs nothing more
                           (also the stdlib's BrokenThreadPool and BrokenProcessPool)

Every exception carries its facts as attributes and survives pickling, so it
can cross a process boundary unchanged.
"""

from __future__ import annotations

from concurrent.futures.process import BrokenProcessPool
from concurrent.futures.thread import BrokenThreadPool
from typing import Any


class WorkpoolError(Exception):
    """Base class of every exception that workpool itself raises."""

    def __reduce__(self) -> tuple[Any, ...]:
        # Rebuild from the keyword facts, not from args, so pickling keeps them.
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls: type[WorkpoolError], args: tuple[Any, ...], state: dict[str, Any]) -> Any:
    error = cls.__new__(cls)
    error.args = args
    error.__dict__.update(state)
    return error


class QueueFull(WorkpoolError):
    """The queue holds ``queue_size`` tasks and the call was not allowed to wait."""

    def __init__(self, queue_size: int, message: str | None = None) -> None:
        self.queue_size = queue_size
        super().__init__(message or f"the queue is full ({queue_size} tasks waiting)")


class PoolClosed(WorkpoolError, RuntimeError):
    """The pool was shut down and accepts no new task."""

    def __init__(self, message: str = "cannot submit: the pool is shut down") -> None:
        super().__init__(message)


class TaskTimeout(WorkpoolError, TimeoutError):
    """A task ran longer than its ``timeout`` and was stopped or abandoned."""

    def __init__(self, task_id: str | None = None, timeout: float | None = None) -> None:
        self.task_id = task_id
        self.timeout = timeout
        where = f"task {task_id}" if task_id else "the task"
        limit = f" of {timeout:g}s" if timeout is not None else ""
        super().__init__(f"{where} exceeded its timeout{limit}")


class WorkerCrashed(WorkpoolError, BrokenProcessPool):
    """The worker running a task died under it; the pool replaces the worker and goes on.

    ``exitcode`` is the worker's exit status, or ``-N`` when signal N killed it.
    """

    def __init__(
        self,
        task_id: str | None = None,
        *,
        pid: int | None = None,
        exitcode: int | None = None,
        reason: str | None = None,
    ) -> None:
        self.task_id = task_id
        self.pid = pid
        self.exitcode = exitcode
        self.reason = reason
        super().__init__(self._describe())

    def _describe(self) -> str:
        parts = [
            f"the worker running task {self.task_id} died" if self.task_id else "a worker died"
        ]
        if self.pid is not None:
            parts.append(f"(pid {self.pid})")
        if self.exitcode is not None and self.exitcode < 0:
            parts.append(f"killed by signal {-self.exitcode}")
        elif self.exitcode is not None:
            parts.append(f"with exit code {self.exitcode}")
        if self.reason:
            parts.append(f": {self.reason}")
        return " ".join(parts)


class BrokenPool(WorkpoolError, BrokenThreadPool, BrokenProcessPool):
    """A worker's initializer failed, so the pool runs nothing more (as the stdlib does).

    It is also the stdlib executors' error for this, so code written for them catches it.
    """
