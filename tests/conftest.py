"""Shared fixtures: every test must leave no thread behind."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest

import workpool

try:  # Dask keeps one offload thread for the life of the process and starts it on first use:
    # start it now, as Dask's own test suite does, so the first test to use Dask is not blamed.
    from distributed.utils import _offload_executor
except ImportError:  # the dask extra is not installed
    pass
else:
    _offload_executor.submit(int).result()

BACKENDS = ["thread"]
"""Every backend runs the shared behaviour suite (tests/test_behaviour.py)."""


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Fail a test that leaves a thread running once it ends (after a short grace to exit)."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + 5.0
    leaked = []
    for thread in set(threading.enumerate()) - before:
        thread.join(max(0.0, deadline - time.monotonic()))
        if thread.is_alive():
            leaked.append(thread.name)
    assert not leaked, f"threads left running: {leaked}"


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def make_pool(backend: str) -> Iterator[Callable[..., workpool.Pool]]:
    """Build pools on the backend under test; each is shut down after the test."""
    pools: list[workpool.Pool] = []

    def make(*args: object, **kwargs: object) -> workpool.Pool:
        pool = workpool.Pool(*args, backend=backend, **kwargs)  # type: ignore[arg-type]
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)
