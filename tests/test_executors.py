"""The drop-in ThreadPoolExecutor keeps the stdlib's documented semantics."""

from __future__ import annotations

import asyncio
import concurrent.futures as cf
import os
import threading
import time
from typing import Any

import pytest
from helpers import wait_until

import workpool


def test_is_a_stdlib_thread_pool_executor_and_a_pool() -> None:
    """isinstance checks for the stdlib class pass, and the Pool extras are there."""
    with workpool.ThreadPoolExecutor(2) as executor:
        assert isinstance(executor, cf.ThreadPoolExecutor)
        assert isinstance(executor, workpool.Pool)
        assert executor.options(priority=5).submit(pow, 2, 5).result(timeout=10) == 32
        assert executor.stats().succeeded == 1


@pytest.mark.parametrize("bad", [0, -1])
def test_max_workers_must_be_positive(bad: int) -> None:
    """max_workers <= 0 raises ValueError, as the stdlib does."""
    with pytest.raises(ValueError, match="greater than 0"):
        workpool.ThreadPoolExecutor(bad)


def test_default_max_workers_matches_the_stdlib() -> None:
    """The default is min(32, cpu_count + 4)."""
    with workpool.ThreadPoolExecutor() as executor:
        assert executor._max_workers == min(32, (os.cpu_count() or 1) + 4)


def test_map_is_eager_and_ordered() -> None:
    """map submits every call at once and yields results in order."""
    gate = threading.Event()
    with workpool.ThreadPoolExecutor(2) as executor:
        executor.pause()
        results = executor.map(abs, range(-50, 0))
        assert executor.stats().queued == 50  # all submitted before any is consumed
        executor.resume()
        assert list(results) == list(range(50, 0, -1))
        gate.set()


def test_map_timeout_raises_timeout_error() -> None:
    """map(timeout=...) raises TimeoutError when a result is late."""
    gate = threading.Event()
    with workpool.ThreadPoolExecutor(1) as executor:
        results = executor.map(gate.wait, [10], timeout=0.05)
        with pytest.raises(cf.TimeoutError):
            list(results)
        gate.set()


def test_map_buffersize_bounds_submitted_calls() -> None:
    """buffersize (Python 3.14) bounds calls submitted but not yet yielded."""
    with workpool.ThreadPoolExecutor(2) as executor:
        results = executor.map(abs, range(1000), buffersize=4)
        assert next(results) == 0
        assert executor.stats().submitted <= 5
        assert list(results) == list(range(1, 1000))
    with pytest.raises(ValueError):
        workpool.ThreadPoolExecutor(1).map(abs, [1], buffersize=0)


def test_submit_after_shutdown_raises_runtime_error() -> None:
    """A shut-down executor refuses work with a RuntimeError."""
    executor = workpool.ThreadPoolExecutor(1)
    executor.shutdown()
    with pytest.raises(RuntimeError):
        executor.submit(abs, 1)


def test_shutdown_cancel_futures() -> None:
    """shutdown(cancel_futures=True) cancels pending futures; the running one completes."""
    gate = threading.Event()
    executor = workpool.ThreadPoolExecutor(1)
    running = executor.submit(gate.wait, 10)
    wait_until(lambda: executor.stats().busy == 1)
    pending = [executor.submit(abs, i) for i in range(5)]
    opener = threading.Thread(
        target=lambda: (wait_until(lambda: executor.stats().closed), gate.set())
    )
    opener.start()
    executor.shutdown(wait=True, cancel_futures=True)
    opener.join()
    assert all(f.cancelled() for f in pending) and running.result() is True


def test_failing_initializer_gives_broken_thread_pool() -> None:
    """A raising initializer makes the executor broken: BrokenThreadPool, as the stdlib."""

    def init() -> None:
        raise ValueError("init failed")

    executor = workpool.ThreadPoolExecutor(1, initializer=init)
    future = executor.submit(abs, 1)
    with pytest.raises(cf.thread.BrokenThreadPool):
        future.result(timeout=10)
    with pytest.raises(cf.thread.BrokenThreadPool):
        executor.submit(abs, 2)
    executor.shutdown()


def test_thread_name_prefix_names_the_threads() -> None:
    """thread_name_prefix names the worker threads."""
    with workpool.ThreadPoolExecutor(1, thread_name_prefix="fetcher") as executor:
        name = executor.submit(lambda: threading.current_thread().name).result(timeout=10)
    assert name.startswith("fetcher")


def test_asyncio_default_executor_and_cancellation() -> None:
    """It serves as asyncio's default executor; cancelling the await cancels the task."""
    started = threading.Event()

    def cooperative() -> str:
        started.set()
        ctx = workpool.current_task()
        while True:
            ctx.check()
            time.sleep(0.001)

    async def main(executor: workpool.ThreadPoolExecutor) -> None:
        loop = asyncio.get_running_loop()
        loop.set_default_executor(executor)
        assert await loop.run_in_executor(None, pow, 2, 10) == 1024
        pending = loop.run_in_executor(None, cooperative)
        await asyncio.to_thread(started.wait, 10)
        pending.cancel()
        with pytest.raises(asyncio.CancelledError):
            await pending

    executor = workpool.ThreadPoolExecutor(2)
    asyncio.run(main(executor))
    wait_until(lambda: executor.stats().cancelled == 1)
    executor.shutdown()


def test_with_block_error_still_runs_every_task_as_the_stdlib() -> None:
    """The drop-in keeps the stdlib's with: an exception in the block cancels nothing."""
    with pytest.raises(KeyError), workpool.ThreadPoolExecutor(1) as executor:
        futures = [executor.submit(abs, -i) for i in range(20)]
        raise KeyError("boom")
    assert [f.result() for f in futures] == list(range(20))


def test_with_block_calls_a_subclass_shutdown_as_the_stdlib() -> None:
    """A subclass of the drop-in that overrides shutdown has it called by its with block."""
    calls: list[bool] = []

    class Tracked(workpool.ThreadPoolExecutor):
        def shutdown(self, wait: bool = True, **kwargs: Any) -> Any:
            calls.append(wait)
            return super().shutdown(wait, **kwargs)

    with Tracked(1) as executor:
        future = executor.submit(abs, -4)
    assert calls == [True] and future.result() == 4
