"""What only threads do: abandoned tasks, the in-task context, nested submission, Ctrl-C."""

from __future__ import annotations

import asyncio
import collections
import contextvars
import itertools
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import CancelledError
from typing import Any

import pytest
from helpers import JoinAsAWorkerStarts, assert_accounted, wait_until

import workpool
from workpool import QueueFull, TaskState, TaskTimeout
from workpool import _locking as locking
from workpool._backends import thread as thread_backend
from workpool._backends._parking import Parker
from workpool._backends.base import join_threads
from workpool._core import PoolCore
from workpool._engine import Scheduler
from workpool._locking import yield_to_holder


def test_timeout_abandons_a_task_that_ignores_its_context() -> None:
    """A hung thread task fails on time, its thread is abandoned and replaced."""
    release = threading.Event()
    with workpool.Pool(2) as pool:
        hung = pool.options(timeout=0.05).submit(release.wait, 30)
        wait_until(lambda: pool.stats().busy == 1)
        workers_before = pool.stats().workers
        with pytest.raises(TaskTimeout):
            hung.result(timeout=10)
        stats = pool.stats()
        assert stats.abandoned == 1 and stats.timed_out == 1
        assert stats.workers == workers_before  # the replacement keeps capacity whole
        assert pool.submit(sum, [1, 2]).result(timeout=10) == 3
        release.set()  # the abandoned call returns; its thread leaves without a trace
        wait_until(lambda: pool.stats().abandoned == 0)
        stats = pool.stats()
        assert stats.succeeded == 1 and stats.timed_out == 1
        assert_accounted(stats)


def test_shutdown_never_waits_for_an_abandoned_thread() -> None:
    """shutdown(wait=True) returns although an abandoned task still runs."""
    release = threading.Event()
    pool = workpool.Pool(1)
    hung = pool.options(timeout=0.02).submit(release.wait, 30)
    with pytest.raises(TaskTimeout):
        hung.result(timeout=10)
    report = pool.shutdown(wait=True)
    assert report.completed and report.stats.abandoned == 1
    release.set()


def test_cooperative_task_stops_at_its_deadline_without_abandonment() -> None:
    """A task that calls check() ends TIMED_OUT and its worker carries on."""

    def patient() -> None:
        ctx = workpool.current_task()
        assert ctx.deadline is not None
        while True:
            ctx.check()
            time.sleep(0.001)

    with workpool.Pool(1) as pool:
        task = pool.options(timeout=0.05).submit(patient)
        with pytest.raises(TaskTimeout):
            task.result(timeout=10)
        assert task.state is TaskState.TIMED_OUT
        wait_until(lambda: pool.stats().abandoned == 0)


def test_current_task_describes_the_running_task() -> None:
    """current_task() gives the id, attempt and deadline of the running task."""

    def describe() -> tuple[str, int, bool, float | None]:
        ctx = workpool.current_task()
        return ctx.id, ctx.attempt, ctx.cancelled, ctx.remaining()

    with workpool.Pool(1) as pool:
        task = pool.options(timeout=30).submit(describe)
        task_id, attempt, cancelled, remaining = task.result(timeout=10)
        assert task_id == task.id and attempt == 1 and not cancelled
        assert remaining is not None and 0 < remaining <= 30
        plain = pool.submit(describe)
        assert plain.result(timeout=10)[3] is None


def test_current_task_outside_a_task_raises() -> None:
    """Outside a task, current_task() raises RuntimeError."""
    with pytest.raises(RuntimeError, match="outside"):
        workpool.current_task()


def test_current_task_in_a_done_callback_on_the_worker_is_outside_any_task() -> None:
    """A done-callback that the worker thread runs after the task is outside any task."""
    release = threading.Event()
    seen: list[tuple[str, str]] = []

    def look(task: workpool.Task[None]) -> None:
        try:
            workpool.current_task()
        except RuntimeError as error:
            seen.append((threading.current_thread().name, str(error)))

    with workpool.Pool(1) as pool:
        task = pool.submit(release.wait, 10)
        task.add_done_callback(look)  # before it ends: the worker runs it
        release.set()
        task.result(timeout=10)
        wait_until(lambda: bool(seen))
    assert seen[0][0].startswith("workpool-") and "outside" in seen[0][1]


def test_a_thread_a_task_starts_with_its_context_sees_the_task() -> None:
    """asyncio.to_thread inside a task runs in another thread with the task's context."""

    def in_a_thread() -> tuple[str, str]:
        async def ask() -> str:
            return await asyncio.to_thread(lambda: workpool.current_task().id)

        return workpool.current_task().id, asyncio.run(ask())

    with workpool.Pool(1) as pool:
        task = pool.submit(in_a_thread)
        assert task.result(timeout=10) == (task.id, task.id)


