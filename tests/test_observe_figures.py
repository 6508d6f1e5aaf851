"""MetricsObserver: per-name counts and distributions that agree with the pool's own stats."""

from __future__ import annotations

import threading

import pytest
from helpers import wait_until

import workpool
from workpool import RetryPolicy
from workpool.observe import Distribution, MetricsObserver
from workpool.observe.figures import BUCKETS, OTHER


def test_outcomes_are_counted_per_task_name() -> None:
    """Each task name gets its own outcome counts."""
    metrics = MetricsObserver()
    with workpool.Pool(2, observers=[metrics]) as pool:
        for text in ["1", "2", "x"]:
            pool.options(name="parse").submit(int, text)
        pool.options(name="abs").submit(abs, -1)
    tasks = metrics.snapshot().tasks
    assert tasks["parse"].outcomes == {"succeeded": 2, "failed": 1, "cancelled": 0, "timed_out": 0}
    assert tasks["parse"].submitted == 3 and tasks["parse"].finished == 3
    assert tasks["abs"].outcomes["succeeded"] == 1


def test_figures_agree_with_stats_under_concurrency() -> None:
    """Over 4 workers and 2,000 tasks, the counts match pool.stats() and the queue-wait sum is
    close to it."""
    metrics = MetricsObserver()
    with workpool.Pool(4, observers=[metrics]) as pool:
        for i in range(2000):
            pool.options(name=f"n{i % 3}").submit(abs, -i)
    stats, snap = pool.stats(), metrics.snapshot()
    waits = [t.queue_wait for t in snap.tasks.values()]
    assert sum(t.submitted for t in snap.tasks.values()) == stats.submitted == 2000
    assert snap.finished == stats.succeeded == 2000
    assert sum(d.count for d in waits) == stats.started
    assert sum(t.run_time.count for t in snap.tasks.values()) == stats.ended
    # Close, not equal: stats() also sums the slightly negative waits of tasks queued between
    # a worker reading the clock and taking the lock; the observer counts those as 0.
    observed = sum(d.sum for d in waits)
    assert observed >= stats.queue_wait_total - 1e-9
    assert observed == pytest.approx(stats.queue_wait_total, rel=0.05, abs=0.01)


def test_each_attempt_of_a_retried_task_is_timed() -> None:
    """A task that runs three times adds three run times and two retries."""
    metrics = MetricsObserver()
    with workpool.Pool(1, observers=[metrics]) as pool:
        pool.options(name="flaky", retries=2, retry=RetryPolicy(base_delay=0)).submit(int, "x")
    flaky = metrics.snapshot().tasks["flaky"]
    assert flaky.retried == 2
    assert flaky.run_time.count == 3 and flaky.queue_wait.count == 3
    assert flaky.outcomes["failed"] == 1


def test_a_task_cancelled_while_queued_adds_no_run_time() -> None:
    """Cancelling a queued task counts it cancelled without timing a run."""
    metrics = MetricsObserver()
    gate = threading.Event()
    with workpool.Pool(1, observers=[metrics]) as pool:
        pool.options(name="gate").submit(gate.wait, 30)
        queued = pool.options(name="later").submit(abs, 1)
        queued.cancel()
        gate.set()
    later = metrics.snapshot().tasks["later"]
    assert later.outcomes["cancelled"] == 1
    assert later.run_time.count == 0 and later.queue_wait.count == 0


def test_rejected_submissions_are_counted() -> None:
    """A submission refused by a full queue counts as rejected, not submitted-and-finished."""
    metrics = MetricsObserver()
    gate = threading.Event()
    with workpool.Pool(1, queue_size=1, observers=[metrics]) as pool:
        pool.submit(gate.wait, 30)
        wait_until(lambda: pool.stats().busy == 1)
        pool.options(name="fill").submit(abs, 1)
        with pytest.raises(workpool.QueueFull):
            pool.options(name="fill").try_submit(abs, 2)
        gate.set()
    fill = metrics.snapshot().tasks["fill"]
    assert fill.rejected == 1 and fill.finished == 1


def test_names_past_max_names_are_counted_as_other() -> None:
    """With max_names=2, a third task name is folded into 'other'."""
    metrics = MetricsObserver(max_names=2)
    with workpool.Pool(1, observers=[metrics]) as pool:
        for name in ["a", "b", "c", "d"]:
            pool.options(name=name).submit(abs, 1).result(timeout=10)
    tasks = metrics.snapshot().tasks
    assert set(tasks) == {"a", "b", OTHER}
    assert tasks[OTHER].outcomes["succeeded"] == 2


def test_bad_max_names_is_refused() -> None:
    """max_names below 1 raises a ValueError naming it."""
    with pytest.raises(ValueError, match="max_names"):
        MetricsObserver(max_names=0)


def test_quantiles_interpolate_within_buckets() -> None:
    """Quantiles interpolate linearly inside the bucket that holds the rank."""
    counts = [0] * (len(BUCKETS) + 1)
    i = BUCKETS.index(1.0)
    counts[i] = 100  # 100 values in (0.5, 1.0]
    dist = Distribution(tuple(counts), sum=75.0, max=1.0)
    assert dist.count == 100 and dist.mean == 0.75
    assert dist.p50 == pytest.approx(0.75)
    assert dist.p90 == pytest.approx(0.95)
    assert dist.quantile(1.0) == 1.0


def test_quantiles_never_exceed_the_observed_max() -> None:
    """A value above every bucket is estimated no higher than the largest value seen."""
    counts = [0] * (len(BUCKETS) + 1)
    counts[-1] = 1
    dist = Distribution(tuple(counts), sum=2000.0, max=2000.0)
    assert dist.p99 <= 2000.0
    assert dist.cumulative()[-1] == (float("inf"), 1)


def test_quantile_of_empty_and_bad_q() -> None:
    """An empty distribution reports 0.0; q outside 0..1 is a ValueError."""
    dist = Distribution((0,) * (len(BUCKETS) + 1), sum=0.0, max=0.0)
    assert dist.p50 == 0.0 and dist.mean == 0.0
    with pytest.raises(ValueError, match="q must be"):
        dist.quantile(1.5)


def test_utilisation_and_throughput() -> None:
    """Busy workers give a utilisation in (0, 1]; finished tasks give a positive throughput."""
    metrics = MetricsObserver()
    with workpool.Pool(2, observers=[metrics]) as pool:
        barrier = threading.Barrier(2)
        for _ in range(2):
            pool.submit(barrier.wait, 30)
    snap = metrics.snapshot()
    assert snap.busy_seconds > 0
    assert 0.0 < snap.utilisation <= 1.0
    assert snap.throughput > 0 and snap.finished == 2
    assert snap.workers == 0  # all retired at shutdown
    name = "Barrier.wait"
    assert snap.throughput_of(name) == snap.throughput
    assert 0.0 < snap.utilisation_of(name) <= snap.utilisation + 1e-9
    assert snap.throughput_of("absent") == 0.0 and snap.utilisation_of("absent") == 0.0


def test_attach_counts_the_workers_already_running() -> None:
    """attach() on a live pool seeds the worker count from its stats."""
    with workpool.Pool(2) as pool:
        barrier = threading.Barrier(3)
        for _ in range(2):
            pool.submit(barrier.wait, 30)
        wait_until(lambda: pool.stats().workers == 2)
        metrics = MetricsObserver().attach(pool)
        assert metrics.snapshot().workers == 2
        barrier.wait(30)
    assert "MetricsObserver" in repr(metrics)
