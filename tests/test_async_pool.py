"""AsyncPool: bounded concurrency for coroutines on the scheduler, driven from the event loop.

Each test runs its coroutine on a fresh loop through the ``run`` fixture, which fails a test that
leaves an asyncio task pending. Tests synchronise with ``asyncio.Event``; ``settle()`` lets every
ready callback run (a few loop turns, no time passes), never a sleep to let things happen.
"""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import contextlib
import gc
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any, TypeVar

import pytest
from helpers import assert_accounted

import workpool
from workpool import AsyncPool, PoolClosed, QueueFull, RetryPolicy, TaskState, TaskTimeout

T = TypeVar("T")
Run = Callable[[Awaitable[T]], T]
NO_BACKOFF = RetryPolicy(base_delay=0.0)


@pytest.fixture
def run() -> Iterator[Run[Any]]:
    """Run a coroutine on a new loop; fail the test if it leaves an asyncio task pending."""
    leftovers: list[asyncio.Task[Any]] = []

    def run_(coro: Awaitable[T]) -> T:
        async def main() -> T:
            try:
                return await coro
            finally:
                await settle()
                me = asyncio.current_task()
                leftovers.extend(t for t in asyncio.all_tasks() if t is not me)

        return asyncio.run(main())

    yield run_
    assert not leftovers, f"asyncio tasks left pending: {leftovers}"


async def settle(turns: int = 5) -> None:
    """Let every ready callback and woken task run; no time passes."""
    for _ in range(turns):
        await asyncio.sleep(0)


