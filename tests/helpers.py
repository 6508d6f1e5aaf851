"""Helpers for the tests: bounded waits on conditions, the counters' invariant, and a join
staged between a worker thread's listing and its start."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Any

import workpool

LONG_LIVED: set[int] = set()
"""Pids of servers that module-scoped fixtures keep for many tests (PostgreSQL, say): the
child-process leak check leaves them, and what they start, alone."""


def wait_until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll ``predicate`` until it holds; fail after ``timeout`` seconds.

    For conditions no event can signal (a thread retiring on its own); never a bare sleep.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.002)


def assert_accounted(stats: workpool.PoolStats) -> None:
    """Every submitted task is in exactly one place."""
    assert stats.submitted == (
        stats.queued
        + stats.delayed
        + stats.busy
        + stats.succeeded
        + stats.failed
        + stats.cancelled
        + stats.timed_out
    ), stats


def direct_children() -> set[int]:
    """Pids of this process's live children (Linux /proc)."""
    me = str(os.getpid())
    children = set()
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    if stat.read().rsplit(")", 1)[1].split()[1] == me:
                        children.add(int(entry))
            except OSError:
                continue  # it exited meanwhile
    return children


class _WatchedLock:
    """A lock that tells when a thread had to wait for it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.waited = threading.Event()

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            self.waited.set()
            self._lock.acquire()

    def __exit__(self, *exc: object) -> None:
        self._lock.release()


class JoinAsAWorkerStarts:
    """Calls ``backend.join(0)`` from another thread at the moment the backend has listed a
    worker's thread (in its dict ``listing``) and not started it yet, the moment a shutdown can
    meet a replacement starting. ``errors`` gets what that join raised, once ``finished``."""

    def __init__(self, backend: Any, listing: str) -> None:
        self.errors: list[BaseException] = []
        self.finished = threading.Event()
        self.joiner = threading.Thread(target=self._join, args=(backend,))
        starting = backend._starting = _WatchedLock()
        stage = self

        class Listing(dict[Any, Any]):
            def __setitem__(self, key: Any, thread: Any) -> None:
                super().__setitem__(key, thread)
                if not stage.joiner.is_alive() and not stage.finished.is_set():
                    stage.joiner.start()
                    # Until it failed, or waits for the start to end: never a bare sleep.
                    wait_until(lambda: stage.finished.is_set() or starting.waited.is_set())

        setattr(backend, listing, Listing(getattr(backend, listing)))

    def _join(self, backend: Any) -> None:
        try:
            backend.join(0)
        except BaseException as error:
            self.errors.append(error)
        finally:
            self.finished.set()
