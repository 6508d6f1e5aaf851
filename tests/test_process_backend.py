"""What only processes do: crashes, hard timeouts, pickling faults, memory limits, signals.

The fault matrix: each fault expects one specific outcome, the pool keeps its capacity, and
the stats account for every task. Task functions live at module level so that they pickle.
"""

from __future__ import annotations

import contextlib
import ctypes
import multiprocessing.process
import os
import pickle
import resource
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Iterator
from concurrent import futures
from concurrent.futures import CancelledError
from multiprocessing.managers import SyncManager
from pathlib import Path
from typing import Any

import pytest
from helpers import JoinAsAWorkerStarts, assert_accounted, wait_until

import workpool
from workpool import TaskState, TaskTimeout, WorkerCrashed
from workpool._backends import _pickling
from workpool._backends import process as process_backend
from workpool._backends._child import Frames, send_now
from workpool._backends._handle import ChildHandle
from workpool._engine import scheduler
from workpool._options import DEFAULT_OPTIONS
from workpool._task import Task


@pytest.fixture
def pool() -> Iterator[workpool.Pool]:
    """Two worker processes on the default start method."""
    p = workpool.Pool(2, backend="process", terminate_grace=0.2)
    yield p
    p.shutdown(wait=True, cancel_futures=True)


# -- tasks and payloads that fail on purpose ----------------------------------------------------


def pid() -> int:
    return os.getpid()


def exit_with(code: int) -> None:
    os._exit(code)


def kill_self(signum: int) -> None:
    os.kill(os.getpid(), signum)


def segfault() -> None:
    ctypes.string_at(0)


def sleep(seconds: float) -> None:
    time.sleep(seconds)


def ignore_sigterm_and_sleep(seconds: float) -> None:
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    time.sleep(seconds)


def boom() -> None:
    raise ValueError("boom from the worker")


def return_value(value: Any) -> Any:
    return value


def start_a_fork_pool_inside(value: int) -> Any:
    with workpool.Pool(1, backend="process", start_method="fork") as pool:
        return pool.submit(return_value, value + 1).result(timeout=20)


def return_a_lock() -> threading.Lock:
    return threading.Lock()


def raise_unpicklable() -> None:
    error = ValueError("carries a lock")
    error.lock = threading.Lock()  # type: ignore[attr-defined]
    raise error


def limit_memory(limit: int) -> None:
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 2**20))


_hoard: list[bytearray] = []


def hoard(megabytes: int) -> int:
    _hoard.append(bytearray(megabytes * 2**20))
    return os.getpid()


def crash_first_attempt(attempts: Any) -> str:
    attempts.append(1)
    if len(attempts) == 1:
        os._exit(7)
    return "second time lucky"


def _raise_on_load() -> None:
    raise RuntimeError("refuses to unpickle")


class FailsToLoad:
    """Pickles fine; raises when unpickled."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (_raise_on_load, ())


class ExitsOnLoad:
    """Pickles fine; the process that unpickles it exits."""

    def __reduce__(self) -> tuple[Any, ...]:
        return (os._exit, (5,))


class ExitsOnDump:
    """The process that pickles it exits."""

    def __reduce__(self) -> tuple[Any, ...]:
        os._exit(6)


def make_fails_to_load() -> FailsToLoad:
    return FailsToLoad()


def make_exits_on_dump() -> ExitsOnDump:
    return ExitsOnDump()


# -- crashes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "args", "exitcode"),
    [
        (exit_with, (3,), 3),
        (kill_self, (signal.SIGKILL,), -signal.SIGKILL),
        (kill_self, (signal.SIGTERM,), -signal.SIGTERM),
        (segfault, (), -signal.SIGSEGV),
    ],
    ids=["exit", "sigkill", "sigterm", "segfault"],
)
def test_crash_fails_only_its_task_and_the_worker_is_replaced(
    pool: workpool.Pool, fault: Any, args: tuple[Any, ...], exitcode: int
) -> None:
    """A worker that dies under a task fails it with WorkerCrashed; the pool goes on."""
    crashed = pool.submit(fault, *args)
    with pytest.raises(WorkerCrashed) as info:
        crashed.result(timeout=30)
    assert info.value.exitcode == exitcode and info.value.task_id == crashed.id
    assert info.value.pid is not None and crashed.state is TaskState.FAILED
    assert pickle.loads(pickle.dumps(info.value)).exitcode == exitcode
    assert [t.result(timeout=30) for t in [pool.submit(return_value, i) for i in range(4)]] == [
        0,
        1,
        2,
        3,
    ]
    stats = pool.stats()
    assert stats.crashed == 1 and stats.failed == 1 and stats.succeeded == 4
    assert stats.workers == 2
    assert_accounted(stats)


def test_crash_is_retried_by_the_retry_policy(pool: workpool.Pool, manager: SyncManager) -> None:
    """With retries, a crashed attempt runs again on a fresh worker."""
    attempts = manager.list()
    task = pool.options(retries=1).submit(crash_first_attempt, attempts)
    assert task.result(timeout=30) == "second time lucky"
    stats = pool.stats()
    assert task.attempts == 2 and stats.retried == 1 and stats.crashed == 0
    assert_accounted(stats)


def test_worker_that_dies_while_idle_is_replaced_without_failing_a_task(
    make_process_pool: Any,
) -> None:
    """A worker killed while it waits for work is replaced before the next task is sent."""
    pool = make_process_pool(workers=1)
    victim = pool.submit(pid).result(timeout=30)
    wait_until(lambda: pool.stats().idle == 1)
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: _dead(victim))
    assert pool.submit(pid).result(timeout=30) != victim
    stats = pool.stats()
    assert stats.failed == 0 and stats.crashed == 0 and stats.succeeded == 2


# -- pickling faults ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fn", "args", "error", "match"),
    [
        (return_value, (threading.Lock(),), TypeError, "lock"),
        (return_value, (FailsToLoad(),), RuntimeError, "refuses to unpickle"),
        (return_a_lock, (), pickle.PicklingError, "cannot pickle the task's result"),
        (raise_unpicklable, (), pickle.PicklingError, "exception ValueError"),
        (make_fails_to_load, (), pickle.UnpicklingError, "refuses to unpickle"),
    ],
    ids=["task-pickle", "task-unpickle", "result-pickle", "error-pickle", "result-unpickle"],
)
def test_pickling_fault_fails_only_its_task(
    pool: workpool.Pool, fn: Any, args: tuple[Any, ...], error: type[Exception], match: str
) -> None:
    """A task or result that fails to (un)pickle on either side is that task's error."""
    task = pool.submit(fn, *args)
    with pytest.raises(error, match=match):
        task.result(timeout=30)
    assert pool.submit(return_value, 1).result(timeout=30) == 1
    stats = pool.stats()
    assert stats.failed == 1 and stats.crashed == 0 and stats.succeeded == 1
    assert_accounted(stats)


