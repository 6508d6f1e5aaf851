"""Task (the future a submission returns), its states, and the in-task context."""

from __future__ import annotations

import enum
import itertools
import threading
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, InvalidStateError
from concurrent.futures import TimeoutError as FuturesTimeout
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from ._errors import TaskTimeout
from ._locking import yield_to_holder
from ._options import TaskOptions

if TYPE_CHECKING:
    from ._engine import WorkerSlot

T = TypeVar("T")

_ids = itertools.count(1)


class TaskState(enum.Enum):
    """Where a task is in its life; the last four are final."""

    QUEUED = "queued"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    TIMED_OUT = "timed_out"

    @property
    def finished(self) -> bool:
        return self not in (TaskState.QUEUED, TaskState.RUNNING)


class _Owner(Protocol):
    lock: threading.Lock  # orders a Condition's creation against resolution without one

    def cancel(self, task: Task[Any]) -> bool: ...


# concurrent.futures.Future's internal states, which wait() and as_completed() read.
_PENDING, _FINISHED = "PENDING", "FINISHED"
_CANCELLED, _CANCELLED_AND_NOTIFIED = "CANCELLED", "CANCELLED_AND_NOTIFIED"
_DONE_STATES = (_FINISHED, _CANCELLED, _CANCELLED_AND_NOTIFIED)

_QUEUED = TaskState.QUEUED

NO_KWARGS: dict[str, Any] = {}
"""The keyword arguments of a task given none: one dict, shared (nothing writes a task's
kwargs), not an empty one per task, which was a fifth of a queued task's memory."""

_condition_creation = threading.Lock()
"""Orders the lazy creation of a task's Condition against its resolution without one."""


