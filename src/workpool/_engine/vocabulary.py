"""The scheduler's vocabulary: worker slots, what an attempt came to, what a worker is told.

A worker slot moves through::

    STARTING ──take──> BUSY <──take──> IDLE ──(woken)──> WOKEN ──take──> BUSY
        └──────────────── any of them ──retire──> RETIRED        BUSY ──lose──> LOST
"""

from __future__ import annotations

import enum
from collections import deque
from typing import TYPE_CHECKING, Any, Final, Literal, TypeAlias

if TYPE_CHECKING:
    from .._task import Task


class SlotState(enum.Enum):
    STARTING = "starting"
    IDLE = "idle"
    WOKEN = "woken"
    BUSY = "busy"
    LOST = "lost"
    RETIRED = "retired"


class WorkerSlot:
    """The scheduler's record of one worker; the backend keeps its thread or process in
    ``handle``."""

    __slots__ = ("ahead", "handle", "id", "last_run", "recycle", "state", "task", "tasks_done")

    def __init__(self, slot_id: int) -> None:
        self.id = slot_id
        self.state = SlotState.STARTING
        self.task: Task[Any] | None = None
        self.ahead: deque[Task[Any]] = deque()
        """The tasks handed to this worker ahead of time (``Scheduler.reserve``), in order."""
        self.tasks_done = 0
        self.last_run = 0.0
        """How long the worker's last attempt ran, in seconds."""
        self.handle: Any = None
        self.recycle = False
        """Set by a backend (say, a worker over its memory limit): retire at the next take."""

    def __repr__(self) -> str:
        return f"<WorkerSlot {self.id} {self.state.value}>"


class Directive(enum.Enum):
    """What the scheduler tells a worker besides "run this task" and "park"."""

    RETIRE = "retire"
    """Exit now."""
    WOKEN = "woken"
    """A wake-up is already on its way to this parked worker: take it."""


RETIRE: Final = Directive.RETIRE
Next: TypeAlias = "Task[Any] | Literal[Directive.RETIRE] | None"
"""What a worker gets when it asks for work: a task, None (park), or RETIRE."""


class Outcome(enum.Enum):
    """What became of an attempt that ended."""

    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"
    RETRY = "retry"
    """The task is queued again (now or after its backoff): nothing to resolve."""
    STALE = "stale"
    """The attempt had already been concluded (timed out, lost): ignore what it returned."""


class Offer(enum.Enum):
    """What became of a task offered without the lock (``Scheduler.offer``)."""

    QUEUED = "queued"
    """It is in: nothing more to do."""
    DECLINED = "declined"
    """Not taken: submit it under the lock."""
    UNSETTLED = "unsettled"
    """Taken, but as it went in a worker turned idle or left, ``max_workers`` rose, or the pool
    closed: ``settle`` it under the lock."""
