"""Lazy ``map``: a bounded window of work in flight over an input of any length.

The input is read only as results are taken, so a generator of ten million items runs in the
memory of ``window`` items. Ordered results come in input order (the oldest unit of work is
awaited first); unordered ones as they complete. When the consumer stops early, or a result
raises, the work still in flight is cancelled.

Small items are run in *batches*, one task per batch, because a task's dispatch costs far more
than a trivial call. A ``BatchSizer`` starts every map at one item per batch (so slow items are
spread over every worker at once) and grows batches while they run short, towards a target
duration per batch. A batch runs its items in order and stops at the first error: the batch
task fails (so ``stats()`` counts a failure), carrying the results before it, and ``map`` raises
the item's error when it reaches that item, as ``Executor.map`` does.
"""

from __future__ import annotations

import itertools
import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any

from ._task import Task, _current

Batch = tuple[list[Any], float]
"""What a batch task returns: the results, and the seconds it ran."""


class BatchFailed(Exception):
    """An item of a batch raised ``error``; ``results`` are those of the items before it."""

    def __init__(self, results: list[Any], error: BaseException, seconds: float) -> None:
        super().__init__(results, error, seconds)
        self.results = results
        self.error = error
        self.seconds = seconds


def run_batch(fn: Callable[..., Any], items: list[tuple[Any, ...]]) -> Batch:
    """Call ``fn`` on each item in order; stop at the first error or when cancelled."""
    started = time.perf_counter()
    running = _current.get()
    task = None if running is None else running[0]
    results: list[Any] = []
    try:
        for args in items:
            if task is not None and task._cancel_requested:
                raise CancelledError()  # the map was closed: the rest is unwanted
            results.append(fn(*args))
    except CancelledError:
        raise  # the map was closed: the batch ends cancelled, not failed
    except Exception as error:
        raise BatchFailed(results, error, time.perf_counter() - started) from None
    return results, time.perf_counter() - started


class BatchSizer:
    """Items per batch, adapted so that a batch runs about ``target`` seconds."""

    __slots__ = ("fixed", "limit", "size", "target")

    def __init__(self, fixed: int | None = None, target: float = 0.002, limit: int = 1024) -> None:
        self.fixed = fixed
        self.size = fixed or 1
        self.target = target
        self.limit = limit

    def update(self, items: int, seconds: float) -> None:
        if self.fixed or items == 0:
            return
        ideal = self.target * items / seconds if seconds > 0 else self.limit
        self.size = max(1, min(self.limit, int(ideal), self.size * 4))  # grow at most 4x a step


class MapStream:
    """The work in flight for one ``map`` call: single-item tasks, or batches."""

    def __init__(
        self,
        submit: Callable[[tuple[Any, ...]], Task[Any]],
        submit_batch: Callable[[list[tuple[Any, ...]]], Task[Batch]] | None,
        items: Iterator[tuple[Any, ...]],
        *,
        window: int,
        max_tasks: int,
        ordered: bool,
        timeout: float | None,
        sizer: BatchSizer | None = None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window!r}")
        self._submit = submit
        self._submit_batch = submit_batch if sizer is not None else None
        self._sizer = sizer or BatchSizer(fixed=1)
        self._items: Iterator[tuple[Any, ...]] | None = items
        self._window = window
        self._max_tasks = max_tasks
        self._ordered = ordered
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._in_flight: deque[Task[Any]] = deque()
        self._sizes: dict[Task[Any], int] = {}
        self._pending_items = 0
        self._completed: queue.SimpleQueue[Task[Any]] = queue.SimpleQueue()
        self._fill()  # start the first window now, as Executor.map starts all

    def _fill(self) -> None:
        while len(self._in_flight) < self._max_tasks and self._pending_items < self._window:
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
            chunk = list(itertools.islice(self._items, min(self._sizer.size, room)))
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
        if not self._ordered:
            task.add_done_callback(self._completed.put)  # type: ignore[arg-type]  # put(item)
        return True

    def _remaining(self) -> float | None:
        if self._deadline is None:
            return None
        return max(0.0, self._deadline - time.monotonic())

    def _next_done(self) -> Task[Any]:
        if self._ordered:
            task = self._in_flight.popleft()
            try:
                task.exception(self._remaining())  # wait; raises TimeoutError past the deadline
            except FuturesTimeout:
                task.cancel()  # no longer in flight: cancel() at close would miss it
                raise
            return task
        try:
            task = self._completed.get(timeout=self._remaining())
        except queue.Empty:
            raise FuturesTimeout() from None
        self._in_flight.remove(task)
        return task

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
                    values, seconds = task.result()
                except BatchFailed as failed:
                    yield from failed.results
                    raise failed.error from None
                self._sizer.update(len(values), seconds)
                yield from values
                self._pending_items -= size  # only now: the window bounds what is read ahead
                self._fill()
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._items = None
        while self._in_flight:
            self._in_flight.pop().cancel()
