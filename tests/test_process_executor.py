"""The drop-in ProcessPoolExecutor keeps the stdlib's documented semantics, and survives crashes."""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Iterator

import pytest

import workpool


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


def die() -> None:
    os._exit(3)


def broken_init() -> None:
    raise ValueError("init failed")


@pytest.fixture
def executor() -> Iterator[workpool.ProcessPoolExecutor]:
    with workpool.ProcessPoolExecutor(2) as ex:
        yield ex


def test_is_a_stdlib_process_pool_executor_and_a_pool(
    executor: workpool.ProcessPoolExecutor,
) -> None:
    """isinstance checks for the stdlib class pass, and Pool's extras are there."""
    assert isinstance(executor, cf.ProcessPoolExecutor) and isinstance(executor, workpool.Pool)
    assert executor.submit(square, 7).result(timeout=30) == 49
    assert executor.options(priority=3).submit(square, 3).result(timeout=30) == 9


def test_map_with_chunksize_returns_results_in_order(
    executor: workpool.ProcessPoolExecutor,
) -> None:
    """map(chunksize=k) runs k calls per task and yields every result in order."""
    before = executor.stats().submitted
    assert list(executor.map(square, range(100), chunksize=10)) == [x * x for x in range(100)]
    assert executor.stats().submitted - before == 10


def test_map_raises_the_first_error(executor: workpool.ProcessPoolExecutor) -> None:
    """An error in map is raised when its result is reached."""
    results = executor.map(fail_on, range(10), [4] * 10, chunksize=2)
    assert [next(results) for _ in range(4)] == [0, 1, 2, 3]
    with pytest.raises(ValueError, match="bad 4"):
        next(results)


def test_crashed_worker_fails_only_its_task(executor: workpool.ProcessPoolExecutor) -> None:
    """Unlike the stdlib, a dying worker fails one task (still a BrokenProcessPool)."""
    with pytest.raises(cf.process.BrokenProcessPool) as info:
        executor.submit(die).result(timeout=30)
    assert isinstance(info.value, workpool.WorkerCrashed) and info.value.exitcode == 3
    assert executor.submit(square, 5).result(timeout=30) == 25


@pytest.mark.parametrize(
    ("kwargs", "error"),
    [
        ({"max_workers": 0}, ValueError),
        ({"max_tasks_per_child": 0}, ValueError),
        ({"max_tasks_per_child": "2"}, TypeError),
        (
            {"max_tasks_per_child": 2, "mp_context": multiprocessing.get_context("fork")},
            ValueError,
        ),
    ],
)
def test_bad_arguments_raise_as_in_the_stdlib(kwargs: dict[str, object], error: type) -> None:
    """The stdlib's argument checks hold."""
    with pytest.raises(error):
        workpool.ProcessPoolExecutor(**kwargs)  # type: ignore[arg-type]


def test_failing_initializer_breaks_the_executor() -> None:
    """A raising initializer gives BrokenProcessPool, as the stdlib does."""
    executor = workpool.ProcessPoolExecutor(1, initializer=broken_init)
    try:
        with pytest.raises(cf.process.BrokenProcessPool):
            executor.submit(square, 2).result(timeout=30)
    finally:
        executor.shutdown()


def test_mp_context_and_max_tasks_per_child() -> None:
    """mp_context picks the start method; max_tasks_per_child recycles workers."""
    context = multiprocessing.get_context("spawn")
    with workpool.ProcessPoolExecutor(1, mp_context=context, max_tasks_per_child=2) as ex:
        pids = {ex.submit(os.getpid).result(timeout=60) for _ in range(4)}
    assert len(pids) == 2