def test_a_context_a_task_copied_goes_on_naming_it_after_it_ended() -> None:
    """A thread running a context that task X copied names X, even once X has ended and its
    worker runs Y, as a per-task context variable would; Y itself sees Y."""
    asked, answered = threading.Event(), threading.Event()
    end_x, y_runs, end_y = threading.Event(), threading.Event(), threading.Event()
    answers: list[str] = []

    def reader() -> None:
        for _ in range(2):
            assert asked.wait(10)
            asked.clear()
            answers.append(workpool.current_task().id)
            answered.set()

    def x() -> threading.Thread:
        helper = threading.Thread(target=contextvars.copy_context().run, args=(reader,))
        helper.start()
        assert end_x.wait(10)
        return helper

    def y() -> str:
        y_runs.set()
        assert end_y.wait(10)
        return workpool.current_task().id

    with workpool.Pool(1) as pool:
        task_x = pool.submit(x)
        asked.set()  # while X runs
        assert answered.wait(10)
        answered.clear()
        end_x.set()
        helper = task_x.result(timeout=10)
        task_y = pool.submit(y)
        assert y_runs.wait(10)
        asked.set()  # X has ended; its worker runs Y
        assert answered.wait(10)
        end_y.set()
        assert task_y.result(timeout=10) == task_y.id
        helper.join(10)
    assert answers == [task_x.id, task_x.id]


def test_cancel_running_task_signals_its_context() -> None:
    """Cancelling a running task sets its context; check() then ends it CANCELLED."""
    started = threading.Event()

    def worker() -> None:
        started.set()
        ctx = workpool.current_task()
        while True:
            ctx.check()
            time.sleep(0.001)

    with workpool.Pool(1) as pool:
        task = pool.submit(worker)
        assert started.wait(10)
        assert task.cancel() is False  # not cancelled yet: asked to stop
        with pytest.raises(CancelledError):
            task.result(timeout=10)
        assert task.state is TaskState.CANCELLED and pool.stats().cancelled == 1


def test_nested_submit_to_a_full_queue_raises_instead_of_deadlocking() -> None:
    """A task that submits to its own full pool gets QueueFull, not a silent deadlock."""
    holder = threading.Event()
    started = threading.Event()

    with workpool.Pool(1, queue_size=1) as pool:

        def submits_into_own_full_pool() -> None:
            started.set()
            holder.wait(30)
            pool.submit(sum, [1])

        task = pool.submit(submits_into_own_full_pool)
        assert started.wait(10)
        pool.submit(sum, [0])  # fills the queue while the only worker is busy
        holder.set()
        with pytest.raises(QueueFull, match="deadlock"):
            task.result(timeout=10)


def test_nested_submit_with_room_runs() -> None:
    """Submitting from inside a task is fine while the queue has room."""
    with workpool.Pool(2) as pool:

        def parent() -> int:
            return pool.submit(sum, [1, 2]).result(timeout=10)

        assert pool.submit(parent).result(timeout=10) == 3


def test_with_block_keyboard_interrupt_returns_promptly() -> None:
    """Ctrl-C (KeyboardInterrupt) in a with block cancels queued work and does not wait."""
    release = threading.Event()
    with pytest.raises(KeyboardInterrupt), workpool.Pool(1) as pool:
        running = pool.submit(release.wait, 30)
        wait_until(lambda: pool.stats().busy == 1)
        queued = [pool.submit(sum, [i]) for i in range(100)]
        raise KeyboardInterrupt
    assert all(t.cancelled() for t in queued)
    assert not running.done()
    release.set()
    assert running.result(timeout=10) is True


