"""The shared behaviour suite: every backend must pass every test here.

Task functions live at module level so that process backends can pickle them. Tests synchronise
with events, barriers and lists from a ``multiprocessing`` manager, which work the same across
threads and processes; nothing sleeps to let things happen.
"""

from __future__ import annotations

import concurrent.futures as cf
import itertools
import threading
from collections.abc import Callable, Iterator
from multiprocessing.managers import SyncManager
from typing import Any
from unittest import mock

import pytest
from helpers import assert_accounted, wait_until

import workpool
from workpool import PoolClosed, QueueFull, RetryPolicy, TaskState, TaskTimeout

MakePool = Callable[..., workpool.Pool]
NO_BACKOFF = RetryPolicy(base_delay=0.0)


def square(x: int) -> int:
    return x * x


def fail(message: str) -> None:
    raise ValueError(message)


def identity(x: Any) -> Any:
    return x


class Gate:
    """A latch tasks wait on, opened by the test (always opened at teardown).

    Made of manager proxies, it pickles, so tasks in worker processes wait on it too.
    """

    def __init__(self, manager: SyncManager) -> None:
        self.opened = manager.Event()
        self.entered = manager.Semaphore(0)

    def wait(self, value: Any = None) -> Any:
        self.entered.release()
        assert self.opened.wait(30), "gate never opened"
        return value

    def await_entries(self, n: int) -> None:
        for _ in range(n):
            assert self.entered.acquire(timeout=10), "tasks never started"

    def open(self) -> None:
        self.opened.set()

    def open_when(self, condition: Callable[[], bool]) -> None:
        """Open from another thread once ``condition`` holds (say, once the pool is closed)."""

        def opener() -> None:
            wait_until(condition)
            self.open()

        threading.Thread(target=opener, daemon=True).start()


@pytest.fixture
def gate(manager: SyncManager) -> Iterator[Gate]:
    g = Gate(manager)
    yield g
    g.open()


@pytest.mark.every_start_method
def test_submit_returns_result(make_pool: MakePool) -> None:
    """A submitted call's return value comes back through its task."""
    pool = make_pool(2)
    task = pool.submit(square, 7)
    assert task.result(timeout=10) == 49
    assert task.state is TaskState.SUCCEEDED and task.attempts == 1 and task.done()


def test_task_is_a_future_with_a_unique_id(make_pool: MakePool) -> None:
    """Tasks are concurrent.futures Futures, each with its own id."""
    pool = make_pool(2)
    tasks = [pool.submit(square, i) for i in range(20)]
    assert all(isinstance(t, cf.Future) for t in tasks)
    assert len({t.id for t in tasks}) == 20
    cf.wait(tasks, timeout=10)


@pytest.mark.every_start_method
def test_exception_is_raised_unchanged_and_worker_survives(make_pool: MakePool) -> None:
    """A task's exception reaches result() as it was, and the worker goes on."""
    pool = make_pool(1)
    bad = pool.submit(fail, "boom")
    with pytest.raises(ValueError, match="boom"):
        bad.result(timeout=10)
    assert bad.state is TaskState.FAILED
    assert pool.submit(square, 3).result(timeout=10) == 9
    stats = pool.stats()
    assert stats.failed == 1 and stats.succeeded == 1 and stats.workers == 1


def test_stats_show_outcome_before_result_returns(make_pool: MakePool) -> None:
    """By the time result() returns, stats() and state already show the outcome."""
    pool = make_pool(2)
    for i in range(50):
        task = pool.submit(square, i)
        task.result(timeout=10)
        stats = pool.stats()
        assert stats.succeeded == i + 1 and task.state is TaskState.SUCCEEDED


@pytest.mark.every_start_method
def test_map_preserves_input_order(make_pool: MakePool) -> None:
    """map yields results in input order."""
    pool = make_pool(3)
    assert list(pool.map(square, range(200))) == [x * x for x in range(200)]


