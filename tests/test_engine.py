"""The scheduler alone: no threads, a manual clock, every decision checked."""

from __future__ import annotations

import collections
import dataclasses
import itertools
import pickle
from collections.abc import Callable
from concurrent.futures import CancelledError
from typing import Any

import pytest

from workpool import (
    PoolClosed,
    PoolStats,
    RetryPolicy,
    TaskOptions,
    TaskState,
    TaskTimeout,
    WorkerCrashed,
)
from workpool._engine import (
    RETIRE,
    Directive,
    Offer,
    Outcome,
    Scheduler,
    SlotState,
    WorkerSlot,
    scheduler,
)
from workpool._task import Task

NO_BACKOFF = RetryPolicy(base_delay=0.0)
FIXED_BACKOFF = RetryPolicy(base_delay=1.0, multiplier=2.0, max_delay=3.0, jitter=0.0)


def make_task(priority: int = 0, **options: Any) -> Task[Any]:
    return Task(print, (), {}, TaskOptions(priority=priority, **options))


def engine(workers: int = 1, **kwargs: Any) -> Scheduler:
    kwargs.setdefault("min_workers", workers)
    kwargs.setdefault("max_workers", workers)
    return Scheduler(**kwargs)


def started_slot(sched: Scheduler) -> WorkerSlot:
    """The slot the scheduler asked to start; consumes the wake-up list."""
    assert len(sched.wakeups) == 1
    slot = sched.wakeups.pop()
    assert slot.state is SlotState.STARTING
    return slot


def accounted(s: Scheduler) -> bool:
    return s.submitted == (
        s.queued
        + s.reserved
        + s.delayed
        + s.busy
        + s.succeeded
        + s.failed
        + s.cancelled
        + s.timed_out
    )


def test_submit_starts_a_worker_lazily_up_to_max() -> None:
    """Each waiting task gets a worker started for it until max_workers run."""
    s = engine(min_workers=0, max_workers=2)
    assert s.live == 0
    for _ in range(3):
        s.submit(make_task(), now=0)
    assert len(s.wakeups) == 2 and s.live == 2
    assert accounted(s)


def test_idle_worker_is_woken_before_a_new_one_starts() -> None:
    """A parked worker gets the next task; no second worker is started for it."""
    s = engine(min_workers=0, max_workers=4)
    s.submit(make_task(), 0)
    slot = started_slot(s)
    task = s.take(slot, 0)
    assert task is not None
    s.complete(slot, task, None, 1)
    assert s.take(slot, 1) is None  # parks
    s.submit(make_task(), 2)
    assert s.wakeups == [slot] and slot.state is SlotState.WOKEN


def test_priorities_run_highest_first_and_fifo_among_equals() -> None:
    """Higher priority first; equal priorities in submission order."""
    s = engine(aging=0.0)
    s.pause()
    tasks = [make_task(p) for p in (0, 5, 0, 5, -1, 9)]
    for t in tasks:
        s.submit(t, 0)
    s.resume()
    slot = started_slot(s)
    order = []
    while (t := s.take(slot, 0)) is not None:
        order.append(t)
        s.complete(slot, t, None, 0)
    assert order == [tasks[5], tasks[1], tasks[3], tasks[0], tasks[2], tasks[4]]


def test_aging_lets_a_waiting_task_overtake_a_flood_of_higher_priority() -> None:
    """With aging, a low-priority task runs once it has waited long enough."""
    s = engine(aging=1.0)  # one priority point per second waited
    s.submit(low := make_task(0), now=0)
    slot = started_slot(s)
    ran = []
    for now in range(1, 30):  # every second a new priority-10 task arrives; one runs
        s.submit(make_task(10), now=now)
        task = s.take(slot, now)
        assert task is not None
        ran.append(task)
        s.complete(slot, task, None, now)
        if task is low:
            break
    assert low in ran
    assert len(ran) <= 12  # overtaken only while 10 points of age were lacking


def test_without_aging_high_priority_flood_starves_low_priority() -> None:
    """The counter-case: aging=0 is strict priority."""
    s = engine(aging=0.0)
    s.submit(low := make_task(0), 0)
    slot = started_slot(s)
    for now in range(1, 50):
        s.submit(make_task(10), now)
        task = s.take(slot, now)
        assert task is not low and task is not None
        s.complete(slot, task, None, now)


