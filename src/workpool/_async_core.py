"""The asyncio core: the scheduler driven from one event loop, workers as asyncio tasks.

It is ``_core.py`` without the lock: every event reaches the scheduler on the loop's thread, so
deciding and acting are one synchronous step that no other coroutine can interleave with. The
pieces map one to one::

    thread core                        asyncio core
    worker thread                      worker asyncio task running coroutines in turn
    park lock per worker               a future per parked worker (``wake`` resolves it)
    timer thread                       one ``loop.call_at`` handle, moved when the next
                                       timed event moves
    Condition for room / all done      futures resolved when the queue shrinks / empties

A timed-out or cancelled coroutine is cancelled for real (its worker task gets
``Task.cancel()``). At a deadline the scheduler gives up on the worker at once (the slot is LOST,
counted in ``abandoned``) and the task fails with ``TaskTimeout``; a replacement keeps capacity
whole, and a coroutine that swallows its cancellation holds nobody: its worker exits whenever it
finally returns. Calls from other threads (``Task.cancel``, the thread-safe submit) hop onto the
loop with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import logging
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Generator
from typing import TYPE_CHECKING, Any, TypeVar

from ._engine import RETIRE, Directive, Next, Outcome, Scheduler, SlotState, WorkerSlot
from ._errors import QueueFull, TaskTimeout
from ._events import Observer, announce, emit
from ._options import TaskOptions
from ._task import Task, _current, name_of, running_task

T = TypeVar("T")

_SUCCEEDED, _CANCELLED = Outcome.SUCCEEDED, Outcome.CANCELLED
_RETRY, _STALE = Outcome.RETRY, Outcome.STALE
_log = logging.getLogger("workpool")


class AsyncTask(Task[T]):
    """A ``Task`` of an ``AsyncPool``: also awaitable on the pool's loop.

    ``await task`` returns the result or raises the task's error; awaiting a cancelled task
    raises ``asyncio.CancelledError``. As with an ``asyncio.Task``, cancelling the coroutine
    that awaits it cancels the task (``asyncio.shield(task)`` prevents that).
    """

    # Set only when used, over these class-level defaults: no __init__ of its own to run.
    _aio_waiters: list[asyncio.Future[None]] | None = None
    # Called with the task on the loop once it is resolved: how a map learns of it, for less
    # than add_done_callback (which builds the Future's threading.Condition).
    _on_done: Callable[[AsyncTask[T]], object] | None = None
    _owner: AsyncCore

    if TYPE_CHECKING:  # Task's __init__, typed for a coroutine function

        def __init__(
            self,
            fn: Callable[..., Awaitable[T]],
            args: tuple[Any, ...],
            kwargs: dict[str, Any],
            options: TaskOptions,
            owner: AsyncCore,
        ) -> None: ...

    def _finished(self) -> asyncio.Future[None]:
        """A future of the running loop that resolves once this task is done."""
        loop = asyncio.get_running_loop()
        if loop is not self._owner.loop:  # another loop or thread: resolved through a callback
            return asyncio.wrap_future(self, loop=loop)  # type: ignore[arg-type]  # any result type
        waiter: asyncio.Future[None] = loop.create_future()
        if self.done():
            waiter.set_result(None)
        elif self._aio_waiters is None:
            self._aio_waiters = [waiter]
        else:
            self._aio_waiters.append(waiter)
        return waiter

    def _wake_waiters(self) -> None:
        """Called on the loop once the task is resolved."""
        waiters, self._aio_waiters = self._aio_waiters, None
        for waiter in waiters or ():
            if not waiter.done():
                waiter.set_result(None)
        on_done, self._on_done = self._on_done, None
        if on_done is not None:
            on_done(self)

    def __await__(self) -> Generator[Any, None, T]:
        if not self.done():
            waiter = self._finished()
            try:
                yield from waiter.__await__()
            except asyncio.CancelledError:
                if not waiter.done() or waiter.cancelled():
                    self.cancel()  # the awaiting coroutine was cancelled: so is the task
                raise
        if self.cancelled():
            raise asyncio.CancelledError(f"task {self.id} was cancelled")
        return self.result()


class _Worker(asyncio.Task[None]):
    """One worker: the asyncio task that runs its tasks' coroutines, with its park future.

    A coroutine's ``asyncio.current_task()`` is its worker, so the worker counts each cancel it
    gets by where it comes from: the pool's (``interrupt``, for a task's cancel or timeout), the
    running coroutine's own (``asyncio.current_task().cancel()``: its task ends cancelled, as
    an ``asyncio.Task`` would), or from outside (``asyncio.run`` ending: the worker leaves).
    """

    # Set only when used, over these class-level defaults: no __init__ of its own to run.
    park: asyncio.Future[bool] | None = None
    pool_cancels = 0  # withdrawn once the task they stopped is done
    own_cancels = 0  # likewise
    outside_cancels = 0  # never withdrawn; read on 3.10 only, see cancelled_from_outside

    def cancel(self, msg: Any | None = None) -> bool:
        """Any cancel but the pool's: the running coroutine's own if it sends it."""
        if asyncio.current_task(self.get_loop()) is self:
            self.own_cancels += 1
        else:
            self.outside_cancels += 1
        return super().cancel(msg)

    def interrupt(self) -> None:
        """The pool's cancel of the running coroutine (sent past ``cancel``, which would count
        it as the coroutine's own when a task cancels itself through the pool)."""
        self.pool_cancels += 1
        super().cancel()

    def cancel_pending(self) -> bool:
        """Whether a cancel waits to be delivered at this task's next await (asyncio's own
        flag, on the C and the Python Task alike; if it were missing: assume one waits)."""
        return bool(getattr(self, "_must_cancel", True))

    def withdraw_own_cancels(self) -> None:
        """The running coroutine's own cancels did their work: withdraw them (see _uncancel)."""
        _uncancel(self.own_cancels)
        self.own_cancels = 0

    def cancelled_from_outside(self) -> bool:
        """Whether a cancel neither the pool's nor the running coroutine's own is pending."""
        if sys.version_info >= (3, 11):
            # asyncio.timeout and TaskGroup in a coroutine cancel it too, then withdraw that
            return self.cancelling() > self.pool_cancels + self.own_cancels
        return self.outside_cancels > 0  # 3.10 has no Task.uncancel: none is withdrawn

    def cancelled_by_coroutine(self) -> bool:
        """Whether the CancelledError that the running coroutine raised is its own (it
        cancelled itself, or a future it awaited was cancelled), not a cancel of its task."""
        return not self.pool_cancels and not self.cancelled_from_outside()