def test_map_takes_several_iterables(make_pool: MakePool) -> None:
    """map zips several iterables, as the builtin does."""
    pool = make_pool(2)
    assert list(pool.map(pow, [2, 3, 4], [3, 2, 1])) == [8, 9, 4]


def test_map_unordered_yields_every_result(make_pool: MakePool) -> None:
    """ordered=False yields each result once, in completion order."""
    pool = make_pool(3)
    assert sorted(pool.map(square, range(100), ordered=False)) == [x * x for x in range(100)]


@pytest.mark.every_start_method
def test_map_unordered_yields_fast_results_before_slow_ones(
    make_pool: MakePool, gate: Gate
) -> None:
    """With ordered=False a blocked first item does not hold back later results."""
    pool = make_pool(2)
    results = pool.map(_slow_first, [(gate, 0), (gate, 1), (gate, 2)], ordered=False)
    assert {next(results), next(results)} == {1, 2}  # item 0 still blocks
    gate.open()
    assert list(results) == [0]


def _slow_first(arg: tuple[Gate, int]) -> int:
    gate, value = arg
    if value == 0:
        gate.wait()
    return value


def test_map_is_lazy_and_bounded(make_pool: MakePool) -> None:
    """map reads its input only as results are taken: never more than the window ahead."""
    pool = make_pool(2)
    read = [0]

    def numbers() -> Iterator[int]:
        for i in itertools.count():
            read[0] += 1
            yield i

    results = pool.map(identity, numbers(), window=8)
    for expected in range(100):
        assert next(results) == expected
        assert read[0] <= expected + 1 + 8
    results.close()  # type: ignore[attr-defined]
    assert pool.wait(10)
    assert pool.stats().submitted <= 109


def test_map_raises_at_the_failing_item_and_cancels_the_rest(make_pool: MakePool) -> None:
    """An error is raised when its result is reached; later items are not all run."""
    pool = make_pool(1)
    results = pool.map(_fail_on_three, range(1000), window=4)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)
    assert pool.wait(timeout=10)
    stats = pool.stats()
    assert stats.succeeded < 20 and stats.failed == 1
    assert_accounted(stats)


def _fail_on_three(x: int) -> int:
    if x == 3:
        raise ValueError("three")
    return x


def test_map_timeout_raises_timeout_error(make_pool: MakePool, gate: Gate) -> None:
    """map(timeout=...) bounds the whole iteration, as Executor.map does."""
    pool = make_pool(1)
    results = pool.map(gate.wait, [1, 2], timeout=0.05)
    with pytest.raises(cf.TimeoutError):
        next(results)
    gate.open()


def test_as_completed_yields_each_task(make_pool: MakePool) -> None:
    """as_completed yields every task once it is done."""
    pool = make_pool(2)
    tasks = [pool.submit(square, i) for i in range(30)]
    done = list(pool.as_completed(tasks, timeout=10))
    assert set(done) == set(tasks) and all(t.done() for t in done)


def test_wait_blocks_until_everything_finished(make_pool: MakePool, gate: Gate) -> None:
    """wait() is the wait group: it returns once all submitted tasks are done."""
    pool = make_pool(2)
    tasks = [pool.submit(gate.wait, i) for i in range(5)]
    gate.await_entries(2)
    assert pool.wait(timeout=0.01) is False
    gate.open()
    assert pool.wait(timeout=10) is True
    assert all(t.done() for t in tasks)


def test_try_submit_raises_queue_full(make_pool: MakePool, gate: Gate) -> None:
    """With the queue at queue_size, try_submit raises QueueFull at once."""
    pool = make_pool(1, queue_size=2)
    pool.submit(gate.wait)
    gate.await_entries(1)
    pool.submit(square, 1)
    pool.submit(square, 2)
    with pytest.raises(QueueFull) as info:
        pool.try_submit(square, 3)
    assert info.value.queue_size == 2
    assert pool.stats().queued == 2