@pytest.mark.parametrize(
    ("fn", "args", "exitcode"),
    [(return_value, (ExitsOnLoad(),), 5), (make_exits_on_dump, (), 6)],
    ids=["exit-at-task-unpickle", "exit-at-result-pickle"],
)
def test_exit_while_pickling_is_a_crash(
    pool: workpool.Pool, fn: Any, args: tuple[Any, ...], exitcode: int
) -> None:
    """A worker that exits while unpickling the task or pickling the result crashes that task."""
    task = pool.submit(fn, *args)
    with pytest.raises(WorkerCrashed) as info:
        task.result(timeout=30)
    assert info.value.exitcode == exitcode
    assert pool.submit(return_value, 1).result(timeout=30) == 1
    assert_accounted(pool.stats())


def test_task_exception_carries_the_remote_traceback(pool: workpool.Pool) -> None:
    """result() raises the task's own exception, with the worker's traceback as its cause."""
    with pytest.raises(ValueError, match="boom from the worker") as info:
        pool.submit(boom).result(timeout=30)
    cause = info.value.__cause__
    assert isinstance(cause, _pickling.RemoteTraceback)
    assert "in boom" in cause.tb and "Traceback" in str(cause)


def test_lambdas_and_closures_run_in_workers(pool: workpool.Pool) -> None:
    """Lambdas and closures travel with cloudpickle."""
    offset = 10
    assert pool.submit(lambda x: x + offset, 5).result(timeout=30) == 15
    assert list(pool.map(lambda x: x * offset, range(3))) == [0, 10, 20]


def version() -> str:
    return "first"


def test_a_function_goes_by_name_only_while_its_name_leads_to_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A module-level function is sent as its name, pickled once; once its module's name is
    rebound to another function (a redefinition), the old one is pickled anew, as pickle would
    (whole, by cloudpickle), never sent under the name that now means something else."""
    first = version
    assert _pickling.by_name(first) == pickle.dumps(first, pickle.HIGHEST_PROTOCOL)
    assert _pickling.by_name(first) is _pickling.by_name(first)  # kept

    def second() -> str:
        return "second"

    second.__qualname__ = second.__name__ = "version"
    monkeypatch.setattr(sys.modules[__name__], "version", second)
    assert _pickling.by_name(first) is None
    assert _pickling.by_name(second) == pickle.dumps(second, pickle.HIGHEST_PROTOCOL)
    assert _pickling.by_name(pid) is not None
    assert _pickling.by_name(abs) == pickle.dumps(abs, pickle.HIGHEST_PROTOCOL)  # C
    assert _pickling.by_name(lambda: None) is None  # not module-level

    def message(fn: Callable[..., Any]) -> tuple[Any, ...]:
        """What a task of ``fn`` sends its worker (fn, name, args, kwargs, about)."""
        return pickle.loads(_pickling.task_message(Task(fn, (), {}, DEFAULT_OPTIONS)))  # type: ignore[no-any-return]

    assert message(pid)[:2] == (None, pickle.dumps(pid, pickle.HIGHEST_PROTOCOL))
    whole, name = message(first)[:2]
    assert name is None and whole is not first and whole() == "first"  # by value
    with workpool.Pool(1, backend="process") as pool:
        assert pool.submit(first).result(timeout=30) == "first"
        assert pool.submit(pid).result(timeout=30) == pool.submit(pid).result(timeout=30)
        assert pool.submit(abs, -3).result(timeout=30) == 3


def test_missing_cloudpickle_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without cloudpickle, a lambda fails with a message naming workpool[process]."""
    monkeypatch.setitem(sys.modules, "cloudpickle", None)
    with pytest.raises(pickle.PicklingError, match=r"workpool\[process\]"):
        _pickling.dumps(lambda: None)


# -- hard timeouts and cancellation ---------------------------------------------------------------


def test_timeout_kills_a_hung_task_and_replaces_its_worker(pool: workpool.Pool) -> None:
    """A task past its timeout fails with TaskTimeout; its process is killed and replaced."""
    hung = pool.options(timeout=0.2).submit(sleep, 60)
    with pytest.raises(TaskTimeout):
        hung.result(timeout=30)
    assert hung.state is TaskState.TIMED_OUT
    wait_until(lambda: pool.stats().abandoned == 0)
    pids = {t.result(timeout=30) for t in [pool.submit(pid) for _ in range(6)]}
    stats = pool.stats()
    assert stats.workers == 2 and stats.timed_out == 1 and stats.succeeded == 6
    assert len(pids) <= 2
    assert_accounted(stats)


def test_timeout_kills_a_task_that_ignores_sigterm(pool: workpool.Pool) -> None:
    """A task that ignores SIGTERM is killed after the grace period."""
    hung = pool.options(timeout=0.2).submit(ignore_sigterm_and_sleep, 60)
    with pytest.raises(TaskTimeout):
        hung.result(timeout=30)
    wait_until(lambda: pool.stats().abandoned == 0)
    assert pool.submit(return_value, 2).result(timeout=30) == 2


