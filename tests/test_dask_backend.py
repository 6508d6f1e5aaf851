"""The Dask backend on a real LocalCluster: the Pool API, timeouts, cancellation, worker loss.

One cluster (two worker processes, one thread each) serves the module; tasks synchronise with
the test through ``distributed.Event`` gates, which cross processes. The test that kills a
worker starts a cluster of its own: the nanny's restart of the dead worker starts threads that
live as long as the cluster, and the thread-leak fixture rightly wants them gone by test end.
"""

from __future__ import annotations

import itertools
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import CancelledError
from typing import Any

import pytest
from helpers import assert_accounted, wait_until

import workpool
from workpool import QueueFull, TaskState, TaskTimeout, WorkerCrashed

distributed = pytest.importorskip("distributed")
dask = pytest.importorskip("dask")

pytestmark = pytest.mark.timeout(90)


def _local_cluster(n_workers: int = 2) -> Any:
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return distributed.LocalCluster(
            n_workers=n_workers,
            threads_per_worker=1,
            processes=True,
            host="127.0.0.1",
            dashboard_address="127.0.0.1:0",  # health and metrics only, on a free port
            scheduler_kwargs={"dashboard": False},
        )


@pytest.fixture(scope="module")
def client() -> Iterator[Any]:
    with _local_cluster() as cluster, distributed.Client(cluster, set_as_default=False) as c:
        c.submit(int, pure=False).result()  # every lazily started helper thread is up now
        yield c


@pytest.fixture
def make_pool(client: Any) -> Iterator[Callable[..., workpool.Pool]]:
    """Build pools on the module's cluster; each is shut down after the test."""
    pools: list[workpool.Pool] = []

    def make(workers: int | None = 2, **kwargs: Any) -> workpool.Pool:
        pool = workpool.Pool(workers, backend="dask", client=client, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)


class Gate:
    """A cross-process gate: tasks wait on it, the test opens it."""

    def __init__(self, client: Any) -> None:
        self.name = f"gate-{uuid.uuid4().hex}"
        self._event = distributed.Event(self.name, client=client)

    def open(self) -> None:
        self._event.set()


# -- what the tasks run (pickled by reference: the workers import this module) ---------------


def square(x: int) -> int:
    return x * x


def make_lock() -> threading.Lock:
    return threading.Lock()


def fail(message: str) -> None:
    raise ValueError(message)


def wait_for_gate(name: str, value: Any = None) -> Any:
    distributed.Event(name).wait(timeout=60)
    return value


def started_at(name: str) -> float:
    distributed.Event(name).wait(timeout=60)
    return time.monotonic()


def fail_first_attempt() -> int:
    attempt = workpool.current_task().attempt
    if attempt == 1:
        raise OSError("flaky")
    return attempt


def describe_context() -> tuple[str, int, float | None, bool]:
    ctx = workpool.current_task()
    return ctx.id, ctx.attempt, ctx.remaining(), ctx.cancelled


def check_until_stopped() -> None:
    ctx = workpool.current_task()
    while True:
        ctx.check()
        time.sleep(0.01)


def sleep_then(seconds: float, value: Any) -> Any:
    time.sleep(seconds)
    return value


def _touch_and_hang(path: str) -> Callable[[], None]:
    def touch_and_hang() -> None:
        open(path, "w").close()
        time.sleep(60)

    return touch_and_hang


def _list_task_subprocesses() -> list[int]:
    import psutil  # a dependency of distributed

    pids = []
    for child in psutil.Process().children(recursive=True):
        try:
            if "workpool._backends.dask_remote" in " ".join(child.cmdline()):
                pids.append(child.pid)
        except psutil.Error:  # gone, or a zombie: killed, not yet reaped, so not running
            pass
    return pids


def exit_hard(code: int) -> None:
    os._exit(code)


def die_on_first_attempt() -> int:
    attempt = workpool.current_task().attempt
    if attempt == 1:
        os.kill(os.getpid(), signal.SIGKILL)  # the Dask worker process dies under its task
    return attempt