def test_submit_waits_for_room_then_proceeds(make_pool: MakePool, gate: Gate) -> None:
    """submit blocks while the queue is full and continues when a place frees."""
    pool = make_pool(1, queue_size=1)
    pool.submit(gate.wait)
    gate.await_entries(1)
    pool.submit(square, 1)
    submitted = threading.Event()

    def producer() -> None:
        pool.submit(square, 2)
        submitted.set()

    thread = threading.Thread(target=producer)
    thread.start()
    assert not submitted.wait(0.05)  # still blocked: the queue is full
    gate.open()
    assert submitted.wait(10)
    thread.join()
    assert pool.wait(10)
    assert pool.stats().succeeded == 3


def test_submit_timeout_raises_queue_full(make_pool: MakePool, gate: Gate) -> None:
    """options(submit_timeout=...) bounds the wait for room."""
    pool = make_pool(1, queue_size=1)
    pool.submit(gate.wait)
    gate.await_entries(1)
    pool.submit(square, 1)
    with pytest.raises(QueueFull):
        pool.options(submit_timeout=0.02).submit(square, 2)


def test_submit_after_shutdown_raises_pool_closed(make_pool: MakePool) -> None:
    """A shut-down pool refuses work with PoolClosed, a RuntimeError."""
    pool = make_pool(1)
    pool.shutdown()
    with pytest.raises(PoolClosed):
        pool.submit(square, 1)
    with pytest.raises(RuntimeError):
        pool.try_submit(square, 1)


def test_blocked_submitter_gets_pool_closed_on_shutdown(make_pool: MakePool, gate: Gate) -> None:
    """A submitter waiting for room learns of the shutdown instead of waiting forever."""
    pool = make_pool(1, queue_size=1)
    pool.submit(gate.wait)
    gate.await_entries(1)
    pool.submit(square, 1)
    errors: list[BaseException] = []

    def producer() -> None:
        try:
            pool.submit(square, 2)
        except BaseException as exc:
            errors.append(exc)

    thread = threading.Thread(target=producer)
    thread.start()
    wait_until(lambda: pool._core._space_waiters == 1)
    pool.shutdown(wait=False, cancel_futures=True)
    thread.join(10)
    assert len(errors) == 1 and isinstance(errors[0], PoolClosed)


@pytest.mark.every_start_method
def test_priority_orders_queued_work(make_pool: MakePool, manager: SyncManager) -> None:
    """Queued tasks start highest priority first, FIFO among equals."""
    pool = make_pool(1, priority_aging=0)
    pool.pause()
    order = manager.list()
    for value, priority in [(1, 0), (2, 5), (3, 0), (4, 9), (5, 5)]:
        pool.options(priority=priority).submit(order.append, value)
    pool.resume()
    assert pool.wait(10)
    assert list(order) == [4, 2, 5, 1, 3]


def test_tasks_submitted_while_every_worker_is_busy_count_and_run_in_order(
    make_pool: MakePool, gate: Gate, manager: SyncManager
) -> None:
    """With no worker free, a task goes in without the pool's lock; it counts as queued at
    once, and runs in submission order. A prioritised task submitted after them (under the
    lock) still runs first."""
    pool = make_pool(1, priority_aging=0)
    running = pool.submit(gate.wait)
    gate.await_entries(1)
    order = manager.list()
    tasks = [pool.submit(order.append, i) for i in range(20)]
    stats = pool.stats()
    assert (stats.queued, stats.submitted, stats.busy) == (20, 21, 1)
    assert pool.stats().queued == 20  # reading counts nothing twice
    first = pool.options(priority=1).submit(order.append, "first")
    gate.open()
    assert pool.wait(10) and running.result() is None
    assert list(order) == ["first", *range(20)]
    assert all(t.done() for t in tasks) and pool.stats().succeeded == 22 and first.done()
    assert_accounted(pool.stats())


