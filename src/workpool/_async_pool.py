"""AsyncPool: the public face of a pool of coroutines on an asyncio event loop."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable
from concurrent.futures import Future
from typing import Any, ParamSpec, TypeVar

from ._async_core import AsyncCore, AsyncTask
from ._async_map import AsyncMap, open_map
from ._engine import Scheduler
from ._events import Observer
from ._options import DEFAULT_OPTIONS, RetryPolicy, TaskOptions, task_options
from ._pool import ShutdownReport, _bounds, _check_args
from ._stats import PoolStats
from ._task import NO_KWARGS

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_WORKERS = 100
"""Coroutines mostly wait: a hundred in flight is a sensible start for I/O."""


class AsyncPool:
    """A pool of coroutines with bounded concurrency, run by workers on one event loop.

    ``AsyncPool(workers=100)`` runs at most 100 coroutines at once; ``min_workers`` and
    ``max_workers`` autoscale between bounds (workers idle for ``idle_timeout`` seconds retire).
    ``queue_size`` bounds the tasks waiting to run: ``await submit`` then waits for room and
    ``try_submit`` raises ``QueueFull``. ``rate_limit=(n, seconds)`` starts at most ``n`` tasks
    in any ``seconds``. The pool binds to the loop it is first used on.
    """

    def __init__(
        self,
        workers: int | None = None,
        *,
        min_workers: int | None = None,
        max_workers: int | None = None,
        queue_size: int = 0,
        idle_timeout: float | None = 10.0,
        priority_aging: float = 1.0,
        rate_limit: tuple[int, float] | None = None,
        observers: Iterable[Observer] = (),
    ) -> None:
        low, high = _bounds(workers, min_workers, max_workers, lambda: DEFAULT_WORKERS)
        _check_args(queue_size, idle_timeout, None, priority_aging, None)
        engine = Scheduler(
            min_workers=low,
            max_workers=high,
            queue_size=queue_size,
            idle_timeout=idle_timeout,
            aging=priority_aging,
            rate_limit=rate_limit,
        )
        self._core = AsyncCore(engine)
        self._core.observers = tuple(observers)
        self._rate_limited = rate_limit is not None

    # -- submitting ---------------------------------------------------------------------------

    async def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[T]:
        """Schedule ``fn(*args, **kwargs)``; waits for room while the queue is full."""
        core = self._core  # _submit inlined: this is the hot path
        task: AsyncTask[T] = AsyncTask(
            _callable(fn), args, kwargs or NO_KWARGS, DEFAULT_OPTIONS, core.bound()
        )
        if core.engine.full:
            await core.wait_for_room(None)
        core.submit_nowait(task)
        return task

    def try_submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[T]:
        """As ``submit``, but raise ``QueueFull`` at once instead of waiting for room."""
        return self._try_submit(fn, args, kwargs, DEFAULT_OPTIONS)

    def submit_threadsafe(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[T]:
        """From a thread other than the pool's loop: submit, waiting for room, and return the
        task, a ``concurrent.futures.Future`` (``task.result()`` blocks that thread)."""
        return self._submit_threadsafe(fn, args, kwargs, DEFAULT_OPTIONS, None)

    async def _submit(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        submit_timeout: float | None,
    ) -> AsyncTask[T]:
        core = self._core
        task: AsyncTask[T] = AsyncTask(
            _callable(fn), args, kwargs or NO_KWARGS, options, core.bound()
        )
        if core.engine.full:
            await core.wait_for_room(submit_timeout)
        core.submit_nowait(task)
        return task

    def _try_submit(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
    ) -> AsyncTask[T]:
        core = self._core
        task: AsyncTask[T] = AsyncTask(
            _callable(fn), args, kwargs or NO_KWARGS, options, core.bound()
        )
        core.submit_nowait(task)
        return task

    def _submit_threadsafe(
        self,
        fn: Callable[..., Awaitable[T]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        options: TaskOptions,
        submit_timeout: float | None,
    ) -> AsyncTask[T]:
        loop = self._core.loop
        if loop is None or loop.is_closed():
            raise RuntimeError("the pool's event loop is not running: enter the pool there first")
        if self._core.on_loop_thread():
            raise RuntimeError("submit_threadsafe() would block the pool's own loop: use submit")
        coro = self._submit(fn, args, kwargs, options, submit_timeout)
        return asyncio.run_coroutine_threadsafe(coro, loop).result()

    def options(
        self,
        *,
        priority: int | None = None,
        timeout: float | None = None,
        retries: int | None = None,
        retry: RetryPolicy | None = None,
        name: str | None = None,
        submit_timeout: float | None = None,
    ) -> AsyncOptionsView:
        """Submit with these options: ``await pool.options(timeout=2).submit(fn, x)``.

        ``submit_timeout`` bounds how long ``submit`` waits for room in a full queue before it
        raises ``QueueFull``.
        """
        given = {"priority": priority, "timeout": timeout, "retries": retries, "retry": retry}
        return AsyncOptionsView(self, task_options(name=name, **given), submit_timeout)

    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        ordered: bool = True,
        window: int | None = None,
    ) -> AsyncMap[T]:
        """Lazily apply ``fn`` over the zipped inputs (sync or async iterables), ``window``
        tasks in flight at most; results in input order, or as they complete."""
        return self._map(fn, iterables, DEFAULT_OPTIONS, None, ordered, window)

    def _map(
        self,
        fn: Callable[..., Awaitable[T]],
        iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
        options: TaskOptions,
        submit_timeout: float | None,
        ordered: bool,
        window: int | None,
    ) -> AsyncMap[T]:
        if not iterables:
            raise TypeError("map() needs at least one iterable")
        if window is None:
            window = max(16, 4 * self._core.engine.max_workers)
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window!r}")

        return open_map(
            self._core,
            _callable(fn),
            iterables,
            options,
            submit_timeout,
            window=window,
            ordered=ordered,
            rate_limited=self._rate_limited,
        )

    # -- waiting ------------------------------------------------------------------------------

    async def as_completed(
        self, tasks: Iterable[Future[T]], timeout: float | None = None
    ) -> AsyncIterator[Future[T]]:
        """Yield ``tasks`` as they finish (any ``concurrent.futures.Future``, a sync ``Pool``'s
        tasks too). Raises ``TimeoutError`` if ``timeout`` seconds pass first."""
        pending = set(tasks)
        loop = asyncio.get_running_loop()
        thread = threading.get_ident()
        finished: asyncio.Queue[Future[T] | None] = asyncio.Queue()

        def on_done(task: Future[T]) -> None:
            if threading.get_ident() == thread:
                finished.put_nowait(task)
            else:
                loop.call_soon_threadsafe(finished.put_nowait, task)

        handle = None if timeout is None else loop.call_later(timeout, finished.put_nowait, None)
        try:
            for task in pending:
                task.add_done_callback(on_done)
            for _ in range(len(pending)):
                done = await finished.get()
                if done is None:
                    raise TimeoutError(f"{len(pending)} tasks unfinished after {timeout:g}s")
                pending.discard(done)
                yield done
        finally:
            if handle is not None:
                handle.cancel()

    async def wait(self, timeout: float | None = None) -> bool:
        """The wait group: until every task submitted so far has finished.

        Returns False if ``timeout`` seconds passed first.
        """
        return await self._core.wait(timeout)

    # -- control ------------------------------------------------------------------------------

    def pause(self) -> None:
        """Start no new task until ``resume``; running tasks go on."""
        self._control(Scheduler.pause, "paused")

    def resume(self) -> None:
        self._control(Scheduler.resume, "resumed")

    def resize(
        self,
        workers: int | None = None,
        *,
        min_workers: int | None = None,
        max_workers: int | None = None,
    ) -> None:
        """Change the worker count (``resize(8)``) or the autoscaling bounds at run time.

        Extra workers leave when they finish their current task.
        """
        engine = self._core.engine
        if workers is not None:
            if min_workers is not None or max_workers is not None:
                raise TypeError("give workers, or min_workers/max_workers, not both")
            low = high = workers
        else:
            high = engine.max_workers if max_workers is None else max_workers
            low = min(engine.min_workers, high) if min_workers is None else min_workers
        self._control(lambda e: e.set_bounds(low, high), "resized")

    def _control(self, change: Callable[[Scheduler], Any], event: str) -> None:
        core = self._core
        if core.on_loop_thread():
            core.control(change, event)
        else:  # another thread: the loop carries it out (bad bounds raise there, not here)
            core.call_soon_threadsafe(core.control, change, event)

    def add_observer(self, observer: Observer) -> None:
        """Send this pool's events to ``observer`` (see ``workpool.Observer``); they are
        delivered on the pool's loop."""
        core = self._core
        core.observers = (*core.observers, observer)

    def remove_observer(self, observer: Observer) -> None:
        core = self._core
        core.observers = tuple(o for o in core.observers if o is not observer)

    def stats(self) -> PoolStats:
        """A snapshot of the counters (consistent when taken on the pool's loop)."""
        return self._core.engine.stats()

    # -- shutting down ------------------------------------------------------------------------

    async def shutdown(
        self, wait: bool = True, *, cancel_futures: bool = False, timeout: float | None = None
    ) -> ShutdownReport:
        """Accept no new task; then, if ``wait``, let the queue drain and the workers stop.

        ``cancel_futures`` cancels the tasks not started yet. With ``timeout``, return by then
        whatever still runs; the report says what was cancelled and what was left. Coroutines
        abandoned after their timeout are never waited for. Calling it again is harmless.
        """
        core = self._core
        core.bind()
        cancelled = core.close(cancel_waiting=cancel_futures)
        completed = await core.join(timeout) if wait else False
        engine = core.engine
        return ShutdownReport(
            completed,
            tuple(cancelled),
            tuple(engine.running_tasks()),
            tuple(engine.waiting_tasks()),
            engine.stats(),
        )

    async def __aenter__(self) -> AsyncPool:
        self._core.bind()
        return self

    async def __aexit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        core = self._core
        if exc_type is None:
            await self.shutdown(wait=True)
            return
        # The block failed or was cancelled: what it queued is unwanted and what runs is
        # cancelled, then awaited, as asyncio.TaskGroup awaits its cancelled children.
        core.close(cancel_waiting=True, stop_running=True)
        if issubclass(exc_type, (Exception, asyncio.CancelledError)):
            await core.join(None)

    def __repr__(self) -> str:
        s = self.stats()
        state = " closed" if s.closed else " paused" if s.paused else ""
        return f"<AsyncPool{state} workers={s.workers} busy={s.busy} queued={s.queued}>"


