"""Lazy ``map``: a bounded window of work in flight over an input of any length.

The input is read only as results are taken, so a generator of ten million items runs in the
memory of ``window`` items. Ordered results come in input order (the oldest unit of work is
awaited first); unordered ones as they complete. When the consumer stops early, or a result
raises, the work still in flight is cancelled.

Small items are run in *batches*, one task per batch, because a task's dispatch costs far more
than a trivial call. A ``BatchSizer`` starts with one single-item batch per worker (so slow
items are spread over every worker at once, and the first result comes after one item). Where
the input says its length (a list, a range), batches are cut as ``multiprocessing.Pool.map``
cuts its chunks, about four per worker, and sent with the probes, without waiting for them;
each batch stops once it has run about 0.1 s, and the items it did not run are cut again, to
as many as ran in 0.1 s, and run next, before the batches after them. Otherwise (a generator)
only the probes go first, and batches grow from them while they run short, towards a target
duration. It also learns a batch's
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


def run_batch(
    fn: Callable[..., Any], items: list[Any], star: bool = True, budget: float | None = None
) -> Batch:
    """Call ``fn`` on each item in order (``fn(*item)`` if ``star``, else ``fn(item)``); stop at
    the first error, when cancelled, or (given a ``budget`` in seconds) once the items run so
    far took longer: the caller runs the rest.

    Items run in chunks (each in C, by ``extend``, the fastest a worker can go), so that the
    clock and the cancel flag are read after 1, 2, 4, 8... items."""
    started = _clock()
    running = _current.get()
    task = None if running is None else running[0]
    if getattr(task, "_owner", task) is None:
        # A Task made in a worker process has no owner: its cancel comes as a signal, never as
        # this flag.
        task = None
    results: list[Any] = []
    rest = iter(items)
    check = 1  # how many results there are at the next look at the clock
    try:
        while len(results) < len(items):
            if task is not None and task._cancel_requested:
                raise CancelledError()  # the map was closed: the rest is unwanted
            # extend() keeps what the iterator gave before an error: ``results`` still says
            # which item raised.
            part = itertools.islice(rest, check - len(results))
            results.extend(itertools.starmap(fn, part) if star else map(fn, part))
            if budget is not None and _clock() - started > budget:
                break
            check *= 2
    except CancelledError:
        raise  # the map was closed: the batch ends cancelled, not failed
    except Exception as error:
        raise BatchFailed(results, error, _clock() - started) from None
    return results, _clock() - started


_clock = time.perf_counter


SHARE_SECONDS = 0.1
"""Where the input's length is known, a batch is the input's share (cut as Pool.map cuts it),
or as many items as run this long, if fewer, and stops after running about this long: long
enough to make dispatch cost nothing, short enough that results and progress keep coming."""

_OVERHEAD_SHARE = 8
"""A batch should run at least this many times its dispatch overhead (overhead under 12%)."""


class BatchSizer:
    """Items per batch, adapted so that a batch runs about ``target`` seconds, or longer where
    dispatching a batch costs much (see the module's docstring)."""

    __slots__ = ("fastest", "fixed", "limit", "overhead", "share", "size", "target")

    def __init__(
        self,
        fixed: int | None = None,
        target: float = 0.002,
        limit: int = 1024,
        *,
        share: int = 0,
    ) -> None:
        self.fixed = fixed
        self.size = fixed or (min(share, limit) if share else 1)
        self.target = target
        self.limit = limit
        self.share = share  # the input's length cut as Pool.map cuts it, where it is known
        self.fastest = 0.0  # the least seconds a single-item batch took, once there is one
        self.overhead = 0.0  # the least dispatch overhead of a batch seen so far, in seconds

    def update(self, items: int, seconds: float, overhead: float = 0.0) -> None:
        """A batch of ``items`` ran ``seconds``, and took ``overhead`` more to come back."""
        if self.fixed or items == 0:
            return
        if overhead > 0 and (not self.overhead or overhead < self.overhead):
            self.overhead = overhead
        if seconds <= 0:
            self.size = min(self.limit, self.size * 4)
            return
        per_item = seconds / items
        if self.share:  # the input's length is known: cut as Pool.map cuts it, time permitting
            if items == 1:
                # One item is a noisy measure (a worker descheduled for a moment): of the
                # probes, the fastest speaks for the items.
                per_item = self.fastest = min(per_item, self.fastest or per_item)
            self.size = max(1, int(min(self.share, self.limit, SHARE_SECONDS / per_item)))
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
        budgeted: bool = False,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window!r}")
        self._submit = submit
        self._submit_batch = submit_batch if sizer is not None else None
        self._sizer = sizer or BatchSizer(fixed=1)
        self._items: Iterator[Any] | None = items
        self._window = window
        self._max_tasks = max_tasks
        # The first ``probes`` batches hold one item each. Until one comes back, no more go out
        # (more would queue behind them and delay the first real batch by a dispatch each),
        # unless the batches are ``budgeted``: they stop after a while, so they go at once.
        self._singles = probes if self._submit_batch is not None and not self._sizer.fixed else 0
        self._probes = 0 if budgeted else self._singles
        self._ordered = ordered
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._in_flight: deque[Task[Any]] = deque()
        self._chunks: dict[Task[Any], list[Any]] = {}  # the items of each task in flight
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
            size = 1 if self._singles else self._sizer.size
            room = self._window - self._pending_items
            chunk = list(itertools.islice(self._items, min(size, room)))
        if not chunk:
            self._items = None
            return False
        if self._singles:
            self._singles -= 1
        self._in_flight.append(self._launch(chunk))
        self._pending_items += len(chunk)
        return True

    def _launch(self, chunk: list[Any]) -> Task[Any]:
        """Submit ``chunk``'s task (one item, or a batch)."""
        if self._submit_batch is None:
            task: Task[Any] = self._submit(chunk[0])
        else:
            task = self._submit_batch(chunk)
        self._chunks[task] = chunk
        if self._submit_batch is not None or not self._ordered:
            put, clock = self._completed.put, time.monotonic
            # The callback is given the task: closing over it would make a cycle, which keeps a
            # finished batch and its results alive until the garbage collector's next full pass.
            task.add_done_callback(lambda done: put((cast("Task[Any]", done), clock())))
        return task

    def _run_next(self, rest: list[Any]) -> None:
        """Submit the items a batch left when it stopped at its time budget, cut to the size
        that runs in that time, to be awaited before every task in flight."""
        size = self._sizer.size
        tasks = [self._launch(rest[i : i + size]) for i in range(0, len(rest), size)]
        self._in_flight.extendleft(reversed(tasks))

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
                chunk = self._chunks.pop(task)
                if self._submit_batch is None:
                    self._pending_items -= 1
                    self._fill()  # keep the window full while the consumer works
                    yield task.result()
                    continue
                try:
                    values, _ = task.result()
                except BatchFailed as failed:
                    yield from failed.results
                    raise failed.error from None
                rest = chunk[len(values) :]
                if rest:  # it stopped at its time budget: the rest runs while we yield
                    self._run_next(rest)
                yield from values
                # Only now: the window bounds what is read ahead (the rest is still in it).
                self._pending_items -= len(values)
                self._fill()
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._items = None
        while self._in_flight:
            self._in_flight.pop().cancel()
