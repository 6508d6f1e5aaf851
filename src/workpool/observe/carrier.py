"""The trace context a task carries to wherever it runs, as plain strings.

A tracing observer puts the W3C trace context of a task's current attempt here (``traceparent``
and friends); a backend that runs tasks in another process sends ``trace_carrier(task)`` with
the task and has the worker run it inside ``workpool.observe.otel.attached(carrier)``. This
module needs nothing but the standard library, so a backend may import it unconditionally.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Callable
from typing import Any

from .._task import Task

Inject = Callable[[], dict[str, str]]
"""Writes the carrier when asked: most tasks run in-process and never need one."""

_carriers: weakref.WeakKeyDictionary[Task[Any], Inject] = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # WeakKeyDictionary is not safe against concurrent writers
_tracing = False  # whether a tracer ever set a carrier (cheaper to test than the dict's length)


def trace_carrier(task: Task[Any]) -> dict[str, str] | None:
    """The trace context to run ``task`` under, or None if no tracer saw it."""
    if not _tracing:  # no tracer at work: spare every task the lock and a weak reference
        return None
    with _lock:
        inject = _carriers.get(task)
    return None if inject is None else inject()


def is_traced(task: Task[Any]) -> bool:
    """Whether a tracer follows ``task`` (without writing its carrier)."""
    if not _tracing:
        return False
    with _lock:
        return task in _carriers


def set_trace_carrier(task: Task[Any], inject: Inject) -> None:
    """Record how to write the trace context for ``task``'s next run (a tracer calls this).

    Call it when the task is submitted (``task_submitted``), then at each attempt's start: a
    process pool sends a task that has none yet ahead of its start, before any attempt exists.
    """
    global _tracing
    with _lock:
        _carriers[task] = inject
        _tracing = True