def read_marker() -> str | None:
    return os.environ.get("WORKPOOL_DASK_TEST_INIT")


def set_marker(value: str) -> None:
    os.environ["WORKPOOL_DASK_TEST_INIT"] = value


# -- submit, map, errors ----------------------------------------------------------------------


def test_submit_returns_the_value_and_raises_the_tasks_error(make_pool: Any) -> None:
    """A task's value comes back, and its own exception is raised unchanged by result()."""
    pool = make_pool()
    assert pool.submit(square, 7).result(timeout=30) == 49
    failing = pool.submit(fail, "boom")
    with pytest.raises(ValueError, match="boom"):
        failing.result(timeout=30)
    assert failing.state is TaskState.FAILED
    stats = pool.stats()
    assert stats.succeeded == 1 and stats.failed == 1
    assert_accounted(stats)


def test_unpicklable_argument_or_result_fails_the_task(make_pool: Any) -> None:
    """A call whose argument or result cannot be pickled fails with TypeError; none hangs.

    Dask refuses the argument in the submitting thread; the refusal is reported from another
    thread, since the pool's ``done`` takes its lock in a form a Ctrl-C could leave held."""
    pool = make_pool()
    reporters: list[threading.Thread] = []
    done = pool._core.done

    def recording_done(*args: Any) -> Any:
        reporters.append(threading.current_thread())
        return done(*args)

    pool._core.done = recording_done
    with pytest.raises(TypeError):
        pool.submit(len, threading.Lock()).result(timeout=30)
    with pytest.raises(TypeError, match="cannot be pickled"):
        pool.submit(make_lock).result(timeout=30)
    assert pool.submit(square, 2).result(timeout=30) == 4
    assert_accounted(pool.stats())
    assert [thread.name for thread in reporters].count("workpool-dask-refused") == 1
    assert threading.main_thread() not in reporters


def test_a_refused_task_is_reported_without_the_submitter_waiting(make_pool: Any) -> None:
    """The report of a refusal runs the task's callbacks in a thread of its own, which the
    submitting thread does not wait for: it may hold a lock they need, as joblib does."""
    pool = make_pool()
    held = threading.RLock()
    ran_in: list[str] = []

    def callback(_: Any) -> None:
        with held:
            ran_in.append(threading.current_thread().name)

    pool.pause()
    refused = pool.submit(len, threading.Lock())
    refused.add_done_callback(callback)
    with held:
        pool.resume()  # Dask refuses it here, in this thread
    with pytest.raises(TypeError):
        refused.result(timeout=30)
    wait_until(lambda: bool(ran_in))
    assert ran_in == ["workpool-dask-refused"]


def test_map_keeps_input_order_or_yields_as_completed(make_pool: Any) -> None:
    """map returns results in input order, and all of them with ordered=False."""
    pool = make_pool()
    assert list(pool.map(square, range(20))) == [x * x for x in range(20)]
    assert sorted(pool.map(square, range(20), ordered=False)) == [x * x for x in range(20)]


def test_map_reads_its_input_lazily(make_pool: Any) -> None:
    """map over an endless input reads only a bounded window ahead of the results taken."""
    pool = make_pool()
    consumed = itertools.count()

    def endless() -> Iterator[int]:
        for i in itertools.count():
            next(consumed)
            yield i

    results = pool.map(square, endless(), window=4)
    assert [next(results) for _ in range(5)] == [0, 1, 4, 9, 16]
    assert next(consumed) <= 5 + 4 + 1
    del results


def test_current_task_works_inside_a_dask_task(make_pool: Any) -> None:
    """current_task() on the worker gives the task's id, attempt and a deadline."""
    pool = make_pool()
    task = pool.options(timeout=30).submit(describe_context)
    task_id, attempt, remaining, cancelled = task.result(timeout=30)
    assert task_id == task.id and attempt == 1 and not cancelled
    assert remaining is not None and 0 < remaining <= 30


