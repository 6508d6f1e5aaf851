"""Throughput of many tiny tasks on 2 worker processes: workpool against the stdlib.

Per-task submit + result for N no-op tasks (workpool, ProcessPoolExecutor), and
``multiprocessing.Pool.imap(chunksize=1)``; also workpool's ``map``. Pools are started and
warmed up before timing. Median of interleaved rounds::

    python benchmarks/process_small_tasks.py [N] [ROUNDS]
"""

from __future__ import annotations

import multiprocessing
import statistics
import sys
import time
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor

import workpool

WORKERS = 2


def noop(x: int) -> int:
    return x


def run_workpool(n: int) -> float:
    with workpool.Pool(WORKERS, backend="process") as pool:
        [pool.submit(noop, i) for i in range(WORKERS * 2)]
        pool.wait()
        start = time.perf_counter()
        tasks = [pool.submit(noop, i) for i in range(n)]
        for task in tasks:
            task.result()
        return time.perf_counter() - start


def run_workpool_map(n: int) -> float:
    with workpool.Pool(WORKERS, backend="process") as pool:
        list(pool.map(noop, range(WORKERS * 2)))
        start = time.perf_counter()
        for _ in pool.map(noop, range(n)):
            pass
        return time.perf_counter() - start


def run_executor(n: int) -> float:
    with ProcessPoolExecutor(WORKERS) as pool:
        list(pool.map(noop, range(WORKERS * 2)))
        start = time.perf_counter()
        futures = [pool.submit(noop, i) for i in range(n)]
        for future in futures:
            future.result()
        return time.perf_counter() - start


def run_mp_imap(n: int) -> float:
    with multiprocessing.Pool(WORKERS) as pool:
        pool.map(noop, range(WORKERS * 2))
        start = time.perf_counter()
        for _ in pool.imap(noop, range(n), chunksize=1):
            pass
        return time.perf_counter() - start


RUNNERS: dict[str, Callable[[int], float]] = {
    "workpool submit+result": run_workpool,
    "workpool map": run_workpool_map,
    "ProcessPoolExecutor submit+result": run_executor,
    "multiprocessing.Pool.imap(chunksize=1)": run_mp_imap,
}


def main() -> None:
    n = int(sys.argv[1]) if len(sys.argv) > 1 else 20_000
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 5
    times: dict[str, list[float]] = {name: [] for name in RUNNERS}
    for _ in range(rounds):
        for name, run in RUNNERS.items():
            times[name].append(run(n))
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:42} {n / median:9.0f} tasks/s  {median / n * 1e6:6.1f} us/task")


if __name__ == "__main__":
    main()
