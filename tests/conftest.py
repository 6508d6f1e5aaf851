"""Shared fixtures: every test must leave no thread and no child process behind."""

from __future__ import annotations

import multiprocessing
import multiprocessing.managers
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from helpers import LONG_LIVED

import workpool

try:  # Dask keeps one offload thread for the life of the process and starts it on first use:
    # start it now, as Dask's own test suite does, so the first test to use Dask is not blamed.
    from distributed.utils import _offload_executor
except ImportError:  # the dask extra is not installed
    pass
else:
    _offload_executor.submit(int).result()

# A shell without job control starts a background job with SIGINT ignored, and Python then
# leaves it ignored, in this process and in every child it starts: the Ctrl-C tests would wait
# for a signal that never comes. A handler of our own is reset to the default in each child.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)


BACKENDS = ["thread", "process", "process-fork", "process-spawn"]
"""Every backend runs the shared behaviour suite (tests/test_behaviour.py); "process" is the
process backend on its default start method (forkserver), the others name another one."""

OTHER_START_METHODS = {"process-fork", "process-spawn"}
"""These run only the tests marked ``every_start_method``: a representative subset, since
starting workers is what differs between start methods, and spawn is slow to start them."""


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "every_start_method: run on every process start method, not only the default"
    )


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    keep, drop = [], []
    for item in items:
        params = getattr(item, "callspec", None)
        name = params.params.get("backend") if params is not None else None
        if name in OTHER_START_METHODS and item.get_closest_marker("every_start_method") is None:
            drop.append(item)
        else:
            keep.append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def backend_kwargs_for(name: str) -> dict[str, Any]:
    """``Pool`` keyword arguments for a name of ``BACKENDS``: "process-spawn" -> start_method."""
    backend, _, start_method = name.partition("-")
    return (
        {"backend": backend, "start_method": start_method} if start_method else {"backend": backend}
    )


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


def _children() -> dict[int, str]:
    """Live descendants of this process (pid -> state letter), but multiprocessing's helpers."""
    table: dict[int, tuple[int, str]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as stat:
                    fields = stat.read().rsplit(")", 1)[1].split()
            except OSError:
                continue  # it exited meanwhile
            table[int(entry)] = (int(fields[1]), fields[0])
    helpers = {_helper_pid("forkserver", "_forkserver", "_forkserver_pid")}
    helpers.add(_helper_pid("resource_tracker", "_resource_tracker", "_pid"))
    for loky in ("loky", "joblib.externals.loky"):  # the bench peers' own resource trackers
        tracker = sys.modules.get(f"{loky}.backend.resource_tracker")
        helpers.add(getattr(getattr(tracker, "_resource_tracker", None), "_pid", None))
    found, frontier = {}, {os.getpid()}
    while frontier:
        frontier = {pid for pid, (ppid, _) in table.items() if ppid in frontier} - set(found)
        frontier -= LONG_LIVED  # servers a module-scoped fixture runs, with their subtrees
        found.update({pid: table[pid][1] for pid in frontier if pid not in helpers})
    return found


def _helper_pid(module: str, instance: str, attribute: str) -> int | None:
    """The pid of multiprocessing's long-lived helper (forkserver, resource tracker), if any."""
    helper = getattr(getattr(multiprocessing, module, None), instance, None)
    return getattr(helper, attribute, None)


@pytest.fixture(autouse=True)
def no_leaked_children() -> Iterator[None]:
    """Fail a test that leaves a child process behind: running, or a zombie never reaped."""
    before = set(_children())
    yield
    deadline = time.monotonic() + 5.0
    while True:
        leaked = {pid: state for pid, state in _children().items() if pid not in before}
        if not leaked or time.monotonic() > deadline:
            break
        time.sleep(0.01)
    assert not leaked, f"child processes left behind (pid: state): {leaked}"


@pytest.fixture(scope="session")
def manager() -> Iterator[multiprocessing.managers.SyncManager]:
    """A manager process whose events, barriers and lists work across processes and threads."""
    with multiprocessing.get_context("spawn").Manager() as shared:
        yield shared


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def backend_kwargs(backend: str) -> dict[str, Any]:
    """The ``Pool`` keyword arguments that select the backend under test."""
    return backend_kwargs_for(backend)


@pytest.fixture
def make_pool(backend_kwargs: dict[str, Any]) -> Iterator[Callable[..., workpool.Pool]]:
    """Build pools on the backend under test; each is shut down after the test."""
    pools: list[workpool.Pool] = []

    def make(*args: Any, **kwargs: Any) -> workpool.Pool:
        pool = workpool.Pool(*args, **backend_kwargs, **kwargs)
        pools.append(pool)
        return pool

    yield make
    for pool in pools:
        pool.shutdown(wait=True, cancel_futures=True)
