"""Progress bars for ``pool.map(..., progress=True)`` and ``workpool.progress(...)``.

The bar is tqdm's (``pip install 'workpool[progress]'``): done, failed, rate and ETA, on
stderr, and none at all when stderr is not a terminal. Without tqdm, ``progress=True`` on a terminal
warns once and iterates without a bar: a progress bar is cosmetic, and a job deployed without
the extra should not fail for it.
"""

from __future__ import annotations

import sys
import warnings
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import as_completed
from typing import Any, Protocol, TypeVar, runtime_checkable

from .._task import Task

T = TypeVar("T")

_warned = False


@runtime_checkable
class ProgressLike(Protocol):
    """A bar to advance, such as a ``tqdm`` you configured: ``progress=tqdm(desc="resize")``."""

    def update(self, n: int = 1) -> object: ...

    def close(self) -> object: ...


def _new_bar(total: int | None, desc: str | None, stacklevel: int) -> ProgressLike | None:
    """A tqdm bar on stderr; None when stderr is not a terminal, or without tqdm."""
    global _warned
    if not _on_terminal():
        return None  # no bar at all: a disabled tqdm would still start its monitor thread
    try:
        from tqdm.auto import tqdm
    except ImportError:
        if not _warned:
            _warned = True
            warnings.warn(
                "progress=True needs tqdm, so no bar is shown: pip install 'workpool[progress]'",
                RuntimeWarning,
                stacklevel=stacklevel + 1,
            )
        return None
    bar: ProgressLike = tqdm(total=total, desc=desc, unit="task", dynamic_ncols=True)
    return bar


def _on_terminal() -> bool:
    stderr = sys.stderr
    try:
        return stderr is not None and stderr.isatty()
    except (AttributeError, ValueError):  # replaced by an object without it, or closed
        return False


def _failed(item: object) -> bool:
    return (
        isinstance(item, Task)
        and item.done()
        and not item.cancelled()
        and item.exception(0) is not None
    )


def _track(
    items: Iterator[T], bar: ProgressLike | None, owned: bool, count_failures: bool
) -> Iterator[T]:
    """Yield ``items``, advancing ``bar`` for each; close both when done or abandoned."""
    failed = 0
    postfix = getattr(bar, "set_postfix", None) if count_failures else None
    try:
        for item in items:
            if bar is not None:
                if postfix is not None and _failed(item):
                    failed += 1
                    postfix(failed=failed, refresh=False)
                bar.update(1)
            yield item
    finally:
        close = getattr(items, "close", None)
        if close is not None:
            close()  # a map stream cancels what it still has in flight
        if bar is not None and owned:
            bar.close()


def _total(iterables: Iterable[Any]) -> int | None:
    """How many items zipping ``iterables`` gives, if every one has a length."""
    sizes = []
    for it in iterables:
        try:
            sizes.append(len(it))
        except TypeError:
            return None
    return min(sizes) if sizes else None


def progress(
    tasks: Iterable[T], total: int | None = None, *, desc: str | None = None
) -> Iterator[T]:
    """Show a bar while iterating: over a collection of tasks, yield them as they complete.

    ``workpool.progress(tasks)`` is ``as_completed(tasks)`` with a bar that counts done and
    failed tasks; ``workpool.progress(pool.as_completed(tasks), total=n)`` wraps an iterator
    you already have. ``total`` defaults to ``len(tasks)`` when there is one.
    """
    if total is None:
        total = _total([tasks])
    # A collection of tasks is waited on as they complete; an iterator is taken as it comes.
    items: Iterator[Any] = (
        tasks if isinstance(tasks, Iterator) else as_completed(list(tasks))  # type: ignore[arg-type]  # T is a Task here
    )
    return _track(items, _new_bar(total, desc, 2), owned=True, count_failures=True)


def map_progress(
    progress: bool | ProgressLike, iterables: tuple[Iterable[Any], ...]
) -> Callable[[Iterator[T]], Iterator[T]]:
    """For ``pool.map(..., progress=...)``: what to wrap the results in (checked before any
    task is submitted): nothing, a new bar, or the bar given."""
    if progress is False:
        return _unchanged
    if progress is True:
        bar = _new_bar(_total(iterables), None, 4)
        return lambda results: _track(results, bar, owned=True, count_failures=False)
    if not isinstance(progress, ProgressLike):
        raise TypeError(f"progress must be a bool or have update() and close(), not {progress!r}")
    given = progress
    return lambda results: _track(results, given, owned=False, count_failures=False)


def _unchanged(results: Iterator[T]) -> Iterator[T]:
    return results