def test_retries_rerun_a_failing_task(make_pool: Any) -> None:
    """A task that fails once succeeds on its retry, and stats count the retry."""
    pool = make_pool()
    task = pool.options(retries=2).submit(fail_first_attempt)
    assert task.result(timeout=30) == 2
    assert task.attempts == 2
    stats = pool.stats()
    assert stats.retried == 1 and stats.succeeded == 1
    assert_accounted(stats)


def test_higher_priority_runs_first(client: Any, make_pool: Any) -> None:
    """With one lane busy, the waiting task of higher priority is handed to Dask first."""
    pool = make_pool(1)
    gate = Gate(client)
    blocker = pool.submit(wait_for_gate, gate.name)
    wait_until(lambda: pool.stats().busy == 1)
    low = pool.options(priority=0).submit(started_at, gate.name)
    high = pool.options(priority=10).submit(started_at, gate.name)
    gate.open()
    blocker.result(timeout=30)
    assert high.result(timeout=30) < low.result(timeout=30)


# -- timeouts and cancellation ----------------------------------------------------------------


def test_timeout_stops_a_task_that_checks_its_context(make_pool: Any) -> None:
    """A task calling check() ends TIMED_OUT at its deadline; the pool goes on."""
    pool = make_pool()
    task = pool.options(timeout=0.3).submit(check_until_stopped)
    with pytest.raises(TaskTimeout):
        task.result(timeout=30)
    assert task.state is TaskState.TIMED_OUT
    assert pool.submit(square, 3).result(timeout=30) == 9
    stats = pool.stats()
    assert stats.timed_out == 1
    assert_accounted(stats)


def test_timeout_fails_a_task_that_ignores_its_context_on_time(make_pool: Any) -> None:
    """A task that never checks fails TIMED_OUT on time; it runs on in Dask, unwatched."""
    pool = make_pool()
    start = time.monotonic()
    task = pool.options(timeout=0.3).submit(sleep_then, 5, "late")
    with pytest.raises(TaskTimeout):
        task.result(timeout=30)
    assert time.monotonic() - start < 4  # the pool did not wait for the call to return
    assert pool.submit(square, 4).result(timeout=30) == 16
    wait_until(lambda: pool.stats().abandoned == 0)  # the lane is released with the future


def test_isolated_task_is_killed_at_its_deadline(client: Any, make_pool: Any) -> None:
    """With isolate=True a hung task's subprocess is killed when its timeout passes."""
    pool = make_pool(isolate=True)
    task = pool.options(timeout=1).submit(time.sleep, 60)
    with pytest.raises(TaskTimeout):
        task.result(timeout=30)
    wait_until(lambda: not _task_subprocesses(client), timeout=15)


def test_cancelling_an_isolated_task_kills_its_subprocess(
    client: Any, make_pool: Any, tmp_path: Any
) -> None:
    """Cancelling a running isolated task kills the subprocess that runs it."""
    pool = make_pool(isolate=True)
    started = tmp_path / "started"
    # A closure travels by value, so the subprocess need not import this test module.
    task = pool.submit(_touch_and_hang(str(started)))
    wait_until(started.exists, timeout=30)
    assert _task_subprocesses(client)
    assert not task.cancel()
    with pytest.raises(CancelledError):
        task.result(timeout=30)
    wait_until(lambda: not _task_subprocesses(client), timeout=15)


def test_isolated_task_returns_values_and_errors(make_pool: Any) -> None:
    """An isolated task runs closures, returns its value and raises its own error."""
    pool = make_pool(isolate=True)
    offset = 5
    assert pool.submit(lambda x: x + offset, 1).result(timeout=30) == 6
    with pytest.raises(ValueError, match="inside"):
        pool.submit(fail, "inside").result(timeout=30)


