"""The trace context a task carries to wherever it runs, as plain strings.

A tracing observer puts the W3C trace context of a task's current attempt here (``traceparent``
and friends); a backend that runs tasks in another process sends ``trace_carrier(task)`` with
the task and has the worker run it inside ``workpool.observe.otel.attached(carrier)``. This
module needs nothing but the standard library, so a backend may import it unconditionally.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any

from .._task import Task

_carriers: weakref.WeakKeyDictionary[Task[Any], dict[str, str]] = weakref.WeakKeyDictionary()
_lock = threading.Lock()  # WeakKeyDictionary is not safe against concurrent writers


def trace_carrier(task: Task[Any]) -> dict[str, str] | None:
    """The trace context to run ``task`` under, or None if no tracer saw it."""
    with _lock:
        carrier = _carriers.get(task)
    return None if carrier is None else dict(carrier)


def set_trace_carrier(task: Task[Any], carrier: dict[str, str]) -> None:
    """Record the trace context for ``task``'s next run (a tracing observer calls this)."""
    with _lock:
        _carriers[task] = carrier
