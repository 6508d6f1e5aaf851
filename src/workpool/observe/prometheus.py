"""Prometheus: a ``prometheus_client`` collector for a pool, and a one-call HTTP endpoint.

The pool-wide gauges and counters are read from ``pool.stats()`` at scrape time, so they cost
nothing per task. The per-task-name histograms and outcome counters come from a
``MetricsObserver``, if one is given (it costs a short lock per task event).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from .figures import BUCKETS, MetricsObserver, TaskFigures

try:
    from prometheus_client import CollectorRegistry, start_http_server
    from prometheus_client.core import (
        CounterMetricFamily,
        GaugeMetricFamily,
        HistogramMetricFamily,
        Metric,
    )
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "workpool.observe.prometheus needs prometheus_client: pip install 'workpool[prometheus]'"
    ) from exc

if TYPE_CHECKING:
    from .._pool import Pool
    from .._stats import PoolStats

_BOUNDS = [*(repr(b) for b in BUCKETS), "+Inf"]


class PoolCollector(Collector):
    """Exports ``pool`` as ``workpool_*`` metrics, labelled ``pool=name``.

    With ``metrics`` (a ``MetricsObserver`` attached to the pool) it adds, per task name,
    ``workpool_task_queue_wait_seconds`` and ``workpool_task_run_seconds`` histograms and
    ``workpool_task_outcomes_total``.
    """

    def __init__(
        self, pool: Pool, *, metrics: MetricsObserver | None = None, name: str = "default"
    ) -> None:
        self.pool = pool
        self.metrics = metrics
        self.name = name

    def collect(self) -> Iterator[Metric]:
        yield from self._pool_metrics(self.pool.stats())
        if self.metrics is not None:
            yield from self._task_metrics(self.metrics.snapshot().tasks.values())

    def _pool_metrics(self, s: PoolStats) -> Iterator[Metric]:
        pool = [self.name]

        for name, doc, value in (
            ("workpool_workers", "Live workers.", s.workers),
            ("workpool_workers_busy", "Workers running a task.", s.busy),
            ("workpool_workers_max", "The most workers the pool may have.", s.max_workers),
            ("workpool_tasks_queued", "Tasks ready to run, waiting for a worker.", s.queued),
            ("workpool_tasks_delayed", "Tasks waiting out a retry backoff.", s.delayed),
            ("workpool_paused", "1 while the pool is paused.", int(s.paused)),
        ):
            g = GaugeMetricFamily(name, doc, labels=["pool"])
            g.add_metric(pool, value)
            yield g
        for name, doc, value in (
            ("workpool_tasks_submitted", "Tasks accepted by the pool.", s.submitted),
            ("workpool_task_attempts", "Attempts started, retries included.", s.started),
            ("workpool_task_retries", "Retries scheduled.", s.retried),
            ("workpool_tasks_crashed", "Failed tasks whose worker died under them.", s.crashed),
        ):
            c = CounterMetricFamily(name, doc, labels=["pool"])
            c.add_metric(pool, value)
            yield c
        outcomes = CounterMetricFamily(
            "workpool_tasks", "Finished tasks by outcome.", labels=["pool", "outcome"]
        )
        for outcome, value in (
            ("succeeded", s.succeeded),
            ("failed", s.failed),
            ("cancelled", s.cancelled),
            ("timed_out", s.timed_out),
        ):
            outcomes.add_metric([self.name, outcome], value)
        yield outcomes

    def _task_metrics(self, tasks: Iterable[TaskFigures]) -> Iterator[Metric]:
        labels = ["pool", "task"]
        waits = HistogramMetricFamily(
            "workpool_task_queue_wait_seconds",
            "Seconds each attempt waited in the queue.",
            labels=labels,
        )
        runs = HistogramMetricFamily(
            "workpool_task_run_seconds", "Seconds each attempt ran.", labels=labels
        )
        outcomes = CounterMetricFamily(
            "workpool_task_outcomes",
            "Finished tasks by task name and outcome.",
            labels=[*labels, "outcome"],
        )
        for figures in tasks:
            values = [self.name, figures.name]
            for family, dist in ((waits, figures.queue_wait), (runs, figures.run_time)):
                buckets = [
                    (bound, float(n))
                    for bound, (_, n) in zip(_BOUNDS, dist.cumulative())  # noqa: B905  # same length
                ]
                family.add_metric(values, buckets, dist.sum)
            for outcome, n in figures.outcomes.items():
                outcomes.add_metric([*values, outcome], n)
        yield waits
        yield runs
        yield outcomes

    def describe(self) -> Iterator[Metric]:
        # No description up front: registering must not take a scrape of the pool.
        return iter(())


class MetricsServer:
    """A running ``/metrics`` endpoint; ``close()`` stops it."""

    def __init__(self, server: Any, thread: Any, registry: CollectorRegistry) -> None:
        self._server = server
        self._thread = thread
        self.registry = registry
        self.host: str = server.server_address[0]
        self.port: int = server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/metrics"

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join()

    def __enter__(self) -> MetricsServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<MetricsServer {self.url}>"


def serve_metrics(
    pool: Pool,
    port: int = 0,
    addr: str = "127.0.0.1",
    *,
    metrics: MetricsObserver | None = None,
    name: str = "default",
    registry: CollectorRegistry | None = None,
) -> MetricsServer:
    """Serve ``pool``'s metrics over HTTP on ``addr:port`` (0: any free port), in a thread.

    The collector goes into ``registry`` (a new one by default, holding only this pool).
    ``server.port`` is the bound port; ``server.close()`` stops serving.
    """
    registry = CollectorRegistry() if registry is None else registry
    registry.register(PoolCollector(pool, metrics=metrics, name=name))
    server, thread = start_http_server(port, addr=addr, registry=registry)
    return MetricsServer(server, thread, registry)