class Task(Future[T], Generic[T]):
    """One submitted call: a ``concurrent.futures.Future`` that also knows its state and attempts.

    ``attempts`` counts the runs started so far; a retried task keeps one ``Task`` across all of
    its attempts. ``result()`` raises the last attempt's error.

    A stdlib Future builds a ``threading.Condition`` up front, which costs more than the rest of
    a task's dispatch. A Task builds it only when it must (``wait``, ``as_completed``, a
    done-callback, a second thread waiting for its result); a task resolved before that is
    resolved without one. The one thread that waits in ``result()`` sleeps on a plain lock of
    its own instead (``_sleeper``), which the resolving thread releases: a Condition's wait and
    notify cost about 6 us more, on the way of every task waited for one at a time. Both are
    ordered against resolution by a lock, so that nobody can start waiting on what the resolving
    thread did not see: the owner's own lock if it has one (a thread or process pool then
    resolves an unwatched task under the lock it holds anyway), else one short global lock.
    """

    # Written on the way of every task, Future's own fields among them: as slots, a task never
    # builds the instance dict that Future, which has no slots, would give it. That dict cost
    # 1 us a task on Python 3.13, 0.5 on 3.12 and 0.35 on 3.10 (nothing on 3.11).
    __slots__ = (
        "_cond",
        "_deadline",
        "_enqueued_at",
        "_exception",
        "_owner",
        "_result",
        "_seq",
        "_sleeper",
        "_started_at",
        "_state",
        "_wp_state",
        "args",
        "attempts",
        "fn",
        "kwargs",
        "options",
        "worker",
    )
    _cond: threading.Condition | None
    _deadline: float | None  # while an attempt with a timeout runs
    _result: Any
    _exception: BaseException | None
    _sleeper: threading.Lock | None  # held; released once the task is resolved
    worker: WorkerSlot | None  # while an attempt runs (or is reserved), its slot
    _started_at: float

    # Rarer fields fall back to class-level defaults until set. Future's waiter and callback
    # lists are only ever touched under the Condition, so they are built with it; until then,
    # nothing is in them.
    _waiters: Any = ()
    _done_callbacks: Any = ()

    # The scheduler writes these (under the pool's lock) only when they change.
    _cancel_requested = False
    _expired = False
    _batch = False  # a map's batch of items: long by design (see Scheduler.reserve)

    def __init__(
        self,
        fn: Callable[..., T],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        owner: _Owner | None = None,
    ) -> None:
        # Future.__init__ is not called: it would build the Condition now (see above).
        self._state = _PENDING
        self._cond = None
        self._result = self._exception = self._sleeper = self.worker = self._deadline = None
        self._started_at = 0.0
        self.fn = fn
        self.args = args
        self.kwargs = kwargs
        self.options = options
        self.attempts = 0
        self._owner = owner
        self._seq = next(_ids)
        self._wp_state = _QUEUED
        self._enqueued_at = 0.0

    def _ordering_lock(self) -> threading.Lock:
        """The lock that orders a Condition or a sleeper's creation against resolution."""
        owner = self._owner
        lock = _condition_creation if owner is None else owner.lock
        if lock.locked():
            yield_to_holder(lock)  # the pool's lock, busy with workers: see _locking
        return lock

    @property
    def _condition(self) -> threading.Condition:
        """Future's Condition, built on first use."""
        cond = self._cond
        if cond is None:
            with self._ordering_lock():
                cond = self._cond
                if cond is None:
                    self._waiters = []
                    self._done_callbacks = []
                    cond = self._cond = threading.Condition()
        return cond

    @_condition.setter
    def _condition(self, cond: threading.Condition) -> None:
        self._waiters, self._done_callbacks = [], []
        self._cond = cond

    def _resolve_unwatched(self, result: Any, exception: BaseException | None) -> bool:
        """Resolve without a Condition if nobody has one to wait on; False if somebody has."""
        if self._cond is not None:
            return False
        with self._ordering_lock():
            if self._cond is not None:
                return False
            if self._state in _DONE_STATES:
                raise InvalidStateError(f"{self!r} is already resolved")
            self._result = result
            self._exception = exception
            self._state = _FINISHED
        if self._sleeper is not None:
            self._wake_sleeper()
        return True  # and no callback to run: adding one builds the Condition

    def _wake_sleeper(self) -> None:
        """Resolved: wake the thread waiting in ``result()``, if one sleeps on its own lock."""
        sleeper = self._sleeper
        if sleeper is not None:
            self._sleeper = None
            sleeper.release()

    def _invoke_callbacks(self) -> None:
        # Future runs this once resolved (set_result, set_exception, cancel), after notifying
        # its Condition: the sleeper wakes first too, not after the callbacks (one may wait
        # for that waiter, or raise). A task resolved unwatched wakes it in _resolve_unwatched.
        if self._sleeper is not None:
            self._wake_sleeper()
        super()._invoke_callbacks()  # type: ignore[misc]  # Future's own, untyped

    # A watched task (its Condition built) goes straight to Future's own: a call less.
    def set_result(self, result: T) -> None:
        if self._cond is not None or not self._resolve_unwatched(result, None):
            super().set_result(result)

    def set_exception(self, exception: BaseException | None) -> None:
        if self._cond is not None or not self._resolve_unwatched(None, exception):
            super().set_exception(exception)

    def result(self, timeout: float | None = None) -> T:
        if self._state == _FINISHED and self._exception is None:
            return self._result  # type: ignore[no-any-return]  # FINISHED: set by set_result
        if self._cond is None and timeout != 0:
            sleeper = self._sleep()
            if sleeper is not None:
                if not sleeper.acquire(True, -1 if timeout is None else max(timeout, 0)):
                    raise FuturesTimeout()
                if self._state == _FINISHED and self._exception is None:
                    return self._result  # type: ignore[no-any-return]
        return super().result(timeout)  # failed, cancelled, or watched by others too

    def _sleep(self) -> threading.Lock | None:
        """A lock for the caller of ``result()`` to sleep on until the task is resolved; None
        if it is resolved already, or others wait for it (they share its Condition)."""
        with self._ordering_lock():
            if self._cond is not None or self._sleeper is not None or self.done():
                return None
            sleeper = self._sleeper = threading.Lock()
            sleeper.acquire()
        return sleeper

    def done(self) -> bool:
        return self._state in _DONE_STATES

    def cancelled(self) -> bool:
        return self._state == _CANCELLED or self._state == _CANCELLED_AND_NOTIFIED

    @property
    def id(self) -> str:
        """A process-unique identifier, such as ``"t42"``."""
        return f"t{self._seq}"

    @property
    def name(self) -> str:
        """The task's name option, or its function's name."""
        return self.options.name or name_of(self.fn)

    @property
    def state(self) -> TaskState:
        return self._wp_state

    def running(self) -> bool:
        return self._wp_state is TaskState.RUNNING

    def cancel(self) -> bool:
        """Cancel a queued task at once (True); ask a running one to stop (False until it does).

        A running thread task learns of it through ``current_task().cancelled``/``check()``;
        a running process task is stopped. A finished task is left as it is.
        """
        if self._owner is None:
            return self._mark_cancelled()
        return self._owner.cancel(self)

    def _mark_cancelled(self) -> bool:
        """Resolve as cancelled and tell every waiter, including ``wait``/``as_completed``."""
        if not Future.cancel(self):
            return False
        # The stdlib notifies waiters only in set_running_or_notify_cancel, which no worker
        # will call for a task it never takes: call it now so wait()/as_completed() see it.
        self.set_running_or_notify_cancel()
        return True

    def __repr__(self) -> str:
        return f"<Task {self.id} {self.name} state={self._wp_state.value} attempts={self.attempts}>"


