"""Threads as workers.

Each worker is a daemon thread that asks the pool for a task, runs it, reports and asks again.
An idle worker parks on a lock of its own (``Parker``), so a wake-up goes to exactly one chosen
thread and none is lost.

Python cannot stop a thread, so a task past its deadline is *abandoned*: the pool fails it with
``TaskTimeout`` at once, sets its context so that ``check()`` raises, and counts its thread out of
the pool's capacity (a replacement starts when work waits). When the call finally returns, the
thread exits without touching the result. Threads are daemons so that a task that never returns
cannot keep the interpreter alive; the pool joins every other thread on shutdown.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from .._engine import RETIRE, WorkerSlot
from .._task import Task, WorkerCell, _current
from ._parking import Parker
from .base import Backend, Interruption, WorkerHost, join_threads


class ThreadBackend(Backend):
    """Workers are threads of this process."""

    name = "thread"
    thread_name_prefix = "workpool"

    def __init__(
        self,
        host: WorkerHost,
        *,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        thread_name_prefix: str | None = None,
    ) -> None:
        super().__init__(host, initializer=initializer, initargs=initargs)
        if thread_name_prefix:
            self.thread_name_prefix = thread_name_prefix
        self._threads: dict[int, threading.Thread] = {}
        self._starting = threading.Lock()
        """Held while a worker's thread is listed and started: ``join`` never finds one it
        cannot join yet (a replacement may start as the pool shuts down)."""

    @staticmethod
    def default_workers() -> int:
        # As concurrent.futures.ThreadPoolExecutor: I/O-bound work wants more threads than cores.
        return min(32, (os.cpu_count() or 1) + 4)

    def start(self, slot: WorkerSlot) -> None:
        thread = threading.Thread(
            target=self._work,
            args=(slot,),
            name=f"{self.thread_name_prefix}-{slot.id}",
            daemon=True,
        )
        slot.handle = Parker()
        with self._starting:
            self._threads[slot.id] = thread
            try:
                thread.start()
            except BaseException:
                del self._threads[slot.id]  # never started: nothing to join, nothing to wake
                slot.handle = None
                raise

    def wake(self, slot: WorkerSlot) -> None:
        slot.handle.wake()

    def interrupt(self, slot: WorkerSlot, task: Task[Any], why: Interruption) -> None:
        # Nothing can stop a thread: the task's context already says it was cancelled or timed
        # out, and a timed-out slot is lost, so the thread leaves once the call returns.
        if why == "timeout":
            self._threads.pop(slot.id, None)

    def join(self, timeout: float | None) -> bool:
        return join_threads(self._threads, self._starting, timeout)

    def _work(self, slot: WorkerSlot) -> None:
        host = self.host
        try:
            if self.initializer is not None:
                try:
                    self.initializer(*self.initargs)
                except BaseException as exc:
                    host.broken(slot, exc)
                    return
            cell = WorkerCell()  # what this thread runs, for current_task(): see WorkerCell
            _current.set(cell)
            task = host.take(slot)
            while task is not RETIRE:
                if task is None:
                    task = slot.handle.park(host, slot)
                    continue
                cell.running = (task, task.attempts)
                try:
                    value, error = task.fn(*task.args, **task.kwargs), None
                except BaseException as exc:
                    value, error = None, exc
                cell.running = None
                task = host.done(slot, task, value, error)
                del value, error  # drop references before parking
        except Exception as fault:  # the pool's own: the task's are caught around its call
            self.failed(slot, fault, "thread", slot.task)
        finally:
            self._threads.pop(slot.id, None)