@pytest.mark.parametrize("cancel_futures", [False, True])
def test_no_task_is_lost_when_submitters_race_a_shutdown(
    make_pool: MakePool, cancel_futures: bool
) -> None:
    """Submitters that keep going while the pool shuts down each get a task that ends (run,
    or cancelled by the shutdown) or PoolClosed, never a task left waiting forever."""
    pool = make_pool(2)
    start = threading.Barrier(4, timeout=10)
    accepted: list[list[workpool.Task[Any]]] = [[], [], []]
    stopped_by: list[BaseException] = []

    def submitter(mine: list[workpool.Task[Any]]) -> None:
        start.wait()
        try:
            for i in itertools.count():
                mine.append(pool.submit(square, i))
        except BaseException as error:
            stopped_by.append(error)

    threads = [threading.Thread(target=submitter, args=(mine,)) for mine in accepted]
    for thread in threads:
        thread.start()
    start.wait()
    wait_until(lambda: pool.stats().submitted >= 300)
    report = pool.shutdown(wait=True, cancel_futures=cancel_futures)
    for thread in threads:
        thread.join(10)
    assert [type(error) for error in stopped_by] == [PoolClosed] * 3
    tasks = [task for mine in accepted for task in mine]
    assert report.completed and all(task.done() for task in tasks)
    if not cancel_futures:
        assert all(task.result() == square(i) for mine in accepted for i, task in enumerate(mine))
    stats = pool.stats()
    assert stats.submitted == len(tasks) and stats.queued == 0
    assert_accounted(stats)


def test_rate_limit_bounds_task_starts(make_pool: MakePool) -> None:
    """rate_limit=(n, s) starts at most a burst of n, then n per s seconds."""
    pool = make_pool(4, rate_limit=(5, 0.1))
    results = list(pool.map(square, range(15), chunksize=1))  # one task per item
    assert results == [x * x for x in range(15)]
    stats = pool.stats()
    # 15 starts at 50 per second after a burst of 5 need at least 0.2 s of waiting in all.
    assert stats.queue_wait_max >= 0.15


def test_pause_starts_nothing_until_resume(make_pool: MakePool) -> None:
    """While paused no task starts; resume lets them run."""
    pool = make_pool(2)
    pool.pause()
    tasks = [pool.submit(square, i) for i in range(5)]
    assert pool.wait(timeout=0.05) is False
    assert pool.stats().queued == 5 and pool.stats().paused
    pool.resume()
    assert [t.result(timeout=10) for t in tasks] == [0, 1, 4, 9, 16]


@pytest.mark.every_start_method
def test_cancel_queued_task(make_pool: MakePool, gate: Gate) -> None:
    """A queued task cancels at once and never runs."""
    pool = make_pool(1)
    pool.submit(gate.wait)
    gate.await_entries(1)
    queued = pool.submit(square, 5)
    assert queued.cancel() is True
    assert queued.cancelled() and queued.state is TaskState.CANCELLED
    with pytest.raises(cf.CancelledError):
        queued.result()
    gate.open()
    assert pool.wait(10)
    stats = pool.stats()
    assert stats.cancelled == 1 and stats.succeeded == 1
    assert_accounted(stats)


def test_cancelled_task_wakes_wait_and_as_completed(make_pool: MakePool, gate: Gate) -> None:
    """concurrent.futures.wait sees a cancellation at once, not when a worker reaches it."""
    pool = make_pool(1)
    pool.submit(gate.wait)
    gate.await_entries(1)
    queued = pool.submit(square, 5)

    def cancel_once_waited_on() -> None:
        wait_until(lambda: bool(queued._waiters))  # cf.wait has installed its waiter
        queued.cancel()

    canceller = threading.Thread(target=cancel_once_waited_on)
    canceller.start()
    done, _ = cf.wait([queued], timeout=10)  # no worker is free: only the cancel can end it
    canceller.join()
    assert queued in done


def test_cancel_finished_task_returns_false(make_pool: MakePool) -> None:
    """A finished task cannot be cancelled."""
    pool = make_pool(1)
    task = pool.submit(square, 2)
    task.result(timeout=10)
    assert task.cancel() is False and task.state is TaskState.SUCCEEDED


