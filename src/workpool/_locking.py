"""Taking a lock that other threads of this process contend for, without a convoy."""

from __future__ import annotations

import sys
import threading
import time

_WINDOWS = sys.platform == "win32"  # whose sleeps can last a clock tick of 15.6 ms

_SPINS = 20 if _WINDOWS else 5
"""Times a thread first yields the GIL to the holder of a busy lock: usually enough."""

_NAPS, _NAP = (0 if _WINDOWS else 40), 25e-6
"""Then short sleeps, each also a chance for the holder's thread to get a CPU (Linux adds its
timer slack to each, about 50 us): in all 3 ms here, before blocking on the lock. Counted,
not timed: a deadline of 3 ms, checked between naps, measured 1.7 us a task slower in the flood
on Python 3.10, and one of 6 or 10 ms slower still."""


def yield_to_holder(lock: threading.Lock) -> None:
    """Before taking ``lock``, let the thread holding it run rather than block at once: this
    keeps a convoy from forming.

    A thread that blocks on a lock is woken owning it, but must then wait for the GIL; the
    thread running meanwhile soon needs the lock, blocks, and hands over the GIL; and so on:
    once begun, every hand-over of the lock costs two context switches, for each task (about
    10 us here, doubling the cost of a no-op task on two cores). The holder of the pool's lock
    hardly ever blocks while holding it, so it waits for the GIL at most: yielding the GIL lets
    it finish and release, and the lock is then taken by a thread that runs.

    A ``time.sleep(0)`` releases the GIL only for the length of a system call, which a holder
    woken on another core can miss; Python 3.10 needed up to a hundred of them. The naps that
    follow leave it the GIL for longer.

    Where it can, a caller first tries the lock without blocking and calls this only if that
    fails (``PoolCore.done``). A caller that checks ``lock.locked()`` and then takes the lock
    with ``with`` (the only form that no Ctrl-C can split from its release, for code that may
    run in the main thread) can lose the GIL between the two, as a call returns, and then block.
    """
    for _ in range(_SPINS):
        time.sleep(0)
        if not lock.locked():
            return
    for _ in range(_NAPS):
        time.sleep(_NAP)
        if not lock.locked():
            return
