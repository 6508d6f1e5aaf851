"""The work the scenarios run: module-level functions, so that process pools can pickle them."""

from __future__ import annotations

import threading
import time
from typing import Any


def noop(x: object = None) -> object:
    """The cheapest task there is: what is left to measure is the pool's own cost."""
    return x


def sleep(seconds: float) -> None:
    """An I/O-bound task: waits without holding the GIL."""
    time.sleep(seconds)


def burn(loops: int) -> int:
    """A CPU-bound task in pure Python: holds the GIL for ``loops`` iterations."""
    total = 0
    for i in range(loops):
        total += i * i
    return total


def calibrate_burn(seconds: float) -> int:
    """How many ``burn`` loops take about ``seconds`` on this machine (the best of a few tries)."""
    loops = 10_000
    while True:
        best = min(_timed_burn(loops) for _ in range(3))
        if best >= 0.02:
            return max(1, round(loops * seconds / best))
        loops *= 2


def _timed_burn(loops: int) -> float:
    started = time.perf_counter()
    burn(loops)
    return time.perf_counter() - started


def hang(seconds: float) -> None:
    """A task that hangs: in a process it sleeps until killed."""
    time.sleep(seconds)


def kilobyte(x: object) -> bytes:
    """A task whose result is 1 KiB: results that pile up show in the memory."""
    return bytes(1024)


def wait_for(event: threading.Event) -> None:
    """A thread task that ignores its deadline until ``event`` is set."""
    event.wait()


def burn_share(ready: Any, done: Any, loops: int, count: int) -> None:
    """A bare pre-forked worker: once every worker is ready, burn ``count`` tasks, then say so.

    ``ready`` is a multiprocessing Barrier that the parent passes too (its start signal), and
    ``done`` a SimpleQueue, so that neither start-up nor exit counts in the time.
    """
    ready.wait()
    for _ in range(count):
        burn(loops)
    done.put(count)


def sleep_share(go: threading.Event, seconds: float, count: int) -> None:
    """A bare thread of the I/O floor: wait for the start signal, then sleep ``count`` times."""
    go.wait()
    for _ in range(count):
        time.sleep(seconds)
