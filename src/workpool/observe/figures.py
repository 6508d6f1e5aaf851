"""Figures: per-task-name distributions of queue wait and run time, outcomes, throughput.

``MetricsObserver`` keeps, for each task name, two histograms with fixed log-spaced buckets
(1, 2.5 and 5 per decade, 10 us to 1000 s) and outcome counters. Fixed buckets make an event
cost one short lock, a binary search and a few additions, and let quantiles be estimated from
the counts (linear interpolation inside a bucket, as Prometheus' ``histogram_quantile`` does).
"""

from __future__ import annotations

import bisect
import math
import threading
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .._events import Observer
from .._task import Task

if TYPE_CHECKING:
    from .._pool import Pool

BUCKETS: tuple[float, ...] = (
    *(float(f"{m}e{e}") for e in range(-5, 3) for m in ("1", "2.5", "5")),
    1000.0,
)
"""Upper bounds (seconds) of the histogram buckets; a last, implicit one is +Inf."""

OUTCOMES = ("succeeded", "failed", "cancelled", "timed_out")
OTHER = "other"
"""The name that task names past ``max_names`` are counted under."""


@dataclass(frozen=True)
class Distribution:
    """A histogram snapshot: ``counts[i]`` values fell at or under ``BUCKETS[i]`` (not
    cumulative), the last count above every bound."""

    counts: tuple[int, ...]
    sum: float
    max: float

    @property
    def count(self) -> int:
        return sum(self.counts)

    @property
    def mean(self) -> float:
        n = self.count
        return self.sum / n if n else 0.0

    def quantile(self, q: float) -> float:
        """Estimate the ``q`` quantile (0..1); 0.0 when empty. Never above the observed max."""
        if not 0.0 <= q <= 1.0:
            raise ValueError(f"q must be between 0 and 1, not {q!r}")
        n = self.count
        if not n:
            return 0.0
        rank = q * n
        seen = 0
        for i, c in enumerate(self.counts):
            if c and seen + c >= rank:
                low = BUCKETS[i - 1] if i else 0.0
                high = BUCKETS[i] if i < len(BUCKETS) else self.max
                estimate = low + (high - low) * (rank - seen) / c
                return min(estimate, self.max)
            seen += c
        return self.max

    @property
    def p50(self) -> float:
        return self.quantile(0.5)

    @property
    def p90(self) -> float:
        return self.quantile(0.9)

    @property
    def p99(self) -> float:
        return self.quantile(0.99)

    def cumulative(self) -> list[tuple[float, int]]:
        """(upper bound, count at or under it) pairs, ending with (+Inf, count)."""
        pairs, total = [], 0
        for bound, c in zip((*BUCKETS, math.inf), self.counts):  # noqa: B905  # same length
            total += c
            pairs.append((bound, total))
        return pairs


@dataclass(frozen=True)
class TaskFigures:
    """What one task name came to: counts, outcomes and its two distributions."""

    name: str
    submitted: int
    rejected: int
    retried: int
    outcomes: dict[str, int]
    """Finished tasks by outcome: ``succeeded``, ``failed``, ``cancelled``, ``timed_out``."""
    queue_wait: Distribution
    """Seconds each started attempt waited in the queue."""
    run_time: Distribution
    """Seconds each attempt ran (retried ones included)."""

    @property
    def finished(self) -> int:
        return sum(self.outcomes.values())


@dataclass(frozen=True)
class MetricsSnapshot:
    """The figures at one moment, per task name, and over the whole observed time."""

    elapsed: float
    """Seconds since the observer was created."""
    workers: int
    """Live workers, as the observer counted them from worker events."""
    busy_seconds: float
    """Seconds of attempts run to their end, summed."""
    worker_seconds: float
    """Seconds that workers were alive, summed."""
    tasks: dict[str, TaskFigures] = field(default_factory=dict)

    @property
    def finished(self) -> int:
        return sum(t.finished for t in self.tasks.values())

    @property
    def throughput(self) -> float:
        """Tasks finished per second over ``elapsed``."""
        return self.finished / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def utilisation(self) -> float:
        """The busy share of the workers' time, 0..1."""
        if self.worker_seconds <= 0:
            return 0.0
        return min(1.0, self.busy_seconds / self.worker_seconds)

    def throughput_of(self, name: str) -> float:
        """Tasks named ``name`` finished per second over ``elapsed``."""
        figures = self.tasks.get(name)
        if figures is None or self.elapsed <= 0:
            return 0.0
        return figures.finished / self.elapsed

    def utilisation_of(self, name: str) -> float:
        """The share of the workers' time spent running tasks named ``name``, 0..1."""
        figures = self.tasks.get(name)
        if figures is None or self.worker_seconds <= 0:
            return 0.0
        return min(1.0, figures.run_time.sum / self.worker_seconds)