@pytest.mark.every_start_method
def test_retries_until_success(make_pool: MakePool, manager: SyncManager) -> None:
    """A failing task is retried up to `retries` times; attempts and stats say so."""
    pool = make_pool(2)
    counter = _Counter(manager)
    task = pool.options(retries=4, retry=NO_BACKOFF).submit(counter.fail_until, 3)
    assert task.result(timeout=10) == 3
    assert task.attempts == 3
    stats = pool.stats()
    assert stats.retried == 2 and stats.succeeded == 1 and stats.failed == 0


def test_retries_exhausted_raise_last_error(make_pool: MakePool, manager: SyncManager) -> None:
    """After the last retry the task fails with the last attempt's error."""
    pool = make_pool(1)
    counter = _Counter(manager)
    task = pool.options(retries=2, retry=NO_BACKOFF).submit(counter.fail_until, 10)
    with pytest.raises(ValueError, match="attempt 3"):
        task.result(timeout=10)
    assert task.attempts == 3 and pool.stats().retried == 2


def test_retry_with_backoff_runs_later(make_pool: MakePool, manager: SyncManager) -> None:
    """A retry waits its backoff on the pool's timer, then runs."""
    pool = make_pool(1)
    counter = _Counter(manager)
    policy = RetryPolicy(base_delay=0.01, jitter=0)
    task = pool.options(retries=1, retry=policy).submit(counter.fail_until, 2)
    assert task.result(timeout=10) == 2


def test_cancelling_a_retry_in_its_backoff_lets_a_closing_pool_finish(make_pool: MakePool) -> None:
    """A closing pool keeps its idle workers while a retry waits out its backoff; cancelling
    that retry must let them retire, or shutdown() would wait forever."""
    pool = make_pool(1)
    policy = RetryPolicy(base_delay=60.0, jitter=0)
    task = pool.options(retries=1, retry=policy).submit(fail, "first attempt")
    wait_until(lambda: pool.stats().delayed == 1)
    reports: list[workpool.ShutdownReport] = []
    closer = threading.Thread(target=lambda: reports.append(pool.shutdown(timeout=30)))
    closer.start()
    wait_until(lambda: pool.stats().closed)
    assert task.cancel()
    closer.join(30)
    assert reports and reports[0].completed


def test_a_retry_due_after_shutdown_began_lets_every_worker_retire(
    make_pool: MakePool, manager: SyncManager
) -> None:
    """Idle workers of a closing pool wait while a retry is due; once it has run, the worker
    that ran it retires and so must every other idle one, or shutdown() waits forever."""
    pool = make_pool(2)
    barrier = manager.Barrier(2, timeout=10)
    both = [pool.submit(barrier.wait) for _ in range(2)]  # two workers, now idle
    assert all(t.exception(timeout=10) is None for t in both)
    counter = _Counter(manager)
    policy = RetryPolicy(base_delay=0.2, jitter=0)
    task = pool.options(retries=1, retry=policy).submit(counter.fail_until, 2)
    wait_until(lambda: pool.stats().delayed == 1)
    assert pool.shutdown(timeout=30).completed
    assert task.result(timeout=0) == 2


def test_pause_and_resume_while_a_pool_drains_still_let_it_finish(
    make_pool: MakePool, manager: SyncManager
) -> None:
    """A worker that parks while a closing pool is paused is woken by resume() to retire."""
    pool = make_pool(1)
    gate = manager.Event()
    task = pool.submit(gate.wait, 10)
    wait_until(lambda: pool.stats().busy == 1)  # running: a pause does not hold it back
    reports: list[workpool.ShutdownReport] = []
    closer = threading.Thread(target=lambda: reports.append(pool.shutdown(timeout=30)))
    closer.start()
    wait_until(lambda: pool.stats().closed)
    pool.pause()
    gate.set()
    assert task.result(timeout=10) is True
    wait_until(lambda: pool.stats().idle == 1)  # parked: paused
    pool.resume()
    closer.join(30)
    assert reports and reports[0].completed


class _Counter:
    """Counts calls across processes (the attempts of one task run one after another)."""

    def __init__(self, manager: SyncManager) -> None:
        self.calls = manager.list()

    def fail_until(self, n: int) -> int:
        self.calls.append(1)
        calls = len(self.calls)
        if calls < n:
            raise ValueError(f"attempt {calls}")
        return calls