class AsyncOptionsView:
    """``pool.options(...)``: submit and map with fixed per-task options."""

    __slots__ = ("_options", "_pool", "_submit_timeout")

    def __init__(self, pool: AsyncPool, options: TaskOptions, submit_timeout: float | None) -> None:
        self._pool = pool
        self._options = options
        self._submit_timeout = submit_timeout

    async def submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[T]:
        return await self._pool._submit(fn, args, kwargs, self._options, self._submit_timeout)

    def try_submit(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[T]:
        return self._pool._try_submit(fn, args, kwargs, self._options)

    def submit_threadsafe(
        self, fn: Callable[P, Awaitable[T]], /, *args: P.args, **kwargs: P.kwargs
    ) -> AsyncTask[T]:
        return self._pool._submit_threadsafe(fn, args, kwargs, self._options, self._submit_timeout)

    def map(
        self,
        fn: Callable[..., Awaitable[T]],
        *iterables: Iterable[Any] | AsyncIterable[Any],
        ordered: bool = True,
        window: int | None = None,
    ) -> AsyncMap[T]:
        return self._pool._map(fn, iterables, self._options, self._submit_timeout, ordered, window)

    def __repr__(self) -> str:
        return f"<AsyncOptionsView {self._options!r}>"


def _callable(fn: Any) -> Any:
    if not callable(fn):
        raise TypeError(f"fn must be callable, not {type(fn).__name__}")
    return fn
