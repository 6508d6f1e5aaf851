"""The pool's core: one lock around the scheduler, the backend's workers, and task resolution.

The core decides under its lock (by asking the scheduler) and acts after releasing it: workers
are started and woken, futures resolved and callbacks run outside the lock, so user code never
runs while the pool is locked. A timer thread, started the first time something is timed (a
deadline, a retry's backoff), wakes the scheduler when that time comes.

The scheduler counts an outcome before the future is resolved, so ``stats()`` already shows it
when ``result()`` returns. ``wait()`` also waits for the resolutions still under way.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

from ._backends import Backend
from ._engine import RETIRE, Directive, Next, Offer, Outcome, Scheduler, SlotState, WorkerSlot
from ._errors import BrokenPool, QueueFull, TaskTimeout, WorkerCrashed
from ._events import Observer, announce, emit, logger
from ._locking import yield_to_holder
from ._stats import PoolStats
from ._task import _FINISHED, Task, TaskState, running_task

_SUCCEEDED, _CANCELLED = Outcome.SUCCEEDED, Outcome.CANCELLED
_RETRY, _STALE = Outcome.RETRY, Outcome.STALE
_QUEUED = TaskState.QUEUED
_OFFER_QUEUED, _UNSETTLED = Offer.QUEUED, Offer.UNSETTLED

Handed = tuple[Task[Any], Outcome, BaseException]
"""A reserved task that could not be taken back from its lost worker: how it ended."""


class PoolCore:
    """Drives a ``Scheduler`` with a ``Backend``; implements the backend's ``WorkerHost``."""

    def __init__(
        self,
        engine: Scheduler,
        backend: Callable[..., Backend],
        backend_options: dict[str, Any],
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.lock = threading.Lock()
        self.engine = engine
        self.clock = clock
        self.broken_error: BrokenPool | None = None
        # Conditions on the lock, each built by the first thread to wait on it: most pools
        # never need one, and each costs more to build than the rest of the pool.
        self._conditions: dict[str, threading.Condition] = {}
        self._space_waiters = 0
        self._done_waiters = 0
        self._timer: threading.Thread | None = None
        self._resolving: list[Task[Any]] = []  # counted final, future not yet resolved
        # The task whose callbacks a thread runs, by thread (a threading.local costs more to
        # build than the rest of this core).
        self._settling: dict[int, Task[Any]] = {}
        self.observers: tuple[Observer, ...] = ()  # replaced whole, so never iterated mid-change
        self.backend = backend(self, **backend_options)

    # -- the submitting side ------------------------------------------------------------------

    def submit(self, task: Task[Any], block: bool, timeout: float | None = None) -> None:
        """Queue ``task``; wait for room while the queue is full if ``block``.

        ``Pool.submit`` passes ``block`` by position: on Python 3.10, a call with keywords
        builds a bound method first, about 0.2 us of a submission's 3.6.
        """
        if self.observers:  # before a worker can see the task, so events keep their order
            emit(self.observers, "task_submitted", task)
        engine, lock = self.engine, self.lock
        wakeups, accepted = None, False
        try:
            # While every worker is busy, a task needs no decision: it goes in without the lock.
            offer = engine.offer(task, self.clock())
            if offer is _OFFER_QUEUED:
                accepted = True
                return
            if lock.locked():
                yield_to_holder(lock)
            with lock:
                if offer is _UNSETTLED and engine.settle(task):
                    accepted = True
                else:
                    if self.broken_error is not None:
                        raise self.broken_error
                    if engine.queue_size and engine.full and not engine.closed:
                        if not block:
                            raise QueueFull(engine.queue_size)
                        self._wait_for_room(timeout)
                    engine.submit(task, self.clock())
                    accepted = True
                if engine.timer_dirty:  # only ever with a rate limit
                    self._kick_timer()
                if engine.wakeups:
                    wakeups, engine.wakeups = engine.wakeups, []
        except BaseException as error:
            if not accepted and task in engine.inbox:
                # Interrupted (a Ctrl-C, say) after its offer went in, maybe before a worker
                # that turned idle meanwhile heard of it: take it back, unless counted in since.
                with lock:
                    accepted = not engine.withdraw(task)
                    wakeups = self._take_wakeups()
            if self.observers and not accepted:
                emit(self.observers, "task_rejected", task, error)
            raise
        finally:
            if wakeups:  # even past a Ctrl-C: a wake-up decided is never dropped
                self._dispatch(wakeups)

    def _wait_for_room(self, timeout: float | None) -> None:
        engine = self.engine
        if self.in_own_task():
            raise QueueFull(
                engine.queue_size,
                "a task of this pool submitted to it while its queue is full: waiting could "
                "deadlock, since the workers that would make room may all be waiting too; "
                "use try_submit() or a larger queue_size",
            )
        deadline = None if timeout is None else self.clock() + timeout
        self._space_waiters += 1
        try:
            while engine.full and not engine.closed and self.broken_error is None:
                remaining = None if deadline is None else deadline - self.clock()
                if remaining is not None and remaining <= 0:
                    raise QueueFull(engine.queue_size)
                self._condition("not_full").wait(remaining)
        finally:
            self._space_waiters -= 1
        if self.broken_error is not None:
            raise self.broken_error

    def cancel(self, task: Task[Any]) -> bool:
        """``Task.cancel``: see there."""
        with self.lock:
            reserved_on = task.worker if task._wp_state is _QUEUED else None
            if reserved_on is not None and self.backend.recall(reserved_on, task):
                # Back in the queue, where cancel finds it; those reserved after it need a worker.
                self.engine.unreserve(reserved_on, task, wake=True)
            verdict = self.engine.cancel(task)
            slot = task.worker
            if verdict:
                self._resolving.append(task)
                if self._space_waiters:
                    self._condition("not_full").notify()
            wakeups = self._take_wakeups()
        if wakeups:
            self._dispatch(wakeups)
        if verdict:
            self._settle(task, _CANCELLED, None, None)
            return True
        if verdict is None and slot is not None:
            self.backend.interrupt(slot, task, "cancel")
            return False
        return task.cancelled()

    def wait(self, timeout: float | None = None) -> bool:
        """Block until no task is queued, delayed or running; False on timeout."""
        if self.in_own_task():
            raise RuntimeError(
                "wait() was called from inside a task of the same pool: it would wait for "
                "that task itself; wait for the tasks you need (task.result()) instead"
            )
        with self.lock:
            if self._all_finished():
                return True
            self._done_waiters += 1
            try:
                return self._condition("all_done").wait_for(self._all_finished, timeout)
            finally:
                self._done_waiters -= 1

    def in_own_task(self) -> bool:
        """Whether the caller runs inside a task of this pool."""
        running = running_task()
        return running is not None and running[0]._owner is self

    def _all_finished(self) -> bool:
        resolving = self._resolving
        if self.engine.unfinished or not resolving:
            return not self.engine.unfinished
        # A done-callback may wait() while its own task is still being resolved.
        return len(resolving) == 1 and resolving[0] is self._settling.get(threading.get_ident())

    def control(self, change: Callable[[Scheduler], Any], event: str) -> None:
        """Apply ``change`` to the scheduler under the lock, then carry out its decisions."""
        with self.lock:
            change(self.engine)
            if self.engine.paused:
                self._recall_reserved()  # none may start while paused
            if self.engine.timer_dirty:
                self._kick_timer()
            wakeups = self._take_wakeups()
        if self.observers:
            emit(self.observers, "pool_changed", event)
        if wakeups:
            self._dispatch(wakeups)

    def join(self, timeout: float | None) -> bool:
        """After ``close``: wait for every task, then for the workers and the timer to exit.

        From inside a task of this pool it returns False at once: that task cannot end while
        it waits, so the pool drains on its own once the caller returns.
        """
        if self.in_own_task():
            return False
        deadline = None if timeout is None else self.clock() + timeout

        def remaining() -> float | None:
            return None if deadline is None else max(0.0, deadline - self.clock())

        if not self.wait(remaining()) or not self.backend.join(remaining()):
            return False
        if self._timer is not None:  # None: no timed event came since the last timer left
            with self.lock:  # where it is listed and started
                timer = self._timer
                self._wake_timer()
            if timer is not None and timer is not threading.current_thread():
                timer.join(remaining())
        return True

    def stats(self) -> PoolStats:
        with self.lock:
            return self.engine.stats()

    def close(self, *, cancel_waiting: bool, stop_running: bool = False) -> list[Task[Any]]:
        """Accept nothing more; cancel what waits and ask what runs to stop, if told to."""
        with self.lock:
            engine = self.engine
            engine.close()
            if cancel_waiting:
                self._recall_reserved()
            cancelled = engine.cancel_waiting() if cancel_waiting else []
            self._resolving.extend(cancelled)
            running = engine.running_tasks() if stop_running else []
            wakeups = self._take_wakeups()
            self._wake_all_waiters()
        self.backend.close()
        if self.observers:
            emit(self.observers, "pool_changed", "closed")
        if wakeups:
            self._dispatch(wakeups)
        for task in cancelled:
            self._settle(task, _CANCELLED, None, None)
        for task in running:
            self.cancel(task)
        return cancelled

    # -- the workers' side (WorkerHost) -------------------------------------------------------

    def take(self, slot: WorkerSlot) -> Next:
        engine, lock = self.engine, self.lock
        if lock.locked():
            yield_to_holder(lock)
        with lock:
            if engine.reserved and not engine.queued and not engine.inbox:
                self._steal_for(slot)
            task = engine.take(slot, self.clock())
            # _after_take() only when it has something to do: every task passes here
            wakeups = (
                self._after_take()
                if self._space_waiters or engine.timer_dirty or engine.wakeups
                else None
            )
        if wakeups:
            self._dispatch(wakeups)
        if self.observers:
            announce(self.observers, slot.id, task)
        return task

    def done(
        self, slot: WorkerSlot, task: Task[Any], value: Any, error: BaseException | None
    ) -> Next:
        engine, lock = self.engine, self.lock
        # Tried first, then taken: a check of lock.locked() before a `with` can lose the GIL
        # between the two, then block, and one such block starts a convoy of context switches
        # that once held the flood of no-op tasks at 12-16 us a task instead of 10. Not `with`:
        # backends never call this from the main thread, the one a Ctrl-C interrupts.
        if not lock.acquire(False):
            yield_to_holder(lock)
            lock.acquire()
        try:
            now = self.clock()  # under the lock: no task can be queued "after" this moment
            outcome = engine.complete(slot, task, error, now)
            if outcome is _STALE:
                return RETIRE  # its loss was reported when the pool gave up on it
            handed = None
            if slot.ahead and slot.recycle:  # its worker is leaving
                handed = self._hand_back(slot, now)
            elif engine.reserved and not engine.queued and not engine.inbox and not slot.ahead:
                self._steal_for(slot)
            next_task = engine.take(slot, now)
            final = outcome is not _RETRY
            if final:
                if task._cond is None and outcome is not _CANCELLED and not self.observers:
                    # Nobody waits on it and nothing is to be told: resolve it here, which this
                    # lock orders against the creation of its Condition (see Task).
                    task._result, task._exception, task._state = value, error, _FINISHED
                    if task._sleeper is not None:
                        task._wake_sleeper()
                    final = False
                    if self._done_waiters and self._all_finished():
                        self._condition("all_done").notify_all()
                else:
                    self._resolving.append(task)
            wakeups = (
                self._after_take()
                if self._space_waiters or engine.timer_dirty or engine.wakeups
                else None
            )
        finally:
            lock.release()
        try:
            if wakeups:
                self._dispatch(wakeups)
            if handed:
                self._conclude_all(handed)
        finally:  # counted final under the lock: it must be resolved, whatever failed here
            if final:
                self._settle(task, outcome, value, error)
            elif outcome is _RETRY and self.observers:
                emit(self.observers, "task_retried", task, error)
        if self.observers:
            announce(self.observers, slot.id, next_task)
        return next_task

    def idle_expired(self, slot: WorkerSlot) -> Directive | None:
        with self.lock:
            verdict = self.engine.idle_expired(slot)
            wakeups = self._take_wakeups()
        if wakeups:
            self._dispatch(wakeups)
        if self.observers and verdict is RETIRE:
            emit(self.observers, "worker_stopped", slot.id, "retired")
        return verdict

    def park_timeout(self) -> float | None:
        return self.engine.park_timeout()

    def reserve(self, slot: WorkerSlot, into: deque[Task[Any]]) -> None:
        lock = self.lock
        if lock.locked():
            yield_to_holder(lock)
        with lock:
            into.extend(self.engine.reserve(slot))

    def lost(self, slot: WorkerSlot, error: BaseException | None) -> None:
        with self.lock:
            reported = slot.state is SlotState.LOST or slot.state is SlotState.RETIRED
            now = self.clock()
            task, outcome = self.engine.lose(slot, error, now)
            if task is not None and outcome is not _RETRY:
                self._resolving.append(task)
            handed = self._hand_back(slot, now)
            wakeups = self._after_take()
        if self.observers and not reported:
            emit(self.observers, "worker_stopped", slot.id, "lost")
        if wakeups:
            self._dispatch(wakeups)
        if task is not None and outcome is not None:
            self._conclude(task, outcome, error or WorkerCrashed(task.id))
        if handed:
            self._conclude_all(handed)

    def exited(self, slot: WorkerSlot) -> None:
        with self.lock:
            self.engine.exited(slot)

    def broken(self, slot: WorkerSlot, error: BaseException) -> None:
        if isinstance(error, WorkerCrashed):
            broken = BrokenPool(f"a worker failed to start: {error}")
        else:
            broken = BrokenPool(f"a worker initializer raised {type(error).__name__}: {error}")
        broken.__cause__ = error
        with self.lock:
            if self.broken_error is None:
                self.broken_error = broken
            task, outcome = self.engine.lose(slot, broken, self.clock())
            self.engine.close()
            failed = self.engine.cancel_waiting(Outcome.FAILED)
            if task is not None and outcome is not _RETRY:
                failed.append(task)  # taken by the worker that could not start it
            self._resolving.extend(failed)
            wakeups = self._take_wakeups() or []
            self._wake_all_waiters()
        for other in wakeups:  # a broken pool starts no worker; idle ones wake to retire
            if other.handle is not None:
                self.backend.wake(other)
            else:
                with self.lock:
                    self.engine.start_failed(other)
        if self.observers:
            emit(self.observers, "pool_changed", "broken")
        for task in failed:
            self._settle(task, Outcome.FAILED, None, broken)

    # -- reserved tasks (under the lock) -------------------------------------------------------

    def _recall_reserved(self) -> None:
        """Put back in the queue every reserved task that its worker has not started."""
        for slot in self.engine.reservations():
            for task in slot.ahead:  # those its worker has begun cannot come back: skip them
                if self.backend.recall(slot, task):
                    self.engine.unreserve(slot, task)
                    break

    def _hand_back(self, slot: WorkerSlot, now: float) -> list[Handed]:
        """``slot``'s worker is lost or leaving: put its reserved tasks back in the queue, those
        the backend can take back unstarted; the others may have started there, and end as a
        crash (retried, if their policy says so). Returns what the caller must conclude."""
        handed: list[Handed] = []
        ahead = slot.ahead
        while ahead:
            task = ahead[0]
            if self.backend.recall(slot, task):
                self.engine.unreserve(slot, task, wake=True)
                break
            error = WorkerCrashed(task.id, reason="sent ahead to a worker that was then lost")
            outcome = self.engine.drop_reserved(slot, error, now)
            if outcome is not _RETRY:
                self._resolving.append(task)
            handed.append((task, outcome, error))
        return handed

    def _steal_for(self, slot: WorkerSlot) -> None:
        """``slot`` is about to find the queue empty: take back the later half of the tasks
        reserved for a busy worker, so that they run now, here, rather than after it."""
        for other in self.engine.reservations():
            if other is slot:
                continue
            ahead = other.ahead
            task = ahead[len(ahead) // 2]
            if self.backend.recall(other, task):
                self.engine.unreserve(other, task, wake=True)
                return

    # -- acting on decisions ------------------------------------------------------------------

    def _take_wakeups(self) -> list[WorkerSlot] | None:
        engine = self.engine
        wakeups = engine.wakeups
        if not wakeups:
            return None
        engine.wakeups = []
        return wakeups

    def _after_take(self) -> list[WorkerSlot] | None:
        """Bookkeeping after the queue shrank: room for submitters, the timer, wake-ups."""
        if self._space_waiters:
            self._condition("not_full").notify()
        engine = self.engine
        if engine.timer_dirty:
            self._kick_timer()
        wakeups = engine.wakeups
        if not wakeups:
            return None
        engine.wakeups = []
        return wakeups

    def _dispatch(self, wakeups: list[WorkerSlot]) -> None:
        backend = self.backend
        for slot in wakeups:
            if slot.handle is not None:
                backend.wake(slot)
                continue
            try:
                backend.start(slot)
            except Exception:
                # Not the caller's fault (its task is queued): say so, and let the queue wait
                # for a worker that frees up or the next attempt to start one.
                logger.exception("workpool could not start a worker")
                with self.lock:
                    self.engine.start_failed(slot)
                continue
            if self.observers:
                emit(self.observers, "worker_started", slot.id)

    def _conclude_all(self, handed: list[Handed]) -> None:
        for task, outcome, error in handed:
            self._conclude(task, outcome, error)

    def _conclude(self, task: Task[Any], outcome: Outcome, error: BaseException) -> None:
        """An attempt that ended without returning: settle it, or report its retry."""
        if outcome is _RETRY:
            if self.observers:
                emit(self.observers, "task_retried", task, error)
        else:
            self._settle(task, outcome, None, error)

    def _settle(
        self, task: Task[Any], outcome: Outcome, value: Any, error: BaseException | None
    ) -> None:
        """Resolve a task's future to its counted outcome; then tell ``wait()`` if it waits."""
        callbacks = bool(task._done_callbacks)
        if callbacks:  # user code runs in here: wait() from it must not wait for this task
            thread = threading.get_ident()
            outer = self._settling.get(thread)  # a callback may settle another task of ours
            self._settling[thread] = task
        try:
            if self.observers:
                ended = CancelledError() if outcome is _CANCELLED else error
                emit(self.observers, "task_finished", task, ended)
            if outcome is _SUCCEEDED:
                task.set_result(value)
            elif outcome is _CANCELLED:
                task._mark_cancelled()
            else:
                task.set_exception(error)
        finally:  # even past a Ctrl-C in a callback, wait() must not wait for it forever
            if callbacks:
                if outer is None:
                    del self._settling[thread]
                else:
                    self._settling[thread] = outer
            self._resolving.remove(task)
            if self._done_waiters:
                with self.lock:
                    if self._all_finished():
                        self._condition("all_done").notify_all()

    def _condition(self, name: str) -> threading.Condition:
        """The Condition ``name`` on the pool's lock, built on first use (call under the lock)."""
        cond = self._conditions.get(name)
        if cond is None:
            cond = self._conditions[name] = threading.Condition(self.lock)
        return cond

    def _wake_timer(self) -> None:
        """Under the lock: the timer thread, if it waits, must look at the schedule again."""
        if "timer" in self._conditions:
            self._conditions["timer"].notify()

    def _wake_all_waiters(self) -> None:
        """Under the lock: the pool closed or broke; submitters waiting for room must know."""
        if self._space_waiters:
            self._condition("not_full").notify_all()
        self._wake_timer()

    # -- time ---------------------------------------------------------------------------------

    def _kick_timer(self) -> None:
        """Called under the lock when the next timed event moved earlier."""
        if self._timer is None:
            self._timer = threading.Thread(
                target=self._run_timer, name="workpool-timer", daemon=True
            )
            self._timer.start()
        else:
            self._wake_timer()

    def _run_timer(self) -> None:
        lock, engine = self.lock, self.engine
        with lock:
            try:
                while True:
                    now = self.clock()
                    expired = engine.poll(now)
                    self._resolving.extend(t for t, _, o in expired if o is not _RETRY)
                    handed = [h for _, slot, _ in expired for h in self._hand_back(slot, now)]
                    wakeups = self._take_wakeups()
                    if expired or wakeups:
                        lock.release()
                        try:
                            self._expire(expired, wakeups)
                            self._conclude_all(handed)
                        finally:
                            lock.acquire()
                        continue
                    next_time = engine.next_wakeup()
                    if next_time is None or (engine.closed and engine.unfinished == 0):
                        return  # a later timed event starts a new timer
                    self._condition("timer").wait(next_time - now)
            finally:
                self._timer = None

    def _expire(
        self, expired: list[tuple[Task[Any], WorkerSlot, Outcome]], wakeups: list[WorkerSlot] | None
    ) -> None:
        for task, slot, _ in expired:
            self.backend.interrupt(slot, task, "timeout")
            if self.observers:
                emit(self.observers, "worker_stopped", slot.id, "lost")
        if wakeups:
            self._dispatch(wakeups)
        for task, _, outcome in expired:
            self._conclude(task, outcome, TaskTimeout(task.id, task.options.timeout))