@pytest.mark.every_start_method
def test_timeout_fails_task_with_task_timeout(make_pool: MakePool, gate: Gate) -> None:
    """A task past its timeout fails with TaskTimeout (a TimeoutError), on time."""
    pool = make_pool(1)
    task = pool.options(timeout=0.05).submit(gate.wait)
    with pytest.raises(TaskTimeout) as info:
        task.result(timeout=10)
    assert isinstance(info.value, TimeoutError) and info.value.task_id == task.id
    assert task.state is TaskState.TIMED_OUT
    stats = pool.stats()
    assert stats.timed_out == 1 and stats.failed == 0
    gate.open()


@pytest.mark.every_start_method
def test_pool_keeps_capacity_after_a_timeout(
    make_pool: MakePool, gate: Gate, manager: SyncManager
) -> None:
    """After a hung task times out, the pool still runs work at full width."""
    pool = make_pool(2)
    hung = pool.options(timeout=0.05).submit(gate.wait)
    with pytest.raises(TaskTimeout):
        hung.result(timeout=10)
    barrier = manager.Barrier(2, timeout=10)
    both = [pool.submit(barrier.wait) for _ in range(2)]  # needs two live workers at once
    assert all(t.exception(timeout=10) is None for t in both)
    gate.open()


def test_shutdown_waits_for_running_and_queued(make_pool: MakePool) -> None:
    """shutdown(wait=True) drains the queue before returning."""
    pool = make_pool(2)
    tasks = [pool.submit(square, i) for i in range(50)]
    report = pool.shutdown(wait=True)
    assert report.completed and all(t.done() for t in tasks)
    assert report.running == () and report.queued == () and report.finished == 50


@pytest.mark.every_start_method
def test_shutdown_cancel_futures_cancels_queued(make_pool: MakePool, gate: Gate) -> None:
    """cancel_futures cancels what has not started; the running task finishes."""
    pool = make_pool(1)
    running = pool.submit(gate.wait, "done")
    gate.await_entries(1)
    queued = [pool.submit(square, i) for i in range(5)]
    gate.open_when(lambda: pool.stats().closed)
    report = pool.shutdown(wait=True, cancel_futures=True)
    assert set(report.cancelled) == set(queued)
    assert all(t.cancelled() for t in queued) and running.result() == "done"
    assert_accounted(report.stats)


@pytest.mark.every_start_method
def test_shutdown_timeout_returns_while_tasks_hang(make_pool: MakePool, gate: Gate) -> None:
    """shutdown(timeout=...) returns on time and reports what still runs and waits."""
    pool = make_pool(1)
    running = pool.submit(gate.wait)
    gate.await_entries(1)
    queued = pool.submit(square, 3)
    report = pool.shutdown(wait=True, timeout=0.05)
    assert not report.completed
    assert report.running == (running,) and report.queued == (queued,)
    gate.open()
    assert queued.result(timeout=10) == 9  # left queued: it still runs
    pool.shutdown()


def test_shutdown_twice_is_harmless(make_pool: MakePool) -> None:
    """A second shutdown returns a report too."""
    pool = make_pool(1)
    pool.submit(square, 2)
    assert pool.shutdown().completed
    assert pool.shutdown().completed


@pytest.mark.every_start_method
def test_with_block_drains_on_exit(backend_kwargs: dict[str, Any]) -> None:
    """Leaving a with block waits for every task."""
    with workpool.Pool(2, **backend_kwargs) as pool:
        tasks = [pool.submit(square, i) for i in range(20)]
    assert all(t.done() for t in tasks) and pool.stats().closed
    assert pool.stats().workers == 0


