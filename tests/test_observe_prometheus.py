"""Prometheus: a scrape of the real HTTP endpoint reports the pool's counters and histograms."""

from __future__ import annotations

import re
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest
from helpers import wait_until

import workpool
from workpool.observe import MetricsObserver

pytest.importorskip("prometheus_client")
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from workpool.observe.prometheus import PoolCollector, serve_metrics

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(url: str) -> Samples:
    """Fetch ``url`` and index every sample by name and labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[(name, frozenset(labels.items()))]


@pytest.fixture
def finished_pool() -> Iterator[tuple[workpool.Pool, MetricsObserver]]:
    """A pool that ran 7 good and 3 bad 'parse' tasks and one 'abs', still open."""
    metrics = MetricsObserver()
    pool = workpool.Pool(2, observers=[metrics])
    tasks = [pool.options(name="parse").submit(int, t) for t in "1234567xyz"]
    tasks.append(pool.submit(abs, -1))
    for task in tasks:
        task.exception(timeout=10)
    yield pool, metrics
    pool.shutdown()


def test_scrape_reports_the_pool_counters(
    finished_pool: tuple[workpool.Pool, MetricsObserver],
) -> None:
    """The endpoint serves submitted, outcome and worker figures equal to pool.stats()."""
    pool, metrics = finished_pool
    with serve_metrics(pool, metrics=metrics, name="web") as server:
        samples = scrape(server.url)
    stats = pool.stats()
    assert value(samples, "workpool_tasks_submitted_total", pool="web") == 11
    assert value(samples, "workpool_tasks_total", pool="web", outcome="succeeded") == 8
    assert value(samples, "workpool_tasks_total", pool="web", outcome="failed") == 3
    assert value(samples, "workpool_workers", pool="web") == stats.workers
    assert value(samples, "workpool_workers_max", pool="web") == 2
    assert value(samples, "workpool_tasks_queued", pool="web") == 0


def test_scrape_reports_histograms_per_task_name(
    finished_pool: tuple[workpool.Pool, MetricsObserver],
) -> None:
    """Run-time buckets are cumulative, end in +Inf, and count every attempt of that name."""
    pool, metrics = finished_pool
    with serve_metrics(pool, metrics=metrics) as server:
        samples = scrape(server.url)
    parse = {"pool": "default", "task": "parse"}
    buckets = sorted(
        (float(dict(labels)["le"]), v)
        for (name, labels), v in samples.items()
        if name == "workpool_task_run_seconds_bucket" and dict(labels)["task"] == "parse"
    )
    counts = [v for _, v in buckets]
    assert counts == sorted(counts) and buckets[-1] == (float("inf"), 10)
    assert value(samples, "workpool_task_run_seconds_count", **parse) == 10
    assert value(samples, "workpool_task_queue_wait_seconds_count", **parse) == 10
    expected = metrics.snapshot().tasks["parse"].run_time.sum
    assert value(samples, "workpool_task_run_seconds_sum", **parse) == pytest.approx(expected)
    assert value(samples, "workpool_task_outcomes_total", **parse, outcome="failed") == 3


def test_gauges_follow_running_work() -> None:
    """While two tasks block, a scrape shows two busy workers and the queued rest."""
    gate = threading.Event()
    with workpool.Pool(2) as pool, serve_metrics(pool) as server:
        for _ in range(5):
            pool.submit(gate.wait, 30)
        wait_until(lambda: pool.stats().busy == 2)
        samples = scrape(server.url)
        gate.set()
    assert value(samples, "workpool_workers_busy", pool="default") == 2
    assert value(samples, "workpool_tasks_queued", pool="default") == 3


def test_metric_names_follow_prometheus_conventions(
    finished_pool: tuple[workpool.Pool, MetricsObserver],
) -> None:
    """Names are snake_case under workpool_, counters end in _total, times are in _seconds."""
    pool, metrics = finished_pool
    registry = CollectorRegistry()
    registry.register(PoolCollector(pool, metrics=metrics))
    for family in registry.collect():
        assert re.fullmatch(r"workpool_[a-z_]+", family.name), family.name
        if family.type == "histogram":
            assert family.name.endswith("_seconds")
        for sample in family.samples:
            if family.type == "counter":
                assert sample.name.endswith(("_total", "_created")), sample.name


def test_label_cardinality_is_bounded() -> None:
    """Task names past max_names are exported under task="other"."""
    metrics = MetricsObserver(max_names=1)
    with workpool.Pool(1, observers=[metrics]) as pool:
        for i in range(5):
            pool.options(name=f"job-{i}").submit(abs, i).result(timeout=10)
        with serve_metrics(pool, metrics=metrics) as server:
            samples = scrape(server.url)
    tasks = {
        dict(labels)["task"] for (name, labels), _ in samples.items() if "task" in dict(labels)
    }
    assert tasks == {"job-0", "other"}


def test_close_stops_serving() -> None:
    """After close() the port refuses connections and the server thread is gone."""
    with workpool.Pool(1) as pool:
        server = serve_metrics(pool, port=0)
        assert server.port > 0 and "127.0.0.1" in repr(server)
        scrape(server.url)
        server.close()
        with pytest.raises(urllib.error.URLError):
            urllib.request.urlopen(server.url, timeout=5)
