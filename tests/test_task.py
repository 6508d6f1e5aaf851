"""Task as a concurrent.futures.Future: the lazy Condition must never lose a waiter."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading
from collections.abc import Callable
from typing import Any

import pytest
from helpers import wait_until

import workpool
from workpool import TaskOptions
from workpool._task import Task


def make_task() -> Task[int]:
    return Task(int, (), {}, TaskOptions())


def in_thread(fn: Callable[[], Any]) -> tuple[threading.Thread, list[Any]]:
    """Run ``fn`` in a started thread; the list gets what it returned, or raised."""
    outcome: list[Any] = []

    def run() -> None:
        try:
            outcome.append(fn())
        except BaseException as error:
            outcome.append(error)

    thread = threading.Thread(target=run)
    thread.start()
    return thread, outcome


def test_result_waits_for_a_result_set_later() -> None:
    """The one thread waiting in result() sleeps on a lock of its own, no Condition built, and
    wakes with the result."""
    task = make_task()
    waiter, outcome = in_thread(lambda: task.result(timeout=10))
    wait_until(lambda: task._sleeper is not None)  # result() sleeps
    task.set_result(5)
    waiter.join()
    assert outcome == [5]
    assert task._cond is None and task._sleeper is None


@pytest.mark.parametrize("resolve", ["result", "exception", "cancel"])
def test_a_sleeping_waiter_wakes_at_every_kind_of_resolution(resolve: str) -> None:
    """The waiter sleeping in result() wakes to the value, the error or the cancellation."""
    task = make_task()
    waiter, outcome = in_thread(lambda: task.result(timeout=10))
    wait_until(lambda: task._sleeper is not None)
    error = KeyError("k")
    if resolve == "result":
        task.set_result(5)
    elif resolve == "exception":
        task.set_exception(error)
    else:
        assert task.cancel()
    waiter.join()
    if resolve == "cancel":
        assert len(outcome) == 1 and isinstance(outcome[0], cf.CancelledError)
    else:
        assert outcome == [{"result": 5, "exception": error}[resolve]]


def test_a_second_waiter_shares_a_condition_and_both_wake() -> None:
    """A second thread waiting for the same task builds the Condition; resolution wakes both,
    and a done-callback added meanwhile runs."""
    task = make_task()
    first, first_outcome = in_thread(lambda: task.result(timeout=10))
    wait_until(lambda: task._sleeper is not None)
    second, second_outcome = in_thread(lambda: task.result(timeout=10))
    wait_until(lambda: task._cond is not None)
    called: list[int] = []
    task.add_done_callback(lambda t: called.append(t.result()))
    task.set_result(7)
    first.join()
    second.join()
    assert first_outcome == second_outcome == called == [7]


def test_a_sleeping_waiter_wakes_before_the_done_callbacks_run() -> None:
    """As with a stdlib Future, the thread waiting in result() is woken before the callbacks
    run: a callback may wait for that thread, or raise (a Ctrl-C) and never return."""
    task = make_task()
    waiter, outcome = in_thread(lambda: task.result(timeout=10))
    wait_until(lambda: task._sleeper is not None)
    seen: list[bool] = []

    def waits_for_the_waiter(_: Task[int]) -> None:
        waiter.join(timeout=10)
        seen.append(not waiter.is_alive())
        raise KeyboardInterrupt

    task.add_done_callback(waits_for_the_waiter)
    with pytest.raises(KeyboardInterrupt):
        task.set_result(5)
    waiter.join()
    assert seen == [True] and outcome == [5]


def test_a_waiter_that_timed_out_can_wait_again() -> None:
    """result(timeout) that runs out raises TimeoutError; waiting again still gets the result
    (on a Condition, as the first sleeper's lock is still out), and the stale lock is let go."""
    task = make_task()
    with pytest.raises(cf.TimeoutError):
        task.result(timeout=0.01)
    with pytest.raises(cf.TimeoutError):
        task.result(timeout=0)
    waiter, outcome = in_thread(lambda: task.result(timeout=10))
    wait_until(lambda: task._cond is not None)
    task.set_result(3)
    waiter.join()
    assert outcome == [3] and task._sleeper is None


def test_a_waiter_wakes_when_the_pool_cancels_its_queued_task() -> None:
    """A task waited for in result() while queued, then cancelled, wakes its waiter with
    CancelledError."""
    release = threading.Event()
    with workpool.Pool(1) as pool:
        blocker = pool.submit(release.wait, 10)
        queued = pool.submit(abs, -1)
        waiter, outcome = in_thread(lambda: queued.result(timeout=10))
        wait_until(lambda: queued._sleeper is not None)
        assert queued.cancel()
        waiter.join()
        release.set()
        assert blocker.result(timeout=10) is True
    assert len(outcome) == 1 and isinstance(outcome[0], cf.CancelledError)


def test_one_task_at_a_time_never_loses_a_wake_up(make_pool: Callable[..., workpool.Pool]) -> None:
    """Each result() races its task's resolution (before, during or after it starts to sleep):
    none is missed, on every backend."""
    pool = make_pool(workers=2)
    for i in range(500):
        assert pool.submit(abs, -i).result(timeout=10) == i


def test_a_task_on_the_common_path_keeps_its_fields_in_slots() -> None:
    """Future has no slots, so every field a task's way writes outside Task's slots builds an
    instance dict (1 us a task on Python 3.13): none does, waited for or not, with a timeout
    or without."""
    with workpool.Pool(workers=1) as pool:
        unwatched = pool.submit(abs, -1)
        deadlined = pool.options(timeout=60).submit(abs, -3)
        pool.wait()
        release = threading.Event()
        blocker = pool.submit(release.wait, 10)
        waited = pool.submit(abs, -2)
        waiter, outcome = in_thread(lambda: waited.result(timeout=10))
        wait_until(lambda: waited._sleeper is not None)  # sleeps on a lock of its own
        release.set()
        waiter.join()
    assert outcome == [2] and unwatched.result() == 1 and blocker.result() is True
    assert deadlined.result() == 3
    for task in (unwatched, deadlined, waited, blocker):
        assert vars(task) == {}


def test_resolving_twice_raises_invalid_state() -> None:
    """A task resolves once, with or without a Condition."""
    task = make_task()
    task.set_result(1)
    with pytest.raises(cf.InvalidStateError):
        task.set_result(2)
    watched = make_task()
    watched.add_done_callback(lambda _: None)  # builds the Condition
    watched.set_exception(ValueError())
    with pytest.raises(cf.InvalidStateError):
        watched.set_result(2)


def test_done_callbacks_run_once_whether_added_before_or_after() -> None:
    """Callbacks added before resolution run at it; those added after run at once."""
    task = make_task()
    calls: list[str] = []
    task.add_done_callback(lambda _: calls.append("before"))
    task.set_result(1)
    task.add_done_callback(lambda _: calls.append("after"))
    assert calls == ["before", "after"]


def test_futures_wait_never_returns_early_while_tasks_resolve() -> None:
    """cf.wait(ALL_COMPLETED) racing with resolutions returns only when all are done."""
    with workpool.Pool(2) as pool:
        for _ in range(200):
            tasks = [pool.submit(abs, -i) for i in range(8)]
            done, not_done = cf.wait(tasks, timeout=10)
            assert not not_done and all(t.done() for t in done)


def test_as_completed_sees_every_task_of_a_racing_batch() -> None:
    """as_completed yields each task exactly once even as they resolve during setup."""
    with workpool.Pool(2) as pool:
        for _ in range(100):
            tasks = [pool.submit(abs, -i) for i in range(8)]
            assert sorted(t.result() for t in cf.as_completed(tasks, timeout=10)) == list(range(8))


def test_callbacks_added_while_the_pool_resolves_run_exactly_once() -> None:
    """A callback added from another thread as its task resolves runs once, never zero times."""
    calls: list[int] = []
    with workpool.Pool(2) as pool:
        tasks = [pool.submit(abs, -i) for i in range(3000)]
        adder = threading.Thread(
            target=lambda: [t.add_done_callback(lambda t: calls.append(t.result())) for t in tasks]
        )
        adder.start()
        adder.join()
    assert sorted(calls) == list(range(3000))


def test_asyncio_awaits_a_task() -> None:
    """asyncio.wrap_future turns a Task into an awaitable, as for any Future."""

    async def main(pool: workpool.Pool) -> int:
        return await asyncio.wrap_future(pool.submit(sum, [1, 2, 3]))

    with workpool.Pool(1) as pool:
        assert asyncio.run(main(pool)) == 6


def test_exception_is_returned_by_exception() -> None:
    """exception() returns the error of a failed task without raising."""
    task = make_task()
    error = KeyError("k")
    task.set_exception(error)
    assert task.exception(timeout=0) is error
    with pytest.raises(KeyError):
        task.result()