async def until(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    """Poll a condition no event signals (a worker retiring on its own timer)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.005)


async def double(x: int) -> int:
    await asyncio.sleep(0)
    return 2 * x


class Gate:
    """Coroutines wait on it; the test sees how many entered and opens it."""

    def __init__(self) -> None:
        self.opened = asyncio.Event()
        self.inside = 0
        self.most = 0
        self.entered = asyncio.Event()

    async def wait(self, value: Any = None) -> Any:
        self.inside += 1
        self.most = max(self.most, self.inside)
        self.entered.set()
        try:
            await self.opened.wait()
        finally:
            self.inside -= 1
        return value

    async def await_inside(self, n: int) -> None:
        while self.inside < n:
            self.entered.clear()
            await asyncio.wait_for(self.entered.wait(), 10)


# -- submitting and results -------------------------------------------------------------------


def test_submit_returns_awaitable_task(run: Run[None]) -> None:
    """A submitted coroutine's value comes back by awaiting its task, a workpool Task."""

    async def main() -> None:
        async with AsyncPool(workers=2) as pool:
            task = await pool.submit(double, 21)
            assert await task == 42
            assert isinstance(task, workpool.Task) and isinstance(task, cf.Future)
            assert task.state is TaskState.SUCCEEDED and task.attempts == 1
            assert task.id.startswith("t") and task.result() == 42
            assert pool.stats().succeeded == 1

    run(main())


def test_workers_bound_concurrency(run: Run[None]) -> None:
    """No more than ``workers`` coroutines run at once; the rest wait in the queue."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(workers=3) as pool:
            tasks = [await pool.submit(gate.wait, i) for i in range(10)]
            await gate.await_inside(3)
            await settle()
            stats = pool.stats()
            assert (stats.busy, stats.queued, gate.inside) == (3, 7, 3)
            gate.opened.set()
            assert [await t for t in tasks] == list(range(10))
            assert gate.most == 3

    run(main())


def test_task_error_is_raised_unchanged(run: Run[None]) -> None:
    """A coroutine's exception is raised by awaiting its task, and it counts as failed."""

    async def boom() -> None:
        raise KeyError("no")

    async def main() -> None:
        async with AsyncPool(2) as pool:
            task = await pool.submit(boom)
            with pytest.raises(KeyError):
                await task
            assert task.state is TaskState.FAILED and pool.stats().failed == 1

    run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup and TaskGroup are 3.11+")
def test_exception_group_inside_task(run: Run[None]) -> None:
    """A TaskGroup failing inside a task fails the task with its ExceptionGroup unchanged."""

    async def fail(message: str) -> None:
        raise ValueError(message)

    async def grouped() -> None:
        async with asyncio.TaskGroup() as group:  # type: ignore[attr-defined]  # 3.11+
            group.create_task(fail("a"))
            group.create_task(fail("b"))

    async def main() -> None:
        async with AsyncPool(2) as pool:
            task = await pool.submit(grouped)
            with pytest.raises(ExceptionGroup) as caught:  # noqa: F821  # builtin on 3.11+
                await task
            assert sorted(str(e) for e in caught.value.exceptions) == ["a", "b"]
            assert task.state is TaskState.FAILED

    run(main())


def test_sync_function_fails_with_clear_error(run: Run[None]) -> None:
    """A plain function (not a coroutine function) fails its task with a TypeError saying so."""

    async def main() -> None:
        async with AsyncPool(1) as pool:
            task = await pool.submit(len, "abc")  # type: ignore[arg-type]
            with pytest.raises(TypeError, match="not an awaitable"):
                await task

    run(main())


def test_bad_arguments_raise_clear_errors(run: Run[None]) -> None:
    """Bad sizes, rate limits and callables are rejected at once with a clear message."""
    with pytest.raises(ValueError, match="workers"):
        AsyncPool(workers=0)
    with pytest.raises(ValueError, match="queue_size"):
        AsyncPool(2, queue_size=-1)
    with pytest.raises(ValueError, match="rate limit"):
        AsyncPool(2, rate_limit=(0, 1.0))
    with pytest.raises(TypeError, match="not both"):
        AsyncPool(2, max_workers=3)
    with pytest.raises(ValueError, match="timeout"):
        AsyncPool(2).options(timeout=-1)

    async def main() -> None:
        async with AsyncPool(1) as pool:
            with pytest.raises(TypeError, match="callable"):
                await pool.submit(42)  # type: ignore[arg-type]

    run(main())


def test_plain_methods_outside_a_loop_raise() -> None:
    """try_submit outside a running event loop raises RuntimeError, as asyncio does."""
    with pytest.raises(RuntimeError):
        AsyncPool(1).try_submit(double, 1)


def test_pool_belongs_to_one_loop(run: Run[None]) -> None:
    """Using a pool from a second event loop raises RuntimeError."""
    pool = AsyncPool(1)

    async def use() -> int:
        return await (await pool.submit(double, 1))

    async def use_and_close() -> int:
        value = await use()
        await pool.shutdown()
        return value

    assert run(use_and_close()) == 2
    with pytest.raises(RuntimeError, match="another event loop"):
        run(use())


# -- the queue --------------------------------------------------------------------------------


def test_full_queue_try_submit_raises_and_submit_waits(run: Run[None]) -> None:
    """With the queue full, try_submit raises QueueFull and submit waits for room."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1, queue_size=1) as pool:
            await pool.submit(gate.wait)
            await gate.await_inside(1)
            await pool.submit(double, 1)  # fills the queue
            with pytest.raises(QueueFull):
                pool.try_submit(double, 2)
            waiting = asyncio.create_task(pool.submit(double, 3))
            await settle()
            assert not waiting.done()
            gate.opened.set()
            assert await (await waiting) == 6

    run(main())


def test_submit_timeout_raises_queue_full(run: Run[None]) -> None:
    """submit_timeout bounds the wait for room, then QueueFull is raised."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1, queue_size=1) as pool:
            await pool.submit(gate.wait)
            await pool.submit(double, 1)
            with pytest.raises(QueueFull):
                await pool.options(submit_timeout=0.05).submit(double, 2)
            gate.opened.set()

    run(main())


def test_cancelled_waiting_submitter_passes_room_on(run: Run[None]) -> None:
    """A submitter cancelled while waiting for room does not strand the next one."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1, queue_size=1) as pool:
            await pool.submit(gate.wait)
            await gate.await_inside(1)
            await pool.submit(double, 1)
            first = asyncio.create_task(pool.submit(double, 2))
            second = asyncio.create_task(pool.submit(double, 3))
            await settle()
            first.cancel()
            gate.opened.set()
            assert await (await second) == 6
            with pytest.raises(asyncio.CancelledError):
                await first

    run(main())


def test_submit_after_shutdown_raises_pool_closed(run: Run[None]) -> None:
    """Submitting to a shut-down pool raises PoolClosed; so does a submitter waiting for room."""

    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(1, queue_size=1)
        await pool.submit(gate.wait)
        await pool.submit(double, 1)
        waiting = asyncio.create_task(pool.submit(double, 2))
        await settle()
        stopping = asyncio.create_task(pool.shutdown())
        with pytest.raises(PoolClosed):
            await waiting
        with pytest.raises(PoolClosed):
            pool.try_submit(double, 3)
        gate.opened.set()
        assert (await stopping).completed

    run(main())


def test_task_submitting_to_its_full_pool_raises(run: Run[None]) -> None:
    """A task that waits for room in its own full pool gets QueueFull instead of a deadlock."""

    async def main() -> None:
        gate, full = Gate(), asyncio.Event()
        async with AsyncPool(1, queue_size=1) as pool:

            async def nested() -> None:
                await full.wait()
                await pool.submit(double, 1)

            task = await pool.submit(nested)
            await settle()
            await pool.submit(gate.wait)
            full.set()
            with pytest.raises(QueueFull, match="deadlock"):
                await task
            gate.opened.set()

    run(main())


# -- priorities, retries, timeouts, cancellation ------------------------------------------------


def test_higher_priority_runs_first(run: Run[None]) -> None:
    """Waiting tasks start by priority, and in submission order among equals."""

    async def main() -> None:
        gate, order = Gate(), []

        async def note(name: str) -> None:
            order.append(name)

        async with AsyncPool(1) as pool:
            await pool.submit(gate.wait)
            await gate.await_inside(1)
            for name, priority in [("low", 0), ("high", 5), ("low2", 0), ("top", 9)]:
                await pool.options(priority=priority).submit(note, name)
            gate.opened.set()
        assert order == ["top", "high", "low", "low2"]

    run(main())


def test_retries_until_success(run: Run[None]) -> None:
    """A failing coroutine is run again, after its backoff, up to ``retries`` more times."""

    async def main() -> None:
        calls = []

        async def flaky() -> str:
            calls.append(workpool.current_task().attempt)
            if len(calls) < 3:
                raise OSError("try again")
            return "ok"

        async with AsyncPool(2) as pool:
            policy = RetryPolicy(base_delay=0.01, jitter=0.0)
            task = await pool.options(retries=2, retry=policy).submit(flaky)
            assert await task == "ok"
            assert calls == [1, 2, 3] and task.attempts == 3
            assert pool.stats().retried == 2

    run(main())


def test_timeout_cancels_the_coroutine(run: Run[None]) -> None:
    """Past its timeout a coroutine is cancelled for real and the task fails with TaskTimeout."""

    async def main() -> None:
        cancelled = asyncio.Event()

        async def hang() -> None:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                cancelled.set()
                raise

        async with AsyncPool(1) as pool:
            task = await pool.options(timeout=0.05).submit(hang)
            with pytest.raises(TaskTimeout):
                await task
            await asyncio.wait_for(cancelled.wait(), 10)
            assert task.state is TaskState.TIMED_OUT
            assert await (await pool.submit(double, 4)) == 8
            await settle()
            stats = pool.stats()
            assert stats.timed_out == 1 and stats.abandoned == 0
            assert_accounted(stats)

    run(main())


def test_timeout_retried_then_succeeds(run: Run[None]) -> None:
    """A timed-out attempt is retried like any failure, and the retry can succeed."""

    async def main() -> None:
        async def slow_once() -> str:
            if workpool.current_task().attempt == 1:
                await asyncio.Event().wait()
            return "done"

        async with AsyncPool(1) as pool:
            task = await pool.options(timeout=0.05, retries=1, retry=NO_BACKOFF).submit(slow_once)
            assert await task == "done" and task.attempts == 2

    run(main())


def test_swallowed_cancellation_is_abandoned_not_waited_for(run: Run[None]) -> None:
    """A coroutine that swallows its cancellation fails at its deadline anyway and is abandoned.

    Its worker counts as abandoned, a replacement runs the next task, shutdown does not wait for
    it, and when it finally returns its result is dropped.
    """

    async def main() -> None:
        release, swallowed, ended = asyncio.Event(), asyncio.Event(), asyncio.Event()

        async def stubborn() -> str:
            try:
                await asyncio.Event().wait()
            except asyncio.CancelledError:
                swallowed.set()
            await release.wait()
            ended.set()
            return "too late"

        pool = AsyncPool(1)
        task = await pool.options(timeout=0.05).submit(stubborn)
        with pytest.raises(TaskTimeout):
            await task
        await asyncio.wait_for(swallowed.wait(), 10)
        assert pool.stats().abandoned == 1
        assert await (await pool.submit(double, 5)) == 10  # on the replacement worker
        report = await pool.shutdown(timeout=10)
        assert report.completed and report.stats.abandoned == 1
        release.set()
        await asyncio.wait_for(ended.wait(), 10)
        await settle()
        assert task.state is TaskState.TIMED_OUT and pool.stats().abandoned == 0
        assert_accounted(pool.stats())

    run(main())


def test_cancel_running_task_cancels_coroutine(run: Run[None]) -> None:
    """Cancelling a running task cancels its coroutine; awaiting it raises CancelledError."""

    async def main() -> None:
        gate, saw = Gate(), asyncio.Event()

        async def watched() -> None:
            try:
                await gate.wait()
            except asyncio.CancelledError:
                saw.set()
                raise

        async with AsyncPool(1) as pool:
            task = await pool.submit(watched)
            await gate.await_inside(1)
            assert task.cancel() is False  # asked; it ends cancelled once the coroutine stops
            with pytest.raises(asyncio.CancelledError):
                await task
            assert saw.is_set() and task.state is TaskState.CANCELLED and task.cancelled()
            assert await (await pool.submit(double, 1)) == 2  # the worker goes on
            assert pool.stats().cancelled == 1

    run(main())


def test_worker_fine_after_swallowed_cancel(
    run: Run[None], caplog: pytest.LogCaptureFixture
) -> None:
    """After a task swallows a cancel, its worker tells the next task's own CancelledError apart."""

    async def main() -> None:
        gate = Gate()

        async def ignores_cancel() -> str:
            with contextlib.suppress(asyncio.CancelledError):
                await gate.wait()
            return "ignored"

        async def awaits_cancelled_future() -> None:
            future = asyncio.get_running_loop().create_future()
            future.cancel()
            await future  # a CancelledError of the coroutine's own, not a cancel of it

        async with AsyncPool(1) as pool:
            task = await pool.submit(ignores_cancel)
            await gate.await_inside(1)
            task.cancel()
            assert await task == "ignored" and task.state is TaskState.SUCCEEDED
            own = await pool.submit(awaits_cancelled_future)
            with pytest.raises(asyncio.CancelledError):
                await own
            assert own.state is TaskState.CANCELLED and not pool.stats().closed
        assert "went on after it was cancelled" in caplog.text

    run(main())


@pytest.mark.parametrize("how", ["future", "itself", "itself_then_returns"])
@pytest.mark.parametrize("per_item", [False, True])
@pytest.mark.parametrize("ordered", [True, False])
def test_an_item_cancelled_on_its_own_ends_cancelled_not_the_consumer(
    run: Run[None], ordered: bool, per_item: bool, how: str
) -> None:
    """An item whose coroutine raises CancelledError of its own (a future it awaited was
    cancelled by someone else, or it cancelled its own asyncio task, even returning before it
    received the cancel) ends cancelled, as an asyncio.Task would, and is not retried: the map
    raises concurrent.futures.CancelledError, an Exception, so the consumer is not taken for
    cancelled itself, and the pool goes on."""

    async def main() -> None:
        shared = asyncio.get_running_loop().create_future()
        gate = Gate()

        async def item(x: int) -> int:
            if x == 1:
                await gate.wait()
                if how == "future":
                    await shared  # cancelled by someone else meanwhile
                else:
                    cancel_current_task()
                    if how == "itself":
                        await asyncio.sleep(0)
            return x

        async with AsyncPool(2) as pool:
            results = []
            with pytest.raises(cf.CancelledError):
                maps = pool.options(retries=2) if per_item else pool
                async for value in maps.map(item, range(2), ordered=ordered):
                    results.append(value)
                    if value == 0:
                        await gate.await_inside(1)
                        shared.cancel()
                        gate.opened.set()
            me = asyncio.current_task()
            if sys.version_info >= (3, 11):
                assert me is not None and me.cancelling() == 0  # the consumer was not cancelled
            assert results == [0]
            stats = pool.stats()
            if per_item:
                assert (stats.cancelled, stats.retried, stats.closed) == (1, 0, False)
            else:  # the item's lane fails, as with any error of an item
                assert (stats.failed, stats.cancelled, stats.closed) == (1, 0, False), stats
            assert await (await pool.submit(double, 21)) == 42
            assert_accounted(pool.stats())

    run(main())


def cancel_current_task() -> None:
    """Cancel the asyncio task that runs the caller, as a coroutine may do to itself."""
    me = asyncio.current_task()
    assert me is not None
    me.cancel()


async def cancels_itself(x: int) -> int:
    cancel_current_task()
    await asyncio.sleep(0)
    return x


def test_a_task_that_cancels_itself_ends_cancelled_and_the_pool_goes_on(run: Run[None]) -> None:
    """A coroutine that cancels its own asyncio task ends its task cancelled, as an asyncio.Task
    would; its worker, the other tasks and the pool go on."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(2) as pool:
            other = await pool.submit(gate.wait, "other")
            await gate.await_inside(1)
            task = await pool.submit(cancels_itself, 1)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.state is TaskState.CANCELLED
            stats = pool.stats()
            assert (stats.cancelled, stats.workers, stats.closed) == (1, 2, False)
            assert await (await pool.submit(double, 21)) == 42  # on the same worker
            gate.opened.set()
            assert await other == "other"
            assert_accounted(pool.stats())

    run(main())


def test_a_task_that_cancels_itself_and_returns_at_once_ends_cancelled(run: Run[None]) -> None:
    """A coroutine that cancels its own asyncio task and returns before it receives the cancel
    ends its task cancelled, as an asyncio.Task would; the cancel reaches no other task."""

    async def cancels_and_returns(x: int) -> int:
        cancel_current_task()
        return x

    async def main() -> None:
        with pytest.raises(asyncio.CancelledError):  # what asyncio does
            await asyncio.create_task(cancels_and_returns(1))
        async with AsyncPool(1) as pool:
            task = await pool.submit(cancels_and_returns, 1)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.state is TaskState.CANCELLED
            assert await (await pool.submit(double, 21)) == 42  # on the same worker
            stats = pool.stats()
            assert (stats.cancelled, stats.succeeded, stats.closed) == (1, 1, False)

    run(main())


async def cancels_itself_and_raises_at_once() -> None:
    """Cancels its own asyncio task, then ends with a CancelledError it raised itself, before
    the cancel was delivered: the cancel is still pending when it returns."""
    cancel_current_task()
    raise asyncio.CancelledError


async def cancels_itself_and_awaits_a_cancelled_future() -> None:
    """As above, through a future cancelled already: awaiting it raises without suspending."""
    future = asyncio.get_running_loop().create_future()
    future.cancel()
    cancel_current_task()
    await future


@pytest.mark.parametrize("then", ["at_once", "once_idle"])
@pytest.mark.parametrize(
    "first", [cancels_itself_and_raises_at_once, cancels_itself_and_awaits_a_cancelled_future]
)
def test_a_self_cancel_still_pending_when_its_task_ends_reaches_no_other(
    run: Run[None], first: Callable[[], Awaitable[None]], then: str
) -> None:
    """Regression (review): a coroutine that cancelled itself and ended on a CancelledError of
    its own, the cancel not delivered yet, left it pending: the worker's next task, or its wait
    for work, received it (the pool closed). It ends there, as with an asyncio.Task."""

    async def main() -> None:
        async with AsyncPool(1) as pool:
            task = await pool.submit(first)
            with pytest.raises(asyncio.CancelledError):
                await task
            if then == "once_idle":
                for _ in range(100):  # loop turns, not time: until the worker waits for work
                    if pool.stats().idle == 1:
                        break
                    await asyncio.sleep(0)
                assert pool.stats().idle == 1
            assert await (await pool.submit(double, 21)) == 42
            stats = pool.stats()
            assert (stats.cancelled, stats.succeeded, stats.closed) == (1, 1, False)

    run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="Task.cancelling is 3.11+")
def test_a_map_item_that_caught_its_own_cancel_leaves_none_to_the_next(run: Run[None]) -> None:
    """Regression (review): after a map's item cancelled itself and caught it, the next items
    of its lane ran with that cancel still counted (``cancelling() == 1``), so a TaskGroup or
    ``asyncio.timeout`` in them could take their own errors for a cancel."""

    async def item(x: int) -> int:
        if x == 0:
            with contextlib.suppress(asyncio.CancelledError):
                await cancels_itself(x)
        me = asyncio.current_task()
        assert me is not None
        return me.cancelling()  # type: ignore[attr-defined,no-any-return]  # 3.11+

    async def main() -> None:
        async with AsyncPool(1) as pool:
            # The first counts its own cancel, as an asyncio.Task that caught one does.
            assert [n async for n in pool.map(item, range(5))] == [1, 0, 0, 0, 0]

    run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="3.10 counts no cancels: see docs")
def test_an_outside_cancel_that_comes_with_the_pools_still_stops_the_worker() -> None:
    """Regression (review): a cancel of a running task (the pool cancels its coroutine) and the
    cancel of every task as ``asyncio.run`` ends, landing in the same loop turn, reach the
    worker as one CancelledError; it was taken for the pool's alone, the worker went on, and
    ``asyncio.run`` waited for it forever."""
    finished = threading.Event()

    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(1)
        task = await pool.submit(gate.wait)
        await gate.await_inside(1)
        asyncio.get_running_loop().call_soon(task.cancel)  # as one from another thread lands
        # and main returns: asyncio.run cancels every task left, in the same turn

    def go() -> None:
        asyncio.run(main())
        finished.set()

    runner = threading.Thread(target=go, daemon=True)
    runner.start()
    assert finished.wait(10), "asyncio.run never returned"
    runner.join()


def test_a_task_that_catches_its_own_cancel_succeeds(run: Run[None]) -> None:
    """A coroutine that cancels its own asyncio task, catches the CancelledError and returns
    succeeds; the next task on its worker still has its own CancelledError told apart."""

    async def catches_its_cancel(x: int) -> int:
        try:
            return await cancels_itself(-1)
        except asyncio.CancelledError:
            return x

    async def awaits_cancelled_future() -> None:
        future = asyncio.get_running_loop().create_future()
        future.cancel()
        await future

    async def main() -> None:
        async with AsyncPool(1) as pool:
            task = await pool.submit(catches_its_cancel, 7)
            assert await task == 7 and task.state is TaskState.SUCCEEDED
            own = await pool.submit(awaits_cancelled_future)
            with pytest.raises(asyncio.CancelledError):
                await own
            assert own.state is TaskState.CANCELLED and not pool.stats().closed
            assert await (await pool.submit(double, 21)) == 42
            stats = pool.stats()
            assert (stats.succeeded, stats.cancelled, stats.workers) == (2, 1, 1)

    run(main())


@pytest.mark.parametrize("within", ["timeout", "wait_for"])
def test_a_task_that_cancels_itself_within_a_timeout_ends_cancelled(
    run: Run[None], within: str
) -> None:
    """A coroutine that cancels its own asyncio task inside ``asyncio.timeout`` or
    ``asyncio.wait_for`` ends cancelled, not timed out, and the pool goes on."""
    if within == "timeout" and sys.version_info < (3, 11):
        pytest.skip("asyncio.timeout is 3.11+")

    async def inside() -> int:
        if within == "timeout":
            async with asyncio.timeout(60):  # type: ignore[attr-defined]  # 3.11+
                return await cancels_itself(1)
        return await asyncio.wait_for(cancels_itself(1), 60)

    async def main() -> None:
        async with AsyncPool(1) as pool:
            task = await pool.submit(inside)
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.state is TaskState.CANCELLED and not pool.stats().closed
            assert await (await pool.submit(double, 21)) == 42

    run(main())


@pytest.mark.parametrize("cancelled_itself_first", [False, True])
def test_a_worker_cancelled_from_outside_closes_the_pool(
    run: Run[None], cancelled_itself_first: bool
) -> None:
    """A cancel of a worker's asyncio task from outside (as ``asyncio.run`` sends as it ends) is
    not taken for the coroutine's own, even after the coroutine cancelled itself: its task ends
    cancelled and the pool closes."""

    async def main() -> None:
        gate = Gate()

        async def runs() -> None:
            if cancelled_itself_first:
                with contextlib.suppress(asyncio.CancelledError):
                    await cancels_itself(1)
            await gate.wait()

        async with AsyncPool(1) as pool:
            task = await pool.submit(runs)
            await gate.await_inside(1)
            [worker] = [t for t in asyncio.all_tasks() if t.get_name().startswith("workpool-")]
            worker.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert task.state is TaskState.CANCELLED and pool.stats().closed
            with pytest.raises(PoolClosed):
                await pool.submit(double, 1)

    run(main())


def test_cancel_queued_task(run: Run[None]) -> None:
    """A queued task is cancelled at once and never runs."""

    async def main() -> None:
        gate, ran = Gate(), []

        async def note() -> None:
            ran.append(1)

        async with AsyncPool(1) as pool:
            await pool.submit(gate.wait)
            task = await pool.submit(note)
            assert task.cancel() is True and task.state is TaskState.CANCELLED
            gate.opened.set()
        assert ran == []

    run(main())


def test_cancelling_the_awaiter_cancels_the_task(run: Run[None]) -> None:
    """As with asyncio tasks, cancelling a coroutine awaiting a task cancels the task."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1) as pool:
            task = await pool.submit(gate.wait)
            await gate.await_inside(1)

            async def awaiter() -> Any:
                return await task

            waiting = asyncio.create_task(awaiter())
            await settle()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            await settle()
            assert task.state is TaskState.CANCELLED

    run(main())


def test_cancelled_shielded_awaiter_leaves_task_running(run: Run[None]) -> None:
    """asyncio.shield keeps the task running when the coroutine awaiting it is cancelled."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1) as pool:
            task = await pool.submit(gate.wait, "kept")
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.shield(task), 0.01)
            gate.opened.set()
            assert await task == "kept"

    run(main())


def test_current_task_inside_coroutine(run: Run[None]) -> None:
    """workpool.current_task() describes the running task inside its coroutine."""

    async def introspect() -> tuple[str, int, bool]:
        ctx = workpool.current_task()
        await asyncio.sleep(0)
        ctx.check()
        return ctx.id, ctx.attempt, ctx.deadline is not None

    async def main() -> None:
        async with AsyncPool(2) as pool:
            task = await pool.options(timeout=30).submit(introspect)
            assert await task == (task.id, 1, True)
        with pytest.raises(RuntimeError):
            workpool.current_task()

    run(main())


# -- map, as_completed, wait ------------------------------------------------------------------


def test_map_ordered_over_sync_and_async_inputs(run: Run[None]) -> None:
    """map yields results in input order, over sync and async iterables zipped together."""

    async def numbers(n: int) -> AsyncIterator[int]:
        for i in range(n):
            await asyncio.sleep(0)
            yield i

    async def add(a: int, b: int) -> int:
        await asyncio.sleep(0)
        return a + b

    async def main() -> None:
        async with AsyncPool(4) as pool:
            assert [x async for x in pool.map(double, range(20))] == [2 * i for i in range(20)]
            both = [x async for x in pool.map(add, numbers(10), range(100))]
            assert both == [2 * i for i in range(10)]

    run(main())


def test_map_unordered_yields_in_completion_order(run: Run[None]) -> None:
    """With ordered=False results come as they complete."""

    async def main() -> None:
        first_may_end = asyncio.Event()

        async def item(i: int) -> int:
            if i == 0:
                await first_may_end.wait()
            else:
                first_may_end.set()
            return i

        async with AsyncPool(2) as pool:
            out = [x async for x in pool.map(item, range(2), ordered=False)]
            assert out == [1, 0]

    run(main())


def mapper(pool: AsyncPool, per_item: bool) -> Any:
    """What maps: the pool (its map runs lanes), or a view with a per-task timeout (each item
    a task of its own, as they must be then)."""
    return pool.options(timeout=3600) if per_item else pool


@pytest.mark.parametrize("per_item", [False, True])
def test_map_unordered_yields_every_result_once(run: Run[None], per_item: bool) -> None:
    """An unordered map over more items than its window: each result exactly once, whether
    its item ends at once or after a wait, and the pool accounts for every task (an item's
    own, or a lane's)."""

    async def item(i: int) -> int:
        if i % 3:
            await asyncio.sleep(0)
        return i

    async def main() -> None:
        async with AsyncPool(4) as pool:
            results = mapper(pool, per_item).map(item, range(500), window=7, ordered=False)
            out = [x async for x in results]
            assert sorted(out) == list(range(500))
            await pool.wait()
            stats = pool.stats()
            assert stats.succeeded == stats.submitted
            assert stats.submitted == 500 if per_item else stats.submitted < 500

    run(main())


async def anext_all(results: AsyncIterator[T]) -> list[T]:
    return [x async for x in results]


@pytest.mark.parametrize("per_item", [False, True])
@pytest.mark.parametrize("ordered", [True, False])
def test_a_dropped_map_cancels_what_is_in_flight(
    run: Run[None], ordered: bool, per_item: bool
) -> None:
    """Leaving the loop without aclose() or ``async with``: once the map is dropped, what it
    still had in flight is cancelled (the hooks of its tasks must not keep the map alive)."""

    async def main() -> None:
        never = asyncio.Event()
        waiting = cancelled = 0

        async def item(i: int) -> int:
            nonlocal waiting, cancelled
            if i:
                waiting += 1
                try:
                    await never.wait()
                except asyncio.CancelledError:
                    cancelled += 1
                    raise
            return i

        async with AsyncPool(4) as pool:
            async for _ in mapper(pool, per_item).map(item, range(100), window=4, ordered=ordered):
                break
            gc.collect()
            assert await pool.wait(timeout=10)
            assert waiting == cancelled == 3  # and the item read after the first result: queued
            stats = pool.stats()
            assert (stats.succeeded, stats.cancelled) == (1, 4)

    run(main())


@pytest.mark.parametrize("ordered", [True, False])
def test_a_map_closed_by_another_coroutine_ends_its_consumer(run: Run[None], ordered: bool) -> None:
    """aclose() from another coroutine while the consumer waits in the map: the consumer's
    loop ends at once, even when the task it waits for ignores its cancellation."""

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def stubborn(i: int) -> int:
            started.set()
            while not release.is_set():
                with contextlib.suppress(asyncio.CancelledError):
                    await release.wait()
            return i

        async with AsyncPool(2) as pool:
            results = pool.map(stubborn, range(4), ordered=ordered)
            consumer = asyncio.ensure_future(anext_all(results))
            await started.wait()  # so the consumer has fed the map and waits in it
            await results.aclose()
            assert await asyncio.wait_for(consumer, 10) == []
            release.set()

    run(main())


@pytest.mark.parametrize("ordered", [True, False])
def test_a_map_closed_while_it_reads_its_input_submits_nothing_more(
    run: Run[None], ordered: bool
) -> None:
    """aclose() while the map awaits its async input: the item it then gets is not submitted,
    so nothing comes after the close, in or out of order."""

    async def main() -> None:
        asked, give = asyncio.Event(), asyncio.Event()

        async def numbers() -> AsyncIterator[int]:
            yield 0
            asked.set()
            await give.wait()
            yield 1

        async with AsyncPool(2) as pool:
            results = pool.map(double, numbers(), window=1, ordered=ordered)
            first = asyncio.ensure_future(results.__anext__())
            await asked.wait()  # the consumer reads the next item, to keep the window full
            await results.aclose()
            give.set()
            assert await first == 0
            assert [x async for x in results] == []
            await pool.wait()
            assert pool.stats().submitted == 1

    run(main())


def test_a_map_has_one_consumer_at_a_time(run: Run[None]) -> None:
    """A second coroutine iterating the same map while the first waits in it gets a clear
    error; the first goes on."""

    async def main() -> None:
        started, release = asyncio.Event(), asyncio.Event()

        async def item(i: int) -> int:
            started.set()
            await release.wait()
            return i

        async with AsyncPool(2) as pool:
            results = pool.map(item, range(2), ordered=False)
            first = asyncio.ensure_future(results.__anext__())
            await started.wait()  # so the first consumer has fed the map and waits in it
            with pytest.raises(RuntimeError, match="one consumer at a time"):
                await results.__anext__()
            release.set()
            assert await first in (0, 1)
            assert [x async for x in results] in ([0], [1])

    run(main())


@pytest.mark.parametrize("ordered", [True, False])
def test_map_reads_input_lazily(run: Run[None], ordered: bool) -> None:
    """map reads the input only as results are taken: a bounded window ahead."""

    async def main() -> None:
        read = 0

        def endless() -> Iterator[int]:
            nonlocal read
            while True:
                read += 1
                yield read

        async with AsyncPool(2) as pool:
            async with pool.map(double, endless(), window=4, ordered=ordered) as results:
                async for value in results:
                    if value >= 20:
                        break
            assert read <= 10 + 4 + 1
            await pool.wait()
            assert_accounted(pool.stats())

    run(main())


@pytest.mark.parametrize("per_item", [False, True])
@pytest.mark.parametrize("ordered", [True, False])
def test_map_starts_its_first_tasks_before_filling_the_window(
    run: Run[None], ordered: bool, per_item: bool
) -> None:
    """A map starts one item per worker (a task each, or a lane each), lets those start, then
    reads the rest of its window: the workers do not wait for the whole window to be read."""

    async def main() -> None:
        read = 0
        read_when_started: list[int] = []

        def numbers() -> Iterator[int]:
            nonlocal read
            for i in range(40):
                read += 1
                yield i

        async def item(x: int) -> int:
            read_when_started.append(read)
            await asyncio.sleep(0)
            return x

        async with AsyncPool(3) as pool:
            results = mapper(pool, per_item).map(item, numbers(), window=12, ordered=ordered)
            out = [x async for x in results]
        assert sorted(out) == list(range(40))
        assert read_when_started[:3] == [3, 3, 3]  # the first three ran before item 4 was read

    run(main())


@pytest.mark.parametrize("per_item", [False, True])
@pytest.mark.parametrize("ordered", [True, False])
def test_map_error_cancels_the_rest(run: Run[None], ordered: bool, per_item: bool) -> None:
    """A failing item raises from map, and what is still in flight is cancelled: each waiting
    item's task, or the lanes running the other items (the failed item's lane fails)."""

    async def main() -> None:
        gate = Gate()

        async def item(i: int) -> int:
            if i == 0:
                await gate.await_inside(2)
                raise ValueError("bad item")
            return await gate.wait(i)

        async with AsyncPool(3) as pool:
            with pytest.raises(ValueError, match="bad item"):
                async for _ in mapper(pool, per_item).map(
                    item, range(10), window=5, ordered=ordered
                ):
                    pass
            await pool.wait()
            stats = pool.stats()
            assert stats.failed == 1 and stats.succeeded == 0
            assert stats.cancelled == stats.submitted - 1

    run(main())


def test_map_lanes_give_the_worker_back_when_another_task_waits(run: Run[None]) -> None:
    """A map's lane ends after its current item once another task waits for a worker, so the
    task runs next (not after the map's window); the map goes on in a new lane, losing
    nothing."""

    async def main() -> None:
        ran: list[Any] = []

        async def item(i: int) -> int:
            ran.append(i)
            await asyncio.sleep(0)
            return i

        async def other() -> None:
            ran.append("other")

        async with AsyncPool(1) as pool:
            results = pool.map(item, range(50))
            assert await results.__anext__() == 0
            task = await pool.submit(other)
            assert [x async for x in results] == list(range(1, 50))
            await task
            assert ran.index("other") <= 3  # a task per item would have queued 16 before it
            assert pool.stats().submitted > 2  # the map's first lane, then others

    run(main())


def test_map_lanes_are_tasks_that_items_see_as_current(run: Run[None]) -> None:
    """An item of a map run in lanes sees its lane as ``current_task()``: one task for all the
    items it runs, counted once in ``stats()``; a bounded queue holds lanes, not items."""

    async def main() -> None:
        ids: list[str] = []

        async def item(i: int) -> int:
            ids.append(workpool.current_task().id)
            await asyncio.sleep(0)
            return i

        async with AsyncPool(2, queue_size=1) as pool:
            assert [x async for x in pool.map(item, range(50))] == list(range(50))
            stats = pool.stats()
            assert len(set(ids)) == stats.submitted == stats.succeeded < 50

    run(main())


def test_map_lanes_take_only_the_workers_nothing_else_wants(run: Run[None]) -> None:
    """On a pool whose other worker runs a long task, a map starts one lane (not one per
    worker, which would queue behind it and make the running lane give its worker up after
    every item), and still runs every item."""

    async def main() -> None:
        gate = Gate()

        async def item(i: int) -> int:
            await asyncio.sleep(0)
            return i

        async with AsyncPool(2) as pool:
            long = await pool.submit(gate.wait, "long")
            await gate.await_inside(1)
            assert [x async for x in pool.map(item, range(100))] == list(range(100))
            stats = pool.stats()
            assert stats.submitted == 2 and stats.busy == 1  # the long task, and one lane
            gate.opened.set()
            assert await long == "long"

    run(main())


def test_map_lanes_give_workers_back_when_the_pool_shrinks(run: Run[None]) -> None:
    """Resizing the pool down under a map: its lanes end after their current items, so the
    extra workers retire while the map goes on with the workers left."""

    async def main() -> None:
        async def item(i: int) -> int:
            await asyncio.sleep(0)
            return i

        async with AsyncPool(4) as pool:
            results = pool.map(item, range(1000))
            assert await results.__anext__() == 0
            pool.resize(1)
            rest, shrunk_after = [], None
            async for x in results:
                rest.append(x)
                if shrunk_after is None and pool.stats().workers == 1:
                    shrunk_after = len(rest)
            assert rest == list(range(1, 1000))
            assert shrunk_after is not None and shrunk_after < 100  # not at the map's end

    run(main())


def test_map_lanes_start_nothing_while_the_pool_is_paused(run: Run[None]) -> None:
    """Pausing the pool stops a map's lanes after the items they run; resuming goes on with
    the rest, every item once."""

    async def main() -> None:
        started: list[int] = []

        async def item(i: int) -> int:
            started.append(i)
            await asyncio.sleep(0)
            return i

        async with AsyncPool(2) as pool:
            results = pool.map(item, range(40))
            assert await results.__anext__() == 0
            pool.pause()
            count = len(started)
            await settle()
            assert len(started) == count and pool.stats().busy == 0
            pool.resume()
            assert [x async for x in results] == list(range(1, 40))
            assert sorted(started) == list(range(40))

    run(main())


def test_map_lanes_run_many_items_per_task(run: Run[None]) -> None:
    """A map run in lanes costs the pool a few tasks, not one per item: one lane per worker,
    each running items one after another, while nothing else waits."""

    async def item(i: int) -> int:
        await asyncio.sleep(0)
        return i

    async def main() -> None:
        async with AsyncPool(4) as pool:
            assert [x async for x in pool.map(item, range(1000))] == list(range(1000))
            stats = pool.stats()
            assert stats.submitted < 100 and stats.succeeded == stats.submitted

    run(main())


@pytest.mark.parametrize("ordered", [True, False])
def test_map_lanes_raise_an_input_error_in_its_place(run: Run[None], ordered: bool) -> None:
    """An input that raises while lanes read it: the error comes in its place, after the items
    before it if ordered (unordered, as soon as it is read); nothing fails in the pool."""

    def numbers() -> Iterator[int]:
        yield from range(3)
        raise ValueError("bad input")

    async def main() -> None:
        async with AsyncPool(2) as pool:
            got = []
            with pytest.raises(ValueError, match="bad input"):
                async for x in pool.map(double, numbers(), ordered=ordered):
                    got.append(x)
            if ordered:
                assert got == [0, 2, 4]
            else:
                assert set(got) <= {0, 2, 4}
            await pool.wait()
            assert pool.stats().failed == 0

    run(main())


def test_map_lanes_end_with_pool_closed_when_the_pool_shuts_down(run: Run[None]) -> None:
    """Shutting the pool down under a map: the lanes finish the items they run and read no
    more; the map yields those results, then, wanting more, raises PoolClosed; no item is left
    running."""

    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(2)
        results = pool.map(gate.wait, range(10))
        got: list[int] = []

        async def consume() -> None:
            async for value in results:
                got.append(value)

        consumer = asyncio.ensure_future(consume())
        await gate.await_inside(2)
        closing = asyncio.ensure_future(pool.shutdown(wait=True))
        await settle()
        gate.opened.set()
        with pytest.raises(PoolClosed):
            await consumer
        assert got == [0, 1]
        await closing
        stats = pool.stats()
        assert stats.busy == 0 and stats.succeeded == stats.submitted
        assert_accounted(stats)

    run(main())


def test_a_task_map_on_a_closing_pool_yields_what_it_submitted_then_raises(
    run: Run[None],
) -> None:
    """A map with a task per item, on a pool shut down in the loop turn in which the map lets
    its first tasks start: those tasks give their results, then the map, with input left,
    raises PoolClosed (not before their results)."""

    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(2)
        results = pool.options(timeout=60).map(gate.wait, range(5), window=8)
        got: list[int] = []

        async def consume() -> None:
            async for value in results:
                got.append(value)

        consumer = asyncio.ensure_future(consume())  # it submits one item per worker, yields
        closing = asyncio.ensure_future(pool.shutdown(wait=True))  # and this runs then
        await asyncio.sleep(0)
        gate.opened.set()
        with pytest.raises(PoolClosed):
            await consumer
        assert got == [0, 1]
        await closing
        assert pool.stats().succeeded == 2

    run(main())


@pytest.mark.timeout(120)
def test_map_randomised_runs_leave_nothing_behind(run: Run[None]) -> None:
    """Maps of random sizes, windows and orders, in lanes or a task per item, whose consumer
    breaks off, meets a failing item, pauses, resizes or shuts the pool down, or submits other
    tasks meanwhile: each gives every result once (in order if asked) when it runs to its end,
    raises only its item's error or PoolClosed, and leaves no task running, queued or
    unaccounted for (seeded: a failure names its seed)."""

    async def one(rng: random.Random) -> None:
        pool = AsyncPool(rng.randint(1, 6), queue_size=rng.choice([0, 0, 3]))
        n = rng.randint(0, 120)
        fail_at = rng.choice([None, None, rng.randint(0, max(n - 1, 0))])
        ordered = rng.random() < 0.5

        async def item(i: int) -> int:
            if rng.random() < 0.3:
                await asyncio.sleep(0)
            if i == fail_at:
                raise ValueError(i)
            return i

        maps = pool.options(timeout=60) if rng.random() < 0.4 else pool
        results = maps.map(item, range(n), ordered=ordered, window=rng.choice([None, 1, 2, 5]))
        got: list[int] = []
        others = []
        closed = False
        raised: Exception | None = None
        try:
            async for value in results:
                got.append(value)
                roll = rng.random()
                if roll < 0.02:
                    break
                if roll < 0.05:
                    others.append(await pool.submit(double, 1))
                elif roll < 0.07:
                    pool.pause()
                    await asyncio.sleep(0)
                    pool.resume()
                elif roll < 0.08:
                    pool.resize(rng.randint(1, 6))
                elif roll < 0.085:
                    await pool.shutdown(wait=False, cancel_futures=rng.random() < 0.5)
                    closed = True
            else:
                if fail_at is None and not closed:
                    assert (got if ordered else sorted(got)) == list(range(n))
        except (ValueError, PoolClosed, cf.CancelledError) as error:
            raised = error
        finally:
            await results.aclose()
        if isinstance(raised, ValueError):
            assert raised.args == (fail_at,)
        elif raised is not None:
            assert closed, raised
        for task in others:
            with contextlib.suppress(asyncio.CancelledError):
                assert await task == 2
        await asyncio.wait_for(pool.shutdown(), 10)
        stats = pool.stats()
        assert stats.busy == stats.queued == 0
        assert_accounted(stats)

    async def main() -> None:
        for seed in range(300):
            try:
                await asyncio.wait_for(one(random.Random(seed)), 10)
            except BaseException as error:
                raise AssertionError(f"seed {seed}") from error

    run(main())


def test_as_completed_yields_finished_tasks(run: Run[None]) -> None:
    """as_completed yields each task as it finishes, sync Pool tasks included."""

    async def main() -> None:
        gate = Gate()
        with workpool.Pool(1) as threads:
            async with AsyncPool(2) as pool:
                slow = await pool.submit(gate.wait, "slow")
                fast = await pool.submit(double, 1)
                threaded = threads.submit(sum, [1, 2])
                seen = []
                async for task in pool.as_completed([slow, fast, threaded]):
                    seen.append(task.result())
                    if len(seen) == 2:
                        gate.opened.set()
                assert sorted(seen[:2], key=str) == [2, 3] and seen[2] == "slow"

    run(main())


def test_as_completed_timeout(run: Run[None]) -> None:
    """as_completed raises TimeoutError when tasks are still unfinished after its timeout."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1) as pool:
            task = await pool.submit(gate.wait)
            with pytest.raises(TimeoutError):
                async for _ in pool.as_completed([task], timeout=0.02):
                    pass
            gate.opened.set()

    run(main())


def test_wait_group(run: Run[None]) -> None:
    """wait returns True once every task finished, False if its timeout passes first."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(2) as pool:
            assert await pool.wait()
            await pool.submit(gate.wait)
            assert await pool.wait(timeout=0.02) is False
            waiter = asyncio.create_task(pool.wait())
            await settle()
            assert not waiter.done()
            gate.opened.set()
            assert await waiter is True

    run(main())


# -- control ----------------------------------------------------------------------------------


def test_pause_and_resume(run: Run[None]) -> None:
    """While paused no task starts; resume starts the waiting ones."""

    async def main() -> None:
        async with AsyncPool(2) as pool:
            pool.pause()
            task = await pool.submit(double, 3)
            await settle()
            assert task.state is TaskState.QUEUED and pool.stats().paused
            pool.resume()
            assert await task == 6

    run(main())


def test_resize_grows_and_shrinks(run: Run[None]) -> None:
    """resize changes how many coroutines run at once."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(1) as pool:
            tasks = [await pool.submit(gate.wait) for _ in range(4)]
            await gate.await_inside(1)
            pool.resize(3)
            await gate.await_inside(3)
            assert pool.stats().workers == 3
            with pytest.raises(ValueError, match="max_workers"):
                pool.resize(0)
            pool.resize(1)
            gate.opened.set()
            for task in tasks:
                await task
            await settle()
            assert pool.stats().workers == 1

    run(main())


def test_autoscaling_grows_then_retires_idle_workers(run: Run[None]) -> None:
    """Between bounds, workers are added while work waits and idle ones retire."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(min_workers=0, max_workers=4, idle_timeout=0.05) as pool:
            tasks = [await pool.submit(gate.wait) for _ in range(6)]
            await gate.await_inside(4)
            assert pool.stats().workers == 4
            gate.opened.set()
            for task in tasks:
                await task
            await until(lambda: pool.stats().workers == 0)

    run(main())


def test_cancelling_a_retry_in_its_backoff_lets_a_closing_pool_finish(run: Run[None]) -> None:
    """A closing pool keeps its idle workers while a retry waits out its backoff; cancelling
    that retry must let them retire, or shutdown() would wait forever."""

    async def fails() -> None:
        raise ValueError("first attempt")

    async def main() -> None:
        pool = AsyncPool(1)
        policy = RetryPolicy(base_delay=60.0, jitter=0.0)
        task = await pool.options(retries=1, retry=policy).submit(fails)
        await until(lambda: pool.stats().delayed == 1)
        closing = asyncio.ensure_future(pool.shutdown())
        await until(lambda: pool.stats().closed)
        assert task.cancel()
        report = await asyncio.wait_for(closing, 30)
        assert report.completed

    run(main())


def test_a_task_submitted_by_a_done_callback_runs(run: Run[None]) -> None:
    """A done-callback that submits a task wakes the worker that has just finished (it had not
    parked yet): the wake-up must not be lost."""

    async def main() -> None:
        async with AsyncPool(1) as pool:
            follow_ups: list[workpool.Task[int]] = []
            first = await pool.submit(double, 1)
            first.add_done_callback(lambda _: follow_ups.append(pool.try_submit(double, 2)))
            assert await first == 2
            assert await asyncio.wait_for(follow_ups[0], 10) == 4

    run(main())


def test_rate_limit_spaces_task_starts(run: Run[None]) -> None:
    """rate_limit=(n, period) starts at most n tasks per period (a burst of n, then spaced)."""

    async def main() -> None:
        starts: list[float] = []

        async def note() -> None:
            starts.append(time.monotonic())

        async with AsyncPool(4, rate_limit=(2, 0.1)) as pool:
            tasks = [await pool.submit(note) for _ in range(6)]
            for task in tasks:
                await task
        # a burst of two, then one start every 0.05 s: the sixth is at least 0.2 s after the first
        assert starts[-1] - starts[0] >= 0.19

    run(main())


def test_stats_account_for_every_task(run: Run[None]) -> None:
    """Every submitted task counts in exactly one place, whatever its outcome."""

    async def boom() -> None:
        raise ValueError

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(2) as pool:
            await pool.submit(double, 1)
            await pool.submit(boom)
            hung = await pool.submit(gate.wait)
            await pool.options(timeout=0.02).submit(asyncio.Event().wait)
            await gate.await_inside(1)
            hung.cancel()
            await pool.wait()
            stats = pool.stats()
            assert (stats.succeeded, stats.failed, stats.cancelled, stats.timed_out) == (1, 1, 1, 1)
            assert_accounted(stats)
            assert "AsyncPool" in repr(pool)

    run(main())


# -- shutting down ----------------------------------------------------------------------------


def test_shutdown_drains_and_reports(run: Run[None]) -> None:
    """shutdown lets queued tasks run, then reports a completed shutdown."""

    async def main() -> None:
        pool = AsyncPool(2)
        tasks = [await pool.submit(double, i) for i in range(10)]
        report = await pool.shutdown()
        assert report.completed and report.finished == 10 and not report.running
        assert all(t.state is TaskState.SUCCEEDED for t in tasks)
        assert (await pool.shutdown()).completed  # again: harmless

    run(main())


def test_shutdown_with_timeout_and_cancel_futures(run: Run[None]) -> None:
    """With a timeout, shutdown returns by then and says what it cancelled and left running."""

    async def main() -> None:
        gate = Gate()
        pool = AsyncPool(1)
        running = await pool.submit(gate.wait)
        queued = await pool.submit(double, 1)
        await gate.await_inside(1)
        report = await pool.shutdown(cancel_futures=True, timeout=0.02)
        assert not report.completed
        assert report.cancelled == (queued,) and report.running == (running,)
        gate.opened.set()
        assert (await pool.shutdown()).completed

    run(main())


def test_error_in_async_with_cancels_everything(run: Run[None]) -> None:
    """Leaving ``async with`` by an exception cancels waiting tasks and running coroutines."""

    async def main() -> None:
        gate = Gate()
        with pytest.raises(ZeroDivisionError):
            async with AsyncPool(1) as pool:
                running = await pool.submit(gate.wait)
                queued = await pool.submit(double, 1)
                await gate.await_inside(1)
                1 / 0  # the block fails
        assert running.state is TaskState.CANCELLED and queued.state is TaskState.CANCELLED
        assert pool.stats().closed

    run(main())


def test_cancelled_async_with_block_cancels_its_tasks(run: Run[None]) -> None:
    """Cancelling the coroutine inside ``async with`` cancels the pool's tasks and awaits them."""

    async def main() -> None:
        gate, tasks = Gate(), []

        async def block() -> None:
            async with AsyncPool(1) as pool:
                tasks.append(await pool.submit(gate.wait))
                tasks.append(await pool.submit(double, 1))
                await asyncio.Event().wait()

        outer = asyncio.create_task(block())
        await gate.await_inside(1)
        outer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await outer
        assert [t.state for t in tasks] == [TaskState.CANCELLED, TaskState.CANCELLED]

    run(main())


@pytest.mark.skipif(sys.version_info < (3, 11), reason="asyncio.run turns SIGINT into a cancel")
def test_ctrl_c_cancels_running_coroutines() -> None:
    """Ctrl-C under asyncio.run cancels the pool's running coroutines; KeyboardInterrupt follows."""
    seen = []

    async def hang() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    async def main() -> None:
        async with AsyncPool(2) as pool:
            tasks.append(await pool.submit(hang))
            await settle()
            signal.raise_signal(signal.SIGINT)
            await asyncio.Event().wait()

    tasks: list[workpool.Task[None]] = []
    with pytest.raises(KeyboardInterrupt):
        asyncio.run(main())
    assert seen == ["cancelled"] and tasks[0].state is TaskState.CANCELLED


def test_loop_ending_with_open_pool_does_not_hang() -> None:
    """asyncio.run ending while a pool still has work cancels its workers and returns."""
    tasks = []

    async def main() -> None:
        pool = AsyncPool(1)
        tasks.append(await pool.submit(asyncio.Event().wait))
        tasks.append(await pool.submit(double, 1))
        await settle()

    asyncio.run(main())
    assert all(task.cancelled() for task in tasks)


# -- bridges ----------------------------------------------------------------------------------


def test_await_thread_pool_task_and_cancel_it(run: Run[None]) -> None:
    """A coroutine awaits a thread Pool task with wrap_future; cancelling it cancels the task."""
    started = threading.Event()

    def blocking() -> None:
        started.set()
        ctx = workpool.current_task()
        while not ctx.cancelled:
            time.sleep(0.001)
        ctx.check()

    async def main() -> None:
        with workpool.Pool(1) as threads:
            assert await asyncio.wrap_future(threads.submit(sum, [1, 2])) == 3
            async with AsyncPool(1) as pool:
                thread_task = threads.submit(blocking)

                async def hand_off() -> None:
                    await asyncio.wrap_future(thread_task)

                task = await pool.submit(hand_off)
                await asyncio.get_running_loop().run_in_executor(None, started.wait)
                task.cancel()
                with pytest.raises(asyncio.CancelledError):
                    await task
                with pytest.raises(cf.CancelledError):
                    thread_task.result(timeout=10)
                assert thread_task.state is TaskState.CANCELLED

    run(main())


def test_sync_code_drives_pool_on_another_thread(run: Run[None]) -> None:
    """A thread submits with submit_threadsafe and blocks on the returned future."""

    async def main() -> None:
        gate = Gate()
        async with AsyncPool(2) as pool:
            loop = asyncio.get_running_loop()

            def from_thread() -> tuple[int, bool]:
                value = pool.submit_threadsafe(double, 21).result(timeout=10)
                hung = pool.options(priority=1).submit_threadsafe(gate.wait)
                hung.cancel()  # carried out on the loop
                try:
                    hung.result(timeout=10)
                except cf.CancelledError:
                    return value, True
                return value, False

            assert await loop.run_in_executor(None, from_thread) == (42, True)
            with pytest.raises(RuntimeError, match="own loop"):
                pool.submit_threadsafe(double, 1)

    run(main())


def test_a_thread_waiting_as_the_loop_resolves_never_misses_it(run: Run[None]) -> None:
    """The loop resolves its tasks while a thread starts to wait for each, in every way:
    cf.wait(), a done-callback and result(). The thread lets each task finish just as it starts
    to wait, and threads switch as often as they can, so that over many tasks the two meet at
    every point, before, during and after the resolution; no waiter misses it.
    """
    count = 3000

    async def gated(gate: asyncio.Event, x: int) -> int:
        await gate.wait()
        return 2 * x

    async def main() -> None:
        async with AsyncPool(4) as pool:
            loop = asyncio.get_running_loop()
            handed: queue.SimpleQueue[tuple[cf.Future[int], asyncio.Event] | None]
            handed = queue.SimpleQueue()

            def wait_for_each() -> list[int]:
                values = []
                while (item := handed.get()) is not None:
                    task, gate = item
                    loop.call_soon_threadsafe(gate.set)  # it may finish from now on
                    way = len(values) % 3
                    started = time.monotonic()
                    if way == 0:
                        cf.wait([task], timeout=5)
                    elif way == 1:
                        called = threading.Event()
                        task.add_done_callback(lambda _, called=called: called.set())
                        called.wait(5)
                    else:
                        task.result(timeout=5)
                    # A missed wake-up waits out the timeout (a task done in the meantime
                    # returns its value all the same).
                    assert time.monotonic() - started < 5, f"way {way} missed the resolution"
                    values.append(task.result())
                return values

            waiter = loop.run_in_executor(None, wait_for_each)
            for i in range(count):
                gate = asyncio.Event()
                handed.put((await pool.submit(gated, gate, i), gate))
            handed.put(None)
            assert await waiter == [2 * i for i in range(count)]

    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as it can: every interleaving
    try:
        run(main())
    finally:
        sys.setswitchinterval(interval)


def test_import_workpool_leaves_asyncio_until_async_pool_is_used() -> None:
    """``import workpool`` does not import asyncio (AsyncPool is loaded on first use), and
    ``workpool.AsyncPool`` is the class, listed by ``dir`` and importable by name."""
    code = (
        "import sys, workpool\n"
        "assert 'asyncio' not in sys.modules, 'asyncio imported'\n"
        "assert 'AsyncPool' in dir(workpool) and 'AsyncPool' in workpool.__all__\n"
        "from workpool import AsyncPool\n"
        "assert workpool.AsyncPool is AsyncPool and AsyncPool.__name__ == 'AsyncPool'\n"
        "try:\n"
        "    workpool.NoSuchThing\n"
        "except AttributeError as e:\n"
        "    assert 'NoSuchThing' in str(e)\n"
        "else:\n"
        "    raise AssertionError('no AttributeError')\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
