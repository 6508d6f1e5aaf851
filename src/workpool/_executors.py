"""Drop-in replacements for the stdlib executors: change one import line, keep the semantics.

``workpool.ThreadPoolExecutor`` and ``workpool.ProcessPoolExecutor`` take exactly the arguments
of their ``concurrent.futures`` namesakes and behave as they do (an eager ``map``, workers that
never retire, a broken executor after a failed initializer), and each *is* one for
``isinstance`` (asyncio's ``set_default_executor`` checks). They are also ``Pool``s:
``options()``, ``stats()``, ``pause()``, priorities and timeouts are there when wanted. Where
workpool does better on purpose, a process that dies fails only its own task
(``WorkerCrashed``, which is still a ``BrokenProcessPool``) instead of breaking the executor.
"""

from __future__ import annotations

import functools
import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
from multiprocessing.context import BaseContext
from typing import Any, TypeVar

from ._pool import Pool

T = TypeVar("T")

_counter = itertools.count()


class ThreadPoolExecutor(Pool, futures.ThreadPoolExecutor):
    """``concurrent.futures.ThreadPoolExecutor``, on workpool's engine."""

    def __init__(
        self,
        max_workers: int | None = None,
        thread_name_prefix: str = "",
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
    ) -> None:
        # futures.ThreadPoolExecutor.__init__ is deliberately not called: Pool is the engine.
        if max_workers is None:
            max_workers = min(32, (os.cpu_count() or 1) + 4)
        if max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        self._max_workers = max_workers
        self._thread_name_prefix = thread_name_prefix or f"ThreadPoolExecutor-{next(_counter)}"
        super().__init__(
            max_workers,
            backend="thread",
            initializer=initializer,
            initargs=initargs,
            thread_name_prefix=self._thread_name_prefix,
        )

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._shutdown_without_report()  # as the stdlib: every task runs, whatever the block raised

    def map(  # type: ignore[override]  # the stdlib's signature, not Pool's lazy one
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """As ``Executor.map``: every call is submitted now, unless ``buffersize`` (Python 3.14)
        bounds how many submitted calls may wait for their result to be taken."""
        if buffersize is None:
            return futures.Executor.map(self, fn, *iterables, timeout=timeout, chunksize=chunksize)
        if not isinstance(buffersize, int) or buffersize < 1:
            raise ValueError("buffersize must be None or > 0.")
        return super().map(fn, *iterables, timeout=timeout, window=buffersize)


class ProcessPoolExecutor(Pool, futures.ProcessPoolExecutor):
    """``concurrent.futures.ProcessPoolExecutor``, on workpool's engine and process backend."""

    def __init__(
        self,
        max_workers: int | None = None,
        mp_context: BaseContext | None = None,
        initializer: Callable[..., object] | None = None,
        initargs: tuple[Any, ...] = (),
        *,
        max_tasks_per_child: int | None = None,
    ) -> None:
        # futures.ProcessPoolExecutor.__init__ is deliberately not called: Pool is the engine.
        if max_workers is None:
            max_workers = os.cpu_count() or 1
        elif max_workers <= 0:
            raise ValueError("max_workers must be greater than 0")
        method = mp_context.get_start_method() if mp_context is not None else None
        if max_tasks_per_child is not None:
            if not isinstance(max_tasks_per_child, int):
                raise TypeError("max_tasks_per_child must be an integer")
            if max_tasks_per_child <= 0:
                raise ValueError("max_tasks_per_child must be >= 1")
            if method == "fork":
                raise ValueError(
                    "max_tasks_per_child is incompatible with the 'fork' multiprocessing start "
                    "method; supply a different mp_context."
                )
        self._max_workers = max_workers
        super().__init__(
            max_workers,
            backend="process",
            initializer=initializer,
            initargs=initargs,
            max_tasks_per_worker=max_tasks_per_child,
            start_method=method,  # None: the backend's default
        )

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        self._shutdown_without_report()  # as the stdlib: every task runs, whatever the block raised

    def map(  # type: ignore[override]  # the stdlib's signature, not Pool's lazy one
        self,
        fn: Callable[..., T],
        *iterables: Iterable[Any],
        timeout: float | None = None,
        chunksize: int = 1,
        buffersize: int | None = None,
    ) -> Iterator[T]:
        """As ``ProcessPoolExecutor.map``: eager, in chunks of ``chunksize`` calls per task."""
        if chunksize < 1:
            raise ValueError("chunksize must be >= 1.")
        if buffersize is not None:
            if not isinstance(buffersize, int) or buffersize < 1:
                raise ValueError("buffersize must be None or > 0.")
            return Pool.map(
                self, fn, *iterables, timeout=timeout, chunksize=chunksize, window=buffersize
            )
        chunks = _chunks(zip(*iterables), chunksize)  # noqa: B905  # shortest input, as stdlib
        results = futures.Executor.map(
            self, functools.partial(_call_chunk, fn), chunks, timeout=timeout
        )
        return itertools.chain.from_iterable(results)


def _chunks(items: Iterator[tuple[Any, ...]], size: int) -> Iterator[list[tuple[Any, ...]]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


def _call_chunk(fn: Callable[..., T], chunk: list[tuple[Any, ...]]) -> list[T]:
    """Run one chunk in a worker; an error fails the whole chunk, as in the stdlib."""
    return [fn(*args) for args in chunk]
