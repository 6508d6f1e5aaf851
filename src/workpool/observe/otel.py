"""OpenTelemetry: a span for each task and each attempt, under the submitter's trace.

``TracingObserver`` opens the task's span in ``task_submitted``, which runs in the submitting
thread, so the span is a child of whatever span was current there. Each attempt gets a child
span of the task's, made current in the worker while the task runs, so spans the task opens
nest under it. The attempt's context is also written as a W3C carrier (``trace_carrier``) for
backends that run tasks in another process; there ``attached(carrier)`` restores it.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from .._events import Observer
from .._task import Task
from .._version import __version__
from .carrier import set_trace_carrier

try:
    from opentelemetry import context as otel_context
    from opentelemetry import propagate, trace
    from opentelemetry.trace import Span, Status, StatusCode, TracerProvider
except ImportError as exc:  # pragma: no cover - depends on the environment
    raise ImportError(
        "workpool.observe.otel needs OpenTelemetry: pip install 'workpool[otel]'"
    ) from exc


class _Trace:
    __slots__ = ("attempt", "task")

    def __init__(self, task: Span) -> None:
        self.task = task
        self.attempt: Span | None = None


class TracingObserver(Observer):
    """Traces every task: ``workpool.task <name>`` from submission to its end, with one
    ``workpool.run <name>`` child per attempt (its queue wait, attempt number and outcome).

    ``tracer_provider`` defaults to the global one; ``pool`` names the pool in an attribute.
    """

    def __init__(
        self, tracer_provider: TracerProvider | None = None, *, pool: str | None = None
    ) -> None:
        self._tracer = trace.get_tracer("workpool", __version__, tracer_provider)
        self._pool = pool
        self._lock = threading.Lock()
        self._live: dict[Task[Any], _Trace] = {}
        self._local = threading.local()  # the worker thread's attached (task, token)

    def task_submitted(self, task: Task[Any]) -> None:
        attributes: dict[str, str] = {"workpool.task.id": task.id, "workpool.task.name": task.name}
        if self._pool is not None:
            attributes["workpool.pool"] = self._pool
        span = self._tracer.start_span(f"workpool.task {task.name}", attributes=attributes)
        with self._lock:
            self._live[task] = _Trace(span)
        self._carry(task, span)

    def task_rejected(self, task: Task[Any], error: BaseException) -> None:
        with self._lock:
            traced = self._live.pop(task, None)
        if traced is not None:
            traced.task.set_attribute("workpool.task.outcome", "rejected")
            traced.task.set_status(Status(StatusCode.ERROR, type(error).__name__))
            traced.task.end()

    def task_started(self, task: Task[Any]) -> None:
        with self._lock:
            traced = self._live.get(task)
        if traced is None:
            return  # submitted before this observer was attached
        parent = trace.set_span_in_context(traced.task)
        span = self._tracer.start_span(
            f"workpool.run {task.name}",
            context=parent,
            attributes={
                "workpool.task.id": task.id,
                "workpool.task.attempt": task.attempts,
                "workpool.task.queue_wait": max(0.0, task._started_at - task._enqueued_at),
            },
        )
        traced.attempt = span
        self._carry(task, span)
        self._detach()  # a previous task's end may have been reported from another thread
        token = otel_context.attach(trace.set_span_in_context(span))
        self._local.attached = (task, token)

    def task_retried(self, task: Task[Any], error: BaseException) -> None:
        with self._lock:
            traced = self._live.get(task)
        if traced is not None:
            self._end_attempt(task, traced, error, "retried")

    def task_finished(self, task: Task[Any], error: BaseException | None) -> None:
        with self._lock:
            traced = self._live.pop(task, None)
        if traced is None:
            return
        outcome = task.state.value
        self._end_attempt(task, traced, error, outcome)
        span = traced.task
        span.set_attribute("workpool.task.attempts", task.attempts)
        span.set_attribute("workpool.task.outcome", outcome)
        if error is not None and outcome != "cancelled":
            span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        span.end()

    def _end_attempt(
        self, task: Task[Any], traced: _Trace, error: BaseException | None, outcome: str
    ) -> None:
        attached = getattr(self._local, "attached", None)
        if attached is not None and attached[0] is task:
            self._detach()
        span, traced.attempt = traced.attempt, None
        if span is None:
            return  # cancelled while queued: no attempt was running
        span.set_attribute("workpool.task.outcome", outcome)
        if error is not None and outcome != "cancelled":
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()

    def _detach(self) -> None:
        attached = getattr(self._local, "attached", None)
        if attached is not None:
            self._local.attached = None
            otel_context.detach(attached[1])

    @staticmethod
    def _carry(task: Task[Any], span: Span) -> None:
        set_trace_carrier(task, functools.partial(_inject, span))


def _inject(span: Span) -> dict[str, str]:
    carrier: dict[str, str] = {}
    propagate.inject(carrier, context=trace.set_span_in_context(span))
    return carrier


@contextmanager
def attached(carrier: dict[str, str] | None) -> Iterator[None]:
    """Run the block under the trace context in ``carrier`` (from ``trace_carrier``)."""
    if not carrier:
        yield
        return
    token = otel_context.attach(propagate.extract(carrier))
    try:
        yield
    finally:
        otel_context.detach(token)
