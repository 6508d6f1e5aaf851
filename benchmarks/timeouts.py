"""Timeout accuracy: how late after its deadline a hung task fails, and how soon capacity is back.

A pool of one worker runs a task that hangs past a ``timeout``; *late* is the time from the
deadline (taken from submission, on an idle warm pool) until ``result()`` raises, and *back* is
the time from then until a fresh no-op task submitted to the same pool has its result. Only pools
with a per-task timeout take part: pebble's ProcessPool and mpire; the stdlib has none.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import workpool

from . import peers
from .harness import Case, Sizes, skipped
from .tasks import hang, noop, wait_for

Hung = Callable[[Any, float], Callable[[], Any]]
"""Submit a hung task with a timeout; returns a callable that waits for its (failed) result."""


def _workpool_threads(pool: Any, timeout: float) -> Callable[[], Any]:
    release = threading.Event()
    task = pool.options(timeout=timeout).submit(wait_for, release)
    task.add_done_callback(lambda _: release.set())  # the abandoned thread may then leave
    return task.result  # type: ignore[no-any-return]


def _workpool_processes(pool: Any, timeout: float) -> Callable[[], Any]:
    return pool.options(timeout=timeout).submit(hang, 60.0).result  # type: ignore[no-any-return]


def _pebble(pool: Any, timeout: float) -> Callable[[], Any]:
    return pool.schedule(hang, args=(60.0,), timeout=timeout).result  # type: ignore[no-any-return]


def _mpire(pool: Any, timeout: float) -> Callable[[], Any]:
    return pool.apply_async(hang, (60.0,), task_timeout=timeout).get  # type: ignore[no-any-return]


@dataclass(frozen=True)
class Contender:
    """A pool with per-task timeouts, opened with one worker."""

    kind: str
    label: str
    skip: Callable[[], str | None]
    open: Callable[[], Any]
    close: Callable[[Any], None]
    noop: Callable[[Any], Any]
    """Run a no-op task and wait for it."""
    hung: Hung


def _shutdown(pool: Any) -> None:
    pool.shutdown(wait=True)


def _noop_result(pool: Any) -> Any:
    return pool.submit(noop).result()


def _pebble_open() -> Any:
    import pebble

    return pebble.ProcessPool(max_workers=1)


def _pebble_close(pool: Any) -> None:
    pool.close()
    pool.join()


def _pebble_noop(pool: Any) -> Any:
    return pool.schedule(noop).result()


def _mpire_open() -> Any:
    import mpire.pool

    return mpire.pool.WorkerPool(n_jobs=1, keep_alive=True)


def _mpire_close(pool: Any) -> None:
    pool.stop_and_join()


def _mpire_noop(pool: Any) -> Any:
    return pool.apply_async(noop).get()


CONTENDERS = [
    Contender(
        "threads",
        "workpool",
        lambda: None,
        lambda: workpool.Pool(1),
        _shutdown,
        _noop_result,
        _workpool_threads,
    ),
    Contender(
        "processes",
        "workpool",
        peers.workpool_process,
        lambda: peers.process_pool(1),
        _shutdown,
        _noop_result,
        _workpool_processes,
    ),
    Contender(
        "processes",
        "pebble ProcessPool",
        lambda: peers.missing("pebble"),
        _pebble_open,
        _pebble_close,
        _pebble_noop,
        _pebble,
    ),
    Contender(
        "processes",
        "mpire",
        lambda: peers.missing("mpire"),
        _mpire_open,
        _mpire_close,
        _mpire_noop,
        _mpire,
    ),
]


def _measure(contender: Contender, timeout: float, which: str) -> float:
    """Milliseconds: how ``late`` the hung task failed, or how soon capacity was ``back``."""
    pool = contender.open()
    try:
        contender.noop(pool)
        started = time.perf_counter()
        wait = contender.hung(pool, timeout)
        try:
            wait()
        except Exception:  # each library raises its own timeout error; any failure is the signal
            pass
        else:
            raise RuntimeError("the hung task returned instead of timing out")
        failed = time.perf_counter()
        contender.noop(pool)
        back = time.perf_counter()
    finally:
        contender.close(pool)
    return 1e3 * (failed - started - timeout if which == "late" else back - failed)


def timeouts(sizes: Sizes) -> list[Case]:
    t = sizes.timeout
    cases: list[Case] = []
    measures = (("late", "failure after the deadline"), ("back", "a new task done after it"))
    for which, what in measures:
        for contender in CONTENDERS:
            group = f"{contender.kind}: hung task, {t * 1e3:g} ms timeout: {what}"
            why = contender.skip()
            if why:
                cases.append(skipped("timeouts", group, contender.label, "ms", why))
                continue

            def run(c: Contender = contender, w: str = which) -> float:
                return _measure(c, t, w)

            cases.append(Case("timeouts", group, contender.label, run, "ms"))
    return cases