def test_isolated_task_whose_process_dies_fails_with_worker_crashed(make_pool: Any) -> None:
    """An isolated task that exits hard fails with WorkerCrashed carrying its exit code."""
    pool = make_pool(isolate=True)
    with pytest.raises(WorkerCrashed) as caught:
        pool.submit(exit_hard, 3).result(timeout=30)
    assert caught.value.exitcode == 3
    assert pool.stats().crashed == 1


def test_cancel_a_queued_task(client: Any, make_pool: Any) -> None:
    """A task still waiting in the pool's queue is cancelled at once and never runs."""
    pool = make_pool(1)
    gate = Gate(client)
    blocker = pool.submit(wait_for_gate, gate.name, "done")
    wait_until(lambda: pool.stats().busy == 1)
    queued = pool.submit(square, 2)
    assert queued.cancel()
    assert queued.state is TaskState.CANCELLED
    gate.open()
    assert blocker.result(timeout=30) == "done"
    stats = pool.stats()
    assert stats.cancelled == 1 and stats.succeeded == 1
    assert_accounted(stats)


def test_cancel_a_running_task_that_checks_its_context(make_pool: Any) -> None:
    """Cancelling a running task ends it CANCELLED; check() on the worker sees the cancel."""
    pool = make_pool()
    task = pool.submit(check_until_stopped)
    wait_until(lambda: pool.stats().busy == 1)
    assert not task.cancel()  # running: asked to stop
    with pytest.raises(CancelledError):
        task.result(timeout=30)
    assert task.state is TaskState.CANCELLED
    assert pool.submit(square, 5).result(timeout=30) == 25


# -- queue, stats, shutdown -------------------------------------------------------------------


def test_full_queue_pushes_back(client: Any, make_pool: Any) -> None:
    """With every lane busy and queue_size tasks waiting, try_submit raises QueueFull."""
    pool = make_pool(1, queue_size=1)
    gate = Gate(client)
    running = pool.submit(wait_for_gate, gate.name)
    wait_until(lambda: pool.stats().busy == 1)
    waiting = pool.submit(square, 3)
    with pytest.raises(QueueFull):
        pool.try_submit(square, 4)
    gate.open()
    assert running.result(timeout=30) is None and waiting.result(timeout=30) == 9


def test_lanes_bound_the_work_handed_to_dask(client: Any, make_pool: Any) -> None:
    """No more tasks run on the cluster than the pool has workers; the rest wait queued."""
    pool = make_pool(2)
    gate = Gate(client)
    tasks = [pool.submit(wait_for_gate, gate.name, i) for i in range(6)]
    wait_until(lambda: pool.stats().busy == 2)
    stats = pool.stats()
    assert stats.queued == 4 and stats.busy == 2
    gate.open()
    assert [t.result(timeout=30) for t in tasks] == list(range(6))
    assert_accounted(pool.stats())


def test_pause_holds_work_and_resize_changes_the_lanes(make_pool: Any) -> None:
    """No task goes to Dask while paused; resize changes how many lanes there are."""
    pool = make_pool(2)
    pool.pause()
    task = pool.submit(square, 3)
    assert task.state is TaskState.QUEUED and pool.stats().busy == 0
    pool.resume()
    assert task.result(timeout=30) == 9
    pool.resize(1)
    wait_until(lambda: pool.stats().workers == 1)
    assert list(pool.map(square, range(4))) == [0, 1, 4, 9]


def test_idle_lanes_retire_after_idle_timeout(make_pool: Any) -> None:
    """An autoscaling pool's lanes retire once idle for idle_timeout, down to min_workers."""
    pool = make_pool(None, min_workers=0, max_workers=2, idle_timeout=0.2)
    assert list(pool.map(square, range(6))) == [x * x for x in range(6)]
    wait_until(lambda: pool.stats().workers == 0)
    assert pool.submit(square, 5).result(timeout=30) == 25  # a new lane starts for it


