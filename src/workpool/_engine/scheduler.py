"""The scheduler: every decision a pool makes, and none of its I/O.

It owns the ready queue, the retry timers, the deadlines, the worker slots and the counters.
It starts no thread, touches no process and awaits nothing: the pool calls it under one lock with
an event ("this task was submitted", "this worker wants work", "this attempt ended", "time is
now T") and the current time, and carries out what it decides after releasing the lock. Workers
to start or wake collect in ``wakeups``; everything else comes back as a return value. Because
time only comes in as an argument, tests drive it with a manual clock and no threads.

One call needs no lock: ``offer``, with which a submitter queues a task that needs no decision
(every worker is busy) into ``inbox``, for the next holder of the lock to count in.

The words it speaks (slots, outcomes, directives) are in ``vocabulary.py``.
"""

from __future__ import annotations

import heapq
import random
from collections import deque
from collections.abc import Callable
from concurrent.futures import CancelledError
from itertools import repeat, starmap
from typing import Any, Literal

from .._errors import PoolClosed, TaskTimeout, WorkerCrashed
from .._stats import PoolStats
from .._task import Task, TaskState
from .queue import ReadyQueue
from .rate import RateLimit
from .vocabulary import RETIRE, Directive, Next, Offer, Outcome, SlotState, WorkerSlot

_QUEUED, _RUNNING, _DONE_OK = TaskState.QUEUED, TaskState.RUNNING, TaskState.SUCCEEDED

RESERVE_BELOW = 0.05
"""Seconds: a worker whose last task ran shorter may be handed its next ones ahead of time."""

AHEAD_MAX = 8
"""The most tasks a worker may hold ahead of time (those of a few microseconds)."""

AHEAD_SECONDS = 0.002
"""About how much work a worker holds ahead of time: ``AHEAD_MAX`` tasks if they are that
short together, fewer (down to one) if they are longer."""

CLOCK_SLACK = 0.05
"""Seconds: a task that raises TaskTimeout this close to its deadline timed out. A task sent
ahead to a worker process starts there, and its deadline runs, a moment before the pool counts
it started."""


_SUCCEEDED, _FAILED, _CANCELLED = Outcome.SUCCEEDED, Outcome.FAILED, Outcome.CANCELLED
_RETRY = Outcome.RETRY
_STARTING, _IDLE, _WOKEN = SlotState.STARTING, SlotState.IDLE, SlotState.WOKEN
_BUSY = SlotState.BUSY
_OFFER_QUEUED, _DECLINED, _UNSETTLED = Offer.QUEUED, Offer.DECLINED, Offer.UNSETTLED