def test_full_reports_the_queue_bound() -> None:
    """``full`` holds once queue_size tasks wait; running tasks do not count."""
    s = engine(queue_size=2)
    s.submit(make_task(), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    s.submit(make_task(), 0)
    assert not s.full
    s.submit(make_task(), 0)
    assert s.full and s.queued == 2 and s.busy == 1


def test_cancel_queued_task_frees_its_place() -> None:
    """A queued task cancels at once, leaves the queue and counts as cancelled."""
    s = engine(queue_size=1)
    s.pause()
    t = make_task()
    s.submit(t, 0)
    assert s.full
    assert s.cancel(t) is True
    assert not s.full and t.state is TaskState.CANCELLED and s.cancelled == 1
    s.resume()
    assert s.wakeups == []  # nothing left to run
    s.submit(u := make_task(), 0)
    slot = started_slot(s)
    assert s.take(slot, 0) is u  # the cancelled entry is skipped
    assert accounted(s)


def test_cancel_running_task_only_requests() -> None:
    """Cancelling a running task flags it; a CancelledError from it ends it CANCELLED."""
    s = engine()
    s.submit(t := make_task(), 0)
    slot = started_slot(s)
    assert s.take(slot, 0) is t
    assert s.cancel(t) is None and t._cancel_requested
    assert s.complete(slot, t, CancelledError(), 1) is Outcome.CANCELLED
    assert s.cancel(t) is False
    assert s.cancelled == 1 and accounted(s)


def test_retry_is_delayed_by_backoff_then_requeued() -> None:
    """A failed attempt with retries left waits its backoff, then runs again."""
    s = engine()
    s.submit(t := make_task(retries=2, retry=FIXED_BACKOFF), 0)
    slot = started_slot(s)
    assert s.take(slot, 0) is t
    assert s.complete(slot, t, ValueError(), 0) is Outcome.RETRY
    assert t.state is TaskState.QUEUED and s.delayed == 1 and s.retried == 1
    assert s.next_wakeup() == 1.0
    assert s.take(slot, 0.5) is None
    assert s.poll(0.99) == [] and s.delayed == 1
    s.poll(1.0)
    assert s.delayed == 0 and s.queued == 1 and s.wakeups == [slot]
    s.wakeups.clear()
    assert s.take(slot, 1.0) is t and t.attempts == 2
    assert s.complete(slot, t, ValueError(), 1.0) is Outcome.RETRY
    assert s.next_wakeup() == 3.0  # the second delay doubled
    s.poll(3.0)
    s.wakeups.clear()
    assert s.take(slot, 3.0) is t
    assert s.complete(slot, t, ValueError(), 3.0) is Outcome.FAILED
    assert t.attempts == 3 and s.failed == 1 and s.retried == 2 and accounted(s)


def test_retry_policy_decides_what_is_retried() -> None:
    """An exception outside ``retry_on`` fails at once."""
    s = engine()
    policy = RetryPolicy(retry_on=(TimeoutError,), base_delay=0)
    s.submit(t := make_task(retries=5, retry=policy), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    assert s.complete(slot, t, KeyError(), 0) is Outcome.FAILED
    assert s.retried == 0


def test_backoff_grows_is_capped_and_jittered() -> None:
    """Delays double from base_delay up to max_delay; jitter only shortens them."""
    policy = RetryPolicy(base_delay=0.1, multiplier=2, max_delay=1.0, jitter=0.5)
    assert [policy.delay(k, rng=lambda: 0.0) for k in (1, 2, 3, 4, 5, 100)] == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )
    assert policy.delay(2, rng=lambda: 1.0) == pytest.approx(0.1)
    assert RetryPolicy().delay(1, rng=lambda: 0.0) <= 0.1  # API: starts at most 0.1 s


def test_deadline_expires_attempt_and_loses_its_worker() -> None:
    """Past its timeout, poll ends the attempt TIMED_OUT and the slot is lost."""
    s = engine(2)
    s.submit(t := make_task(timeout=2.0), 0)
    slot = started_slot(s)
    assert s.take(slot, 0) is t and s.timer_dirty
    assert s.next_wakeup() == 2.0
    assert s.poll(1.999) == []
    [(task, lost, outcome)] = s.poll(2.0)
    assert (task, lost, outcome) == (t, slot, Outcome.TIMED_OUT)
    assert slot.state is SlotState.LOST and s.lost_alive == 1 and s.live == 1
    assert len(s.wakeups) == 1  # a replacement keeps min_workers
    # The abandoned call returns later: its outcome is ignored and its worker leaves.
    assert s.complete(slot, t, None, 5.0) is Outcome.STALE
    assert s.lost_alive == 0 and s.timed_out == 1 and s.succeeded == 0 and accounted(s)


def test_timeout_is_retried_by_default_policy() -> None:
    """TaskTimeout is retryable by default."""
    s = engine()
    s.submit(t := make_task(timeout=1.0, retries=1, retry=NO_BACKOFF), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    [(_, _, outcome)] = s.poll(1.0)
    assert outcome is Outcome.RETRY and s.queued == 1 and t.state is TaskState.QUEUED


def test_cooperative_timeout_keeps_the_worker() -> None:
    """A task that raises TaskTimeout itself past its deadline ends TIMED_OUT, worker kept."""
    s = engine()
    s.submit(t := make_task(timeout=1.0), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    assert s.complete(slot, t, TaskTimeout(t.id, 1.0), 1.5) is Outcome.TIMED_OUT
    assert slot.state is SlotState.BUSY and s.live == 1
    assert s.poll(2.0) == []  # its deadline entry is stale


def test_task_timeout_raised_before_the_deadline_is_an_ordinary_failure() -> None:
    """A TaskTimeout from, say, a nested pool is the task's own error."""
    s = engine()
    s.submit(t := make_task(timeout=10.0), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    assert s.complete(slot, t, TaskTimeout(), 1.0) is Outcome.FAILED


def test_crash_fails_task_counts_crash_and_replaces_worker() -> None:
    """A worker lost under its task fails it as crashed and starts a replacement."""
    s = engine(1)
    s.submit(t := make_task(), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    task, outcome = s.lose(slot, WorkerCrashed(t.id, exitcode=-9), 1.0)
    assert (task, outcome) == (t, Outcome.FAILED)
    assert s.crashed == 1 and s.failed == 1 and len(s.wakeups) == 1 and accounted(s)


def test_crash_is_retried_by_default_policy() -> None:
    """WorkerCrashed is retryable by default; crashed counts only final failures."""
    s = engine(1)
    s.submit(t := make_task(retries=1, retry=NO_BACKOFF), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    _, outcome = s.lose(slot, WorkerCrashed(t.id), 1.0)
    assert outcome is Outcome.RETRY and s.crashed == 0 and s.queued == 1


def test_idle_worker_retires_above_min_only() -> None:
    """An idle timeout retires a worker while more than min_workers live."""
    s = engine(min_workers=1, max_workers=3, idle_timeout=5.0)
    for _ in range(2):
        s.submit(make_task(), 0)
    a, b = s.wakeups
    s.wakeups.clear()
    tasks = [s.take(a, 0), s.take(b, 0)]
    for slot, t in zip((a, b), tasks):
        assert t is not None
        s.complete(slot, t, None, 0)
        assert s.take(slot, 0) is None
    assert s.park_timeout() == 5.0
    assert s.idle_expired(a) is RETIRE and s.live == 1
    assert s.idle_expired(b) is None and s.live == 1  # min_workers stays


def test_idle_expired_after_wake_reports_woken() -> None:
    """A worker whose idle wait ran out just as it was woken takes the work."""
    s = engine(min_workers=0, max_workers=1, idle_timeout=1.0)
    s.submit(make_task(), 0)
    slot = started_slot(s)
    s.complete(slot, s.take(slot, 0), None, 0)  # type: ignore[arg-type]
    assert s.take(slot, 0) is None
    s.submit(make_task(), 1)
    assert s.idle_expired(slot) is Directive.WOKEN
    assert s.take(slot, 1) is not None


def test_resize_down_retires_workers_as_they_ask_for_work() -> None:
    """Shrinking wakes idle workers to retire; busy ones retire after their task."""
    s = engine(3)
    for _ in range(3):
        s.submit(make_task(), 0)
    slots = list(s.wakeups)
    s.wakeups.clear()
    tasks = [s.take(slot, 0) for slot in slots]
    s.complete(slots[0], tasks[0], None, 0)  # type: ignore[arg-type]
    assert s.take(slots[0], 0) is None
    s.set_bounds(1, 1)
    assert s.wakeups == [slots[0]]
    assert s.take(slots[0], 0) is RETIRE
    s.complete(slots[1], tasks[1], None, 0)  # type: ignore[arg-type]
    assert s.take(slots[1], 0) is RETIRE
    s.complete(slots[2], tasks[2], None, 0)  # type: ignore[arg-type]
    assert s.take(slots[2], 0) is None and s.live == 1


def test_max_tasks_per_worker_recycles_with_a_replacement() -> None:
    """A worker leaves after its quota; queued work gets a new worker."""
    s = engine(1, max_tasks_per_worker=2)
    for _ in range(3):
        s.submit(make_task(), 0)
    slot = started_slot(s)
    for _ in range(2):
        t = s.take(slot, 0)
        s.complete(slot, t, None, 0)  # type: ignore[arg-type]
    assert s.take(slot, 0) is RETIRE
    assert len(s.wakeups) == 1 and s.wakeups[0] is not slot


def test_pause_holds_queued_work_and_resume_wakes_workers() -> None:
    """Paused, take parks workers; resume wakes them for the queued tasks."""
    s = engine(2)
    s.pause()
    s.submit(make_task(), 0)
    assert s.wakeups == []
    s.resume()
    assert len(s.wakeups) == 1


def test_close_rejects_submissions_and_retires_idle_workers() -> None:
    """After close, submit raises PoolClosed and idle workers retire once the queue drains."""
    s = engine(1)
    s.submit(t := make_task(), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    s.close()
    with pytest.raises(PoolClosed):
        s.submit(make_task(), 0)
    s.complete(slot, t, None, 0)
    assert s.take(slot, 0) is RETIRE and s.live == 0


def test_cancel_waiting_cancels_queued_and_delayed() -> None:
    """cancel_waiting ends every task not running, including ones awaiting a retry."""
    s = engine(1)
    s.submit(a := make_task(retries=1, retry=FIXED_BACKOFF), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    s.complete(slot, a, ValueError(), 0)
    s.submit(b := make_task(), 0)
    s.wakeups.clear()
    assert set(s.cancel_waiting()) == {a, b}
    assert s.cancelled == 2 and s.queued == s.delayed == 0 and accounted(s)
    assert s.poll(10.0) == [] and s.queued == 0


def test_cancel_of_a_delayed_retry() -> None:
    """A task waiting for its retry cancels at once."""
    s = engine(1)
    s.submit(a := make_task(retries=1, retry=FIXED_BACKOFF), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    s.complete(slot, a, ValueError(), 0)
    assert s.cancel(a) is True and s.delayed == 0 and accounted(s)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"min_workers": 0, "max_workers": 0}, "max_workers"),
        ({"min_workers": 3, "max_workers": 2}, "min_workers"),
        ({"min_workers": -1, "max_workers": 2}, "min_workers"),
    ],
)
def test_bad_bounds_are_rejected(kwargs: dict[str, int], message: str) -> None:
    """Worker bounds are validated with a message naming the argument."""
    with pytest.raises(ValueError, match=message):
        Scheduler(**kwargs)


def test_wait_and_run_figures_accumulate() -> None:
    """Queue wait and run time figures come from the clock given in events."""
    s = engine(1)
    s.submit(t := make_task(), 0.0)
    slot = started_slot(s)
    s.take(slot, 2.0)
    s.complete(slot, t, None, 5.0)
    stats = s.stats()
    assert stats.queue_wait_total == 2.0 and stats.run_time_total == 3.0
    assert stats.queue_wait_mean == 2.0 and stats.run_time_mean == 3.0


def test_stats_is_a_whole_frozen_snapshot_equal_to_one_built_as_usual() -> None:
    """The scheduler's fast-built snapshot has every field, equals one built through
    ``__init__``, hashes alike, pickles, and refuses changes."""
    s = engine(2)
    s.submit(make_task(), 0.0)
    stats = s.stats()
    usual = PoolStats(**{f.name: getattr(stats, f.name) for f in dataclasses.fields(PoolStats)})
    assert vars(stats) == dataclasses.asdict(usual)
    assert stats == usual and hash(stats) == hash(usual) and repr(stats) == repr(usual)
    assert pickle.loads(pickle.dumps(stats)) == stats
    assert dataclasses.replace(stats, queued=0) != stats
    with pytest.raises(dataclasses.FrozenInstanceError):
        stats.queued = 0  # type: ignore[misc]


def test_recycle_flag_retires_the_worker_after_its_task() -> None:
    """A backend flags a slot to recycle; it retires at its next take, replaced if work waits."""
    s = engine(1)
    s.submit(t := make_task(), 0)
    s.submit(make_task(), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    slot.recycle = True
    s.complete(slot, t, None, 1)
    assert s.take(slot, 1) is RETIRE
    assert len(s.wakeups) == 1 and s.wakeups[0] is not slot


def test_losing_a_slot_already_given_up_on_only_marks_it_gone() -> None:
    """A worker that dies after its timeout was handled is just gone; nothing is counted twice."""
    s = engine(1)
    s.submit(make_task(timeout=1.0), 0)
    slot = started_slot(s)
    s.take(slot, 0)
    s.poll(1.0)
    assert s.lost_alive == 1
    assert s.lose(slot, WorkerCrashed(), 2.0) == (None, None)
    assert s.lost_alive == 0 and s.timed_out == 1 and s.failed == 0 and accounted(s)


def test_rate_limit_spaces_task_starts() -> None:
    """With rate_limit=(2, 1.0), a burst of two starts, then one start per half second."""
    s = engine(1, rate_limit=(2, 1.0))
    for _ in range(4):
        s.submit(make_task(), 0.0)
    slot = started_slot(s)
    starts: list[float] = []
    now = 0.0
    for _ in range(20):  # the worker and a simulated timer, taking turns
        task = s.take(slot, now)
        while task is None:  # parked: the timer brings it back when a token is due
            due = s.next_wakeup()
            assert due is not None and due >= now
            now = due
            s.poll(now)
            if s.wakeups:
                assert s.wakeups == [slot]
                s.wakeups.clear()
                task = s.take(slot, now)
        starts.append(now)
        s.complete(slot, task, None, now)
        if len(starts) == 4:
            break
    assert starts == pytest.approx([0.0, 0.0, 0.5, 1.0])


def test_rate_limit_is_validated() -> None:
    """A rate limit needs a positive count and period."""
    with pytest.raises(ValueError, match="count"):
        engine(1, rate_limit=(0, 1.0))
    with pytest.raises(ValueError, match="period"):
        engine(1, rate_limit=(1, 0))


def test_deadlines_of_ended_attempts_are_dropped() -> None:
    """Finished tasks do not stay referenced by the deadline heap until their deadline."""
    s = engine(1)
    s.submit(make_task(timeout=3600), 0)
    slot = started_slot(s)
    for i in range(500):
        task = s.take(slot, i)
        assert task is not None
        s.complete(slot, task, None, i)
        s.submit(make_task(timeout=3600), i)
    assert len(s._deadlines) <= 70


def test_a_worker_that_failed_to_start_is_forgotten() -> None:
    """start_failed detaches the slot without starting another at once."""
    s = engine(min_workers=0, max_workers=2)
    s.submit(make_task(), 0)
    slot = started_slot(s)
    s.start_failed(slot)
    assert s.live == 0 and s.waking == 0 and s.wakeups == [] and s.queued == 1
    s.submit(make_task(), 1)  # the next event tries again
    assert len(s.wakeups) == 2


# -- tasks reserved ahead of time ---------------------------------------------------------------


def busy_engine(workers: int = 1, queued: int = 3) -> tuple[Scheduler, WorkerSlot, list[Task[Any]]]:
    """One busy worker (on the first task) and ``queued`` more tasks waiting."""
    s = engine(workers)
    tasks = [make_task() for _ in range(queued + 1)]
    for task in tasks:
        s.submit(task, 0)
    slot = s.wakeups.pop(0)
    assert s.take(slot, 0) is tasks[0]
    return s, slot, tasks


def test_reserved_tasks_start_next_on_their_worker_in_order() -> None:
    """A busy worker is handed its next tasks ahead; take starts them, even past a pause."""
    s, slot, tasks = busy_engine()
    assert s.reserve(slot) == tasks[1:]
    assert s.reserve(slot) == []  # nothing left to reserve
    assert all(t.state is TaskState.QUEUED for t in tasks[1:])
    assert s.stats().queued == 3 and accounted(s)
    s.pause()
    for done, following in itertools.pairwise(tasks):
        s.complete(slot, done, None, 0.001)
        assert s.take(slot, 0.001) is following  # its worker has it already
        assert following.state is TaskState.RUNNING and accounted(s)


def test_reservations_are_topped_up_in_bursts() -> None:
    """Up to AHEAD_MAX tasks are reserved, and more only once half of them have started."""
    s, slot, tasks = busy_engine(queued=20)
    assert s.reserve(slot) == tasks[1 : 1 + scheduler.AHEAD_MAX]
    half = scheduler.AHEAD_MAX // 2
    for i in range(half):
        assert s.reserve(slot) == []  # more than half still held
        s.complete(slot, tasks[i], None, 0.0)
        assert s.take(slot, 0.0) is tasks[i + 1]
    topped = s.reserve(slot)
    assert topped == tasks[1 + scheduler.AHEAD_MAX : 1 + scheduler.AHEAD_MAX + half]
    assert len(slot.ahead) == scheduler.AHEAD_MAX and accounted(s)


@pytest.mark.parametrize(
    ("ran", "depth"), [(0.0, scheduler.AHEAD_MAX), (0.001, 2), (0.01, 1), (1.0, 0)]
)
def test_the_longer_tasks_run_the_fewer_are_reserved(ran: float, depth: int) -> None:
    """About AHEAD_SECONDS of work is held ahead: fewer tasks as they run longer, none after
    a task of RESERVE_BELOW or more."""
    s, slot, tasks = busy_engine(queued=20)
    s.complete(slot, tasks[0], None, ran)
    assert s.take(slot, ran) is tasks[1]
    assert s.reserve(slot) == tasks[2 : 2 + depth]


def test_a_maps_batch_is_reserved_only_alone() -> None:
    """A map's batch runs long by design: a worker holds one ahead at most, never behind
    others, and the batches it leaves keep their place in the queue."""
    s, slot, tasks = busy_engine(queued=4)
    for task in tasks[2:]:
        task._batch = True
    assert s.reserve(slot) == [tasks[1]]  # not the batch behind it
    s.complete(slot, tasks[0], None, 0.0)
    assert s.take(slot, 0.0) is tasks[1]
    assert s.reserve(slot) == [tasks[2]]
    assert s.reserve(slot) == []  # one held already
    assert list(s._queue) == tasks[3:] and accounted(s)
    s, slot, tasks = busy_engine(queued=3)
    tasks[1]._batch = True
    assert s.reserve(slot) == [tasks[1]]  # and nothing behind it
    assert list(s._queue) == tasks[2:] and accounted(s)


def test_reserve_leaves_the_tasks_woken_workers_come_for() -> None:
    """No reservation of a task that a starting worker is coming for."""
    s, slot, _ = busy_engine(workers=2, queued=1)  # the second worker is starting for it
    assert s.reserve(slot) == []
    s, slot, tasks = busy_engine(workers=2, queued=3)
    assert s.reserve(slot) == tasks[1:3]  # the last is the starting worker's


def test_reserve_stops_at_max_tasks_per_worker() -> None:
    """A worker that retires after its n-th task is handed no task beyond it."""
    s = engine(1, max_tasks_per_worker=3)
    tasks = [make_task() for _ in range(6)]
    for task in tasks:
        s.submit(task, 0)
    slot = s.wakeups.pop(0)
    assert s.take(slot, 0) is tasks[0]
    assert s.reserve(slot) == tasks[1:3]


def test_unreserved_tasks_go_back_to_the_head_of_the_queue_in_order() -> None:
    """Tasks taken back (one and all reserved after it) are the next to run, in their order."""
    s, slot, tasks = busy_engine(queued=4)
    s.reserve(slot)
    assert s.unreserve(slot, tasks[2]) == tasks[2:]
    assert list(slot.ahead) == [tasks[1]] and accounted(s)
    assert s.unreserve(slot) == [tasks[1]]
    assert accounted(s)
    for done, following in itertools.pairwise(tasks):
        s.complete(slot, done, None, 1.0)
        assert s.take(slot, 1.0) is following


@pytest.mark.parametrize("priority", [0, 5])
def test_tasks_taken_back_keep_their_order_across_take_backs_and_workers(priority: int) -> None:
    """However many take-backs, from however many workers, in whatever order, the tasks run
    in the order they would have run untaken, priorities and ties included."""
    s = engine(2, aging=0.0)
    tasks = [make_task(priority) for _ in range(12)]
    for task in tasks:
        s.submit(task, 0)
    a, b = s.wakeups
    assert s.take(a, 0) is tasks[0] and s.take(b, 0) is tasks[1]
    assert s.reserve(a) == tasks[2:10] and s.reserve(b) == tasks[10:12]
    s.unreserve(a, tasks[6])  # tasks[6:10] go back
    s.unreserve(b)  # tasks[10:12], later than those
    s.unreserve(a)  # tasks[2:6], earlier than all
    assert accounted(s) and s.reserved == 0
    assert [s._queue.pop() for _ in range(10)] == tasks[2:]


def test_reserved_tasks_count_against_queue_size() -> None:
    """A bounded queue bounds the tasks reserved ahead too: they wait as queued ones do."""
    s = engine(1, queue_size=3)
    tasks = [make_task() for _ in range(4)]
    for task in tasks:
        s.submit(task, 0)
    slot = s.wakeups.pop()
    assert s.take(slot, 0) is tasks[0]
    assert s.full
    assert s.reserve(slot) == tasks[1:]
    assert s.full  # still three waiting
    s.complete(slot, tasks[0], None, 0.0)
    assert s.take(slot, 0.0) is tasks[1]
    assert not s.full


def test_lost_worker_hands_its_reserved_tasks_on_unstarted() -> None:
    """Tasks reserved for a lost worker, taken back unstarted, run elsewhere as new."""
    s, slot, tasks = busy_engine()
    s.reserve(slot)
    s.lose(slot, WorkerCrashed(tasks[0].id), 0.001)
    assert list(slot.ahead) == tasks[1:]  # the caller asks the backend to take them back
    s.unreserve(slot, wake=True)
    replacement = s.wakeups.pop()
    assert s.take(replacement, 0.002) is tasks[1]
    assert tasks[1].attempts == 1 and accounted(s)


def test_reserved_task_that_may_have_started_on_a_lost_worker_crashes() -> None:
    """A reserved task the backend cannot take back counts as an attempt lost with its worker;
    those after it stay reserved, for the caller to take back."""
    s, slot, tasks = busy_engine()
    s.reserve(slot)
    s.lose(slot, WorkerCrashed(tasks[0].id), 0.001)
    assert s.drop_reserved(slot, WorkerCrashed(tasks[1].id), 0.002) is Outcome.FAILED
    assert tasks[1].attempts == 1 and tasks[1].state is TaskState.FAILED
    assert list(slot.ahead) == tasks[2:]
    assert s.crashed == 2 and s.busy == 0 and accounted(s)


def test_cancel_of_a_reserved_task_only_requests() -> None:
    """The scheduler cannot cancel a task its worker holds: the backend must recall it first."""
    s, slot, tasks = busy_engine()
    s.reserve(slot)
    assert s.cancel(tasks[1]) is None and tasks[1]._cancel_requested
    assert tasks[1] in s.waiting_tasks()


# -- offers: tasks queued without the pool's lock ------------------------------------------------


class Interleaved(list[Any]):
    """A list whose ``append`` first runs ``meanwhile``: what another thread did just before."""

    def __init__(self, meanwhile: Callable[[], object]) -> None:
        super().__init__()
        self.meanwhile = meanwhile

    def append(self, item: Any) -> None:
        self.meanwhile()
        super().append(item)


class InterleavedDeque(collections.deque[Any]):
    """A deque whose ``append`` runs ``meanwhile`` just before (or just after) it."""

    def __init__(self, meanwhile: Callable[[], object], *, after: bool = False) -> None:
        super().__init__()
        self.meanwhile, self.after = meanwhile, after

    def append(self, item: Any) -> None:
        if not self.after:
            self.meanwhile()
        super().append(item)
        if self.after:
            self.meanwhile()


def all_busy(
    workers: int = 1, **kwargs: Any
) -> tuple[Scheduler, list[WorkerSlot], list[Task[Any]]]:
    """Every worker the scheduler may have runs a task: the state in which offers go in."""
    s = engine(workers, **kwargs)
    running = [make_task() for _ in range(workers)]
    for task in running:
        s.submit(task, 0)
    slots, s.wakeups = s.wakeups, []
    for slot, task in zip(slots, running):
        assert s.take(slot, 0) is task
    return s, slots, running


def test_an_offer_goes_in_only_while_every_worker_is_busy() -> None:
    """Nobody to wake or start, no bound, no rate, priority 0: anything else needs a decision
    under the lock, so the offer is declined, and leaves no trace."""
    fresh = engine(min_workers=0, max_workers=1)
    bounded, rated = all_busy(queue_size=5)[0], all_busy(rate_limit=(10, 1.0))[0]
    for declined in (fresh, bounded, rated):
        assert declined.offer(make_task(), 0) is Offer.DECLINED and not declined.inbox
    s, [slot], [running] = all_busy()
    assert s.offer(make_task(priority=1), 0) is Offer.DECLINED
    task = make_task()
    assert s.offer(task, 2.5) is Offer.QUEUED
    assert list(s.inbox) == [task] and task._enqueued_at == 2.5
    s.complete(slot, running, None, 3)
    assert s.take(slot, 3) is task  # counted in as it is taken
    assert s.take(slot, 3) is None and s.offer(make_task(), 3) is Offer.DECLINED  # idle
    s.close()
    assert s.offer(make_task(), 4) is Offer.DECLINED and accounted(s)


def test_offered_tasks_run_behind_the_tasks_before_them_and_ahead_of_later_ones() -> None:
    """Counted in before anything joins the queue: a submission under the lock, or a retry."""
    retried = make_task(retries=1, retry=NO_BACKOFF)
    s = engine(1)
    s.submit(retried, 0)
    [slot] = s.wakeups
    assert s.take(slot, 0) is retried
    offered = [make_task(), make_task()]
    for task in offered:
        assert s.offer(task, 1) is Offer.QUEUED
    assert s.complete(slot, retried, ValueError("again"), 2) is Outcome.RETRY
    later = make_task(priority=-1)
    s.submit(later, 3)
    assert [s.take(slot, 4) for _ in range(3)] == [*offered, retried]
    assert s.take(slot, 5) is later
    assert accounted(s)


def test_offered_tasks_count_as_queued_until_the_pool_closes() -> None:
    """Readers count the inbox in without touching it; after a close, what is left in it is
    its submitters' to take back, and counts nowhere."""
    s, _, _ = all_busy()
    offered = make_task()
    assert s.offer(offered, 1) is Offer.QUEUED
    stats = s.stats()
    assert (stats.queued, stats.submitted, s.unfinished) == (1, 2, 2)
    assert s.waiting_tasks() == [offered] and s.contended()
    assert list(s.inbox) == [offered]  # still there: reading counted nothing in
    s.close()  # counts it in, before closing
    assert not s.inbox and s.queued == 1 and accounted(s)
    late = make_task()
    s.inbox.append(late)  # an offer that went in as the pool closed
    stats = s.stats()
    assert (stats.queued, stats.submitted, s.unfinished) == (1, 2, 2)
    assert s.waiting_tasks() == [offered]
    assert s.settle(late) is False and not s.inbox


def test_cancelling_an_offered_task_counts_it_in_first() -> None:
    """Counted in before it is cancelled: the counts never go below zero on the way (the
    refill after the cancel would mend them, but only after)."""
    s, [slot], [running] = all_busy()
    offered = make_task()
    s.offer(offered, 1)
    queued_as_it_ends: list[int] = []

    class Watched(Scheduler):
        __slots__ = ()

        def _finish(self, task: Task[Any], outcome: Outcome) -> Outcome:
            queued_as_it_ends.append(self.queued)
            return super()._finish(task, outcome)

    s.__class__ = Watched
    assert s.cancel(offered) is True and offered.state is TaskState.CANCELLED
    assert queued_as_it_ends == [0]
    assert s.queued == 0 and s.cancelled == 1 and accounted(s)
    s.complete(slot, running, None, 2)
    assert s.take(slot, 2) is None  # skipped in the queue


def test_an_offer_that_raced_a_worker_turning_idle_is_settled_under_the_lock() -> None:
    """The worker finished and parked between the offer's look and its append: the offer looks
    again, and settling it wakes the idle worker for it."""
    s, [slot], [running] = all_busy()

    def worker_turns_idle() -> None:
        s.complete(slot, running, None, 1)
        assert s.take(slot, 1) is None and slot.state is SlotState.IDLE

    s.inbox = InterleavedDeque(worker_turns_idle)
    offered = make_task()
    assert s.offer(offered, 1) is Offer.UNSETTLED
    assert s.settle(offered) is True
    assert s.wakeups == [slot] and slot.state is SlotState.WOKEN
    assert s.take(slot, 2) is offered and accounted(s)


def test_a_worker_turning_idle_looks_at_the_inbox_after_it_says_so() -> None:
    """The offer went in after the worker found the queue empty, before it was listed idle: the
    offer saw no idle worker, so the worker must see the offer, and take it."""
    s, [slot], [running] = all_busy()
    offered = make_task()
    s._idle = Interleaved(lambda: s.offer(offered, 1))
    s.complete(slot, running, None, 1)
    assert s.take(slot, 1) is offered  # instead of parking
    assert not s.inbox and not s._idle and not s.wakeups
    assert slot.state is SlotState.BUSY and accounted(s)


def test_an_offer_that_raced_a_close_is_taken_back() -> None:
    """In after the close counted the inbox in: settling takes it out, for the caller to
    reject; nothing counted it."""
    s, _, _ = all_busy()
    s.inbox = InterleavedDeque(s.close)
    late = make_task()
    assert s.offer(late, 1) is Offer.UNSETTLED
    assert s.settle(late) is False
    assert not s.inbox and s.submitted == 1 and accounted(s)


def test_an_offer_counted_in_by_the_close_stays_in() -> None:
    """In before the close: the close counts it in, and the closing pool drains it."""
    s, [slot], [running] = all_busy()
    s.inbox = InterleavedDeque(s.close, after=True)
    offered = make_task()
    assert s.offer(offered, 1) is Offer.UNSETTLED
    assert s.settle(offered) is True
    s.complete(slot, running, None, 2)
    assert s.take(slot, 2) is offered
    s.complete(slot, offered, None, 3)
    assert s.take(slot, 3) is RETIRE and accounted(s)


def test_an_offer_that_raced_a_worker_leaving_starts_a_replacement() -> None:
    s, [gone, _], _ = all_busy(2, min_workers=0)
    s.inbox = InterleavedDeque(lambda: s.lose(gone, WorkerCrashed("t"), 1))
    offered = make_task()
    assert s.offer(offered, 1) is Offer.UNSETTLED
    assert s.settle(offered) is True
    [replacement] = s.wakeups
    assert replacement.state is SlotState.STARTING
    assert s.take(replacement, 2) is offered


def test_a_close_closes_before_it_counts_the_inbox_in() -> None:
    """An offer made as the close looks at the inbox (after it saw it empty) must see the pool
    closed; were it still open, the offer would go in uncounted and stay there."""
    s, _, _ = all_busy()
    offered = make_task()
    offers: list[Offer] = []

    class OfferAsItIsLookedAt(collections.deque[Any]):
        def __len__(self) -> int:
            n = super().__len__()
            if not offers:
                offers.append(s.offer(offered, 1))
            return n

        def __bool__(self) -> bool:  # 3.10's deque answers truth without __len__
            return bool(self.__len__())

    s.inbox = OfferAsItIsLookedAt()
    s.close()
    assert offers == [Offer.DECLINED] and not s.inbox


def test_stats_count_the_inbox_once_though_offers_come_in_meanwhile() -> None:
    """Offers take no lock, so one may come in while ``stats`` reads: its snapshot still adds
    up (every submitted task in exactly one place)."""
    s, _, _ = all_busy()

    class OfferAsItIsRead(collections.deque[Any]):
        def __len__(self) -> int:
            n = super().__len__()
            super().append(make_task())  # what another submitter offered meanwhile
            return n

    s.inbox = OfferAsItIsRead()
    stats = s.stats()
    assert stats.submitted == stats.queued + stats.busy
