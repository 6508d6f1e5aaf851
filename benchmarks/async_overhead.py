"""AsyncPool's cost per task against the two bare asyncio patterns it replaces.

Two runs, each the median of ``--repeat``:

* ``sleep``: 10,000 tasks that each await a 10 ms sleep, 100 at a time. The ideal is
  10,000 / 100 x 10 ms = 1 s; what is above it is scheduling overhead (and machine noise).
* ``noop``: 20,000 tasks that each yield to the loop once: nearly pure overhead, reported as
  CPU time per task (less disturbed than wall time when the machine is shared).

Against: ``asyncio.Semaphore`` + ``gather`` (one asyncio task per item) and an ``asyncio.Queue``
read by 100 worker tasks. Run: ``python benchmarks/async_overhead.py [--repeat 5]``.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Awaitable, Callable

import workpool

Job = Callable[[], Awaitable[None]]


async def sleep_10ms() -> None:
    await asyncio.sleep(0.01)


async def yield_once() -> None:
    await asyncio.sleep(0)


async def with_semaphore(job: Job, n: int, workers: int) -> None:
    limit = asyncio.Semaphore(workers)

    async def one() -> None:
        async with limit:
            await job()

    await asyncio.gather(*(one() for _ in range(n)))


async def with_queue(job: Job, n: int, workers: int) -> None:
    queue: asyncio.Queue[None] = asyncio.Queue()
    for _ in range(n):
        queue.put_nowait(None)

    async def worker() -> None:
        while True:
            try:
                queue.get_nowait()
            except asyncio.QueueEmpty:
                return
            await job()

    await asyncio.gather(*(worker() for _ in range(workers)))


async def with_pool_submit(job: Job, n: int, workers: int) -> None:
    async with workpool.AsyncPool(workers) as pool:
        tasks = [await pool.submit(job) for _ in range(n)]
        for task in tasks:
            await task


async def with_pool_map(job: Job, n: int, workers: int) -> None:
    async def call(_: int) -> None:
        await job()

    async with workpool.AsyncPool(workers) as pool:
        async for _ in pool.map(call, range(n)):
            pass


PATTERNS: dict[str, Callable[[Job, int, int], Awaitable[None]]] = {
    "Semaphore + gather": with_semaphore,
    "Queue + 100 workers": with_queue,
    "AsyncPool submit": with_pool_submit,
    "AsyncPool map": with_pool_map,
}


def timed(
    pattern: Callable[[Job, int, int], Awaitable[None]], job: Job, n: int
) -> tuple[float, float]:
    """Wall and CPU seconds of one run (CPU time is less disturbed by a busy machine)."""
    wall, cpu = time.perf_counter(), time.process_time()
    asyncio.run(pattern(job, n, 100))
    return time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    print(f"median of {args.repeat} runs, 100 workers; ideal for 10k x 10 ms: 1.000 s wall\n")
    print(f"{'pattern':<22} {'10k x 10 ms wall s':>19} {'20k no-op CPU s':>16} {'CPU us/task':>12}")
    for name, pattern in PATTERNS.items():
        runs = [timed(pattern, sleep_10ms, 10_000) for _ in range(args.repeat)]
        sleep = statistics.median(wall for wall, _ in runs)
        noop = statistics.median(
            cpu for _, cpu in (timed(pattern, yield_once, 20_000) for _ in range(args.repeat))
        )
        print(f"{name:<22} {sleep:>19.3f} {noop:>16.3f} {noop / 20_000 * 1e6:>12.1f}")


if __name__ == "__main__":
    main()