def test_with_block_calls_a_subclass_shutdown() -> None:
    """A with block ends in a subclass's own shutdown(wait=True), as an Executor's does."""
    calls: list[bool] = []

    class Tracked(workpool.Pool):
        def shutdown(self, wait: bool = True, **kwargs: Any) -> workpool.ShutdownReport:
            calls.append(wait)
            return super().shutdown(wait, **kwargs)

    with Tracked(1) as pool:
        task = pool.submit(square, 3)
    assert calls == [True] and task.result() == 9 and pool.stats().workers == 0


def test_with_block_calls_a_patched_shutdown() -> None:
    """A shutdown patched on the class or on the pool is what a with block calls."""
    original = workpool.Pool.shutdown
    patched = mock.patch.object(workpool.Pool, "shutdown", autospec=True, side_effect=original)
    with patched as on, workpool.Pool(1) as pool:
        pool.submit(square, 2)
    assert on.call_count == 1 and pool.stats().closed
    pool = workpool.Pool(1)
    with mock.patch.object(pool, "shutdown", wraps=pool.shutdown) as it, pool:
        pool.submit(square, 2)
    assert it.call_count == 1 and pool.stats().closed


@pytest.mark.every_start_method
def test_exception_in_with_block_cancels_waiting_work(
    backend_kwargs: dict[str, Any], gate: Gate
) -> None:
    """An exception in the block cancels queued tasks and does not hang on them."""
    with pytest.raises(KeyError), workpool.Pool(1, **backend_kwargs) as pool:
        running = pool.submit(gate.wait)
        gate.await_entries(1)
        queued = [pool.submit(square, i) for i in range(10)]
        gate.open_when(lambda: pool.stats().closed)
        raise KeyError("boom")
    assert all(t.cancelled() for t in queued) and running.done()


def test_stats_account_for_every_task(make_pool: MakePool) -> None:
    """Counters add up: each submitted task is counted in exactly one outcome."""
    pool = make_pool(3)
    for i in range(60):
        if i % 3 == 0:
            pool.submit(fail, "x")
        else:
            pool.submit(square, i)
    assert pool.wait(10)
    stats = pool.stats()
    assert stats.submitted == 60 and stats.succeeded == 40 and stats.failed == 20
    assert stats.finished == 60 and stats.unfinished == 0
    assert_accounted(stats)


@pytest.mark.every_start_method
def test_resize_changes_worker_count(make_pool: MakePool, manager: SyncManager) -> None:
    """resize(n) grows to n workers when work waits, and shrinks back."""
    pool = make_pool(1)
    pool.resize(3)
    barrier = manager.Barrier(3, timeout=10)
    tasks = [pool.submit(barrier.wait) for _ in range(3)]  # needs three workers at once
    assert all(t.exception(timeout=10) is None for t in tasks)
    assert pool.stats().max_workers == 3
    pool.resize(1)
    wait_until(lambda: pool.stats().workers == 1)


@pytest.mark.every_start_method
def test_autoscale_grows_with_work_and_retires_idle(
    make_pool: MakePool, manager: SyncManager
) -> None:
    """Between min and max, workers start while work waits and retire when idle."""
    pool = make_pool(min_workers=1, max_workers=4, idle_timeout=0.05)
    barrier = manager.Barrier(4, timeout=10)
    tasks = [pool.submit(barrier.wait) for _ in range(4)]  # only completes with 4 workers
    assert all(t.exception(timeout=10) is None for t in tasks)  # so 4 ran at once
    # (Not stats().workers == 4 here: idle for 50 ms, as a busy machine may keep this thread,
    # the extra workers have already retired.)
    wait_until(lambda: pool.stats().workers == 1)


@pytest.mark.every_start_method
def test_initializer_runs_once_per_worker(make_pool: MakePool, manager: SyncManager) -> None:
    """initializer(*initargs) runs in each worker before its first task."""
    seen = manager.list()
    pool = make_pool(2, initializer=seen.append, initargs=("ready",))
    barrier = manager.Barrier(2, timeout=10)
    tasks = [pool.submit(barrier.wait) for _ in range(2)]
    assert all(t.exception(timeout=10) is None for t in tasks)
    assert list(seen) == ["ready", "ready"]


