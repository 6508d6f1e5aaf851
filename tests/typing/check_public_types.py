"""Static checks of the public types: mypy runs this file (see pyproject), nothing executes it."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import Future

from typing_extensions import assert_type  # typing has it from 3.11; we check as 3.10

import workpool


def fetch(url: str, *, retries: int = 0) -> bytes:
    return url.encode()


def check(pool: workpool.Pool, executor: workpool.ThreadPoolExecutor) -> None:
    task = pool.submit(fetch, "u", retries=1)
    assert_type(task, workpool.Task[bytes])
    assert_type(task.result(), bytes)
    future: Future[bytes] = task  # a Task is a Future
    assert_type(pool.options(priority=1, timeout=2.0).submit(fetch, "u"), workpool.Task[bytes])
    assert_type(pool.try_submit(fetch, "u"), workpool.Task[bytes])
    assert_type(pool.map(fetch, ["a", "b"]), Iterator[bytes])
    assert_type(pool.stats(), workpool.PoolStats)
    assert_type(pool.shutdown(timeout=1.0), workpool.ShutdownReport)
    assert_type(task.state, workpool.TaskState)
    assert_type(executor.submit(fetch, "u"), workpool.Task[bytes])
    assert_type(workpool.current_task().deadline, float | None)
    pool.submit(fetch, 1)  # type: ignore[arg-type]  # wrong argument type is caught
    pool.submit(fetch, "u", retry=1)  # type: ignore[call-arg]  # unknown keyword is caught
    del future
