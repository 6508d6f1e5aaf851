"""``AsyncPool.map``: lazy results over a bounded window, run in lanes or a task per item.

The input is read only as results are taken, at most ``window`` items ahead of the consumer;
results come in input order, or as they complete. When the consumer stops early (``aclose``,
leaving ``async with``, or dropping the map), or a result raises, what is still in flight is
cancelled.

A task per item costs the pool its bookkeeping on the worker between two items (the queue, the
counters, a Task resolved): on a loop running 64 sleeps at a time, each round of items waits
for the bookkeeping of all the others, which kept such a map 3 to 6 points short of bare
coroutines. So a map runs *lanes* where it can::

    consumer ── starts up to one lane per worker ──> lane (a task) ── reads the next item ──> input
       ^                                               │ awaits it, then the next, on its worker
       └──────── each result, in order or as it comes ─┘

A lane is one task of the pool that runs items one after another while the map wants more
(room in its window, no item failed) and the pool has nothing else for its worker (no other
task waiting; not paused, closing or shrinking); then it ends, and the consumer starts another
as it takes a result. ``stats()`` counts a lane as one task (a failure if one of its items
failed), and ``current_task()`` in an item is its lane. Each item is a task of its own where it
must be: with a per-task ``timeout`` or ``retries``, a rate limit, observers (they see every
item), or an async input (which lanes could not share).
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable, Callable, Iterable, Iterator
from typing import Any, Generic, NoReturn, TypeVar

from ._async_core import AsyncCore, AsyncTask, current_worker, not_awaitable
from ._errors import PoolClosed
from ._options import TaskOptions
from ._task import NO_KWARGS, name_of

T = TypeVar("T")


def open_map(
    core: AsyncCore,
    fn: Callable[..., Awaitable[T]],
    iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
    options: TaskOptions,
    submit_timeout: float | None,
    *,
    window: int,
    ordered: bool,
    rate_limited: bool,
) -> AsyncMap[T]:
    """The map of ``fn`` over the zipped inputs: in lanes where nothing needs a task per item."""
    items = _zip(iterables)
    if isinstance(items, AsyncIterator) or (
        rate_limited or options.timeout is not None or options.retries or core.observers
    ):
        return _TaskMap(core, fn, options, submit_timeout, items, window=window, ordered=ordered)
    return _LaneMap(core, fn, options, submit_timeout, items, window=window, ordered=ordered)


class AsyncMap(AsyncIterator[T]):
    """The lazy results of ``AsyncPool.map`` (see the module's docstring).

    The input is read only as results are taken. When the consumer stops early (``aclose``,
    leaving ``async with``, or dropping the iterator), or a result raises, what is still in
    flight is cancelled.
    """

    def __init__(self, core: AsyncCore, options: TaskOptions, submit_timeout: float | None) -> None:
        self._core = core
        self._options = options
        self._submit_timeout = submit_timeout
        self._started = False
        self._busy = False  # a consumer is in __anext__
        self._closed = False  # aclose(), an error or the consumer leaving: no more results

    def _enter(self) -> None:
        """A consumer comes in (``__anext__``): it must be the only one."""
        if self._busy:
            raise RuntimeError("this map is already being iterated: one consumer at a time")
        self._busy = True

    def _cancel(self) -> None:
        """Read no more input, cancel what is in flight, and end a consumer waiting."""
        raise NotImplementedError

    async def aclose(self) -> None:
        """Cancel what is still in flight and read no more input. A consumer waiting in the map
        meanwhile (in another coroutine) stops: its loop ends."""
        self._cancel()

    async def __aenter__(self) -> AsyncMap[T]:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self._cancel()

    def __del__(self) -> None:
        with contextlib.suppress(RuntimeError):  # a closed loop: nothing runs any more anyway
            self._cancel()


class _LaneMap(AsyncMap[T]):
    """A map run by lanes: a few tasks that each run item after item."""

    def __init__(
        self,
        core: AsyncCore,
        fn: Callable[..., Awaitable[T]],
        options: TaskOptions,
        submit_timeout: float | None,
        items: Iterator[tuple[Any, ...]],
        *,
        window: int,
        ordered: bool,
    ) -> None:
        super().__init__(core, options.merged(name=options.name or name_of(fn)), submit_timeout)
        self._lanes = _Lanes(core, fn, items, window, ordered)

    async def __anext__(self) -> T:
        self._enter()
        try:
            lanes = self._lanes
            if not self._started:
                self._core.bind()  # the map's lanes run on this loop: the pool's
                self._started = True
                await self._start_lanes()
            while (item := lanes.take()) is None:
                if self._closed:
                    raise StopAsyncIteration
                if not lanes.tasks:  # none runs: start some, or it is the end
                    if lanes.items is None or lanes.stopped:
                        raise StopAsyncIteration
                    await self._start_lanes()
                    continue
                waiter = lanes.waiter = self._core.bind().create_future()
                try:
                    await waiter
                finally:
                    lanes.waiter = None
            engine = self._core.engine
            if len(lanes.tasks) < engine.max_workers and not engine.closed:
                # One ended: keep them going while the consumer works. (A closed pool raises
                # PoolClosed once no lane runs and more is wanted, not before this result.)
                await self._start_lanes()
            if item.error is not None:
                raise item.error
            return item.value  # type: ignore[no-any-return]  # an item's value is fn's result
        except BaseException:
            self._cancel()
            raise
        finally:
            self._busy = False

    async def _start_lanes(self) -> None:
        """Start lanes, each with the next item (so none starts for nothing): up to one per
        worker that nothing else wants, and at least one, so that the map goes on. A map
        queues no lanes behind other work: the lanes it runs take its items meanwhile."""
        lanes, core = self._lanes, self._core
        engine = core.engine
        while (
            len(lanes.tasks) < engine.max_workers
            and (not lanes.tasks or engine.busy + engine.queued < engine.max_workers)
            and lanes.outstanding < lanes.window
            and not lanes.stopped
            and not self._closed
        ):
            if engine.queue_size and engine.full:
                await core.wait_for_room(self._submit_timeout)
                continue  # and look again: the map may have closed meanwhile
            first = lanes.read()
            if first is None:
                return
            lane: AsyncTask[None] = AsyncTask(
                _lane, (lanes, *first), NO_KWARGS, self._options, core
            )
            lane._on_done = lanes.ended
            core.submit_nowait(lane)
            lanes.tasks.add(lane)
            lanes.queued += 1

    def _cancel(self) -> None:
        self._closed = True
        lanes = self._lanes
        lanes.items = None
        lanes.stopped = True
        lanes.order.clear()
        lanes.inbox.clear()
        lanes.wake()
        for lane in list(lanes.tasks):
            lane.cancel()


class _Item:
    """One item a lane read, and its outcome once it is ``done``."""

    __slots__ = ("done", "error", "value")

    def __init__(self) -> None:
        self.done = False
        self.value: Any = None
        self.error: BaseException | None = None


class _Lanes:
    """What a lane map shares with its lanes. It holds no reference to the map, so that a map
    dropped with lanes in flight is collected, which cancels them."""

    __slots__ = (
        "engine",
        "fn",
        "inbox",
        "items",
        "order",
        "ordered",
        "outstanding",
        "queued",
        "stopped",
        "tasks",
        "waiter",
        "window",
    )

    def __init__(
        self,
        core: AsyncCore,
        fn: Callable[..., Awaitable[Any]],
        items: Iterator[tuple[Any, ...]],
        window: int,
        ordered: bool,
    ) -> None:
        self.engine = core.engine
        self.fn = fn
        self.items: Iterator[tuple[Any, ...]] | None = items  # None: ended, or the map closed
        self.window = window
        self.ordered = ordered
        self.outstanding = 0  # items read, not yet taken by the consumer
        self.order: deque[_Item] = deque()  # ordered: read, not yet taken, oldest first
        self.inbox: deque[_Item] = deque()  # unordered: done, not yet taken
        self.stopped = False  # an item failed, or the map closed: read nothing more
        self.tasks: set[AsyncTask[None]] = set()  # the lanes in flight
        self.queued = 0  # of those, the ones not started: a running lane need not yield to them
        self.waiter: asyncio.Future[None] | None = None  # the consumer waits for a result

    def take(self) -> _Item | None:
        """The next result for the consumer, if one is done (in order, if ordered)."""
        if self.ordered:
            order = self.order
            if not order or not order[0].done:
                return None
            item = order.popleft()
        elif self.inbox:
            item = self.inbox.popleft()
        else:
            return None
        self.outstanding -= 1
        return item

    def read(self) -> tuple[_Item, tuple[Any, ...]] | None:
        """The next input item, counted in the window; None at the end of the input, or if the
        input raised (see ``input_failed``)."""
        items = self.items
        if items is None or self.stopped:
            return None
        try:
            args = next(items)
        except StopIteration:
            self.items = None
            return None
        except Exception as exc:
            self.input_failed(exc)
            return None
        return self._counted(_Item()), args

    def input_failed(self, error: Exception) -> None:
        """Reading the input raised ``error``: that is the outcome of the item it would have
        been, and nothing more is read."""
        self.items = None
        self.stopped = True
        self.arrived(self._counted(_Item()), error)

    def _counted(self, item: _Item) -> _Item:
        """``item``, just read, counted in the window and, if ordered, in its place."""
        self.outstanding += 1
        if self.ordered:
            self.order.append(item)
        return item

    def arrived(self, item: _Item, error: BaseException | None) -> None:
        """``item`` is done (failed with ``error``, if not None): tell the consumer, if it waits
        for that one."""
        item.error = error
        item.done = True
        if self.ordered:
            order = self.order
            if not order or order[0] is not item:
                return  # the consumer waits for an older one
        else:
            self.inbox.append(item)
        self.wake()

    def ended(self, lane: AsyncTask[None]) -> None:
        """A lane ended, however (its task's done hook, called on the loop). One cancelled
        before it started leaves its first item undone: that item ends cancelled."""
        self.tasks.discard(lane)
        first: _Item = lane.args[1]
        if not first.done:  # it never started (a lane that starts ends its first item)
            self.queued -= 1
            self.arrived(first, cf.CancelledError())
        self.wake()

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


async def _lane(lanes: _Lanes, item: _Item, args: tuple[Any, ...]) -> None:
    """Run ``item``, then the map's next items one after another on this worker, while the map
    wants more and the pool has nothing else for the worker."""
    engine, fn, ordered, order = lanes.engine, lanes.fn, lanes.ordered, lanes.order
    worker = current_worker()
    lanes.queued -= 1
    while True:
        try:
            call = fn(*args)
            if not hasattr(call, "__await__"):
                raise not_awaitable(fn, call)
            item.value = await call
            if worker.own_cancels:  # an item cancelled itself: take a cancel still pending,
                if worker.cancel_pending():  # then withdraw its cancels before the next item
                    await asyncio.sleep(0)
                worker.withdraw_own_cancels()
        except asyncio.CancelledError:
            cancelled = cf.CancelledError()
            lanes.arrived(item, cancelled)
            if not worker.cancelled_by_coroutine():
                raise  # the lane's own: the map closed, or the pool stops its tasks
            # The item's own (it cancelled itself, or a future it awaited was): it ends
            # cancelled, as a task of its own would, and fails the lane as any error does.
            lanes.stopped = True
            raise cancelled from None
        except BaseException as exc:
            lanes.stopped = True  # what comes after it is not wanted
            lanes.arrived(item, exc)
            raise
        item.done = True  # arrived(), inline for a success: every item's path
        if not ordered or (order and order[0] is item):  # else it waits for an older one
            lanes.arrived(item, None)
        if lanes.outstanding >= lanes.window or engine.contended(lanes.queued):
            return
        # read(), inline: every item's path
        items = lanes.items
        if items is None or lanes.stopped:
            return
        try:
            args = next(items)
        except StopIteration:
            lanes.items = None
            return
        except Exception as exc:
            lanes.input_failed(exc)
            return
        item = _Item()
        lanes.outstanding += 1
        if ordered:
            order.append(item)


class _TaskMap(AsyncMap[T]):
    """A map that runs each item as a task of its own, at most ``window`` in flight."""

    def __init__(
        self,
        core: AsyncCore,
        fn: Callable[..., Awaitable[T]],
        options: TaskOptions,
        submit_timeout: float | None,
        items: Iterator[tuple[Any, ...]] | AsyncIterator[tuple[Any, ...]],
        *,
        window: int,
        ordered: bool,
    ) -> None:
        super().__init__(core, options, submit_timeout)
        self._fn = fn
        # The input, until it ends or the map closes: a sync one is read directly (no generator
        # between) and may be read without an await, so it is kept apart.
        self._items: AsyncIterator[tuple[Any, ...]] | None = None
        self._sync_items: Iterator[tuple[Any, ...]] | None = None
        if isinstance(items, AsyncIterator):
            self._items = items
        else:
            self._sync_items = items
        self._window = window
        self._ordered = ordered
        self._in_order: deque[AsyncTask[T]] = deque()  # ordered: oldest first
        self._unordered: set[AsyncTask[T]] = set()  # unordered: in flight
        self._inbox: _Inbox[T] = _Inbox()  # unordered: where they report that they are done
        self._waiting: asyncio.Future[None] | None = None  # ordered: what the consumer awaits

    async def _feed(self) -> bool:
        """Submit the next input item, if any is left and the pool takes more. (A pool closed
        under the map is reported once the tasks in flight have given their results.)"""
        if self._core.engine.closed:
            return False
        sync_items, items = self._sync_items, self._items
        try:
            if sync_items is not None:
                args = next(sync_items)
            elif items is not None:
                args = await items.__anext__()
            else:
                return False
        except (StopIteration, StopAsyncIteration):
            self._items = self._sync_items = None
            return False
        engine = self._core.engine
        if engine.queue_size and engine.full:
            await self._core.wait_for_room(self._submit_timeout)
        if self._closed:  # by another coroutine while this one waited for the item or room
            return False
        self._submit(args)
        return True

    def _submit(self, args: tuple[Any, ...]) -> None:
        core = self._core
        task: AsyncTask[T] = AsyncTask(self._fn, args, NO_KWARGS, self._options, core)
        core.submit_nowait(task)
        if self._ordered:
            self._in_order.append(task)
        else:
            self._unordered.add(task)
            if task.done():
                self._inbox(task)
            else:
                task._on_done = self._inbox

    async def _end(self) -> NoReturn:
        """Nothing is in flight: the end of the map, or PoolClosed if the pool closed under it
        with input left (one item is read to know)."""
        sync_items, items = self._sync_items, self._items
        if self._core.engine.closed:
            try:
                if sync_items is not None:
                    next(sync_items)
                    raise PoolClosed()
                if items is not None:
                    await items.__anext__()
                    raise PoolClosed()
            except (StopIteration, StopAsyncIteration):
                self._items = self._sync_items = None
        raise StopAsyncIteration

    async def _start(self) -> None:
        """Fill the window: first a task for each worker, which start at once, then the rest
        while they run (they are queued before any worker could want them)."""
        core = self._core
        core.bind()  # the map feeds from this loop: the pool's
        self._started = True
        first = min(self._window, core.engine.max_workers)
        for _ in range(first):
            if not await self._feed():
                return
        if first < self._window:
            await asyncio.sleep(0)  # the workers start on those
            for _ in range(self._window - first):
                if not await self._feed():
                    return

    async def __anext__(self) -> T:
        self._enter()
        try:
            if not self._started:
                await self._start()
            if self._ordered:
                if not self._in_order:
                    await self._end()
                task = self._in_order[0]
                if not task.done():
                    # A private future: cancelling it leaves the task; aclose() resolves it.
                    self._waiting = task._finished()
                    try:
                        await self._waiting
                    finally:
                        self._waiting = None
                    if self._closed:
                        raise StopAsyncIteration
                self._in_order.popleft()
            else:
                if not self._unordered:
                    await self._end()
                inbox = self._inbox
                while not inbox.done:
                    inbox.waiter = self._core.bind().create_future()
                    try:
                        await inbox.waiter
                    finally:
                        inbox.waiter = None
                    if self._closed:
                        raise StopAsyncIteration
                task = inbox.done.popleft()
                self._unordered.discard(task)
            # Keep the window full while the consumer works.
            engine = self._core.engine
            sync_items = self._sync_items
            if sync_items is not None and not (
                (engine.queue_size and engine.full) or engine.closed
            ):
                args = next(sync_items, None)  # zip() yields tuples: None is the end
                if args is None:
                    self._sync_items = None
                else:
                    self._submit(args)
            else:
                await self._feed()
            return task.result()
        except BaseException:
            self._cancel()
            raise
        finally:
            self._busy = False

    def _cancel(self) -> None:
        self._items = self._sync_items = None
        self._closed = True
        for waiter in (self._waiting, self._inbox.waiter):
            if waiter is not None and not waiter.done():
                waiter.set_result(None)
        while self._in_order:
            self._in_order.pop().cancel()
        while self._unordered:
            self._unordered.pop().cancel()


class _Inbox(Generic[T]):
    """Where the tasks of an unordered map report that they are done (called on the loop).

    It holds no reference to its map, so that a map dropped with tasks in flight is collected,
    which cancels them.
    """

    __slots__ = ("done", "waiter")

    def __init__(self) -> None:
        self.done: deque[AsyncTask[T]] = deque()  # done, not yet returned
        self.waiter: asyncio.Future[None] | None = None  # the consumer waits for one to be

    def __call__(self, task: AsyncTask[T]) -> None:
        self.done.append(task)
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)


def _zip(
    iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
) -> Iterator[tuple[Any, ...]] | AsyncIterator[tuple[Any, ...]]:
    """Zip the inputs, to the shortest: a sync iterator if every input is sync."""
    if not any(isinstance(it, AsyncIterable) for it in iterables):
        return zip(*iterables)  # noqa: B905  # stops at the shortest, as Executor.map
    return _azip(iterables)


async def _azip(
    iterables: tuple[Iterable[Any] | AsyncIterable[Any], ...],
) -> AsyncIterator[tuple[Any, ...]]:
    iterators = [
        it.__aiter__() if isinstance(it, AsyncIterable) else _aiter(it) for it in iterables
    ]
    while True:
        try:
            yield tuple([await it.__anext__() for it in iterators])
        except StopAsyncIteration:
            return


async def _aiter(iterable: Iterable[Any]) -> AsyncIterator[Any]:
    for item in iterable:
        yield item
