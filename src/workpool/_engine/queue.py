"""The ready queue: priorities, FIFO among equals, and aging so nothing starves.

A task's place is fixed when it is queued: ``key = aging * enqueued_at - priority`` and the
smallest key runs first. Its effective priority ``priority + aging * waited`` grows with time at
the same rate for every task, so comparing effective priorities at any instant is comparing keys:
aging costs nothing at dequeue time. With ``aging`` in priority points per second, a task of
priority 0 that waited ``d`` seconds outranks a fresh one of priority ``aging * d``.

Priority-0 tasks (the common case) arrive with growing keys, so they keep in a deque; the rest sit
in a heap; the next task is the smaller of the two heads. Cancelled tasks are left in place and
skipped when they reach the front.
"""

from __future__ import annotations

import heapq
from collections import deque
from typing import Any

from .._task import Task, TaskState

_QUEUED = TaskState.QUEUED


class ReadyQueue:
    """Tasks ready to run, best first. Not thread-safe: the scheduler's caller locks."""

    __slots__ = ("_aging", "fifo", "heap")

    def __init__(self, aging: float) -> None:
        self._aging = aging
        # Read and written directly by the scheduler for priority 0 alone (its fast path).
        self.fifo: deque[Task[Any]] = deque()
        self.heap: list[tuple[float, int, Task[Any]]] = []  # (key, submission order, task)

    def push(self, task: Task[Any], now: float) -> None:
        """Queue ``task``; ``now`` never goes back between calls (a monotonic clock)."""
        priority = task.options.priority
        if priority == 0:  # its key, aging * now, grows with every push: the deque stays sorted
            self.fifo.append(task)
        else:
            heapq.heappush(self.heap, (self._aging * now - priority, task._seq, task))

    def push_back(self, tasks: list[Task[Any]]) -> None:
        """Put back tasks taken out by ``pop``, each in the place it had."""
        fifo = []
        for task in tasks:
            priority = task.options.priority
            if priority == 0:
                fifo.append(task)
            else:
                entry = (self._aging * task._enqueued_at - priority, task._seq, task)
                heapq.heappush(self.heap, entry)
        if not fifo:
            return
        # They left from the front of the deque, ahead of every task in it but those put back
        # before them: merge them with those, in the order they were all queued.
        front = self.fifo
        last = max(map(_queued_order, fifo))
        while front and _queued_order(front[0]) < last:
            fifo.append(front.popleft())
        fifo.sort(key=_queued_order)
        front.extendleft(reversed(fifo))

    def pop(self) -> Task[Any] | None:
        """The best queued task, or None; skips tasks cancelled while they waited."""
        fifo, heap = self.fifo, self.heap
        while True:
            if heap and (not fifo or heap[0][0] < self._aging * fifo[0]._enqueued_at):
                task = heapq.heappop(heap)[2]
            elif fifo:
                task = fifo.popleft()
            else:
                return None
            if task._wp_state is _QUEUED:
                return task

    def drain(self) -> list[Task[Any]]:
        """Remove and return every task still queued, in run order."""
        tasks = []
        while (task := self.pop()) is not None:
            tasks.append(task)
        return tasks

    def __iter__(self) -> Any:
        return (t for t in (*self.fifo, *(e[2] for e in self.heap)) if t._wp_state is _QUEUED)


def _queued_order(task: Task[Any]) -> tuple[float, int]:
    return task._enqueued_at, task._seq
