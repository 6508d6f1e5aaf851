"""The pool's counters and the frozen snapshot that ``Pool.stats()`` returns."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class PoolStats:
    """A consistent snapshot of a pool, taken under its lock.

    Every submitted task is in exactly one place: ``queued`` (ready to run), ``delayed`` (waiting
    for a retry), ``running``, or finished as one of ``succeeded``, ``failed``, ``cancelled``,
    ``timed_out``. ``crashed`` counts the failed tasks whose worker died under them (a part of
    ``failed``); ``retried`` counts retry attempts scheduled.
    """

    workers: int
    """Live workers, not counting abandoned threads."""
    idle: int
    busy: int
    queued: int
    delayed: int
    submitted: int
    succeeded: int
    failed: int
    cancelled: int
    timed_out: int
    retried: int
    crashed: int
    abandoned: int
    """Threads still running a task that timed out and was abandoned."""
    paused: bool
    closed: bool
    min_workers: int
    max_workers: int
    queue_wait_total: float
    """Seconds that started attempts spent queued, summed."""
    queue_wait_max: float
    run_time_total: float
    """Seconds of finished attempts' run time, summed."""
    run_time_max: float
    started: int
    """Attempts started (first runs and retries)."""
    ended: int
    """Attempts that ended, whatever the outcome."""

    @classmethod
    def _of(cls, fields: dict[str, Any]) -> PoolStats:
        """The snapshot of ``fields``, every one of them given by name.

        ``stats()`` runs often (each metrics scrape, each dashboard refresh, each shutdown's
        report), and a frozen dataclass's ``__init__`` sets its 23 fields one call each: about
        7 us, against 1.5 us for handing it its ``__dict__`` whole.
        """
        stats = object.__new__(cls)
        object.__setattr__(stats, "__dict__", fields)
        return stats

    @property
    def running(self) -> int:
        return self.busy

    @property
    def finished(self) -> int:
        return self.succeeded + self.failed + self.cancelled + self.timed_out

    @property
    def unfinished(self) -> int:
        return self.submitted - self.finished

    @property
    def queue_wait_mean(self) -> float:
        return self.queue_wait_total / self.started if self.started else 0.0

    @property
    def run_time_mean(self) -> float:
        return self.run_time_total / self.ended if self.ended else 0.0
