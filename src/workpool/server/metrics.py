"""Prometheus metrics: the pool's counters and the jobs' durations, in a registry of their own."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from .runner import Finished, Runner

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """A registry per server (so that several apps in one process never collide)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.job_seconds = Histogram(
            "workpool_job_run_seconds",
            "Run time of finished jobs' last attempt, by task and final state.",
            ["task", "state"],
            registry=self.registry,
            buckets=(0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 60, 300),
        )

    def attach(self, runner: Runner) -> None:
        self.registry.register(_PoolCollector(runner))

    def observe(self, finished: Finished) -> None:
        self.job_seconds.labels(finished.task, finished.state).observe(finished.run_seconds)

    def render(self) -> bytes:
        return generate_latest(self.registry)


class _PoolCollector(Collector):
    """Reads the pool's stats and the store's counts at scrape time."""

    def __init__(self, runner: Runner) -> None:
        self._runner = runner

    def collect(self) -> Iterator[Metric]:
        stats = self._runner.pool.stats()
        for name, value, text in (
            ("workers", stats.workers, "Live workers."),
            ("busy_workers", stats.busy, "Workers running a job."),
            ("queued_tasks", stats.queued + stats.delayed, "Jobs waiting in the pool."),
        ):
            yield GaugeMetricFamily(f"workpool_{name}", text, value=value)
        outcomes = CounterMetricFamily(
            "workpool_tasks_finished",
            "Pool tasks finished since start, by outcome.",
            labels=["state"],
        )
        for state in ("succeeded", "failed", "cancelled", "timed_out"):
            outcomes.add_metric([state], getattr(stats, state))
        yield outcomes
        yield CounterMetricFamily(
            "workpool_tasks_retried", "Retry attempts made since start.", value=stats.retried
        )
        jobs = GaugeMetricFamily("workpool_jobs", "Jobs in the store, by state.", labels=["state"])
        for state, count in self._runner.store.counts().items():
            jobs.add_metric([state], count)
        yield jobs
