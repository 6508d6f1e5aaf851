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


def _measure(
    open_pool: Callable[[], Any],
    close: Callable[[Any], None],
    submit_noop: Callable[[Any], Any],
    hung: Hung,
    timeout: float,
    which: str,
) -> float:
    pool = open_pool()
    try:
        submit_noop(pool)
        started = time.perf_counter()
        wait = hung(pool, timeout)
        try:
            wait()
        except Exception:  # each library raises its own timeout error; any failure is the signal
            pass
        else:
            raise RuntimeError("the hung task returned instead of timing out")
        failed = time.perf_counter()
        submit_noop(pool)
        back = time.perf_counter()
    finally:
        close(pool)
    late = failed - started - timeout
    return 1e3 * (late if which == "late" else back - failed)


def _entries() -> list[
    tuple[
        str, str, str | None, Callable[[], Any], Callable[[Any], None], Callable[[Any], Any], Hung
    ]
]:
    def shutdown(pool: Any) -> None:
        pool.shutdown(wait=True)

    def result(pool: Any) -> Any:
        return pool.submit(noop).result()

    def pebble_open() -> Any:
        import pebble

        return pebble.ProcessPool(max_workers=1)

    def pebble_close(pool: Any) -> None:
        pool.close()
        pool.join()

    def pebble_noop(pool: Any) -> Any:
        return pool.schedule(noop).result()

    def mpire_open() -> Any:
        import mpire.pool

        return mpire.pool.WorkerPool(n_jobs=1, keep_alive=True)

    def mpire_close(pool: Any) -> None:
        pool.stop_and_join()

    def mpire_noop(pool: Any) -> Any:
        return pool.apply_async(noop).get()

    return [
        (
            "threads",
            "workpool",
            None,
            lambda: workpool.Pool(1),
            shutdown,
            result,
            _workpool_threads,
        ),
        (
            "processes",
            "workpool",
            peers.workpool_process(),
            lambda: peers.process_pool(1),
            shutdown,
            result,
            _workpool_processes,
        ),
        (
            "processes",
            "pebble ProcessPool",
            peers.missing("pebble"),
            pebble_open,
            pebble_close,
            pebble_noop,
            _pebble,
        ),
        ("processes", "mpire", peers.missing("mpire"), mpire_open, mpire_close, mpire_noop, _mpire),
    ]


def timeouts(sizes: Sizes) -> list[Case]:
    t = sizes.timeout
    cases: list[Case] = []
    for which, what in (
        ("late", "failure after the deadline"),
        ("back", "a new task done after the failure"),
    ):
        for kind, label, why, open_pool, close, submit_noop, hung in _entries():
            group = f"{kind}: hung task, {t * 1e3:g} ms timeout: {what}"
            if why:
                cases.append(skipped("timeouts", group, label, "ms", why))
                continue

            def run(
                o: Any = open_pool,
                c: Any = close,
                s: Any = submit_noop,
                h: Hung = hung,
                w: str = which,
            ) -> float:
                return _measure(o, c, s, h, t, w)

            cases.append(Case("timeouts", group, label, run, "ms"))
    return cases