class _Histogram:
    __slots__ = ("counts", "max", "sum")

    def __init__(self) -> None:
        self.counts = [0] * (len(BUCKETS) + 1)
        self.sum = 0.0
        self.max = 0.0

    def add(self, value: float) -> None:
        self.counts[bisect.bisect_left(BUCKETS, value)] += 1
        self.sum += value
        if value > self.max:
            self.max = value

    def freeze(self) -> Distribution:
        return Distribution(tuple(self.counts), self.sum, self.max)


class _Figures:
    __slots__ = ("outcomes", "queue_wait", "rejected", "retried", "run_time", "submitted")

    def __init__(self) -> None:
        self.submitted = self.rejected = self.retried = 0
        self.outcomes = dict.fromkeys(OUTCOMES, 0)
        self.queue_wait = _Histogram()
        self.run_time = _Histogram()

    def freeze(self, name: str) -> TaskFigures:
        return TaskFigures(
            name,
            self.submitted,
            self.rejected,
            self.retried,
            dict(self.outcomes),
            self.queue_wait.freeze(),
            self.run_time.freeze(),
        )


class MetricsObserver(Observer):
    """Counts and times every task, per task name; thread-safe. ``snapshot()`` reads it.

    At most ``max_names`` distinct task names are kept apart; later ones are counted under
    ``"other"``, so that a name built from data cannot grow the figures (or a Prometheus
    scrape) without bound.
    """

    def __init__(self, *, max_names: int = 100) -> None:
        if not isinstance(max_names, int) or max_names < 1:
            raise ValueError(f"max_names must be an int >= 1, not {max_names!r}")
        self.max_names = max_names
        self._lock = threading.Lock()
        self._figures: dict[str, _Figures] = {}
        self._running: dict[Task[Any], float] = {}
        self._created = self._changed = time.monotonic()
        self._workers = 0
        self._worker_seconds = 0.0
        self._busy = 0.0

    def attach(self, pool: Pool) -> MetricsObserver:
        """Observe ``pool`` from now on, counting the workers it already has."""
        with self._lock:
            self._count_workers(pool.stats().workers)
        pool.add_observer(self)
        return self

    def _of(self, task: Task[Any]) -> _Figures:
        # Called under the lock.
        name = task.name
        figures = self._figures.get(name)
        if figures is None:
            if len(self._figures) >= self.max_names:
                name = OTHER
                figures = self._figures.get(name)
            if figures is None:
                figures = self._figures[name] = _Figures()
        return figures

    def _count_workers(self, delta: int) -> None:
        now = time.monotonic()
        self._worker_seconds += self._workers * (now - self._changed)
        self._changed = now
        self._workers = max(0, self._workers + delta)

    def _end_attempt(self, task: Task[Any], figures: _Figures) -> None:
        started = self._running.pop(task, None)
        if started is not None:
            ran = max(0.0, time.monotonic() - started)
            figures.run_time.add(ran)
            self._busy += ran

    def task_submitted(self, task: Task[Any]) -> None:
        with self._lock:
            self._of(task).submitted += 1

    def task_rejected(self, task: Task[Any], error: BaseException) -> None:
        with self._lock:
            self._of(task).rejected += 1

    def task_started(self, task: Task[Any]) -> None:
        # The pool's clock stamped both times under its lock: this is the wait stats() sums.
        started = task._started_at
        with self._lock:
            self._running[task] = started
            self._of(task).queue_wait.add(max(0.0, started - task._enqueued_at))

    def task_retried(self, task: Task[Any], error: BaseException) -> None:
        with self._lock:
            figures = self._of(task)
            figures.retried += 1
            self._end_attempt(task, figures)

    def task_finished(self, task: Task[Any], error: BaseException | None) -> None:
        outcome = task.state.value
        with self._lock:
            figures = self._of(task)
            if outcome in figures.outcomes:
                figures.outcomes[outcome] += 1
            self._end_attempt(task, figures)

    def worker_started(self, worker: int) -> None:
        with self._lock:
            self._count_workers(+1)

    def worker_stopped(self, worker: int, reason: str) -> None:
        with self._lock:
            self._count_workers(-1)

    def snapshot(self) -> MetricsSnapshot:
        """The figures now: a consistent copy, taken under the observer's lock."""
        with self._lock:
            self._count_workers(0)
            tasks = {name: f.freeze(name) for name, f in self._figures.items()}
            return MetricsSnapshot(
                elapsed=self._changed - self._created,
                workers=self._workers,
                busy_seconds=self._busy,
                worker_seconds=self._worker_seconds,
                tasks=tasks,
            )

    def __repr__(self) -> str:
        return f"<MetricsObserver names={len(self._figures)} workers={self._workers}>"