def test_real_ctrl_c_in_with_block_exits_promptly(tmp_path: object) -> None:
    """A real SIGINT while the main thread waits in the with block ends the program quickly."""
    script = textwrap.dedent(
        """
        import os, signal, threading, time, workpool
        release = threading.Event()
        def hang():
            release.wait()
        try:
            with workpool.Pool(2) as pool:
                for _ in range(50):
                    pool.submit(hang)
                threading.Timer(0.2, os.kill, (os.getpid(), signal.SIGINT)).start()
                pool.wait()
        except KeyboardInterrupt:
            print("interrupted", pool.stats().cancelled)
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == ["interrupted", "48"]
    assert time.monotonic() - started < 10


def test_workers_are_named_daemon_threads() -> None:
    """Worker threads carry the pool's prefix and never keep the interpreter alive."""

    def me() -> tuple[str, bool]:
        thread = threading.current_thread()
        return thread.name, thread.daemon

    with workpool.Pool(1, thread_name_prefix="resizer") as pool:
        name, daemon = pool.submit(me).result(timeout=10)
    assert name.startswith("resizer-") and daemon


def test_pool_drains_at_interpreter_exit() -> None:
    """A pool never shut down still finishes its tasks before the interpreter exits."""
    script = textwrap.dedent(
        """
        import threading, workpool
        pool = workpool.Pool(1)
        gate = threading.Event()
        pool.submit(gate.wait)
        pool.submit(print, "ran")
        gate.set()
        """
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    assert result.stdout.strip() == "ran", result.stderr


@pytest.mark.skipif(os.name != "posix", reason="signals")
def test_sigterm_default_still_terminates() -> None:
    """workpool installs no signal handler of its own in a plain program."""
    script = "import workpool, time; p = workpool.Pool(1); print('up', flush=True); time.sleep(30)"
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "up"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == -signal.SIGTERM


def test_wait_from_inside_a_task_raises_instead_of_hanging() -> None:
    """pool.wait() in one of the pool's own tasks would wait for itself: RuntimeError."""
    with workpool.Pool(1) as pool:
        task = pool.submit(lambda: pool.wait(timeout=5))
        with pytest.raises(RuntimeError, match="inside a task"):
            task.result(timeout=10)


def test_shutdown_from_inside_a_task_returns() -> None:
    """shutdown() in a task closes the pool and returns; the pool drains afterwards."""
    pool = workpool.Pool(1)
    report = pool.submit(lambda: pool.shutdown(wait=True)).result(timeout=10)
    assert report.completed is False and pool.stats().closed
    assert pool.shutdown().completed


def test_a_thread_that_cannot_start_does_not_lose_the_task(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """If a worker thread cannot start, submit still succeeds and the task runs later."""
    real_start = threading.Thread.start
    failures = [RuntimeError("can't start new thread")]

    def flaky_start(self: threading.Thread) -> None:
        if self.name.startswith("workpool-") and failures:
            raise failures.pop()
        real_start(self)

    monkeypatch.setattr(threading.Thread, "start", flaky_start)
    with workpool.Pool(1) as pool:
        first = pool.submit(sum, [1, 2])  # its worker fails to start: logged, task queued
        assert "could not start a worker" in caplog.text
        second = pool.submit(sum, [3, 4])  # this event starts one
        assert (first.result(timeout=10), second.result(timeout=10)) == (3, 7)


def test_initializer_failing_in_a_later_worker_still_shuts_down() -> None:
    """A pool broken by its second worker's initializer wakes the first to retire."""
    calls = itertools.count()
    barrier = threading.Barrier(2, timeout=10)

    def init() -> None:
        if next(calls) == 1:
            raise ValueError("second worker")

    pool = workpool.Pool(2, initializer=init)
    first = pool.submit(abs, -1)
    assert first.result(timeout=10) == 1
    wait_until(lambda: pool.stats().idle == 1)
    pool.submit(barrier.wait)  # wakes the first worker, or fails with the pool
    pool.submit(barrier.wait)  # starts the second worker, whose initializer fails
    wait_until(lambda: pool._core.broken_error is not None)
    barrier.abort()  # if the first worker took a task before the pool broke, it ends now
    assert pool.shutdown(timeout=10).completed


def test_wait_from_a_done_callback_does_not_wait_for_its_own_task() -> None:
    """A done-callback may call pool.wait(): it does not wait for the task it belongs to."""
    with workpool.Pool(1) as pool:
        waited: list[bool] = []
        pool.pause()  # so that the callback is in place before the task runs
        task = pool.submit(abs, -1)
        task.add_done_callback(lambda _: waited.append(pool.wait(timeout=5)))
        pool.resume()
        assert pool.wait(timeout=10)
    assert waited == [True]


def test_wait_from_a_done_callback_after_it_settled_another_task() -> None:
    """A done-callback that cancels another task (whose own callbacks run inside it) may still
    call pool.wait() without waiting for the task it belongs to."""
    with workpool.Pool(1) as pool:
        started, release = threading.Event(), threading.Event()
        first = pool.submit(lambda: (started.set(), release.wait(10)))
        assert started.wait(10)
        pool.pause()  # so that the second waits, cancellable, when the first ends
        second = pool.submit(abs, -1)
        second.add_done_callback(lambda _: None)
        waited: list[bool] = []
        first.add_done_callback(lambda _: (second.cancel(), waited.append(pool.wait(timeout=5))))
        release.set()
        assert pool.wait(timeout=10)
    assert second.cancelled() and waited == [True]


def test_submit_waits_for_a_pool_lock_held_long() -> None:
    """A submit that finds the pool's lock held past its spins blocks, then goes through."""
    with workpool.Pool(1) as pool:
        lock = pool._core.lock
        submitted: list[workpool.Task[int]] = []
        lock.acquire()
        try:
            submitter = threading.Thread(target=lambda: submitted.append(pool.submit(abs, -7)))
            submitter.start()
            submitter.join(0.2)  # it spins, then blocks: it cannot get past a held lock
            assert not submitted
        finally:
            lock.release()
        submitter.join(10)
        assert submitted[0].result(timeout=10) == 7


def test_a_fault_in_a_worker_thread_fails_its_task_and_the_pool_goes_on(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of the pool's own in a worker thread's loop, outside the task (here: noting the
    current task raises), fails the task it holds with WorkerCrashed, logged, instead of
    leaving it waiting forever; a new worker takes the next tasks."""
    faults = [RuntimeError("injected")]

    class FailingCell(thread_backend.WorkerCell):
        __slots__ = ()

        def __setattr__(self, name: str, value: Any) -> None:
            if name == "running" and value is not None and faults:
                raise faults.pop()
            super().__setattr__(name, value)

    monkeypatch.setattr(thread_backend, "WorkerCell", FailingCell)
    with workpool.Pool(1) as pool:
        with pytest.raises(workpool.WorkerCrashed, match="its thread failed: RuntimeError"):
            pool.submit(abs, -1).result(timeout=10)
        assert [pool.submit(abs, -i).result(timeout=10) for i in range(3)] == [0, 1, 2]
        assert pool.stats().crashed == 1
    assert "the thread of worker" in caplog.text


def test_a_fault_in_an_idle_worker_thread_loses_no_later_task(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The same fault while the worker holds no task (here: its parking raises) fails nothing;
    the next task gets a new worker."""
    parked = threading.Event()
    real_park = Parker.park
    faults = [RuntimeError("injected")]

    def failing_park(self: Parker, host: Any, slot: Any) -> Any:
        if faults:
            parked.set()
            raise faults.pop()
        return real_park(self, host, slot)

    monkeypatch.setattr(Parker, "park", failing_park)
    with workpool.Pool(1) as pool:
        assert pool.submit(abs, -1).result(timeout=10) == 1
        assert parked.wait(10)
        wait_until(lambda: "the thread of worker" in caplog.text)
        assert [pool.submit(abs, -i).result(timeout=10) for i in range(3)] == [0, 1, 2]
        assert pool.stats().failed == 0


def test_a_fault_after_a_task_is_counted_still_resolves_it(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A fault of the pool's own after a task was counted done (here: starting the worker that
    replaces a recycled one raises) still resolves that task: its result() returns instead of
    waiting forever."""
    real_dispatch = PoolCore._dispatch
    faults = [RuntimeError("injected")]

    def failing_dispatch(self: PoolCore, wakeups: Any) -> None:
        if faults and threading.current_thread().name.startswith("workpool-"):
            raise faults.pop()
        real_dispatch(self, wakeups)

    monkeypatch.setattr(PoolCore, "_dispatch", failing_dispatch)
    pool = workpool.Pool(1, max_tasks_per_worker=1)
    gate = threading.Event()
    first = pool.submit(gate.wait, 10)
    first.add_done_callback(lambda _: None)  # watched: resolved after the lock, not under it
    second = pool.submit(abs, -2)  # queued: the worker that replaces the first one runs it
    gate.set()
    try:
        assert first.result(timeout=10) is True
        wait_until(lambda: "the thread of worker" in caplog.text)
        assert not faults
    finally:
        pool.shutdown(wait=False, cancel_futures=True)  # the second waits for a lost wake-up
    assert second.cancelled()


def test_a_task_ending_while_the_pool_lock_is_held_waits_for_it() -> None:
    """A worker that finds the pool's lock taken as its task ends waits for it, and reports
    the task once it is free: no result lands outside the lock."""
    finish = threading.Event()
    with workpool.Pool(1) as pool:
        task = pool.submit(lambda: finish.wait(10) and 7)
        wait_until(lambda: pool.stats().busy == 1)
        (worker,) = pool._core.backend._threads.values()
        assert worker.ident is not None
        lock = pool._core.lock
        with lock:
            finish.set()

            def reporting() -> bool:
                frame = sys._current_frames().get(worker.ident)
                return frame is not None and frame.f_code.co_name in ("done", "yield_to_holder")

            wait_until(reporting)
            assert not task.done()
        assert task.result(timeout=10) == 7


def test_yield_to_holder_returns_once_the_lock_is_free_or_gives_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Yielding spins with sleep(0), then naps, and returns as soon as the holder lets go; a
    lock held throughout is left to a blocking take after a bounded number of sleeps."""
    lock = threading.Lock()
    slept: list[float] = []
    release_after: list[int] = []

    def sleep(seconds: float) -> None:  # the holder runs while the caller sleeps
        slept.append(seconds)
        if len(slept) in release_after:
            lock.release()

    monkeypatch.setattr(locking.time, "sleep", sleep)
    lock.acquire()
    release_after.append(locking._SPINS + 2)  # let go during the second nap
    yield_to_holder(lock)
    assert not lock.locked()
    assert slept == [0] * locking._SPINS + [locking._NAP] * 2

    slept.clear()
    release_after.clear()
    with lock:  # held throughout
        yield_to_holder(lock)
        assert lock.locked()
    assert slept == [0] * locking._SPINS + [locking._NAP] * locking._NAPS


def test_a_ctrl_c_before_an_unsettled_offer_is_settled_takes_the_task_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The only worker turned idle while a task went in without the lock, and Ctrl-C came
    before the submitter could settle it under the lock: nobody would ever wake that worker
    for it. The submitter takes it back: submit raised, so the task counts nowhere and
    observers hear it was rejected."""

    class Rejections(workpool.Observer):
        def __init__(self) -> None:
            self.rejected: list[tuple[workpool.Task[Any], type[BaseException]]] = []

        def task_rejected(self, task: workpool.Task[Any], error: BaseException) -> None:
            self.rejected.append((task, type(error)))

    def interrupted(self: Scheduler, task: workpool.Task[Any]) -> bool:
        raise KeyboardInterrupt

    release = threading.Event()
    observer = Rejections()
    with workpool.Pool(1, observers=[observer]) as pool:
        engine = pool._core.engine
        busy = pool.submit(release.wait, 10)
        wait_until(lambda: pool.stats().busy == 1)

        class WorkerTurnsIdleMeanwhile(collections.deque[Any]):
            def append(self, task: Any) -> None:
                release.set()
                wait_until(lambda: pool.stats().idle == 1)
                super().append(task)

        engine.inbox = WorkerTurnsIdleMeanwhile()
        monkeypatch.setattr(Scheduler, "settle", interrupted)
        with pytest.raises(KeyboardInterrupt):
            pool.submit(int)
        monkeypatch.undo()
        assert busy.result(timeout=10) is True
        assert not engine.inbox and [error for _, error in observer.rejected] == [KeyboardInterrupt]
        stats = pool.stats()
        assert (stats.submitted, stats.queued, stats.idle) == (1, 0, 1)
        assert pool.submit(int, "7").result(timeout=10) == 7 and pool.wait(10)


def test_shutdown_never_meets_a_worker_thread_listed_but_not_started() -> None:
    """A replacement may start as the pool shuts down: join must wait for its start, not try
    to join a thread that has not started (which raises)."""
    with workpool.Pool(1) as pool:
        stage = JoinAsAWorkerStarts(pool._core.backend, "_threads")
        assert pool.submit(int, "3").result(timeout=10) == 3
        assert stage.finished.wait(10)
        stage.joiner.join(10)
        assert stage.errors == []


def test_join_threads_joins_a_replacement_started_as_a_thread_leaves() -> None:
    """A thread that starts its replacement on its way out (as a worker lost while the pool was
    open may) has it joined too; one left listed after it ended is joined once, not forever."""
    read = threading.Event()

    class Starting:
        """The listing's lock; the first time it is let go (join has read the listing), the
        listed thread goes on to leave."""

        def __init__(self) -> None:
            self.lock = threading.Lock()

        def __enter__(self) -> None:
            self.lock.acquire()

        def __exit__(self, *exc: object) -> None:
            self.lock.release()
            read.set()

    starting = Starting()
    release = threading.Event()
    threads: dict[int, threading.Thread] = {}
    replacement = threading.Thread(target=release.wait, args=(10,))

    def leave() -> None:
        assert read.wait(10)
        with starting:
            threads[2] = replacement
            replacement.start()
        del threads[1]

    threads[1] = threading.Thread(target=leave)
    threads[1].start()
    assert join_threads(threads, starting, 0.05) is False
    assert replacement.is_alive()  # it was joined, and still runs
    release.set()
    assert join_threads(threads, starting, 10) is True
    assert threads == {2: replacement} and not replacement.is_alive()  # joined once