def test_cancel_stops_a_running_task(pool: workpool.Pool) -> None:
    """Cancelling a running process task kills its worker; the task ends CANCELLED."""
    running = pool.submit(sleep, 60)
    wait_until(lambda: running.running())
    running.cancel()
    with pytest.raises(CancelledError):
        running.result(timeout=30)
    assert running.state is TaskState.CANCELLED
    assert pool.submit(return_value, 3).result(timeout=30) == 3
    stats = pool.stats()
    assert stats.cancelled == 1 and stats.crashed == 0 and stats.failed == 0
    assert_accounted(stats)


# -- memory ---------------------------------------------------------------------------------------


def test_memory_blow_up_fails_its_task(make_process_pool: Any) -> None:
    """A task that exhausts its worker's memory limit fails with MemoryError; the pool goes on."""
    pool = make_process_pool(initializer=limit_memory, initargs=(1024 * 2**20,))
    with pytest.raises(MemoryError):
        pool.submit(allocate, 2048).result(timeout=30)
    assert pool.submit(allocate, 1).result(timeout=30) == 2**20
    assert_accounted(pool.stats())


def test_max_memory_per_worker_recycles_a_big_worker(make_process_pool: Any) -> None:
    """A worker whose RSS passed max_memory_per_worker after a task is replaced."""
    pool = make_process_pool(workers=1, max_memory_per_worker=200 * 2**20)
    small = pool.submit(hoard, 1).result(timeout=30)
    assert pool.submit(pid).result(timeout=30) == small
    big = pool.submit(hoard, 300).result(timeout=30)
    assert big == small
    assert pool.submit(pid).result(timeout=30) != big


@pytest.fixture
def make_process_pool() -> Iterator[Any]:
    pools: list[workpool.Pool] = []

    def make(workers: int = 2, **kwargs: Any) -> workpool.Pool:
        pools.append(workpool.Pool(workers, backend="process", **kwargs))
        return pools[-1]

    yield make
    for p in pools:
        p.shutdown(wait=True, cancel_futures=True)


# -- arguments ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs",
    [
        {"start_method": "teleport"},
        {"max_memory_per_worker": 0},
        {"max_memory_per_worker": "1GB"},
        {"terminate_grace": -1},
        {"spare_worker": "yes"},
    ],
)
def test_bad_process_options_are_rejected(kwargs: dict[str, Any]) -> None:
    """Bad process options raise ValueError at once."""
    with pytest.raises(ValueError):
        workpool.Pool(1, backend="process", **kwargs)


def test_default_workers_is_the_cpu_count() -> None:
    """Without a worker count, a process pool has one worker per CPU."""
    with workpool.Pool(backend="process") as pool:
        assert pool.stats().max_workers == (os.cpu_count() or 1)


# -- the parent's signals -------------------------------------------------------------------------

_PARENT = """
import os, sys, time
import workpool

def hang(directory):
    open(os.path.join(directory, str(os.getpid())), "w").close()
    time.sleep(600)

if __name__ == "__main__":
    directory = sys.argv[1]
    with workpool.Pool(2, backend="process", start_method=sys.argv[2]) as pool:
        for _ in range(2):
            pool.submit(hang, directory)
        while len(os.listdir(directory)) < 2:
            time.sleep(0.01)
        print("ready", flush=True)
        pool.wait()
"""


def _dead(pid: int) -> bool:
    """Gone, or a zombie left to whoever adopted it (the parent that would reap it is dead)."""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] in "ZX"
    except OSError:
        return True


