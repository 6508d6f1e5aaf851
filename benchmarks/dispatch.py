"""Dispatch, latency and start-up: what the pool itself costs, measured with no-op tasks.

- dispatch: submit ``n`` no-ops then collect every result, and ``map`` over ``n`` items, on a
  pool that is already warm; microseconds per task. On processes, the maps that batch by
  themselves also run over ``process_map`` items (the issue's 100,000), where a map's start
  (its probe, its first batches) weighs less.
- latency: one task at a time, submit then wait; microseconds per round trip.
- startup: create an empty pool of two workers and shut it down; and a pool's whole life for a
  short job: create it, submit as many no-ops as it has workers, wait for them, shut it down
  (whatever number of workers the pool starts for them); milliseconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from .contenders import PROCESSES, SELF_BATCHING, THREADS, Contender, MapFn
from .harness import Case, Sizes, skipped
from .tasks import noop

KINDS = {"thread": "threads", "process": "processes"}


def _on_warm_pool(contender: Contender, workers: int, work: Callable[[Any], None]) -> float:
    """Seconds ``work(pool)`` takes on a pool whose workers have all started."""
    pool = contender.open(workers)
    try:
        contender.warm(pool, workers)
        started = time.perf_counter()
        work(pool)
        return time.perf_counter() - started
    finally:
        contender.close(pool)


def _submitting(contender: Contender, n: int) -> Callable[[Any], None]:
    """Work for a pool: submit ``n`` no-ops, then wait for each."""
    submit = contender.submit
    assert submit is not None

    def work(pool: Any) -> None:
        waiters = [submit(pool, noop, i) for i in range(n)]
        for wait in waiters:
            wait()

    return work


def _submit_all(contender: Contender, workers: int, n: int) -> Callable[[], float]:
    work = _submitting(contender, n)
    return lambda: _on_warm_pool(contender, workers, work) / n * 1e6


def _map_all(contender: Contender, map_fn: MapFn, workers: int, n: int) -> Callable[[], float]:
    def work(pool: Any) -> None:
        for _ in map_fn(pool, noop, range(n)):
            pass

    return lambda: _on_warm_pool(contender, workers, work) / n * 1e6


def _one_at_a_time(contender: Contender, workers: int, n: int) -> Callable[[], float]:
    submit = contender.submit
    assert submit is not None

    def work(pool: Any) -> None:
        for i in range(n):
            submit(pool, noop, i)()

    return lambda: _on_warm_pool(contender, workers, work) / n * 1e6


def _start_stop(
    contender: Contender, workers: int, n: int, work: Callable[[Any], None] | None = None
) -> Callable[[], float]:
    """Milliseconds to open a pool, do ``work`` on it (if any) and close it."""

    def run() -> float:
        started = time.perf_counter()
        for _ in range(n):
            pool = contender.open(workers)
            if work is not None:
                work(pool)
            contender.close(pool)
        return (time.perf_counter() - started) / n * 1e3

    return run


def _case(
    scenario: str, group: str, label: str, unit: str, contender: Contender, run: Callable[[], float]
) -> Case:
    why = contender.skip()
    if why:
        return skipped(scenario, group, label, unit, why)
    return Case(scenario, group, label, run, unit)


def dispatch(sizes: Sizes) -> list[Case]:
    cases: list[Case] = []
    for table, n in ((THREADS, sizes.dispatch), (PROCESSES, sizes.process_dispatch)):
        kind = KINDS[table[0].kind]
        group = f"{kind}: submit {n:,} no-ops, then results"
        for c in table:
            if c.submit is not None:
                run = _submit_all(c, sizes.workers, n)
                cases.append(_case("dispatch", group, c.label, "us/task", c, run))
        group = f"{kind}: map over {n:,} no-ops"
        for c in table:
            for label, map_fn in c.maps.items():
                run = _map_all(c, map_fn, sizes.workers, n)
                cases.append(_case("dispatch", group, label, "us/task", c, run))
    # The size, for the maps that batch items by themselves (the others send each item
    # alone: 50 to 160 us an item, minutes at this size, and the table above has them).
    n = sizes.process_map
    group = f"processes: map over {n:,} no-ops, the maps that batch by themselves"
    for c in PROCESSES:
        for label, map_fn in c.maps.items():
            if label in SELF_BATCHING:
                run = _map_all(c, map_fn, sizes.workers, n)
                cases.append(_case("dispatch", group, label, "us/task", c, run))
    return cases


def latency(sizes: Sizes) -> list[Case]:
    cases: list[Case] = []
    for table in (THREADS, PROCESSES):
        group = f"{KINDS[table[0].kind]}: one task at a time (round trip)"
        for c in table:
            if c.submit is not None:
                run = _one_at_a_time(c, sizes.workers, sizes.latency)
                cases.append(_case("latency", group, c.label, "us/task", c, run))
    return cases


def startup(sizes: Sizes) -> list[Case]:
    cases: list[Case] = []
    workers = sizes.workers
    for table in (THREADS, PROCESSES):
        kind = KINDS[table[0].kind]
        group = f"{kind}: start + shutdown, {workers} workers, empty"
        for c in table:
            if c.startup:
                run = _start_stop(c, workers, sizes.startups)
                cases.append(_case("startup", group, c.label, "ms", c, run))
        # A pool's whole life for a short job: a worker or two start, run the no-ops, stop.
        group = f"{kind}: start, {workers} no-ops, shutdown, {workers} workers"
        for c in table:
            if c.startup and c.submit is not None:
                run = _start_stop(c, workers, sizes.startups, _submitting(c, workers))
                cases.append(_case("startup", group, c.label, "ms", c, run))
    return cases
