"""Per-task cost of observing a pool: none, MetricsObserver (Prometheus), TracingObserver.

Each round submits N no-op tasks to a 2-thread pool and waits for them; the configurations
run interleaved, round after round, so that a loaded machine slows them all alike. Prints
the median time per task and the ratio to the unobserved pool.

    python benchmarks/observe_overhead.py [--tasks 50000] [--rounds 5]

Prometheus adds nothing per task beyond its MetricsObserver: the collector reads the pool
and the observer only when scraped. One scrape is timed separately.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import workpool
from workpool.observe import MetricsObserver


def noop() -> None:
    pass


def run(tasks: int, observers: list[workpool.Observer]) -> float:
    """Seconds per task for ``tasks`` no-ops through a fresh 2-thread pool."""
    with workpool.Pool(2, observers=observers) as pool:
        submit = pool.submit
        start = time.perf_counter()
        for _ in range(tasks):
            submit(noop)
        pool.wait()
        elapsed = time.perf_counter() - start
    return elapsed / tasks


def configurations() -> dict[str, Callable[[], list[workpool.Observer]]]:
    configs: dict[str, Callable[[], list[workpool.Observer]]] = {
        "none": list,
        "metrics (= prometheus)": lambda: [MetricsObserver()],
    }
    try:
        from opentelemetry.sdk.trace import TracerProvider

        from workpool.observe.otel import TracingObserver

        configs["otel (sdk, no exporter)"] = lambda: [TracingObserver(TracerProvider())]
    except ImportError:
        pass
    return configs


def scrape_cost(tasks: int) -> float:
    """Seconds to collect one scrape of a pool with a few task names."""
    from prometheus_client import CollectorRegistry, generate_latest

    from workpool.observe.prometheus import PoolCollector

    metrics = MetricsObserver()
    with workpool.Pool(2, observers=[metrics]) as pool:
        for i in range(tasks):
            pool.options(name=f"job{i % 10}").submit(noop)
        registry = CollectorRegistry()
        registry.register(PoolCollector(pool, metrics=metrics))
        start = time.perf_counter()
        for _ in range(100):
            generate_latest(registry)
        return (time.perf_counter() - start) / 100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    configs = configurations()
    times: dict[str, list[float]] = {name: [] for name in configs}
    run(args.tasks // 10, [])  # warm up
    for _ in range(args.rounds):
        for name, make in configs.items():
            times[name].append(run(args.tasks, make()))
    base = statistics.median(times["none"])
    print(f"{args.tasks} no-op tasks, 2 threads, median of {args.rounds} interleaved rounds")
    for name, values in times.items():
        median = statistics.median(values)
        extra = (median - base) * 1e6
        print(f"  {name:26} {median * 1e6:7.2f} us/task  x{median / base:.2f}  (+{extra:.2f} us)")
    with contextlib.suppress(ImportError):
        print(f"  one scrape (10 task names): {scrape_cost(1000) * 1e3:.2f} ms")


if __name__ == "__main__":
    main()