class Scheduler:
    """Queue, retries, deadlines, scaling and counters for one pool. The caller holds a lock,
    for every call but ``offer``."""

    # Slots: past 30 attributes an instance's dict no longer shares its keys with the class's
    # other instances, and every attribute costs more to set and to read (the hot path reads
    # a dozen a task).
    __slots__ = (
        "_deadlines",
        "_delayed",
        "_idle",
        "_next_slot",
        "_offers",
        "_queue",
        "_rate",
        "_rate_due",
        "_rng",
        "_slots",
        "busy",
        "cancelled",
        "closed",
        "crashed",
        "delayed",
        "ended",
        "failed",
        "idle_timeout",
        "inbox",
        "lost_alive",
        "max_tasks_per_worker",
        "max_workers",
        "min_workers",
        "paused",
        "queue_size",
        "queued",
        "reserved",
        "retried",
        "run_max",
        "run_total",
        "started",
        "submitted",
        "succeeded",
        "timed_out",
        "timer_dirty",
        "wait_max",
        "wait_total",
        "wakeups",
        "waking",
    )

    def __init__(
        self,
        *,
        min_workers: int,
        max_workers: int,
        queue_size: int = 0,
        idle_timeout: float | None = None,
        aging: float = 1.0,
        max_tasks_per_worker: int | None = None,
        rate_limit: tuple[int, float] | None = None,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self._queue = ReadyQueue(aging)
        self.inbox: deque[Task[Any]] = deque()
        """Tasks offered without the lock (``offer``), not counted in yet."""
        self._offers = queue_size == 0 and rate_limit is None
        self._rate = None if rate_limit is None else RateLimit(*rate_limit)
        self._rate_due: float | None = None  # when a parked worker may start the next task
        self._delayed: list[tuple[float, int, Task[Any]]] = []
        self._deadlines: list[tuple[float, int, Task[Any], int]] = []
        self._idle: list[WorkerSlot] = []
        self._slots: dict[int, WorkerSlot] = {}
        self._next_slot = 0
        self._rng = rng
        self.queue_size = queue_size
        self.idle_timeout = idle_timeout
        self.max_tasks_per_worker = max_tasks_per_worker
        self.wakeups: list[WorkerSlot] = []
        self.timer_dirty = False
        self.paused = False
        self.closed = False
        self.queued = self.delayed = self.busy = self.waking = self.lost_alive = 0
        self.reserved = 0  # taken out of the queue by reserve(), not started yet
        self.submitted = self.succeeded = self.failed = self.cancelled = self.timed_out = 0
        self.retried = self.crashed = self.started = self.ended = 0
        self.wait_total = self.wait_max = self.run_total = self.run_max = 0.0
        self.min_workers = self.max_workers = 0
        self.set_bounds(min_workers, max_workers)

    # -- configuration ------------------------------------------------------------------------

    def set_bounds(self, min_workers: int, max_workers: int) -> None:
        """Change the worker bounds; extra workers retire as they come for work."""
        if not isinstance(max_workers, int) or max_workers < 1:
            raise ValueError(f"max_workers must be an int >= 1, not {max_workers!r}")
        if not isinstance(min_workers, int) or not 0 <= min_workers <= max_workers:
            raise ValueError(
                f"min_workers must be an int between 0 and max_workers ({max_workers}), "
                f"not {min_workers!r}"
            )
        self.min_workers, self.max_workers = min_workers, max_workers
        excess = len(self._slots) - max_workers
        while excess > 0 and self._idle:  # busy ones retire when they next take
            self._wake(self._idle.pop())
            excess -= 1
        self._refill()

    @property
    def live(self) -> int:
        return len(self._slots)

    @property
    def full(self) -> bool:
        return 0 < self.queue_size <= self.queued + self.reserved

    def contended(self, own_queued: int = 0) -> bool:
        """Whether a worker that holds on to work of its own (a map's lane) should give it back
        now: a task waits for a worker (other than the ``own_queued`` of that work's own), or
        the pool is paused, closing or shrinking."""
        return (
            self.queued + self._offered > own_queued
            or self.paused
            or self.closed
            or len(self._slots) > self.max_workers
        )

    @property
    def unfinished(self) -> int:
        return self.queued + self._offered + self.reserved + self.delayed + self.busy

    @property
    def _offered(self) -> int:
        """Tasks in the inbox, which count as queued while the pool is open. Once it closed,
        those left are their submitters' to take back (``settle``)."""
        return 0 if self.closed else len(self.inbox)

    # -- events from the submitting side ------------------------------------------------------

    def offer(self, task: Task[Any], now: float) -> Offer:
        """Queue ``task`` without the caller's lock, if that needs no decision.

        It needs none while every worker the pool may have is running or about to take work
        (nobody to wake or start), with no bound on the queue, no rate limit and priority 0.
        The task then joins ``inbox``: the next holder of the lock who looks at the queue
        counts it in behind the tasks before it (``submit``, ``take``, ``cancel``,
        ``_enqueue``, ``_refill``, ``close``), and readers count it as queued. A worker that
        turns idle or leaves, a raised ``max_workers`` or a close, while the task goes in, could
        miss it, so the offer looks again after: ``UNSETTLED`` if one happened. (A worker
        turning idle looks at the inbox after it says so: one of the two sees the other.)

        ``now`` is stamped before the task goes in: tasks offered at the same moment by several
        threads may go in a few microseconds out of their stamps' order.
        """
        if (
            self._idle
            or self.closed
            or len(self._slots) < self.max_workers
            or not self._offers
            or task.options.priority
        ):
            return _DECLINED
        task._enqueued_at = now
        self.inbox.append(task)
        if self._idle or self.closed or len(self._slots) < self.max_workers:
            return _UNSETTLED
        return _OFFER_QUEUED

    def settle(self, task: Task[Any]) -> bool:
        """Under the lock, after an ``UNSETTLED`` offer: count the inbox in and wake or start
        the workers it needs (True). In a closed pool, take ``task`` back out of the inbox
        (False: the caller rejects it), unless ``close`` counted it in before it closed."""
        if not self.closed:
            self._refill()
            return True
        return not self.withdraw(task)

    def withdraw(self, task: Task[Any]) -> bool:
        """Take an offered ``task`` back out of the inbox, if nobody counted it in yet."""
        inbox = self.inbox
        if task in inbox:
            inbox.remove(task)
            return True
        return False

    def submit(self, task: Task[Any], now: float) -> None:
        """Queue a new task. The caller checks ``full`` first if it wants backpressure."""
        if self.closed:
            raise PoolClosed()
        if self.inbox:
            self._absorb()  # offered before it: ahead of it
        self.submitted += 1
        if self._rate is not None:
            self._rate.refresh(now)
        # _enqueue(), inline, and ReadyQueue.push for priority 0: this is every task's path
        task._enqueued_at = now
        if task.options.priority == 0:
            self._queue.fifo.append(task)
        else:
            self._queue.push(task, now)
        self.queued += 1
        if self.queued > self.waking and (self._idle or len(self._slots) < self.max_workers):
            self._refill()  # else every worker is busy: the first one done takes it

    def cancel(self, task: Task[Any]) -> bool | None:
        """True: it was waiting and is now cancelled. None: it runs and was asked to stop.

        False: it had already finished.
        """
        if self.inbox and not self.closed:
            self._absorb()  # it may be there
        state = task._wp_state
        if state is _QUEUED and task.worker is None:
            if any(entry[2] is task for entry in self._delayed):
                self.delayed -= 1  # its heap entry is skipped when it comes due
            else:
                self.queued -= 1
            self._finish(task, Outcome.CANCELLED)
            self._refill()  # a closing pool's idle workers may have waited for it
            return True
        if state is _RUNNING or state is _QUEUED:  # running, or reserved: its worker has it
            task._cancel_requested = True
            return None
        return False

    def cancel_waiting(self, outcome: Outcome = Outcome.CANCELLED) -> list[Task[Any]]:
        """End every task that is not running yet as ``outcome``, and return them."""
        tasks = self._queue.drain() + [e[2] for e in self._delayed if e[2]._wp_state is _QUEUED]
        self._delayed.clear()
        self.queued = self.delayed = 0
        for task in tasks:
            self._finish(task, outcome)
        return tasks

    def pause(self) -> None:
        self.paused = True

    def resume(self) -> None:
        self.paused = False
        self._refill()

    def close(self) -> None:
        """Accept nothing more; idle workers are woken to drain the queue or retire."""
        if not self.closed:
            self.closed = True  # first: an offer that sees it open went in before the count
            if self.inbox:
                self._absorb()
        self.paused = False
        self._wake_idle()
        self._refill()

    # -- events from workers ------------------------------------------------------------------

    def take(self, slot: WorkerSlot, now: float) -> Next:
        """The next task for ``slot``; None: park it as idle; RETIRE: it must exit."""
        state = slot.state
        if state is _STARTING or state is _WOKEN:
            self.waking -= 1
        ahead = slot.ahead
        if ahead:  # its worker has it already: it starts whatever else holds
            task = ahead.popleft()
            self.reserved -= 1
        else:
            limit = self.max_tasks_per_worker
            if (
                len(self._slots) > self.max_workers
                or (limit and slot.tasks_done >= limit)
                or slot.recycle
            ):
                return self._retire(slot)
            if self.inbox and not self.closed:
                self._absorb()
            ready = not self.paused and (self._rate is None or self._may_start(now))
            popped = None
            if ready:
                # ReadyQueue.pop, inline while only priority-0 tasks wait: every task's path
                fifo = self._queue.fifo
                if fifo and not self._queue.heap and fifo[0]._wp_state is _QUEUED:
                    popped = fifo.popleft()
                else:
                    popped = self._queue.pop()
            if popped is None:
                if ready and self.closed and not self.delayed:
                    return self._retire(slot)
                slot.state = _IDLE
                self._idle.append(slot)
                if self.inbox and not self.closed:
                    # Offered by a submitter who saw no idle worker, since this one looked. Now
                    # that it is listed idle, it looks again: one of the two sees the other.
                    self._idle.remove(slot)
                    return self.take(slot, now)
                return None
            task = popped
            self.queued -= 1
        # Start it (here, not in a method of its own: this is every task's path).
        self.busy += 1
        self.started += 1
        slot.state = _BUSY
        slot.task = task
        task.worker = slot
        task._wp_state = _RUNNING
        task.attempts += 1
        if task._expired:
            task._expired = False
        task._started_at = now
        waited = now - task._enqueued_at
        self.wait_total += waited
        if waited > self.wait_max:
            self.wait_max = waited
        timeout = task.options.timeout
        if timeout is not None:
            self._set_deadline(task, now + timeout)
        return task

    def idle_expired(self, slot: WorkerSlot) -> Directive | None:
        """A parked worker waited ``idle_timeout`` for work: RETIRE it, or None to park again.

        Returns ``WOKEN`` when a wake-up is already on its way to it.
        """
        if slot.state is not SlotState.IDLE:
            return Directive.WOKEN
        if len(self._slots) > self.min_workers:
            self._idle.remove(slot)
            return self._retire(slot)
        return None

    def park_timeout(self) -> float | None:
        """How long an idle worker waits before asking ``idle_expired`` (None: forever)."""
        if self.min_workers == self.max_workers or self.idle_timeout is None:
            return None
        return self.idle_timeout

    def reserve(self, slot: WorkerSlot) -> list[Task[Any]]:
        """Hand busy ``slot`` its next tasks ahead of time, so that its worker never waits for
        one between two short tasks (a worker process has them sent while it runs the current).

        Only a worker whose last task was short gets any: up to ``AHEAD_MAX`` for tasks of a few
        microseconds, fewer as they run longer (about ``AHEAD_SECONDS`` of work), one from a
        millisecond or so, and a map's batch only alone. It is topped up in bursts, once half
        of what it holds has started, and only with tasks that no idle or woken worker is
        coming for. They stay QUEUED until ``take`` starts them, in order; until then
        ``unreserve`` can put them back (for a cancel, a pause, or an idle worker that would
        take them). Returns those added.
        """
        limit = self.max_tasks_per_worker
        last_run = slot.last_run
        if (
            slot.state is not _BUSY
            or last_run >= RESERVE_BELOW
            or self.queued <= self.waking
            or self.paused
            or self._rate is not None
            or slot.recycle
            or len(self._slots) > self.max_workers
        ):
            return []
        ahead = slot.ahead
        if last_run * AHEAD_MAX <= AHEAD_SECONDS:
            depth = AHEAD_MAX
        else:
            depth = max(1, int(AHEAD_SECONDS / last_run))
        held = len(ahead)
        if held > depth // 2:
            return []
        room = min(depth - held, self.queued - self.waking)
        if limit:
            room = min(room, limit - slot.tasks_done - 1 - held)
        tasks: list[Task[Any]] = []
        pop = self._queue.pop
        while room > 0:
            task = pop()
            if task is None:
                break
            if task._batch and (held or tasks):
                # A map's batch runs long by design: one ahead keeps its worker busy, and
                # more would take them from the other workers.
                self._queue.push_back([task])
                break
            task.worker = slot
            tasks.append(task)
            room -= 1
            if task._batch:
                break  # nor anything behind it
        if tasks:
            self.queued -= len(tasks)
            self.reserved += len(tasks)
            ahead.extend(tasks)
        return tasks

    def unreserve(
        self, slot: WorkerSlot, task: Task[Any] | None = None, *, wake: bool = False
    ) -> list[Task[Any]]:
        """Put ``task``, reserved for ``slot``, and every task reserved after it (by default
        all of them) back in the queue, in their places; return them.

        ``wake``: find them workers now (else the caller's worker takes them).
        """
        ahead = slot.ahead
        start = 0 if task is None else ahead.index(task)
        back = [ahead.pop() for _ in range(len(ahead) - start)]
        back.reverse()
        for each in back:
            each.worker = None
        self._queue.push_back(back)
        self.reserved -= len(back)
        self.queued += len(back)
        if wake:
            self._refill()
        return back

    def drop_reserved(self, slot: WorkerSlot, error: BaseException, now: float) -> Outcome:
        """``slot``'s first reserved task may have started on a worker now gone, so it cannot
        be put back unstarted: count it as an attempt that ended with ``error`` (a retry, or
        final)."""
        task = slot.ahead.popleft()
        task.worker = None
        self.reserved -= 1
        self.started += 1
        self.ended += 1
        task.attempts += 1
        return self._fail_attempt(task, error, Outcome.FAILED, now)

    def reservations(self) -> list[WorkerSlot]:
        """The slots holding reserved tasks."""
        return [slot for slot in self._slots.values() if slot.ahead]

    def complete(
        self, slot: WorkerSlot, task: Task[Any], error: BaseException | None, now: float
    ) -> Outcome:
        """The attempt of ``task`` on ``slot`` ended with ``error`` (None: success)."""
        if task.worker is not slot or task._wp_state is not _RUNNING:
            if slot.state is SlotState.LOST:
                self.lost_alive -= 1
                slot.state = SlotState.RETIRED
            return Outcome.STALE
        # _end_attempt(), inline: this is every task's path
        self.busy -= 1
        self.ended += 1
        slot.task = None
        task.worker = None
        ran = slot.last_run = now - task._started_at
        self.run_total += ran
        if ran > self.run_max:
            self.run_max = ran
        slot.tasks_done += 1
        if error is None:  # the common case, spared a call to _finish
            self.succeeded += 1
            task._wp_state = _DONE_OK
            if task._deadline is not None:
                task._deadline = None
            return _SUCCEEDED
        if isinstance(error, CancelledError) and task._cancel_requested:
            return self._finish(task, Outcome.CANCELLED)
        timed_out = isinstance(error, TaskTimeout) and (
            task._expired or (task._deadline is not None and now >= task._deadline - CLOCK_SLACK)
        )
        return self._fail_attempt(
            task, error, Outcome.TIMED_OUT if timed_out else Outcome.FAILED, now
        )

    def lose(
        self, slot: WorkerSlot, error: BaseException | None, now: float, *, gone: bool = True
    ) -> tuple[Task[Any] | None, Outcome | None]:
        """The worker of ``slot`` died or was stopped; its task, if any, ends with ``error``.

        ``gone``: the worker is already dead; otherwise it counts in ``lost_alive`` until
        ``complete`` (a thread) or ``exited`` (a process) says it is gone. Tasks reserved for
        it stay reserved: the caller takes them back from the backend (``unreserve``), or
        counts them lost with the worker (``drop_reserved``).
        """
        if slot.state is SlotState.LOST or slot.state is SlotState.RETIRED:
            self.exited(slot)  # already given up on (a timeout, a cancel): nothing more to end
            return None, None
        task = slot.task  # tasks reserved for it stay in slot.ahead: see unreserve
        was_idle = slot.state is SlotState.IDLE
        self._detach(slot, gone=gone)
        if was_idle:
            self._idle.remove(slot)
        outcome = None
        if task is not None:
            self._end_attempt(slot, task, now)
            if isinstance(error, CancelledError):
                outcome = self._finish(task, Outcome.CANCELLED)
            else:
                kind = Outcome.TIMED_OUT if isinstance(error, TaskTimeout) else Outcome.FAILED
                outcome = self._fail_attempt(task, error or WorkerCrashed(task.id), kind, now)
        if len(self._slots) < self.min_workers:
            self.wakeups.append(self.new_slot())  # a replacement keeps capacity whole
        self._refill()
        return task, outcome

    def start_failed(self, slot: WorkerSlot) -> None:
        """The backend could not start ``slot``'s worker: forget the slot, start none now.

        The queued tasks wait for a worker that frees up, or for the next event to try again.
        """
        if self._slots.get(slot.id) is slot:
            self._detach(slot, gone=True)

    def exited(self, slot: WorkerSlot) -> None:
        """A lost worker is finally gone."""
        if slot.state is SlotState.LOST:
            self.lost_alive -= 1
            slot.state = SlotState.RETIRED

    def new_slot(self) -> WorkerSlot:
        """A slot for a worker that the caller starts now (used to pre-start workers)."""
        slot = WorkerSlot(self._next_slot)
        self._next_slot += 1
        self._slots[slot.id] = slot
        self.waking += 1
        return slot

    # -- time ---------------------------------------------------------------------------------

    def next_wakeup(self) -> float | None:
        """When ``poll`` next has something to do, or None."""
        self.timer_dirty = False
        times = [self._deadlines[0][0]] if self._deadlines else []
        if self._delayed:
            times.append(self._delayed[0][0])
        if self._rate_due is not None:
            times.append(self._rate_due)
        return min(times) if times else None

    def poll(self, now: float) -> list[tuple[Task[Any], WorkerSlot, Outcome]]:
        """Queue the retries that are due; end the attempts past their deadline.

        Returns ``(task, slot, outcome)`` for each attempt that timed out: its slot is LOST
        and the caller must stop (process) or abandon (thread) that worker.
        """
        rate = self._rate
        if rate is not None and self._rate_due is not None and now >= self._rate_due:
            rate.refresh(now)
            if rate.available() >= 1:
                self._rate_due = None
                self._refill()
            else:  # the token is claimed, or rounding left it a hair short
                self._rate_due = rate.next_token_at(self.waking + 1)
        delayed = self._delayed
        while delayed and delayed[0][0] <= now:
            task = heapq.heappop(delayed)[2]
            if task._wp_state is _QUEUED:  # not cancelled while it waited
                self.delayed -= 1
                self._enqueue(task, now)
        expired = []
        deadlines = self._deadlines
        while deadlines and deadlines[0][0] <= now:
            _, _, task, attempt = heapq.heappop(deadlines)
            if task._wp_state is _RUNNING and task.attempts == attempt and task.worker:
                slot = task.worker
                task._expired = True
                _, outcome = self.lose(
                    slot, TaskTimeout(task.id, task.options.timeout), now, gone=False
                )
                assert outcome is not None
                expired.append((task, slot, outcome))
        return expired

    # -- snapshot -----------------------------------------------------------------------------

    def stats(self) -> PoolStats:
        offered = self._offered  # once: offers come in without the lock
        return PoolStats._of(
            {
                "workers": len(self._slots),
                "idle": len(self._idle),
                "busy": self.busy,
                "queued": self.queued + offered + self.reserved,
                "delayed": self.delayed,
                "submitted": self.submitted + offered,
                "succeeded": self.succeeded,
                "failed": self.failed,
                "cancelled": self.cancelled,
                "timed_out": self.timed_out,
                "retried": self.retried,
                "crashed": self.crashed,
                "abandoned": self.lost_alive,
                "paused": self.paused,
                "closed": self.closed,
                "min_workers": self.min_workers,
                "max_workers": self.max_workers,
                "queue_wait_total": self.wait_total,
                "queue_wait_max": self.wait_max,
                "run_time_total": self.run_total,
                "run_time_max": self.run_max,
                "started": self.started,
                "ended": self.ended,
            }
        )

    def running_tasks(self) -> list[Task[Any]]:
        return [slot.task for slot in self._slots.values() if slot.task is not None]

    def waiting_tasks(self) -> list[Task[Any]]:
        delayed = [e[2] for e in self._delayed if e[2]._wp_state is _QUEUED]
        reserved = [task for slot in self._slots.values() for task in slot.ahead]
        offered = () if self.closed else tuple(self.inbox)
        return [*reserved, *self._queue, *offered, *delayed]

    # -- internals ----------------------------------------------------------------------------

    def _enqueue(self, task: Task[Any], now: float) -> None:
        if self.inbox and not self.closed:
            self._absorb()  # offered before it: ahead of it
        task._enqueued_at = now
        self._queue.push(task, now)
        self.queued += 1
        if self.queued > self.waking and (self._idle or len(self._slots) < self.max_workers):
            self._refill()  # else every worker is busy: the first one done takes it

    def _refill(self) -> None:
        """Wake idle workers, then start new ones, until every ready task has one coming; and
        once a closed pool has nothing left to run, wake every idle worker to retire (some may
        have parked while a retry was due, or while the pool was paused)."""
        if self.inbox and not self.closed:
            self._absorb()
        if self.paused:
            return
        if self.closed and not self.queued and not self.delayed:
            self._wake_idle()
            return
        rate = self._rate
        while self.queued > self.waking:
            if rate is not None and rate.available() <= self.waking:
                self._rate_wait(rate)  # the timer wakes a worker when the next token is due
                return
            if self._idle:
                self._wake(self._idle.pop())
            elif len(self._slots) < self.max_workers:
                self.wakeups.append(self.new_slot())
            else:
                return

    def _may_start(self, now: float) -> bool:
        """Whether the rate limit lets a task start now; if not, schedule the next try."""
        rate = self._rate
        if rate is None or not self.queued:
            return True
        rate.refresh(now)
        if rate.available() >= 1:
            rate.spend()
            return True
        self._rate_wait(rate)
        return False

    def _rate_wait(self, rate: RateLimit) -> None:
        """Have the timer come back when a token is free for one more worker than is woken."""
        due = rate.next_token_at(self.waking + 1)
        if self._rate_due is None or due < self._rate_due:
            self._rate_due = due
            self.timer_dirty = True

    def _absorb(self) -> None:
        """Count in the tasks offered without the lock, behind those queued before them."""
        inbox = self.inbox
        n = len(inbox)
        # One call moves exactly those n from the front (submitters append at the back, and
        # only a holder of the lock takes out): neither a thread switch nor a Ctrl-C can come
        # between a task leaving the inbox and joining the queue. (Between the move and the
        # counts, a Ctrl-C can, as between any two steps of the scheduler's.)
        self._queue.fifo.extend(starmap(inbox.popleft, repeat((), n)))
        self.submitted += n
        self.queued += n

    def _wake_idle(self) -> None:
        """Wake every idle worker (a closed pool's: to drain the queue, or retire)."""
        while self._idle:
            self._wake(self._idle.pop())

    def _wake(self, slot: WorkerSlot) -> None:
        slot.state = _WOKEN
        self.waking += 1
        self.wakeups.append(slot)

    def _set_deadline(self, task: Task[Any], deadline: float) -> None:
        task._deadline = deadline
        deadlines = self._deadlines
        if len(deadlines) > 64 and len(deadlines) > 4 * self.busy:
            deadlines = self._drop_stale_deadlines()
        if not deadlines or deadline < deadlines[0][0]:
            self.timer_dirty = True
        heapq.heappush(deadlines, (deadline, task._seq, task, task.attempts))

    def _drop_stale_deadlines(self) -> list[tuple[float, int, Task[Any], int]]:
        """Forget the deadlines of attempts that ended: they would keep finished tasks (and
        their results) alive until the deadline passed."""
        self._deadlines = [
            e for e in self._deadlines if e[2]._wp_state is _RUNNING and e[2].attempts == e[3]
        ]
        heapq.heapify(self._deadlines)
        return self._deadlines

    def _end_attempt(self, slot: WorkerSlot, task: Task[Any], now: float) -> None:
        self.busy -= 1
        self.ended += 1
        slot.task = None
        task.worker = None
        ran = slot.last_run = now - task._started_at
        self.run_total += ran
        if ran > self.run_max:
            self.run_max = ran

    def _fail_attempt(
        self, task: Task[Any], error: BaseException, kind: Outcome, now: float
    ) -> Outcome:
        options = task.options
        if task.attempts > options.retries or not options.retry.should_retry(error):
            if isinstance(error, WorkerCrashed):
                self.crashed += 1
            return self._finish(task, kind)
        self.retried += 1
        task._wp_state = _QUEUED
        delay = options.retry.delay(task.attempts, self._rng)
        if delay <= 0:
            self._enqueue(task, now)
        else:
            self.delayed += 1
            due = now + delay
            if not self._delayed or due < self._delayed[0][0]:
                self.timer_dirty = True
            heapq.heappush(self._delayed, (due, task._seq, task))
        return _RETRY

    def _finish(self, task: Task[Any], outcome: Outcome) -> Outcome:
        if outcome is _SUCCEEDED:
            self.succeeded += 1
            task._wp_state = TaskState.SUCCEEDED
        elif outcome is _FAILED:
            self.failed += 1
            task._wp_state = TaskState.FAILED
        elif outcome is _CANCELLED:
            self.cancelled += 1
            task._wp_state = TaskState.CANCELLED
        else:
            self.timed_out += 1
            task._wp_state = TaskState.TIMED_OUT
        if task._deadline is not None:
            task._deadline = None
        return outcome

    def _retire(self, slot: WorkerSlot) -> Literal[Directive.RETIRE]:
        slot.state = SlotState.RETIRED
        del self._slots[slot.id]
        self._refill()  # a recycled worker (max_tasks_per_worker) leaves a replacement
        return RETIRE

    def _detach(self, slot: WorkerSlot, *, gone: bool) -> None:
        if slot.state is SlotState.STARTING or slot.state is SlotState.WOKEN:
            self.waking -= 1
        del self._slots[slot.id]
        if gone:
            slot.state = SlotState.RETIRED
        else:
            slot.state = SlotState.LOST
            self.lost_alive += 1
