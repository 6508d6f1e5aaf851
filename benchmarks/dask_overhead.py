"""Per-task overhead of workpool on Dask against plain ``client.submit`` and ``client.map``.

Runs N no-op tasks on a local cluster (2 worker processes, 1 thread each, on 127.0.0.1) and
prints the median wall time per task over several rounds::

    python benchmarks/dask_overhead.py [--tasks 1000] [--rounds 5]

Plain Dask hands every task to the scheduler at once. workpool keeps at most ``workers`` tasks
in flight (its queue, priorities and retries stay on the client), so its overhead depends on
how many lanes keep the cluster fed: the table shows a few.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable

import dask
import distributed

import workpool


def noop(x: int) -> int:
    return x


def plain_map(client: distributed.Client, n: int) -> None:
    client.gather(client.map(noop, range(n), pure=False))


def plain_submit(client: distributed.Client, n: int) -> None:
    client.gather([client.submit(noop, i, pure=False) for i in range(n)])


def pool_map(workers: int) -> Callable[[distributed.Client, int], None]:
    def run(client: distributed.Client, n: int) -> None:
        with workpool.Pool(workers, backend="dask", client=client) as pool:
            for _ in pool.map(noop, range(n)):
                pass

    return run


def measure(
    fn: Callable[[distributed.Client, int], None], client: distributed.Client, n: int, rounds: int
) -> tuple[float, float]:
    """Median wall and client-process CPU seconds per task over ``rounds`` runs of ``n`` tasks.

    The CPU time counts this process only: the client, and the local scheduler that runs in it;
    it varies less than wall time on a busy machine.
    """
    fn(client, min(n, 50))  # warm up: imports, connections
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn(client, n)
        wall.append((time.perf_counter() - start) / n)
        cpu.append((time.process_time() - start_cpu) / n)
    return statistics.median(wall), statistics.median(cpu)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=1000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        cluster = distributed.LocalCluster(
            n_workers=2,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",
            scheduler_kwargs={"dashboard": False},
        )
    with cluster, distributed.Client(cluster, set_as_default=False) as client:
        cases: list[tuple[str, Callable[[distributed.Client, int], None]]] = [
            ("client.map + gather", plain_map),
            ("client.submit loop + gather", plain_submit),
            *((f"workpool Pool({w}).map", pool_map(w)) for w in (2, 8, 32)),
        ]
        print(f"{args.tasks} no-op tasks, median of {args.rounds} rounds, 2 workers x 1 thread")
        print(f"{'how':<30} {'wall/task':>12} {'cpu/task':>12}")
        for name, fn in cases:
            wall, cpu = measure(fn, client, args.tasks, args.rounds)
            print(f"{name:<30} {wall * 1e6:>9.0f} us {cpu * 1e6:>9.0f} us", flush=True)


if __name__ == "__main__":
    main()
