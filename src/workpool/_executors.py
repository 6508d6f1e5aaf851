"""Drop-in replacements for the stdlib executors: change one import line, keep the semantics.

``workpool.ThreadPoolExecutor`` takes exactly the arguments of
``concurrent.futures.ThreadPoolExecutor`` and behaves as it does (an eager ``map``, workers that
never retire, ``BrokenThreadPool`` after a failed initializer), and it *is* one for
``isinstance`` (asyncio's ``set_default_executor`` checks). It is also a ``Pool``: ``options()``,
``stats()``, ``pause()``, priorities and timeouts are there when wanted.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent import futures
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
