"""workpool as a joblib backend: joblib's own expectations of a backend, and what workpool adds."""

from __future__ import annotations

import os
import time

import pytest

joblib = pytest.importorskip("joblib")

import workpool  # noqa: E402
import workpool.joblib  # noqa: E402

workpool.joblib.register()


def square(x: int) -> int:
    return x * x


def fail_on(x: int, bad: int) -> int:
    if x == bad:
        raise ValueError(f"bad {x}")
    return x


def die_on(x: int, bad: int) -> int:
    if x == bad:
        os._exit(7)
    return x


def hang_on(x: int, bad: int) -> int:
    if x == bad:
        time.sleep(60)
    return x


@pytest.mark.parametrize("kind", ["thread", "process"])
def test_parallel_returns_results_in_order(kind: str) -> None:
    """Parallel(...) over the backend gives the results in order, as with any backend."""
    with joblib.parallel_config(backend="workpool", n_jobs=2, kind=kind):
        results = joblib.Parallel()(joblib.delayed(square)(i) for i in range(50))
    assert results == [i * i for i in range(50)]


def test_return_as_generator_and_negative_n_jobs() -> None:
    """return_as="generator" streams results; n_jobs=-1 means every CPU."""
    with joblib.parallel_config(backend="workpool", n_jobs=-1, kind="thread"):
        stream = joblib.Parallel(return_as="generator")(
            joblib.delayed(square)(i) for i in range(10)
        )
        assert list(stream) == [i * i for i in range(10)]


def test_an_error_is_raised_as_is_and_the_run_stops() -> None:
    """A task's exception reaches the caller unchanged, as joblib promises."""
    with (
        pytest.raises(ValueError, match="bad 3"),
        joblib.parallel_config(backend="workpool", n_jobs=2, kind="thread"),
    ):
        joblib.Parallel(batch_size=1)(joblib.delayed(fail_on)(i, 3) for i in range(20))


def test_n_jobs_zero_is_rejected() -> None:
    """n_jobs=0 raises ValueError, as for joblib's own backends."""
    with pytest.raises(ValueError), joblib.parallel_config(backend="workpool", n_jobs=0):
        joblib.Parallel()(joblib.delayed(square)(1) for _ in range(1))


def test_a_dying_worker_fails_its_batch_with_worker_crashed() -> None:
    """Where loky would break the whole run, a dead worker is a WorkerCrashed."""
    with (
        pytest.raises(workpool.WorkerCrashed),
        joblib.parallel_config(backend="workpool", n_jobs=2, kind="process"),
    ):
        joblib.Parallel(batch_size=1)(joblib.delayed(die_on)(i, 2) for i in range(6))


def test_timeout_per_task_stops_a_hung_call() -> None:
    """timeout_per_task stops a hung batch for real with TaskTimeout."""
    with (
        pytest.raises(workpool.TaskTimeout),
        joblib.parallel_config(backend="workpool", n_jobs=2, kind="process", timeout_per_task=0.5),
    ):
        joblib.Parallel(batch_size=1)(joblib.delayed(hang_on)(i, 1) for i in range(4))