def test_shutdown_with_timeout_returns_while_a_task_runs(client: Any) -> None:
    """shutdown(timeout=...) returns on time and reports the task still running."""
    pool = workpool.Pool(1, backend="dask", client=client)
    gate = Gate(client)
    task = pool.submit(wait_for_gate, gate.name, "finished")
    wait_until(lambda: pool.stats().busy == 1)
    report = pool.shutdown(timeout=0.3)
    assert not report.completed and report.running == (task,)
    with pytest.raises(workpool.PoolClosed):
        pool.submit(square, 1)
    gate.open()
    assert task.result(timeout=30) == "finished"
    assert pool.shutdown(wait=True).completed
    assert client.status == "running"  # a client the user passed in is left open


def test_initializer_runs_on_every_worker(client: Any, make_pool: Any) -> None:
    """The initializer runs on each Dask worker before the pool's tasks."""
    pool = make_pool(initializer=set_marker, initargs=("ready",))
    assert set(pool.map(lambda _: read_marker(), range(8))) == {"ready"}


def test_failing_initializer_breaks_the_pool() -> None:
    """An initializer that raises on the workers fails every task with BrokenPool."""
    pool = workpool.Pool(
        1,
        backend="dask",
        initializer=fail,
        initargs=("no setup",),
        cluster_options={"processes": False, "n_workers": 1},
    )
    with pytest.raises(workpool.BrokenPool) as caught:
        pool.submit(square, 1).result(timeout=30)
    assert isinstance(caught.value.__cause__, ValueError)
    assert pool.shutdown(wait=True).completed


# -- the pool's own cluster, bad arguments, worker loss ---------------------------------------


def test_default_pool_starts_and_closes_its_own_cluster() -> None:
    """Pool(backend="dask") starts a local cluster on 127.0.0.1 and closes it on shutdown."""
    pool = workpool.Pool(1, backend="dask", cluster_options={"n_workers": 1})
    backend_client = pool._core.backend.client  # type: ignore[attr-defined]
    assert backend_client.scheduler.address.startswith("tcp://127.0.0.1:")
    assert pool.submit(square, 6).result(timeout=30) == 36
    assert pool.shutdown(wait=True).completed
    assert backend_client.status == "closed"


def test_bad_backend_arguments_raise_clear_errors(client: Any) -> None:
    """Two cluster sources at once, or an unknown option, are refused."""
    with pytest.raises(TypeError, match="at most one"):
        workpool.Pool(1, backend="dask", client=client, address="tcp://127.0.0.1:1")
    with pytest.raises(TypeError):
        workpool.Pool(1, backend="dask", client=client, no_such_option=1)


def test_missing_distributed_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without Dask installed, the error says which extra to install."""
    monkeypatch.setitem(sys.modules, "distributed", None)
    with pytest.raises(ImportError, match=r"workpool\[dask\]"):
        workpool.Pool(1, backend="dask")


def test_worker_killed_mid_task_is_retried_or_fails_with_worker_crashed() -> None:
    """A Dask worker that dies under a task: retried by policy, else WorkerCrashed; pool goes on."""
    with (
        _local_cluster() as cluster,
        distributed.Client(cluster, set_as_default=False) as c,
        workpool.Pool(1, backend="dask", client=c) as pool,
    ):
        retried = pool.options(retries=1).submit(die_on_first_attempt)
        assert retried.result(timeout=60) == 2
        crashed = pool.submit(die_on_first_attempt)
        with pytest.raises(WorkerCrashed):
            crashed.result(timeout=60)
        assert pool.submit(square, 9).result(timeout=60) == 81
        stats = pool.stats()
        assert stats.crashed == 1 and stats.retried == 1 and stats.succeeded == 2
        assert_accounted(stats)


def _task_subprocesses(client: Any) -> list[int]:
    """The pids of isolated tasks' subprocesses alive on the cluster's workers."""
    return [pid for pids in client.run(_list_task_subprocesses).values() for pid in pids]
