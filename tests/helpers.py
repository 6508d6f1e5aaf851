"""Helpers for the tests: bounded waits on conditions, and the counters' invariant."""

from __future__ import annotations

import os
import time
from collections.abc import Callable

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
