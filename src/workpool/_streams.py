"""Lazy ``map``: a bounded window of tasks in flight over an input of any length.

The input is read only as results are taken, so a generator of ten million items runs in the
memory of ``window`` tasks. Ordered results come in input order (the oldest task is awaited
first); unordered ones as they complete. When the consumer stops early, or a result raises,
the tasks still in flight are cancelled.
"""

from __future__ import annotations

import queue
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import TimeoutError as FuturesTimeout
from typing import Any, TypeVar

from ._task import Task

T = TypeVar("T")


class MapStream:
    """The tasks in flight for one ``map`` call."""

    def __init__(
        self,
        submit: Callable[[tuple[Any, ...]], Task[Any]],
        items: Iterator[tuple[Any, ...]],
        *,
        window: int,
        ordered: bool,
        timeout: float | None,
    ) -> None:
        if window < 1:
            raise ValueError(f"window must be >= 1, not {window!r}")
        self._submit = submit
        self._items: Iterator[tuple[Any, ...]] | None = items
        self._ordered = ordered
        self._deadline = None if timeout is None else time.monotonic() + timeout
        self._in_flight: deque[Task[Any]] = deque()
        self._completed: queue.SimpleQueue[Task[Any]] = queue.SimpleQueue()
        for _ in range(window):  # start the first window now, as Executor.map starts all
            if not self._feed():
                break

    def _feed(self) -> bool:
        """Submit the next input item, if any is left."""
        if self._items is None:
            return False
        try:
            args = next(self._items)
        except StopIteration:
            self._items = None
            return False
        task = self._submit(args)
        self._in_flight.append(task)
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
            task.exception(self._remaining())  # wait; raises TimeoutError past the deadline
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
                self._feed()  # keep the window full while the consumer works
                yield task.result()
        finally:
            self.cancel()

    def cancel(self) -> None:
        self._items = None
        while self._in_flight:
            self._in_flight.pop().cancel()