@pytest.mark.parametrize("start_method", ["forkserver", "fork", "spawn"])
@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
def test_parent_signal_leaves_no_worker_behind(
    tmp_path: Path, signum: int, start_method: str
) -> None:
    """Ctrl-C, SIGTERM or SIGKILL of the parent: it exits promptly and its workers go too."""
    script = tmp_path / "parent.py"
    script.write_text(textwrap.dedent(_PARENT))
    directory = tmp_path / "pids"
    directory.mkdir()
    parent = subprocess.Popen(
        [sys.executable, str(script), str(directory), start_method],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert parent.stdout is not None
        assert parent.stdout.readline() == "ready\n", parent.stderr.read()  # type: ignore[union-attr]
        workers = [int(name) for name in os.listdir(directory)]
        started = time.monotonic()
        parent.send_signal(signum)
        parent.communicate(timeout=30)
        assert parent.returncode != 0
        if signum == signal.SIGINT:
            assert time.monotonic() - started < 10  # promptly, not after the hung tasks
        wait_until(lambda: all(_dead(w) for w in workers), timeout=20)
    finally:
        parent.kill()
        parent.wait()


def describe_context() -> tuple[str, int, float | None]:
    ctx = workpool.current_task()
    return ctx.id, ctx.attempt, ctx.deadline


def wait_for_deadline() -> None:
    ctx = workpool.current_task()
    while True:
        ctx.check()  # raises TaskTimeout past the deadline, in the worker process
        time.sleep(0.001)


def test_current_task_works_in_a_worker_process(pool: workpool.Pool) -> None:
    """A process task sees its own id, attempt and deadline through current_task()."""
    task = pool.options(timeout=60).submit(describe_context)
    task_id, attempt, deadline = task.result(timeout=60)
    assert task_id == task.id and attempt == 1
    assert deadline is not None and deadline > time.monotonic()


def test_check_in_a_worker_process_stops_at_the_deadline(pool: workpool.Pool) -> None:
    """check() in a process task raises TaskTimeout at its deadline: it ends TIMED_OUT."""
    task = pool.options(timeout=0.2).submit(wait_for_deadline)
    with pytest.raises(workpool.TaskTimeout):
        task.result(timeout=60)
    assert task.state is workpool.TaskState.TIMED_OUT


# -- tasks sent ahead ---------------------------------------------------------------------------


def wait_then(started: Any, release: Any, value: Any, exit_code: int | None = None) -> Any:
    started.set()
    release.wait(60)
    if exit_code is not None:
        os._exit(exit_code)
    return value


def record(ran: Any, value: Any) -> Any:
    ran.append(value)
    return value


def sigterm_raises_then_wait(started: Any, release: Any) -> str:
    def raise_on_sigterm(signum: int, frame: Any) -> None:
        raise RuntimeError("SIGTERM")

    signal.signal(signal.SIGTERM, raise_on_sigterm)
    started.set()
    release.wait(60)
    return "survived"


def sent_ahead(pool: workpool.Pool) -> list[Any]:
    """The tasks already in a worker's pipe behind its running one."""
    children = pool._core.backend._children.values()  # type: ignore[attr-defined]
    return [task for child in children for task, _, _ in child.sent]


def blocked_with_ahead(
    pool: workpool.Pool,
    manager: SyncManager,
    names: str = "B",
    block: Callable[[Any, Any], Any] | None = None,
) -> tuple[Any, list[Any], Any, Any]:
    """A worker blocked in a task, with the next tasks (one per name in ``names``, which
    record their runs) sent ahead. More than one goes ahead only if the test makes
    ``scheduler.AHEAD_SECONDS`` long.

    ``block(started, release)`` submits the blocking task: by default one that sets
    ``started``, waits for ``release`` and returns "done"."""
    started, release, ran = manager.Event(), manager.Event(), manager.list()
    pool.submit(abs, -1).result(timeout=30)  # short, as a task must be for the next to go ahead
    pool.pause()  # all queued when the worker takes the first: the others go ahead
    if block is None:
        blocker = pool.submit(wait_then, started, release, "done")
    else:
        blocker = block(started, release)
    behind = [pool.submit(record, ran, name) for name in names]
    pool.resume()
    assert started.wait(30)
    wait_until(lambda: sent_ahead(pool) == behind)
    return blocker, behind, release, ran


def blocked_with_one_ahead(
    pool: workpool.Pool, manager: SyncManager, block: Callable[[Any, Any], Any] | None = None
) -> tuple[Any, ...]:
    """``blocked_with_ahead`` with one task, "behind", sent ahead."""
    blocker, (behind,), release, ran = blocked_with_ahead(pool, manager, ["behind"], block)
    return blocker, behind, release, ran


def test_task_sent_ahead_is_cancelled_before_it_starts(
    make_process_pool: Any, manager: SyncManager
) -> None:
    """A task in a worker's pipe but not started cancels at once and never runs there."""
    pool = make_process_pool(workers=1)
    blocker, behind, release, ran = blocked_with_one_ahead(pool, manager)
    assert behind.cancel() and behind.state is TaskState.CANCELLED
    release.set()
    assert blocker.result(timeout=30) == "done"
    assert pool.submit(record, ran, "after").result(timeout=30) == "after"
    assert list(ran) == ["after"]
    assert_accounted(pool.stats())


def test_task_sent_ahead_is_taken_by_a_worker_that_frees_up(
    make_process_pool: Any, manager: SyncManager
) -> None:
    """A free worker takes over a task waiting in a busy worker's pipe instead of idling."""
    pool = make_process_pool(workers=2)
    started, release, ran = manager.Event(), manager.Event(), manager.list()
    short_started, short_release = manager.Event(), manager.Event()
    [t.result(timeout=30) for t in [pool.submit(abs, -i) for i in range(4)]]
    short = pool.submit(wait_then, short_started, short_release, "short")
    assert short_started.wait(30)
    pool.pause()  # then the other worker takes the blocker with the next task queued
    blocker = pool.submit(wait_then, started, release, "done")
    behind = pool.submit(record, ran, "behind")
    pool.resume()
    assert started.wait(30)
    wait_until(lambda: sent_ahead(pool) == [behind])
    short_release.set()
    assert short.result(timeout=30) == "short"
    assert behind.result(timeout=30) == "behind"  # while the blocker still runs
    assert not blocker.done() and list(ran) == ["behind"]
    release.set()
    assert blocker.result(timeout=30) == "done"


@pytest.mark.parametrize("how", ["crash", "timeout"])
def test_task_sent_ahead_survives_the_loss_of_its_worker(
    make_process_pool: Any, manager: SyncManager, how: str
) -> None:
    """When the running task kills its worker, the task behind it runs on the replacement."""
    pool = make_process_pool(workers=1, terminate_grace=0.2)
    if how == "crash":
        submit, exit_code = pool.submit, (3,)
    else:
        submit, exit_code = pool.options(timeout=1).submit, ()
    doomed, behind, release, ran = blocked_with_one_ahead(
        pool,
        manager,
        lambda started, release: submit(wait_then, started, release, None, *exit_code),
    )
    if how == "crash":
        release.set()
    with pytest.raises(WorkerCrashed if how == "crash" else TaskTimeout):
        doomed.result(timeout=30)
    assert behind.result(timeout=30) == "behind" and behind.attempts == 1
    assert list(ran) == ["behind"]
    assert_accounted(pool.stats())


def test_tasks_sent_ahead_count_as_waiting_against_queue_size(
    make_process_pool: Any, manager: SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """queue_size bounds the tasks not yet running, those already in a worker's pipe included:
    with three sent ahead and one queued, a queue of four is full."""
    monkeypatch.setattr(scheduler, "AHEAD_SECONDS", 100.0)  # all three go ahead, however slow
    pool = make_process_pool(workers=1, queue_size=4)
    blocker, behind, release, ran = blocked_with_ahead(pool, manager, "ABC")
    behind.append(pool.try_submit(record, ran, "D"))  # the fourth waiting task
    assert pool.stats().queued == 4
    with pytest.raises(workpool.QueueFull):
        pool.try_submit(record, ran, "E")
    release.set()
    assert blocker.result(timeout=30) == "done"
    assert [t.result(timeout=30) for t in behind] == ["A", "B", "C", "D"]
    assert pool.try_submit(record, ran, "E").result(timeout=30) == "E"


def test_task_sent_ahead_to_a_worker_that_died_holding_its_dispatch_lock_runs_elsewhere(
    make_process_pool: Any, manager: SyncManager
) -> None:
    """A worker killed while it held the lock that orders take-backs (as if killed as it read
    a message) still hands on the tasks it never read: its death says it reads no more."""
    pool = make_process_pool(workers=1)
    doomed, behind, release, ran = blocked_with_one_ahead(
        pool, manager, lambda started, release: pool.submit(wait_then, started, release, None, 3)
    )
    child = next(iter(pool._core.backend._children.values()))  # type: ignore[attr-defined]
    assert child.dispatch.lock.acquire(timeout=5)  # never released: as a dead holder leaves it
    release.set()
    with pytest.raises(WorkerCrashed):
        doomed.result(timeout=30)
    assert behind.result(timeout=30) == "behind" and behind.attempts == 1
    assert list(ran) == ["behind"]
    assert_accounted(pool.stats())


def test_pause_takes_back_a_task_sent_ahead(make_process_pool: Any, manager: SyncManager) -> None:
    """Once paused, a task waiting in a worker's pipe does not start until resume."""
    pool = make_process_pool(workers=1)
    blocker, behind, release, ran = blocked_with_one_ahead(pool, manager)
    pool.pause()
    release.set()
    assert blocker.result(timeout=30) == "done"
    wait_until(lambda: pool.stats().busy == 0)
    assert behind.state is TaskState.QUEUED and list(ran) == []
    pool.resume()
    assert behind.result(timeout=30) == "behind"


def test_shutdown_cancel_futures_cancels_a_task_sent_ahead(
    make_process_pool: Any, manager: SyncManager
) -> None:
    """shutdown(cancel_futures=True) cancels the task in a worker's pipe like any queued one."""
    pool = make_process_pool(workers=1)
    blocker, behind, release, ran = blocked_with_one_ahead(pool, manager)
    report = pool.shutdown(wait=False, cancel_futures=True)
    assert behind in report.cancelled and behind.state is TaskState.CANCELLED
    release.set()
    assert blocker.result(timeout=30) == "done"
    pool.shutdown(wait=True)
    assert list(ran) == []


def test_worker_that_cannot_be_started_breaks_the_pool_clearly(
    make_process_pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A fork that fails (no more processes) fails the task with BrokenPool, saying why."""
    pool = make_process_pool(workers=1)

    def refuse(self: Any) -> None:
        raise BlockingIOError(11, "Resource temporarily unavailable")

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", refuse)
    task = pool.submit(return_value, 1)
    with pytest.raises(workpool.BrokenPool, match="not started: BlockingIOError"):
        task.result(timeout=30)
    assert isinstance(task.exception(), workpool.BrokenPool)


@pytest.mark.parametrize("start_method", ["forkserver", "spawn"])
def test_workers_start_side_by_side(
    make_process_pool: Any, monkeypatch: pytest.MonkeyPatch, start_method: str
) -> None:
    """Two workers' process starts overlap (each child is sent only its own descriptors), so a
    pool's workers are not started one after another."""
    both_starting = threading.Barrier(2, timeout=30)
    original = multiprocessing.process.BaseProcess.start

    def start_beside_another(self: Any) -> None:
        both_starting.wait()  # broken (and the task fails) if the starts were serialized
        original(self)

    monkeypatch.setattr(multiprocessing.process.BaseProcess, "start", start_beside_another)
    pool = make_process_pool(workers=2, start_method=start_method)
    tasks = [pool.submit(return_value, i) for i in range(2)]
    assert [t.result(timeout=60) for t in tasks] == [0, 1]
    assert pool.stats().workers == 2


def test_a_forked_worker_opens_its_pipe_under_the_fork_lock(
    make_process_pool: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under fork, a worker's pipe exists only while the fork lock is held, until the parent
    closed the child's end: no other worker forked meanwhile can inherit it (EOF is death)."""
    held: list[bool] = []
    context = multiprocessing.get_context("fork")
    original = type(context).Pipe

    def pipe(self: Any, duplex: bool = True) -> Any:
        held.append(process_backend._fork_lock.locked())
        return original(self, duplex)

    monkeypatch.setattr(type(context), "Pipe", pipe)
    pool = make_process_pool(workers=1, start_method="fork")
    assert pool.submit(return_value, 7).result(timeout=60) == 7
    assert held == [True]
    assert not process_backend._fork_lock.locked()


def test_workers_are_left_off_multiprocessing_list_of_children(make_process_pool: Any) -> None:
    """The pool reaps its workers itself: multiprocessing, which polls every child on its list
    at each start from any thread (two polls at once misread a dead child's exit code), neither
    lists nor polls them."""
    pool = make_process_pool(workers=2)
    pids = {t.result(timeout=60) for t in [pool.submit(pid) for _ in range(4)]}
    assert pids and not pids & {p.pid for p in multiprocessing.active_children()}


def test_a_forked_worker_can_start_a_fork_pool_of_its_own(make_process_pool: Any) -> None:
    """A worker is forked while the fork lock is held; its copy of the lock is fresh, so a
    task that starts a fork pool of its own does not wait for a lock no thread will release."""
    pool = make_process_pool(workers=1, start_method="fork")
    assert pool.submit(start_a_fork_pool_inside, 1).result(timeout=60) == 2


def test_two_take_backs_unread_by_the_worker_never_run_a_task_or_mismatch_replies(
    make_process_pool: Any, manager: SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Cancels of two tasks in a worker's pipe, the second before the worker has read the first
    take-back, both cancel at once; the tasks behind each go back to the queue and run once."""
    monkeypatch.setattr(scheduler, "AHEAD_SECONDS", 100.0)  # all four go ahead, however slow
    pool = make_process_pool(workers=1)
    first, tasks, release, ran = blocked_with_ahead(pool, manager, "BCDE")
    b, c, d, e = tasks
    assert d.cancel()  # takes back D and E: E waits in the queue again
    assert sent_ahead(pool) == [b, c] and e.state is TaskState.QUEUED
    assert b.cancel()  # takes back B and C, while the worker has read neither take-back
    assert sent_ahead(pool) == []
    release.set()
    assert first.result(timeout=30) == "done"
    assert c.result(timeout=30) == "C" and e.result(timeout=30) == "E"
    assert b.cancelled() and d.cancelled()
    assert pool.submit(record, ran, "F").result(timeout=30) == "F"
    assert list(ran) == ["C", "E", "F"]
    assert_accounted(pool.stats())


def append_id(path: str, i: int, crash: bool = False) -> int:
    """Record in ``path`` that task ``i`` ran (one write: appends do not interleave)."""
    with open(path, "a") as out:
        out.write(f"{i}\n")
    if crash:
        os._exit(7)
    return i


def test_cancels_and_crashes_amid_tasks_in_flight_lose_none_and_run_none_twice(
    make_process_pool: Any, tmp_path: Any
) -> None:
    """Thousands of short tasks in flight, several in each worker's pipe at a time, with
    cancels and worker crashes among them: whatever the timing, no task runs twice, none
    cancelled at once runs, and every other task ends with its own result."""
    pool = make_process_pool(workers=2)
    path = str(tmp_path / "ran")
    n, crashers = 3000, {700, 1500, 2300}
    tasks = [pool.submit(append_id, path, i, i in crashers) for i in range(n)]
    cancelled_at_once = {i for i in range(5, n, 7) if i not in crashers and tasks[i].cancel()}
    futures.wait(tasks, timeout=120)
    with open(path) as records:
        ran = [int(line) for line in records]
    assert len(ran) == len(set(ran)), "a task ran twice"
    assert not cancelled_at_once & set(ran), "a task cancelled before it started ran"
    for i, task in enumerate(tasks):
        if i in crashers:
            assert isinstance(task.exception(), WorkerCrashed)
        elif i in cancelled_at_once:
            assert task.cancelled()
        elif not task.cancelled():  # a cancel that came as it started may stop it
            assert task.result() == i
            assert i in ran
    assert pool.stats().crashed == len(crashers)
    assert_accounted(pool.stats())


@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_task_sent_ahead_runs_once_when_the_worker_survives_being_stopped(
    make_process_pool: Any, manager: SyncManager, how: str
) -> None:
    """A worker told to stop that finishes its task anyway never runs the task sent ahead
    as well as the pool running it elsewhere; that task is never reported cancelled."""
    pool = make_process_pool(workers=1, terminate_grace=5.0)
    submit = pool.options(timeout=1).submit if how == "timeout" else pool.submit
    doomed, behind, release, ran = blocked_with_one_ahead(
        pool, manager, lambda started, release: submit(sigterm_raises_then_wait, started, release)
    )
    if how == "cancel":
        doomed.cancel()
    with pytest.raises((TaskTimeout, CancelledError, RuntimeError)):
        doomed.result(timeout=30)
    with contextlib.suppress(WorkerCrashed):  # it started in the stopped worker: lost with it
        assert behind.result(timeout=30) == "behind"
    assert not behind.cancelled()
    release.set()
    assert pool.submit(abs, -2).result(timeout=30) == 2
    assert list(ran).count("behind") <= 1
    assert_accounted(pool.stats())


def test_task_sent_ahead_sees_its_own_attempt_and_deadline(
    make_process_pool: Any,
) -> None:
    """current_task() in a task sent ahead reports attempt 1 and a deadline from its timeout."""
    pool = make_process_pool(workers=1)
    pool.submit(abs, -1).result(timeout=30)
    pool.pause()
    tasks = [pool.options(timeout=30).submit(describe_context) for _ in range(6)]
    pool.resume()
    for task in tasks:
        _, attempt, deadline = task.result(timeout=30)
        assert attempt == 1 and deadline is not None


@pytest.mark.parametrize("sockets", [True, False], ids=["socket", "connection"])
def test_frames_read_each_message_whole_however_it_is_cut(
    sockets: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The reader of a worker's pipe: messages sent together, empty, long (read in many reads),
    with the 12-byte header of a message past 2 GiB, a wait that times out, and the pipe's end;
    through a socket, or where there is none (Windows) through the Connection itself."""
    if not sockets:
        monkeypatch.delattr("socket.MSG_DONTWAIT", raising=False)
    ours, theirs = multiprocessing.Pipe()
    frames = Frames(ours)
    assert (frames._recv is not None) is sockets
    try:
        assert frames.next(0.01) is None
        long = os.urandom(3 * 1024 * 1024 + 5)
        theirs.send_bytes(b"one")
        theirs.send_bytes(b"")
        sender = threading.Thread(target=theirs.send_bytes, args=(long,))
        sender.start()  # it blocks until the reader has read enough of it
        assert frames.next(5) == b"one"
        assert frames.next(5) == b""
        assert frames.read() == long
        sender.join(10)
        os.write(theirs.fileno(), struct.pack("!iQ", -1, 3) + b"abc" + struct.pack("!i", 2) + b"de")
        assert frames.read() == b"abc"
        assert frames.next(5) == b"de"
        theirs.close()
        with pytest.raises(EOFError):
            frames.next(5)
    finally:
        frames.close()
        ours.close()


def test_frames_wait_for_a_message_that_comes_a_byte_at_a_time() -> None:
    """A header, then a body, arriving in pieces: no message until the last byte is in."""
    ours, theirs = multiprocessing.Pipe()
    frames = Frames(ours)
    try:
        whole = struct.pack("!i", 3) + b"xyz"
        for byte in whole[:-1]:
            os.write(theirs.fileno(), bytes([byte]))
            assert frames.next(0.01) is None
        os.write(theirs.fileno(), whole[-1:])
        assert frames.next(5) == b"xyz"
        os.write(theirs.fileno(), struct.pack("!i", -5))
        with pytest.raises(OSError, match="bad message length"):
            frames.next(5)
    finally:
        frames.close()
        ours.close()
        theirs.close()


def test_a_fault_in_the_proxy_fails_its_task_and_the_pool_goes_on(
    make_process_pool: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A bug of the pool's own in a worker's proxy thread (here: sending the task raises) fails
    that task with WorkerCrashed, logged, instead of leaving it waiting forever; a new worker
    takes the next tasks."""
    send = ChildHandle.send
    faults = [RuntimeError("injected")]

    def failing_once(*args: Any) -> None:
        if faults:
            raise faults.pop()
        send(*args)

    monkeypatch.setattr(ChildHandle, "send", failing_once)
    pool = make_process_pool(workers=1)
    with pytest.raises(workpool.WorkerCrashed, match="proxy thread failed: RuntimeError"):
        pool.submit(abs, -1).result(timeout=30)
    assert [pool.submit(abs, -i).result(timeout=30) for i in range(3)] == [0, 1, 2]
    assert "the proxy thread of worker" in caplog.text
    assert pool.stats().crashed == 1


@pytest.mark.skipif(sys.platform != "linux", reason="elsewhere send_now sends nothing")
def test_send_now_sends_what_fits_at_once_and_never_waits() -> None:
    """The parent's send to a worker that holds the GIL: what the socket takes at once goes,
    a full socket takes nothing (no wait), a closed one raises (no SIGPIPE)."""
    ours, theirs = multiprocessing.Pipe()
    try:
        assert send_now(ours.fileno(), b"abc") == 3
        assert os.read(theirs.fileno(), 3) == b"abc"
        big = bytes(64 * 1024 * 1024)  # far more than a socket buffers
        assert 0 < send_now(ours.fileno(), big) < len(big)
        assert send_now(ours.fileno(), big) == 0
        theirs.close()
        with pytest.raises(OSError):
            send_now(ours.fileno(), b"x")
    finally:
        ours.close()


def _short_socket_timeout() -> None:
    socket.setdefaulttimeout(0.2)


def _slow_echo_length(data: bytes) -> int:
    time.sleep(0.5)  # longer than the default socket timeout
    return len(data)


def test_a_default_socket_timeout_leaves_the_pipes_blocking() -> None:
    """socket.setdefaulttimeout (urllib users set it) in the parent and in the workers: pipes
    stay blocking, a task outlasts the timeout, megabytes cross both ways."""
    before = socket.getdefaulttimeout()
    socket.setdefaulttimeout(0.2)
    try:
        ours, theirs = multiprocessing.Pipe()
        Frames(ours).close()
        assert os.get_blocking(ours.fileno())
        ours.close()
        theirs.close()
        with workpool.Pool(1, backend="process", initializer=_short_socket_timeout) as pool:
            assert pool.submit(_slow_echo_length, b"x" * (4 * 1024 * 1024)).result(30) == 4 << 20
            assert len(pool.submit(bytes, 4 * 1024 * 1024).result(30)) == 4 << 20
    finally:
        socket.setdefaulttimeout(before)


def _echo_length(data: bytes, *, tail: int) -> tuple[int, bytes]:
    return len(data), bytes(tail)


def test_long_arguments_and_results_cross_between_short_tasks(pool: workpool.Pool) -> None:
    """A task of megabytes each way, among no-ops sent ahead of it and after it."""
    small = [pool.submit(abs, -i) for i in range(50)]
    big = pool.submit(_echo_length, b"x" * (4 * 1024 * 1024), tail=5 * 1024 * 1024)
    after = [pool.submit(abs, -i) for i in range(50)]
    assert [t.result(timeout=30) for t in small] == list(range(50))
    length, tail = big.result(timeout=30)
    assert (length, len(tail)) == (4 * 1024 * 1024, 5 * 1024 * 1024)
    assert [t.result(timeout=30) for t in after] == list(range(50))


# -- the spare worker -----------------------------------------------------------------------------


def spare_of(pool: workpool.Pool) -> Any:
    """The process backend's spare worker standing by, if any."""
    return pool._core.backend._spare  # type: ignore[attr-defined]


def running_hung(pool: workpool.Pool, manager: SyncManager, timeout: float) -> workpool.Task[Any]:
    """A task with ``timeout`` that runs until the test ends (it has been sent: it runs)."""
    started, release = manager.Event(), manager.Event()
    task = pool.options(timeout=timeout).submit(wait_then, started, release, None)
    assert started.wait(30)
    return task


def standing_by(make_pool: Any, manager: SyncManager, **kwargs: Any) -> tuple[Any, ...]:
    """A pool of one worker running a hung task with a timeout, and the spare that stands by."""
    pool = make_pool(workers=1, terminate_grace=0.2, **kwargs)
    hung = running_hung(pool, manager, timeout=60)
    return pool, hung, spare_of(pool)


def test_a_task_with_a_timeout_has_a_spare_worker_stand_by(
    make_process_pool: Any, manager: SyncManager
) -> None:
    """Running a task that may be killed at its deadline starts a spare process beside the
    workers; a pool without timeouts has none."""
    pool = make_process_pool(workers=1)
    worker = pool.submit(pid).result(timeout=30)
    assert spare_of(pool) is None
    hung = running_hung(pool, manager, timeout=60)
    spare = spare_of(pool)
    assert spare is not None
    wait_until(lambda: spare.child.pid is not None)
    assert spare.child.pid != worker and spare.child.process.is_alive()
    assert pool.stats().workers == 1  # a spare is no worker until it replaces one
    hung.cancel()


@pytest.mark.parametrize("start_method", ["forkserver", "spawn", "fork"])
def test_a_stopped_worker_is_replaced_by_the_spare_started_ahead(
    make_process_pool: Any, manager: SyncManager, start_method: str
) -> None:
    """The worker that replaces a killed one is the spare that stood by; another stands by."""
    pool, hung, spare = standing_by(make_process_pool, manager, start_method=start_method)
    hung.cancel()
    with pytest.raises(CancelledError):
        hung.result(timeout=30)
    assert pool.submit(pid).result(timeout=30) == spare.child.pid
    wait_until(lambda: spare_of(pool) not in (None, spare))  # started once the worker idles
    stats = pool.stats()
    assert stats.workers == 1 and stats.cancelled == 1 and stats.crashed == 0
    assert_accounted(stats)


def test_a_worker_idle_after_a_task_takes_work_before_it_starts_the_next_spare(
    make_process_pool: Any, manager: SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """After a task, a worker waits a moment for more work before it starts the next spare (so
    that the start keeps off the way of whoever takes the result): work that comes meanwhile is
    taken at once (on a fresh child if the worker's died meanwhile), and the spare starts only
    once the worker stays idle."""
    pool, hung, spare = standing_by(make_process_pool, manager)
    monkeypatch.setattr(process_backend, "_SPARE_PATIENCE", 60.0)
    hung.cancel()
    with pytest.raises(CancelledError):
        hung.result(timeout=30)
    # The worker now waits up to a minute for work after each task: each comes first.
    assert [pool.submit(abs, -i).result(timeout=30) for i in range(20)] == list(range(20))
    assert spare_of(pool) is None  # never idle long enough to start one
    # Its child killed while it waits (the OOM killer): the next task runs on a fresh one.
    victim = spare.child.pid
    os.kill(victim, signal.SIGKILL)
    wait_until(lambda: _dead(victim))
    fresh = pool.submit(pid).result(timeout=30)
    assert fresh != victim and pool.stats().crashed == 0
    monkeypatch.setattr(process_backend, "_SPARE_PATIENCE", 0.0)
    assert pool.submit(pid).result(timeout=30) == fresh
    wait_until(lambda: spare_of(pool) is not None)  # idle, and nothing came: it starts
    assert_accounted(pool.stats())


def test_a_spare_that_died_waiting_is_started_again_without_failing_a_task(
    make_process_pool: Any, manager: SyncManager
) -> None:
    """A spare killed while it stood by (the OOM killer) costs no task: a new one comes up."""
    pool, hung, spare = standing_by(make_process_pool, manager)
    wait_until(lambda: spare.child.pid is not None)
    dead = spare.child.pid
    os.kill(dead, signal.SIGKILL)
    wait_until(lambda: _dead(dead))
    hung.cancel()
    assert pool.submit(pid).result(timeout=30) not in (dead, None)
    stats = pool.stats()
    assert stats.workers == 1 and stats.crashed == 0 and stats.failed == 0
    assert_accounted(stats)


def test_a_spare_whose_start_failed_still_serves_when_taken(
    make_process_pool: Any, manager: SyncManager, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Regression (seen once in a full run): reading the functions to warm raised "dictionary
    changed size during iteration", the spare's thread ended, and the worker that took its
    place never came. A spare that fails before it waits still takes its slot, started anew."""

    def changed_size() -> tuple[bytes, ...]:
        raise RuntimeError("dictionary changed size during iteration")

    monkeypatch.setattr(_pickling, "sent_names", changed_size)
    pool, hung, spare = standing_by(make_process_pool, manager)
    hung.cancel()
    assert pool.submit(pid).result(timeout=10) == spare.child.pid
    assert_accounted(pool.stats())


def test_a_crash_has_a_spare_stand_by_for_the_next_one(make_process_pool: Any) -> None:
    """After a worker died under its task, the pool keeps a spare for the next loss."""
    pool = make_process_pool(workers=1)
    assert spare_of(pool) is None
    with pytest.raises(WorkerCrashed):
        pool.submit(exit_with, 3).result(timeout=30)
    wait_until(lambda: spare_of(pool) is not None)  # started after the task failed
    spare = spare_of(pool)
    with pytest.raises(WorkerCrashed):
        pool.submit(exit_with, 4).result(timeout=30)
    assert pool.submit(pid).result(timeout=30) == spare.child.pid
    assert pool.stats().crashed == 2


def test_an_autoscaling_pool_lets_its_spare_go_when_idle(manager: SyncManager) -> None:
    """A spare unused for idle_timeout stops, as an idle worker retires; a worker that goes
    idle after a task starts another."""
    pool = workpool.Pool(
        min_workers=0, max_workers=1, idle_timeout=1.0, backend="process", terminate_grace=0.2
    )
    try:
        hung = running_hung(pool, manager, timeout=60)
        spare = spare_of(pool)
        wait_until(lambda: spare_of(pool) is None and not spare.thread.is_alive())
        hung.cancel()
        assert pool.submit(pid).result(timeout=30)
        wait_until(lambda: spare_of(pool) is not None)  # started once the worker idles
    finally:
        pool.shutdown(cancel_futures=True)


def test_spare_worker_false_keeps_none(make_process_pool: Any, manager: SyncManager) -> None:
    """spare_worker=False: a pool with timeouts starts its replacements only when needed."""
    pool = make_process_pool(workers=1, terminate_grace=0.2, spare_worker=False)
    hung = running_hung(pool, manager, timeout=60)
    assert spare_of(pool) is None
    hung.cancel()
    assert pool.submit(pid).result(timeout=30)
    assert spare_of(pool) is None


def test_the_spare_imports_the_modules_of_the_functions_sent_so_far(
    make_process_pool: Any, manager: SyncManager, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A spare unpickles the pool's functions as it waits: a replacement starts warm."""
    imports = tmp_path / "imports"
    (tmp_path / "warmed.py").write_text(
        f"import os\nwith open({str(imports)!r}, 'a') as f:\n    f.write(f'{{os.getpid()}}\\n')\n"
        "def answer():\n    return 42\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    import warmed  # type: ignore[import-not-found]  # written above

    pool = make_process_pool(workers=1, terminate_grace=0.2)
    assert pool.submit(warmed.answer).result(timeout=30) == 42
    hung = running_hung(pool, manager, timeout=60)
    hung.cancel()
    spare_pid = pool.submit(pid).result(timeout=30)  # the spare: it never ran warmed.answer
    assert str(spare_pid) in imports.read_text().split()
    monkeypatch.delitem(sys.modules, "warmed")


def test_a_pool_shut_down_without_waiting_stops_its_spare(
    make_process_pool: Any, manager: SyncManager
) -> None:
    """shutdown(wait=False) stops the spare too: nothing is left once the workers drain."""
    pool, hung, spare = standing_by(make_process_pool, manager)
    pool.shutdown(wait=False, cancel_futures=True)
    hung.cancel()
    assert spare.given.is_set() and spare.slot is None
    assert spare_of(pool) is None


def test_shutdown_never_meets_a_proxy_thread_listed_but_not_started() -> None:
    """A replacement may start as the pool shuts down: join must wait for its proxy thread's
    start, not try to join a thread that has not started (which raises)."""
    with workpool.Pool(1, backend="process") as pool:
        stage = JoinAsAWorkerStarts(pool._core.backend, "_proxies")
        assert pool.submit(int, "3").result(timeout=30) == 3
        assert stage.finished.wait(10)
        stage.joiner.join(10)
        assert stage.errors == []