class TaskContext:
    """What a running task can ask about itself: ``current_task()`` returns one."""

    __slots__ = ("_attempt", "_task")

    def __init__(self, task: Task[Any], attempt: int) -> None:
        self._task = task
        self._attempt = attempt

    @property
    def id(self) -> str:
        return self._task.id

    @property
    def attempt(self) -> int:
        """1 for the first run, 2 for the first retry, and so on."""
        return self._attempt

    @property
    def cancelled(self) -> bool:
        """Whether the task was asked to stop: cancelled, or past its deadline."""
        return self._task._cancel_requested or self.timed_out

    @property
    def timed_out(self) -> bool:
        """Whether this attempt is past its deadline (or was given up on for it)."""
        task = self._task
        if task.attempts != self._attempt:
            return True  # a later attempt has begun: this one was abandoned
        deadline = task._deadline
        return task._expired or (deadline is not None and time.monotonic() >= deadline)

    @property
    def deadline(self) -> float | None:
        """The ``time.monotonic()`` value this attempt must end by, or None."""
        return self._task._deadline

    def remaining(self) -> float | None:
        """Seconds left before the deadline (never below 0), or None without one."""
        deadline = self._task._deadline
        return None if deadline is None else max(0.0, deadline - time.monotonic())

    def check(self) -> None:
        """Raise ``TaskTimeout`` past the deadline, ``CancelledError`` once cancelled."""
        task = self._task
        if self.timed_out:
            raise TaskTimeout(task.id, task.options.timeout)
        if task._cancel_requested:
            raise CancelledError(f"task {task.id} was cancelled")

    def __repr__(self) -> str:
        return f"<TaskContext {self.id} attempt={self.attempt} cancelled={self.cancelled}>"


class WorkerCell:
    """What a thread worker runs now: its thread's value of ``_current``, set once.

    Setting a context variable around each call cost a thread worker about 1 us a task (a
    tenth of its dispatch on Python 3.12 and 3.13); writing ``running`` costs a twentieth of
    that. A context copied during a task (``asyncio.to_thread``, a coroutine, ``ctx.run`` in a
    thread of its own) holds this same cell, so it names the task while the task runs; read
    from another thread, it keeps what it read (``running_task``), so that it goes on naming
    its task, as a per-task value would. A copy first read after its task ended sees what the
    worker runs then.
    """

    __slots__ = ("running", "thread")

    def __init__(self) -> None:
        self.running: tuple[Task[Any], int] | None = None
        self.thread = threading.get_ident()


_current: ContextVar[tuple[Task[Any], int] | WorkerCell | None] = ContextVar(
    "workpool_current_task", default=None
)
"""The running task and its attempt number, set by the worker around each call (a thread
worker's ``WorkerCell`` instead); read it with ``running_task()``."""


def running_task() -> tuple[Task[Any], int] | None:
    """The task running in this thread or coroutine, and its attempt number, if any."""
    running = _current.get()
    if isinstance(running, WorkerCell):
        cell, running = running, running.running  # one read: the worker may move on
        if cell.thread != threading.get_ident():
            # A context copied from the worker's, in another thread: from now on it holds
            # what it read (it alone: a set changes only the context it runs in).
            _current.set(running)
    return running


def name_of(fn: Callable[..., Any]) -> str:
    """What tasks of ``fn`` are called by default: its qualified name, or else its repr."""
    return str(getattr(fn, "__qualname__", None) or repr(fn))


def current_task() -> TaskContext:
    """The context of the task running in this thread or coroutine.

    Raises ``RuntimeError`` outside a workpool task.
    """
    running = running_task()
    if running is None:
        raise RuntimeError("current_task() was called outside a workpool task")
    return TaskContext(*running)
