"""Lazy ``map``: a bounded window of work in flight over an input of any length.

The input is read only as results are taken, so a generator of ten million items runs in the
memory of ``window`` items. Ordered results come in input order (the oldest unit of work is
awaited first); unordered ones as they complete. When the consumer stops early, or a result
raises, the work still in flight is cancelled.

Small items are run in *batches*, one task per batch, because a task's dispatch costs far more
than a trivial call. A ``BatchSizer`` starts with one single-item batch per worker (so slow
items are spread over every worker at once, the first result comes after one item, and nothing
queues behind those probes). Where the input says its length (a list, a range), the next
batches are cut as ``multiprocessing.Pool.map`` cuts its chunks, about four per worker, all
sent at once, but to no more items than the probes say run in 0.1 s; and once a measure is
trusted (a batch of several items, or an item of a millisecond or more), a batch takes at most a
worker's share of what is left, though never fewer items than are worth a dispatch (eight times
its overhead), so that over the last quarter of the input batches shrink and the workers finish
together (guided scheduling). Otherwise batches grow
while they run short, towards a target duration. It also learns a batch's
dispatch *overhead* (from a worker taking it to its result coming back, less the time it ran):
tiny for threads, a pipe round trip for processes. Batches may grow at once up to the size that
runs about as long as that overhead, and their target grows with it, so that a map on processes
ramps up in two steps instead of six. A batch runs its items in order and stops at the first
error: the batch task fails (so ``stats()`` counts a failure), carrying the results before it,
and ``map`` raises the item's error when it reaches that item, as ``Executor.map`` does.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, cast

from ._task import Task, running_task

Batch = tuple[list[Any], float]
"""What a batch task returns: the results, and the seconds it ran."""


class BatchFailed(Exception):
    """An item of a batch raised ``error``; ``results`` are those of the items before it."""

    def __init__(self, results: list[Any], error: BaseException, seconds: float) -> None:
        super().__init__(results, error, seconds)
        self.results = results
        self.error = error
        self.seconds = seconds


def run_batch(fn: Callable[..., Any], items: list[Any], star: bool = True) -> Batch:
    """Call ``fn`` on each item in order (``fn(*item)`` if ``star``, else ``fn(item)``); stop at
    the first error or when cancelled."""
    started = time.perf_counter()
    running = running_task()
    task = None if running is None else running[0]
    if getattr(task, "_owner", task) is None:
        # A Task made in a worker process has no owner: its cancel comes as a signal, never as
        # this flag, so the flag is not worth reading once per item there.
        task = None
    results: list[Any] = []
    append = results.append
    try:
        if task is not None:
            for item in items:
                if task._cancel_requested:
                    raise CancelledError()  # the map was closed: the rest is unwanted
                append(fn(*item) if star else fn(item))
        else:
            # extend() keeps what the iterator gave before an error: ``results`` still says
            # which item raised. It runs the loop in C, the fastest a worker process can go.
            results.extend(itertools.starmap(fn, items) if star else map(fn, items))
    except CancelledError:
        raise  # the map was closed: the batch ends cancelled, not failed
    except Exception as error:
        raise BatchFailed(results, error, time.perf_counter() - started) from None
    return results, time.perf_counter() - started


_SHARE_SECONDS = 0.1
"""Where the input's length is known, a batch is the input's share (cut as Pool.map cuts it),
or as many items as run this long, if fewer: long enough to make dispatch cost nothing, short
enough that results and progress keep coming."""

_OVERHEAD_SHARE = 8
"""A batch should run at least this many times its dispatch overhead (overhead under 12%)."""

_TRUSTED_ITEM = 1e-3
"""Seconds: one item is a fair measure of the items from this long. A shorter one is mostly the
cost of calling at all in a worker that sat idle (2 to 40 us on a busy machine, for a no-op)."""


class BatchSizer:
    """Items per batch, adapted so that a batch runs about ``target`` seconds, or longer where
    dispatching a batch costs much (see the module's docstring)."""

    __slots__ = (
        "fastest",
        "fixed",
        "least",
        "left",
        "limit",
        "overhead",
        "several",
        "share",
        "size",
        "target",
        "workers",
    )

    def __init__(
        self,
        fixed: int | None = None,
        target: float = 0.002,
        limit: int = 1024,
        *,
        length: int = 0,
        workers: int = 1,
    ) -> None:
        self.fixed = fixed
        self.size = fixed or 1
        self.target = target
        self.limit = limit
        self.workers = workers
        # Where the input's length is known, its share: the length cut as Pool.map cuts it,
        # about four batches a worker.
        self.share = -(-length // (4 * workers))
        self.left = length  # items of the input not cut into batches yet, where it is known
        self.least = 0  # the fewest items worth a batch, once a measure is trusted (else 0)
        self.several = False  # whether a batch of several items has come back
        self.fastest = 0.0  # the least seconds a single-item batch took, once there is one
        self.overhead = 0.0  # the least dispatch overhead of a batch seen so far, in seconds

    def next_size(self) -> int:
        """Items for the next batch: ``size``; or, once ``least`` is known, a worker's share of
        what is left if that is fewer (but never fewer than ``least``): towards the end of the
        input, batches shrink so that the workers finish together (guided scheduling)."""
        if not self.least:
            return self.size
        return min(self.size, max(self.least, -(-self.left // self.workers)))

    def cut(self, items: int) -> None:
        """A batch of ``items`` was cut from the input."""
        self.left -= items

    def update(self, items: int, seconds: float, overhead: float = 0.0) -> None:
        """A batch of ``items`` ran ``seconds``, and took ``overhead`` more to come back."""
        if self.fixed or items == 0:
            return
        if overhead > 0 and (not self.overhead or overhead < self.overhead):
            self.overhead = overhead
        if seconds <= 0:  # faster than the clock can tell
            self.size = min(self.share or self.size * 4, self.limit)
            return
        per_item = seconds / items
        if self.share:  # the input's length is known: cut as Pool.map cuts it, time permitting
            if items == 1:
                # One item is a noisy measure (a worker descheduled for a moment): of the
                # probes, the fastest speaks for the items.
                per_item = self.fastest = min(per_item, self.fastest or per_item)
            else:
                self.several = True
            self.size = max(1, int(min(self.share, self.limit, _SHARE_SECONDS / per_item)))
            trusted = self.several or per_item >= _TRUSTED_ITEM
            self.least = max(1, int(_OVERHEAD_SHARE * self.overhead / per_item)) if trusted else 0
            return
        ideal = max(self.target, _OVERHEAD_SHARE * self.overhead) / per_item
        # At most 4x a step, so that items that turn slow are not bunched; but where dispatch
        # costs more than the target (processes), waiting steps out costs more than that risk.
        growth = max(self.size * 4, _OVERHEAD_SHARE * self.overhead / per_item)
        self.size = max(1, int(min(self.limit, ideal, growth)))


class MapStream:
    """The work in flight for one ``map`` call: single-item tasks, or batches."""

    def __init__(
        self,
        submit: Callable[[tuple[Any, ...]], Task[Any]],
        submit_batch: Callable[[list[Any]], Task[Batch]] | None,
        items: Iterator[Any],
        *,
        window: int,
        max_tasks: int,
        ordered: bool,
        timeout: float | None,
        sizer: BatchSizer | None = None,
        probes: int = 1,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window!r}")
        self._submit = submit
        self._submit_batch = submit_batch if sizer is not None else None
        self._sizer = sizer or BatchSizer(fixed=1)
        self._items: Iterator[Any] | None = items
        self._window = window
        self._max_tasks = max_tasks
        # Until the first batch comes back, only ``probes`` single-item batches go out: more
        # would queue behind them and delay the first real batch by a dispatch each.
        self._probes = probes if self._submit_batch is not None and not self._sizer.fixed else 0
        self._ordered = ordered
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._in_flight: deque[Task[Any]] = deque()
        self._sizes: dict[Task[Any], int] = {}
        self._pending_items = 0
        self._completed: queue.SimpleQueue[tuple[Task[Any], float]] = queue.SimpleQueue()
        self._fill()  # start the first window now, as Executor.map starts all

    def _fill(self) -> None:
        most = self._probes or self._max_tasks
        while len(self._in_flight) < most and self._pending_items < self._window:
            if not self._feed():
                return

    def _feed(self) -> bool:
        """Submit the next item (or batch of items), if any is left."""
        if self._items is None:
            return False
        if self._submit_batch is None:
            chunk = list(itertools.islice(self._items, 1))
        else:
            room = self._window - self._pending_items
            chunk = list(itertools.islice(self._items, min(self._sizer.next_size(), room)))
            self._sizer.cut(len(chunk))
        if not chunk:
            self._items = None
            return False
        if self._submit_batch is None:
            task: Task[Any] = self._submit(chunk[0])
        else:
            task = self._submit_batch(chunk)
        self._in_flight.append(task)
        self._sizes[task] = len(chunk)
        self._pending_items += len(chunk)
        if self._submit_batch is not None or not self._ordered:
            put, clock = self._completed.put, time.monotonic
            # The callback is given the task: closing over it would make a cycle, which keeps a
            # finished batch and its results alive until the garbage collector's next full pass.
            task.add_done_callback(lambda done: put((cast("Task[Any]", done), clock())))
        return True

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def _next_done(self) -> Task[Any]:
        if not self._ordered:
            task = self._next_completed()
            self._in_flight.remove(task)
            return task
        task = self._in_flight[0]
        if self._submit_batch is None:
            task.exception(self._remaining())  # wait; raises TimeoutError past the deadline
        else:
            self._learn_completed()
            while not task.done():  # keep the window full while an early batch runs long
                self._next_completed()
                self._fill()
        return self._in_flight.popleft()

    def _next_completed(self) -> Task[Any]:
        """Wait for the next task to complete, and learn from it if it is a batch."""
        try:
            task, done_at = self._completed.get(timeout=self._remaining())
        except queue.Empty:
            raise FuturesTimeout() from None
        if self._submit_batch is not None:
            self._learn(task, done_at)
        return task

    def _learn_completed(self) -> None:
        """Learn from the batches that completed while the consumer was busy."""
        get = self._completed.get_nowait
        while True:
            try:
                task, done_at = get()
            except queue.Empty:
                return
            self._learn(task, done_at)

    def _learn(self, task: Task[Any], done_at: float) -> None:
        try:
            values, seconds = task.result(0)
            items = len(values)
        except BatchFailed as failed:
            items, seconds = len(failed.results) + 1, failed.seconds
        except BaseException:  # cancelled, or lost with its worker: no measure
            return
        overhead = done_at - task._started_at - seconds if task._started_at else 0.0
        self._sizer.update(items, seconds, overhead)
        self._probes = 0

    def results(self) -> Iterator[Any]:
        """Yield each result; cancel what is still in flight when closed or on error."""
        try:
            while self._in_flight:
                task = self._next_done()
                size = self._sizes.pop(task)
                if self._submit_batch is None:
                    self._pending_items -= size
                    self._fill()  # keep the window full while the consumer works
                    yield task.result()
                    continue
                try:
                    values, _ = task.result()
                except BatchFailed as failed:
                    yield from failed.results
                    raise failed.error from None
                yield from values
                self._pending_items -= size  # only now: the window bounds what is read ahead
                self._fill()
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._items = None
        while self._in_flight:
            self._in_flight.pop().cancel()