class AsyncCore:
    """Drives a ``Scheduler`` from one event loop. Bound to the loop it first runs on."""

    def __init__(self, engine: Scheduler, clock: Callable[[], float] = time.monotonic) -> None:
        self.engine = engine
        self.clock = clock
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread = 0
        self._workers: dict[int, asyncio.Task[None]] = {}  # not counting abandoned ones
        self._timer: asyncio.TimerHandle | None = None
        self._space_waiters: deque[asyncio.Future[bool]] = deque()
        self._done_waiters: list[asyncio.Future[bool]] = []
        # Orders a task's Condition (built when another thread waits for it) against its
        # resolution without one: see Task. Held for a moment, and only then.
        self.lock = threading.Lock()
        self._torn_down = False  # a worker was cancelled from outside: the loop is going away
        self.observers: tuple[Observer, ...] = ()

    # -- the loop -----------------------------------------------------------------------------

    def bind(self) -> asyncio.AbstractEventLoop:
        """The pool's loop; the running one on first use. Raises if called off that loop."""
        running = asyncio.get_running_loop()  # RuntimeError outside a coroutine: as asyncio
        if self.loop is None:
            self.loop, self._thread = running, threading.get_ident()
        elif running is not self.loop:
            raise RuntimeError("this AsyncPool belongs to another event loop")
        return running

    def bound(self) -> AsyncCore:
        """``bind``, then this core (to make a task with)."""
        self.bind()
        return self

    def on_loop_thread(self) -> bool:
        return self.loop is None or threading.get_ident() == self._thread

    def call_soon_threadsafe(self, fn: Callable[..., object], *args: Any) -> None:
        assert self.loop is not None
        self.loop.call_soon_threadsafe(fn, *args)

    # -- the submitting side ------------------------------------------------------------------

    def submit_nowait(self, task: AsyncTask[Any]) -> None:
        engine = self.engine
        if self.observers:
            emit(self.observers, "task_submitted", task)
        try:
            if engine.queue_size and engine.full and not engine.closed:
                raise QueueFull(engine.queue_size)
            engine.submit(task, self.clock())
        except BaseException as error:
            if self.observers:
                emit(self.observers, "task_rejected", task, error)
            raise
        if engine.wakeups or engine.timer_dirty:
            self._act()

    async def wait_for_room(self, timeout: float | None) -> None:
        """While the queue is full and the pool open; QueueFull after ``timeout`` seconds."""
        engine, loop = self.engine, self.bind()
        running = running_task()
        if running is not None and running[0]._owner is self:
            raise QueueFull(
                engine.queue_size,
                "a task of this pool submitted to it while its queue is full: waiting could "
                "deadlock, since the workers that would make room may all be waiting too; "
                "use try_submit() or a larger queue_size",
            )
        deadline = None if timeout is None else loop.time() + timeout
        while engine.full and not engine.closed:
            room: asyncio.Future[bool] = loop.create_future()
            self._space_waiters.append(room)
            handle = None if deadline is None else loop.call_at(deadline, _resolve, room, False)
            try:
                if not await room:
                    raise QueueFull(engine.queue_size)
            except asyncio.CancelledError:
                if room.done() and not room.cancelled() and room.result():
                    self._notify_space()  # pass the room we were given on to the next
                raise
            finally:
                if handle is not None:
                    handle.cancel()
                if room in self._space_waiters:
                    self._space_waiters.remove(room)

    def _notify_space(self) -> None:
        waiters = self._space_waiters
        while waiters and not self.engine.full:
            room = waiters.popleft()
            if not room.done():
                room.set_result(True)
                return

    def cancel(self, task: Task[Any]) -> bool:
        """``Task.cancel``. From another thread it is carried out on the loop (returns False)."""
        if not self.on_loop_thread():
            self.call_soon_threadsafe(self.cancel, task)
            return False
        verdict = self.engine.cancel(task)
        slot = task.worker
        self._act()
        if verdict:
            self._notify_space()
            self._settle(task, _CANCELLED, None, None)
            return True
        if verdict is None and slot is not None:
            self._interrupt(slot)
            return False
        return task.cancelled()

    async def wait(self, timeout: float | None = None) -> bool:
        """Until no task is queued, delayed or running; False after ``timeout`` seconds."""
        if self.engine.unfinished == 0:
            return True
        loop = self.bind()
        done: asyncio.Future[bool] = loop.create_future()
        self._done_waiters.append(done)
        handle = None if timeout is None else loop.call_later(timeout, _resolve, done, False)
        try:
            return await done
        finally:
            if handle is not None:
                handle.cancel()
            if done in self._done_waiters:
                self._done_waiters.remove(done)

    def control(self, change: Callable[[Scheduler], Any], event: str) -> None:
        """Apply ``change`` to the scheduler, then carry out its decisions."""
        change(self.engine)
        if self.observers:
            emit(self.observers, "pool_changed", event)
        self._act()

    def close(self, *, cancel_waiting: bool, stop_running: bool = False) -> list[Task[Any]]:
        """Accept nothing more; cancel what waits and cancel what runs, if told to."""
        engine = self.engine
        engine.close()
        cancelled = engine.cancel_waiting() if cancel_waiting else []
        running = engine.running_tasks() if stop_running else []
        if self.observers:
            emit(self.observers, "pool_changed", "closed")
        self._act()
        while self._space_waiters:  # they see the pool closed and raise PoolClosed
            _resolve(self._space_waiters.popleft(), True)
        for task in cancelled:
            self._settle(task, _CANCELLED, None, None)
        for task in running:
            self.cancel(task)
        return cancelled

    async def join(self, timeout: float | None) -> bool:
        """After ``close``: wait for every task, then for the workers (not abandoned ones)."""
        loop = self.bind()
        deadline = None if timeout is None else loop.time() + timeout
        if not await self.wait(timeout):
            return False
        me = asyncio.current_task()
        workers = [w for w in self._workers.values() if w is not me]
        if workers:
            remaining = None if deadline is None else max(0.0, deadline - loop.time())
            _, pending = await asyncio.wait(workers, timeout=remaining)
            if pending:
                return False
        if self._timer is not None and self.engine.unfinished == 0:
            self._timer.cancel()
            self._timer = None
        return True

    # -- the workers --------------------------------------------------------------------------

    async def _work(self, slot: WorkerSlot) -> None:
        worker: _Worker = slot.handle
        try:
            task = self._take(slot)
            while task is not RETIRE:
                if task is None:
                    task = await self._park(slot, worker)
                    continue
                # Run it here, not in a coroutine of its own: one frame less per task and per
                # resumption of the task's coroutine.
                token = _current.set((task, task.attempts))
                value: Any = None
                error: BaseException | None = None
                try:
                    call = task.fn(*task.args, **task.kwargs)
                    if not hasattr(call, "__await__"):
                        raise not_awaitable(task.fn, call)
                    value = await call
                except asyncio.CancelledError as exc:
                    # An outside cancel may come with the pool's, as one CancelledError. On
                    # 3.10 (no Task.uncancel) one that a coroutine swallowed stays counted, so
                    # there the count is trusted only when the pool sent no cancel.
                    if (sys.version_info >= (3, 11) or not worker.pool_cancels) and (
                        worker.cancelled_from_outside()
                    ):
                        raise  # the worker itself is being cancelled
                    if not worker.pool_cancels:
                        # The coroutine's own (it cancelled itself, or a future it awaited
                        # was): the task ends cancelled, as an asyncio.Task does, not failed
                        # with a CancelledError that would cancel whoever reads its result.
                        self.engine.cancel(task)  # running: marks it asked to stop
                    error = cf.CancelledError() if task._cancel_requested else exc
                except BaseException as exc:
                    error = exc
                finally:
                    _current.reset(token)
                if worker.own_cancels:
                    error = await self._take_own_cancel(worker, task, error)
                if worker.pool_cancels:
                    _withdraw_cancels(worker, task, error)
                task = self._done(slot, task, value, error)
        except asyncio.CancelledError:
            # Not ours (ours are caught around the call): the loop is going away, say. Whatever
            # the worker held ends cancelled and the worker leaves for good.
            if self._workers.get(slot.id) is worker:
                self._tear_down(slot)
            raise
        finally:
            if self._workers.get(slot.id) is worker:
                del self._workers[slot.id]

    async def _take_own_cancel(
        self, worker: _Worker, task: Task[Any], error: BaseException | None
    ) -> BaseException | None:
        """After a coroutine that cancelled itself: what its task ends with. Unless that cancel
        ended it, the coroutine may have returned before receiving it, and it would reach the
        next coroutine: take it here (as with an asyncio.Task, it cancels a task that was to
        succeed). Then withdraw the coroutine's cancels."""
        if worker.cancel_pending():  # even after a CancelledError: it may have raised its own
            try:
                await asyncio.sleep(0)
            except asyncio.CancelledError:
                if worker.cancelled_from_outside():
                    raise
                if error is None:
                    self.engine.cancel(task)  # running: marks it asked to stop
                    error = cf.CancelledError()
        worker.withdraw_own_cancels()
        return error

    async def _park(self, slot: WorkerSlot, worker: _Worker) -> Next:
        if slot.state is SlotState.WOKEN:
            # Woken after it finished its last task but before it came here (a done-callback
            # submitted a task): that wake-up found no park future to resolve.
            return self._take(slot)
        loop = self.loop
        assert loop is not None
        park = worker.park = loop.create_future()
        timeout = self.engine.park_timeout()
        handle = None if timeout is None else loop.call_later(timeout, _resolve, park, False)
        try:
            woken = await park
        finally:
            worker.park = None
            if handle is not None:
                handle.cancel()
        if woken:
            return self._take(slot)
        verdict = self.engine.idle_expired(slot)
        self._act()
        if verdict is Directive.WOKEN:
            return self._take(slot)
        if self.observers:
            announce(self.observers, slot.id, verdict)
        return verdict

    def _take(self, slot: WorkerSlot) -> Next:
        task = self.engine.take(slot, self.clock())
        self._after_take()
        if self.observers:
            announce(self.observers, slot.id, task)
        return task

    def _done(
        self, slot: WorkerSlot, task: Task[Any], value: Any, error: BaseException | None
    ) -> Next:
        engine = self.engine
        now = self.clock()
        outcome = engine.complete(slot, task, error, now)
        if outcome is _STALE:
            return RETIRE
        next_task = engine.take(slot, now)
        if self._space_waiters:  # _after_take(), inline: this is every task's path
            self._notify_space()
        if engine.wakeups or engine.timer_dirty:
            self._act()
        if outcome is not _RETRY:
            self._settle(task, outcome, value, error)
        elif self.observers:
            emit(self.observers, "task_retried", task, error)
        if self.observers:
            announce(self.observers, slot.id, next_task)
        return next_task

    def _lost(self, slot: WorkerSlot, error: BaseException) -> None:
        task, outcome = self.engine.lose(slot, error, self.clock())
        self._after_take()
        if self.observers:
            emit(self.observers, "worker_stopped", slot.id, "lost")
        if task is not None and outcome is not None:
            self._conclude(task, outcome, error)

    def _conclude(self, task: Task[Any], outcome: Outcome, error: BaseException) -> None:
        """An attempt that ended without returning: settle it, or report its retry."""
        if outcome is not _RETRY:
            self._settle(task, outcome, None, error)
        elif self.observers:
            emit(self.observers, "task_retried", task, error)

    def _tear_down(self, slot: WorkerSlot) -> None:
        """A worker was cancelled from outside (``asyncio.run`` ending, say): start nothing more,
        cancel what waits, and end the worker's task cancelled."""
        self._torn_down = True
        self.close(cancel_waiting=True)
        self._lost(slot, cf.CancelledError())

    def _interrupt(self, slot: WorkerSlot) -> None:
        """Cancel the coroutine running on ``slot`` for real."""
        worker: _Worker = slot.handle
        if not worker.done():
            worker.interrupt()

    # -- acting on decisions ------------------------------------------------------------------

    def _act(self) -> None:
        engine = self.engine
        if engine.timer_dirty:
            self._reschedule_timer()
        if engine.wakeups:
            self._dispatch()

    def _after_take(self) -> None:
        if self._space_waiters:
            self._notify_space()
        self._act()

    def _dispatch(self) -> None:
        engine = self.engine
        wakeups, engine.wakeups = engine.wakeups, []
        for slot in wakeups:
            worker = slot.handle
            if worker is None:
                if self._torn_down:
                    self.engine.lose(slot, None, self.clock())
                    continue
                loop = self.loop
                assert loop is not None
                worker = slot.handle = _Worker(
                    self._work(slot), loop=loop, name=f"workpool-{slot.id}"
                )
                self._workers[slot.id] = worker
                if self.observers:
                    emit(self.observers, "worker_started", slot.id)
            elif worker.park is not None:
                _resolve(worker.park, True)
            # else: its park timed out and it has not run yet; it sees it was woken then

    def _settle(
        self, task: Task[Any], outcome: Outcome, value: Any, error: BaseException | None
    ) -> None:
        """Resolve a task to its counted outcome; then tell ``wait()`` if all is done."""
        if self.observers:
            ended = cf.CancelledError() if outcome is _CANCELLED else error
            emit(self.observers, "task_finished", task, ended)
        if outcome is _SUCCEEDED:
            task.set_result(value)
        elif outcome is _CANCELLED:
            task._mark_cancelled()
        else:
            task.set_exception(error)
        if isinstance(task, AsyncTask) and (task._aio_waiters or task._on_done):
            task._wake_waiters()
        if self._done_waiters and self.engine.unfinished == 0:
            for done in self._done_waiters:
                _resolve(done, True)
            self._done_waiters.clear()

    # -- time ---------------------------------------------------------------------------------

    def _reschedule_timer(self) -> None:
        loop = self.loop
        assert loop is not None
        when = self.engine.next_wakeup()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if when is not None:
            self._timer = loop.call_at(loop.time() + (when - self.clock()), self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        expired = self.engine.poll(self.clock())
        for _task, slot, _ in expired:
            self._workers.pop(slot.id, None)  # abandoned: shutdown does not wait for it
            self._interrupt(slot)
            if self.observers:
                emit(self.observers, "worker_stopped", slot.id, "lost")
        self._after_take()
        for task, _, outcome in expired:
            self._conclude(task, outcome, TaskTimeout(task.id, task.options.timeout))
        if self._timer is None:
            self._reschedule_timer()


def _resolve(future: asyncio.Future[Any], value: Any) -> None:
    if not future.done():
        future.set_result(value)


def current_worker() -> _Worker:
    """The worker running the calling coroutine, a task's."""
    worker = asyncio.current_task()
    assert isinstance(worker, _Worker)
    return worker


def not_awaitable(fn: Callable[..., Any], call: object) -> TypeError:
    return TypeError(
        f"{name_of(fn)} returned {type(call).__name__}, not an awaitable: AsyncPool runs "
        "coroutine functions (hand blocking work to a Pool)"
    )


def _withdraw_cancels(worker: _Worker, task: Task[Any], error: BaseException | None) -> None:
    """After a task the pool cancelled: withdraw those cancels from the worker's asyncio task
    (so that later ``asyncio.timeout`` blocks work), and warn if the task went on regardless."""
    _uncancel(worker.pool_cancels)
    if error is None or not isinstance(error, (asyncio.CancelledError, cf.CancelledError)):
        _log.warning("task %s went on after it was cancelled", task.id)
    worker.pool_cancels = 0


def _uncancel(count: int) -> None:
    """Withdraw ``count`` cancels of the worker, once they did their work (3.11+: 3.10 keeps
    no count), so that later ``asyncio.timeout`` blocks and ``cancelled_from_outside`` work."""
    current = asyncio.current_task()
    uncancel = getattr(current, "uncancel", None)
    if uncancel is not None:
        for _ in range(count):
            uncancel()
