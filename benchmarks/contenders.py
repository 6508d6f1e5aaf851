"""Every pool under test, behind one small shape: open, submit, map variants, close.

Each contender is data, not a class hierarchy: the scenarios loop over the same table, so adding
a peer is adding one entry. ``submit`` returns a zero-argument callable that waits for the result
(``Future.result``, ``AsyncResult.get``), and a map variant returns an iterable of results.
Peers are imported only when a case runs, so a missing one costs nothing but a note.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import multiprocessing.pool
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

import workpool

from . import peers

Kind = Literal["thread", "process"]
Waiter = Callable[[], Any]
Submit = Callable[[Any, Callable[..., Any], Any], Waiter]
MapFn = Callable[[Any, Callable[..., Any], Iterable[Any]], Iterable[Any]]


@dataclass(frozen=True)
class Contender:
    label: str
    kind: Kind
    open: Callable[[int], Any]
    close: Callable[[Any], None]
    submit: Submit | None = None
    maps: dict[str, MapFn] = field(default_factory=dict)
    skip: Callable[[], str | None] = lambda: None
    startup: bool = True
    """Whether start-up plus shutdown means anything (joblib keeps its workers across calls)."""
    warm_by_map: bool = False
    """Warm up with a map rather than submits (mpire 2.10 then passes its map a stray argument)."""

    def warm(self, pool: Any, workers: int) -> None:
        """Have every worker started and run a task, so that timing starts from a ready pool."""
        from .tasks import noop

        if self.submit is not None and not self.warm_by_map:
            waiters = [self.submit(pool, noop, i) for i in range(2 * workers)]
            for wait in waiters:
                wait()
        else:
            for map_fn in self.maps.values():
                for _ in map_fn(pool, noop, range(2 * workers)):
                    pass
                break


def _executor_submit(pool: Any, fn: Callable[..., Any], x: Any) -> Waiter:
    return pool.submit(fn, x).result  # type: ignore[no-any-return]


def _apply_async(pool: Any, fn: Callable[..., Any], x: Any) -> Waiter:
    return pool.apply_async(fn, (x,)).get  # type: ignore[no-any-return]


def _pebble_submit(pool: Any, fn: Callable[..., Any], x: Any) -> Waiter:
    return pool.schedule(fn, args=(x,)).result  # type: ignore[no-any-return]


def _pebble_map(pool: Any, fn: Callable[..., Any], xs: Iterable[Any]) -> Iterable[Any]:
    return pool.map(fn, xs).result()  # type: ignore[no-any-return]


def _shutdown(pool: Any) -> None:
    pool.shutdown(wait=True)


def _close_join(pool: Any) -> None:
    pool.close()
    pool.join()


def _pebble_open(kind: Kind) -> Callable[[int], Any]:
    def open_pool(workers: int) -> Any:
        import pebble

        cls = pebble.ThreadPool if kind == "thread" else pebble.ProcessPool
        return cls(max_workers=workers)

    return open_pool


def _loky_open(workers: int) -> Any:
    import loky  # type: ignore[import-untyped]  # loky ships no type hints

    return loky.ProcessPoolExecutor(max_workers=workers)


def _mpire_open(workers: int) -> Any:
    import mpire.pool

    return mpire.pool.WorkerPool(n_jobs=workers, keep_alive=True)


def _mpire_close(pool: Any) -> None:
    pool.stop_and_join()


def _joblib_open(backend: str) -> Callable[[int], Any]:
    def open_pool(workers: int) -> Any:
        import joblib  # type: ignore[import-untyped]  # joblib ships no type hints

        parallel = joblib.Parallel(n_jobs=workers, backend=backend)
        parallel.__enter__()  # keep one pool of workers across calls, as `with Parallel()` does
        return parallel

    return open_pool


def _joblib_close(parallel: Any) -> None:
    parallel.__exit__(None, None, None)


def _joblib_map(parallel: Any, fn: Callable[..., Any], xs: Iterable[Any]) -> Iterable[Any]:
    import joblib  # type: ignore[import-untyped,unused-ignore]  # joblib ships no type hints

    return parallel(joblib.delayed(fn)(x) for x in xs)  # type: ignore[no-any-return]


def _workpool_process(workers: int) -> workpool.Pool:
    return workpool.Pool(workers, backend="process")


THREADS = [
    Contender(
        "workpool",
        "thread",
        lambda n: workpool.Pool(n),
        _shutdown,
        _executor_submit,
        {"workpool.map": lambda p, f, xs: p.map(f, xs)},
    ),
    Contender(
        "ThreadPoolExecutor",
        "thread",
        lambda n: cf.ThreadPoolExecutor(n),
        _shutdown,
        _executor_submit,
        {"ThreadPoolExecutor.map": lambda p, f, xs: p.map(f, xs)},
    ),
    Contender(
        "multiprocessing ThreadPool",
        "thread",
        lambda n: multiprocessing.pool.ThreadPool(n),
        _close_join,
        _apply_async,
        {"multiprocessing ThreadPool.imap": lambda p, f, xs: p.imap(f, xs)},
    ),
    Contender(
        "pebble ThreadPool",
        "thread",
        _pebble_open("thread"),
        _close_join,
        _pebble_submit,
        {"pebble ThreadPool.map": _pebble_map},
        skip=lambda: peers.missing("pebble"),
    ),
    Contender(
        "joblib threading",
        "thread",
        _joblib_open("threading"),
        _joblib_close,
        maps={"joblib threading": _joblib_map},
        skip=lambda: peers.missing("joblib"),
        startup=False,
    ),
]

SELF_BATCHING = {"workpool.map", "multiprocessing.Pool.map", "mpire.map", "joblib (loky)"}
"""Process maps that cut their input into batches with no chunk size given."""

PROCESSES = [
    Contender(
        "workpool",
        "process",
        _workpool_process,
        _shutdown,
        _executor_submit,
        {"workpool.map": lambda p, f, xs: p.map(f, xs)},
        skip=peers.workpool_process,
    ),
    Contender(
        "ProcessPoolExecutor",
        "process",
        lambda n: cf.ProcessPoolExecutor(n),
        _shutdown,
        _executor_submit,
        {"ProcessPoolExecutor.map": lambda p, f, xs: p.map(f, xs)},
    ),
    Contender(
        "multiprocessing.Pool",
        "process",
        lambda n: multiprocessing.Pool(n),
        _close_join,
        _apply_async,
        {
            "multiprocessing.Pool.map": lambda p, f, xs: p.map(f, xs),
            "multiprocessing.Pool.imap": lambda p, f, xs: p.imap(f, xs),
            "multiprocessing.Pool.imap_unordered": lambda p, f, xs: p.imap_unordered(f, xs),
        },
    ),
    Contender(
        "pebble ProcessPool",
        "process",
        _pebble_open("process"),
        _close_join,
        _pebble_submit,
        {"pebble ProcessPool.map": _pebble_map},
        skip=lambda: peers.missing("pebble"),
    ),
    Contender(
        "loky",
        "process",
        _loky_open,
        _shutdown,
        _executor_submit,
        {"loky.map": lambda p, f, xs: p.map(f, xs)},
        skip=lambda: peers.missing("loky"),
    ),
    Contender(
        "mpire",
        "process",
        _mpire_open,
        _mpire_close,
        _apply_async,
        {"mpire.map": lambda p, f, xs: p.map(f, xs), "mpire.imap": lambda p, f, xs: p.imap(f, xs)},
        skip=lambda: peers.missing("mpire"),
        warm_by_map=True,
    ),
    Contender(
        "joblib (loky)",
        "process",
        _joblib_open("loky"),
        _joblib_close,
        maps={"joblib (loky)": _joblib_map},
        skip=lambda: peers.missing("joblib"),
        startup=False,
    ),
]
