"""Taking a lock that other threads of this process contend for, without a convoy."""

from __future__ import annotations

import threading
import time

_SPINS = 20
"""Times a thread yields the GIL to the holder of a busy lock before it blocks on it."""


def yield_to_holder(lock: threading.Lock) -> None:
    """Before taking ``lock`` (with ``with``, which no Ctrl-C can split from its release), let
    the thread holding it run, rather than block at once: this keeps a convoy from forming.

    A thread that blocks on a lock is woken owning it, but must then wait for the GIL; the
    thread running meanwhile soon needs the lock, blocks, and hands over the GIL; and so on:
    once begun, every hand-over of the lock costs two context switches, for each task (about
    10 us here, doubling the cost of a no-op task on two cores). The holder of the pool's lock
    hardly ever blocks while holding it, so it waits for the GIL at most: yielding the GIL lets
    it finish and release, and the lock is then taken by a thread that runs.
    """
    for _ in range(_SPINS):
        time.sleep(0)
        if not lock.locked():
            return