@pytest.mark.every_start_method
def test_failing_initializer_breaks_the_pool(make_pool: MakePool) -> None:
    """A raising initializer fails queued tasks with BrokenPool, as the stdlib does."""
    pool = make_pool(1, initializer=fail, initargs=("no init",))
    task = pool.submit(square, 2)
    with pytest.raises(workpool.BrokenPool) as info:
        task.result(timeout=10)
    assert isinstance(info.value, cf.BrokenExecutor)
    assert isinstance(info.value.__cause__, ValueError)
    with pytest.raises(workpool.BrokenPool):
        pool.submit(square, 3)


@pytest.mark.every_start_method
def test_max_tasks_per_worker_recycles_workers(make_pool: MakePool) -> None:
    """Workers are replaced after max_tasks_per_worker tasks; all work still completes."""
    pool = make_pool(1, max_tasks_per_worker=3)
    assert list(pool.map(square, range(10))) == [x * x for x in range(10)]
    assert pool.stats().workers <= 1


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"workers": 0}, ValueError),
        ({"workers": "4"}, ValueError),
        ({"workers": 2, "max_workers": 4}, TypeError),
        ({"min_workers": 5, "max_workers": 2}, ValueError),
        ({"queue_size": -1}, ValueError),
        ({"idle_timeout": 0}, ValueError),
        ({"max_tasks_per_worker": 0}, ValueError),
        ({"initializer": 3}, TypeError),
        ({"backend": "nope"}, ValueError),
    ],
)
def test_bad_pool_arguments_are_rejected(kwargs: dict[str, Any], error: type[Exception]) -> None:
    """Bad constructor arguments raise at once with a clear error."""
    with pytest.raises(error):
        workpool.Pool(**kwargs)


@pytest.mark.parametrize(
    "options",
    [{"timeout": 0}, {"timeout": -1}, {"retries": -1}, {"priority": 1.5}],
)
def test_bad_task_options_are_rejected(make_pool: MakePool, options: dict[str, Any]) -> None:
    """Bad per-task options raise before anything is queued."""
    pool = make_pool(1)
    with pytest.raises((ValueError, TypeError)):
        pool.options(**options)
    assert pool.stats().submitted == 0


def test_repr_shows_backend_and_counts(make_pool: MakePool, backend_kwargs: dict[str, Any]) -> None:
    """repr names the backend and the live counts."""
    pool = make_pool(2)
    assert repr(pool).startswith(f"<Pool {backend_kwargs['backend']} workers=")
    assert "queued=0" in repr(pool)


def test_map_batches_small_items_into_few_tasks(make_pool: MakePool) -> None:
    """A map over many trivial items runs them in far fewer tasks, results unchanged."""
    pool = make_pool(2)
    assert list(pool.map(square, range(20_000))) == [x * x for x in range(20_000)]
    assert pool.stats().submitted < 2_000


def test_map_batch_error_is_raised_at_its_item_and_counted(make_pool: MakePool) -> None:
    """An item failing inside a batch is raised at its place; its batch counts as failed."""
    pool = make_pool(1)
    results = pool.map(_fail_on_three, range(10), chunksize=5)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)
    assert pool.wait(10)
    assert pool.stats().failed == 1


@pytest.mark.parametrize("options", [{"timeout": 30.0}, {"retries": 1}])
def test_map_with_per_task_options_runs_one_task_per_item(
    make_pool: MakePool, options: dict[str, Any]
) -> None:
    """A per-task timeout or retries keeps one task per item, so each item has its own."""
    pool = make_pool(2)
    assert list(pool.options(**options).map(square, range(50))) == [x * x for x in range(50)]
    assert pool.stats().submitted == 50


def test_leaving_a_batched_map_early_cancels_without_failures(make_pool: MakePool) -> None:
    """Closing a batched map ends its batches cancelled or done, never failed."""
    pool = make_pool(1)
    results = pool.map(square, range(100_000))
    assert next(results) == 0
    results.close()  # type: ignore[attr-defined]
    assert pool.wait(30)
    assert pool.stats().failed == 0
