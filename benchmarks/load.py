"""I/O-bound and CPU-bound work: how close each pool gets to what the machine can do.

- io: ``io_tasks`` sleeps of ``io_delay`` on ``io_threads`` threads (and the asyncio
  equivalent); the floor is bare threads (coroutines) each sleeping its share one after another.
- cpu: ``cpu_tasks`` pure-Python tasks of ``cpu_seconds`` on ``cpu_workers`` processes; the
  ceiling is bare processes forked in advance, each burning its share at a start signal, and
  the sequential time gives the speedup.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import threading
import time
from collections.abc import Callable, Coroutine
from typing import Any

import workpool

from . import peers
from .contenders import PROCESSES, THREADS, Contender, MapFn
from .harness import Case, Sizes, skipped
from .tasks import burn, burn_share, calibrate_burn, sleep, sleep_share


def _shares(n: int, k: int) -> list[int]:
    """``n`` tasks dealt as evenly as possible to ``k`` workers."""
    return [n // k + (1 if i < n % k else 0) for i in range(k)]


def _mapped(
    contender: Contender, map_fn: MapFn, workers: int, fn: Callable[..., Any], args: list[Any]
) -> float:
    """Seconds a warm pool takes to map ``fn`` over ``args``."""
    pool = contender.open(workers)
    try:
        contender.warm(pool, workers)
        started = time.perf_counter()
        for _ in map_fn(pool, fn, args):
            pass
        return time.perf_counter() - started
    finally:
        contender.close(pool)


def _first_maps(table: list[Contender]) -> list[tuple[Contender, str, MapFn]]:
    """Each contender's main map (its first variant), under its contender label."""
    return [(c, c.label, next(iter(c.maps.values()))) for c in table if c.maps]


def _pool_cases(
    scenario: str,
    group: str,
    table: list[Contender],
    workers: int,
    fn: Callable[..., Any],
    args: list[Any],
) -> list[Case]:
    cases = []
    for contender, label, map_fn in _first_maps(table):
        why = contender.skip()
        if why:
            cases.append(skipped(scenario, group, label, "s", why))
            continue

        def run(c: Contender = contender, m: MapFn = map_fn) -> float:
            return _mapped(c, m, workers, fn, args)

        cases.append(Case(scenario, group, label, run, "s"))
    return cases


def _thread_floor(n: int, k: int, delay: float) -> float:
    go = threading.Event()
    threads = [threading.Thread(target=sleep_share, args=(go, delay, s)) for s in _shares(n, k)]
    for thread in threads:
        thread.start()
    started = time.perf_counter()
    go.set()
    for thread in threads:
        thread.join()
    return time.perf_counter() - started


def _timed_async(main: Callable[[], Coroutine[Any, Any, None]]) -> float:
    async def timed() -> float:
        started = time.perf_counter()
        await main()
        return time.perf_counter() - started

    return asyncio.run(timed())


def _async_cases(sizes: Sizes) -> list[Case]:
    n, k, delay = sizes.io_tasks, sizes.io_threads, sizes.io_delay
    group = f"asyncio: {n:,} sleeps of {delay * 1e3:g} ms, {k} at a time"

    async def floor() -> None:
        async def share(count: int) -> None:
            for _ in range(count):
                await asyncio.sleep(delay)

        await asyncio.gather(*(share(s) for s in _shares(n, k)))

    async def gather() -> None:
        limit = asyncio.Semaphore(k)

        async def one() -> None:
            async with limit:
                await asyncio.sleep(delay)

        await asyncio.gather(*(one() for _ in range(n)))

    async def ours() -> None:
        async with workpool.AsyncPool(workers=k) as pool:  # type: ignore[attr-defined]
            async for _ in pool.map(asyncio.sleep, [delay] * n):
                pass

    cases = [
        Case("io", group, "floor: bare coroutines", lambda: _timed_async(floor), "s", role="floor"),
        Case("io", group, "asyncio.gather + Semaphore", lambda: _timed_async(gather), "s"),
    ]
    why = peers.workpool_async()
    if why:
        cases.insert(1, skipped("io", group, "workpool AsyncPool", "s", why))
    else:
        cases.insert(1, Case("io", group, "workpool AsyncPool", lambda: _timed_async(ours), "s"))
    return cases


def io(sizes: Sizes) -> list[Case]:
    n, k, delay = sizes.io_tasks, sizes.io_threads, sizes.io_delay
    group = f"threads: {n:,} sleeps of {delay * 1e3:g} ms on {k} threads"
    floor = Case(
        "io",
        group,
        f"floor: {k} bare threads",
        lambda: _thread_floor(n, k, delay),
        "s",
        role="floor",
    )
    pools = _pool_cases("io", group, THREADS, k, sleep, [delay] * n)
    return [floor, *pools, *_async_cases(sizes)]


def _process_ceiling(n: int, k: int, loops: int) -> float:
    ready = multiprocessing.Barrier(k + 1)
    done: multiprocessing.SimpleQueue[int] = multiprocessing.SimpleQueue()
    workers = [
        multiprocessing.Process(target=burn_share, args=(ready, done, loops, share))
        for share in _shares(n, k)
    ]
    for worker in workers:
        worker.start()
    try:
        ready.wait()  # every worker is up: the start signal
        started = time.perf_counter()
        for _ in workers:
            done.get()
        return time.perf_counter() - started
    finally:
        for worker in workers:
            worker.join()


def _sequential(n: int, loops: int) -> float:
    started = time.perf_counter()
    for _ in range(n):
        burn(loops)
    return time.perf_counter() - started


def cpu(sizes: Sizes) -> list[Case]:
    n, k = sizes.cpu_tasks, sizes.cpu_workers
    loops = calibrate_burn(sizes.cpu_seconds)
    group = f"processes: {n} pure-Python tasks of {sizes.cpu_seconds * 1e3:g} ms on {k} processes"
    return [
        Case("cpu", group, "sequential", lambda: _sequential(n, loops), "s", role="sequential"),
        Case(
            "cpu",
            group,
            f"ceiling: {k} bare pre-forked processes",
            lambda: _process_ceiling(n, k, loops),
            "s",
            role="floor",
        ),
        *_pool_cases("cpu", group, PROCESSES, k, burn, [loops] * n),
    ]
