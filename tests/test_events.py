"""Observers: every event, in order per task, even under concurrency; a raising one is harmless."""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from typing import Any

import pytest
from helpers import wait_until

import workpool
from workpool import RetryPolicy, Task, TaskTimeout


class Recorder(workpool.Observer):
    """Records (event, details) in one list, thread-safely."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.events: list[tuple[str, Any, Any]] = []

    def record(self, event: str, subject: Any, detail: Any = None) -> None:
        with self.lock:
            self.events.append((event, subject, detail))

    def task_submitted(self, task: Task[Any]) -> None:
        self.record("submitted", task)

    def task_rejected(self, task: Task[Any], error: BaseException) -> None:
        self.record("rejected", task, type(error))

    def task_started(self, task: Task[Any]) -> None:
        self.record("started", task, task.attempts)

    def task_retried(self, task: Task[Any], error: BaseException) -> None:
        self.record("retried", task, type(error))

    def task_finished(self, task: Task[Any], error: BaseException | None) -> None:
        self.record("finished", task, task.state)

    def worker_started(self, worker: int) -> None:
        self.record("worker_started", worker)

    def worker_stopped(self, worker: int, reason: str) -> None:
        self.record("worker_stopped", worker, reason)

    def pool_changed(self, event: str) -> None:
        self.record("pool", event)

    def per_task(self) -> dict[Task[Any], list[str]]:
        sequences: dict[Task[Any], list[str]] = defaultdict(list)
        for event, subject, _ in self.events:
            if isinstance(subject, Task):
                sequences[subject].append(event)
        return sequences


def test_events_come_in_order_for_every_task_under_concurrency() -> None:
    """Across 4 workers and 500 tasks, each task sees submitted, started, finished in order."""
    recorder = Recorder()
    with workpool.Pool(4, observers=[recorder]) as pool:
        tasks = [pool.submit(abs, -i) for i in range(500)]
    sequences = recorder.per_task()
    assert all(sequences[t] == ["submitted", "started", "finished"] for t in tasks)


def test_finished_is_observed_before_result_returns() -> None:
    """An observer has seen task_finished by the time result() returns."""
    recorder = Recorder()
    with workpool.Pool(2, observers=[recorder]) as pool:
        for i in range(50):
            task = pool.submit(abs, i)
            task.result(timeout=10)
            assert ("finished", task, workpool.TaskState.SUCCEEDED) in recorder.events


def test_retries_and_failures_are_observed() -> None:
    """A failing task with retries reports each attempt, then its final failure."""
    recorder = Recorder()
    with workpool.Pool(1, observers=[recorder]) as pool:
        task = pool.options(retries=2, retry=RetryPolicy(base_delay=0)).submit(int, "x")
        with pytest.raises(ValueError):
            task.result(timeout=10)
    assert recorder.per_task()[task] == [
        "submitted",
        *["started", "retried"] * 2,
        "started",
        "finished",
    ]
    assert ("finished", task, workpool.TaskState.FAILED) in recorder.events


def test_timeout_reports_the_lost_worker_and_the_timed_out_task() -> None:
    """A timed-out thread task ends TIMED_OUT and its abandoned worker is reported lost."""
    recorder = Recorder()
    release = threading.Event()
    with workpool.Pool(1, observers=[recorder]) as pool:
        task = pool.options(timeout=0.02).submit(release.wait, 30)
        with pytest.raises(TaskTimeout):
            task.result(timeout=10)
        release.set()
    assert ("finished", task, workpool.TaskState.TIMED_OUT) in recorder.events
    assert any(e == "worker_stopped" and d == "lost" for e, _, d in recorder.events)


def test_rejected_and_cancelled_tasks_are_observed() -> None:
    """A refused submission reports rejected; a cancelled queued task reports finished."""
    recorder = Recorder()
    gate = threading.Event()
    with workpool.Pool(1, queue_size=1, observers=[recorder]) as pool:
        pool.submit(gate.wait, 30)
        wait_until(lambda: pool.stats().busy == 1)
        queued = pool.submit(abs, 1)
        with pytest.raises(workpool.QueueFull):
            pool.try_submit(abs, 2)
        queued.cancel()
        gate.set()
    kinds = [(e, d) for e, _, d in recorder.events]
    assert ("rejected", workpool.QueueFull) in kinds
    assert recorder.per_task()[queued] == ["submitted", "finished"]
    assert ("finished", queued, workpool.TaskState.CANCELLED) in recorder.events


def test_worker_and_pool_events() -> None:
    """Workers report start and retirement; pause, resume, resize and close are reported."""
    recorder = Recorder()
    pool = workpool.Pool(2, observers=[recorder])
    pool.submit(abs, 1).result(timeout=10)
    pool.pause()
    pool.resume()
    pool.resize(1)
    pool.shutdown()
    pool_events = [s for e, s, _ in recorder.events if e == "pool"]
    assert pool_events == ["paused", "resumed", "resized", "closed"]
    started = [s for e, s, _ in recorder.events if e == "worker_started"]
    stopped = [s for e, s, d in recorder.events if e == "worker_stopped" and d == "retired"]
    assert started and sorted(started) == sorted(stopped)


def test_raising_observer_is_logged_and_harmless(caplog: pytest.LogCaptureFixture) -> None:
    """An observer that raises never breaks the pool; the error goes to the workpool logger."""

    class Broken(workpool.Observer):
        def task_started(self, task: Task[Any]) -> None:
            raise RuntimeError("observer bug")

    with caplog.at_level(logging.ERROR, logger="workpool"), workpool.Pool(2) as pool:
        pool.add_observer(Broken())
        assert [t.result(timeout=10) for t in [pool.submit(abs, -3)]] == [3]
    assert "observer bug" in caplog.text


def test_removed_observer_hears_nothing_more() -> None:
    """remove_observer stops the events."""
    recorder = Recorder()
    with workpool.Pool(1) as pool:
        pool.add_observer(recorder)
        pool.submit(abs, 1).result(timeout=10)
        pool.remove_observer(recorder)
        count = len(recorder.events)
        pool.submit(abs, 2).result(timeout=10)
    assert len(recorder.events) == count


def test_logging_observer_logs_failures_with_structured_fields(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """LoggingObserver logs a failed task at WARNING with its id and name as fields."""
    with (
        caplog.at_level(logging.DEBUG, logger="workpool"),
        workpool.Pool(1, observers=[workpool.LoggingObserver()]) as pool,
    ):
        task = pool.options(name="parse").submit(int, "x")
        with pytest.raises(ValueError):
            task.result(timeout=10)
    [failure] = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert failure.task_id == task.id and failure.task_name == "parse"  # type: ignore[attr-defined]
    assert "failed" in failure.getMessage()


def test_async_pool_reports_the_same_events() -> None:
    """AsyncPool emits the same per-task sequence, retries and timeouts included."""
    import asyncio

    recorder = Recorder()

    async def flaky(fail: bool) -> int:
        if fail and workpool.current_task().attempt == 1:
            raise ValueError("first attempt")
        return 1

    async def hang() -> None:
        await asyncio.Event().wait()

    async def main() -> list[Task[Any]]:
        async with workpool.AsyncPool(2, observers=[recorder]) as pool:
            ok = await pool.submit(flaky, False)
            retried = await pool.options(retries=1, retry=RetryPolicy(base_delay=0)).submit(
                flaky, True
            )
            hung = await pool.options(timeout=0.02).submit(hang)
            await pool.wait()
            pool.pause()
            pool.resume()
        return [ok, retried, hung]

    ok, retried, hung = asyncio.run(main())
    sequences = recorder.per_task()
    assert sequences[ok] == ["submitted", "started", "finished"]
    assert sequences[retried] == ["submitted", "started", "retried", "started", "finished"]
    assert ("finished", hung, workpool.TaskState.TIMED_OUT) in recorder.events
    assert [s for e, s, _ in recorder.events if e == "pool"] == ["paused", "resumed", "closed"]
