"""How an idle worker waits for work: one private lock per worker, shared by the backends."""

from __future__ import annotations

import threading

from .._engine import Directive, Next, WorkerSlot
from .base import WorkerHost


class Parker:
    """An idle worker blocks on a lock of its own that it holds; ``wake`` releases it.

    A wake-up thus goes to exactly one chosen worker, and one sent before the worker parks is
    not lost: the lock stays released until the worker comes to acquire it.
    """

    __slots__ = ("_lock",)

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()

    def wake(self) -> None:
        self._lock.release()

    def wait(self, seconds: float) -> bool:
        """Whether a wake-up comes within ``seconds``; if so it is taken: take work next."""
        return self._lock.acquire(timeout=seconds)

    def park(self, host: WorkerHost, slot: WorkerSlot) -> Next:
        """Wait to be woken, then take work; retire when idle too long, as the host says."""
        lock = self._lock
        timeout = host.park_timeout()
        if lock.acquire(timeout=-1 if timeout is None else timeout):
            return host.take(slot)
        verdict = host.idle_expired(slot)
        if verdict is Directive.WOKEN:
            lock.acquire()  # consume the wake-up that is on its way
            return host.take(slot)
        return verdict
