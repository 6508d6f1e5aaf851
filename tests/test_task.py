"""Task as a concurrent.futures.Future: the lazy Condition must never lose a waiter."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import threading

import pytest
from helpers import wait_until

import workpool
from workpool import TaskOptions
from workpool._task import Task


def make_task() -> Task[int]:
    return Task(int, (), {}, TaskOptions())


def test_result_waits_for_a_result_set_later() -> None:
    """result() before resolution waits on a Condition built on demand."""
    task = make_task()

    def resolve_once_waited_on() -> None:
        wait_until(lambda: task._cond is not None)  # result() has built the Condition
        task.set_result(5)

    resolver = threading.Thread(target=resolve_once_waited_on)
    resolver.start()
    assert task.result(timeout=10) == 5
    resolver.join()


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
