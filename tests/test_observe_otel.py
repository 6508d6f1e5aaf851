"""OpenTelemetry: spans for each task and attempt, with the right parents across threads."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from helpers import wait_until

import workpool
from workpool import RetryPolicy

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import (
    InMemorySpanExporter,
)
from opentelemetry.trace import StatusCode

from workpool.observe.carrier import trace_carrier
from workpool.observe.otel import TracingObserver, attached


class Traces:
    """A tracer provider whose finished spans are kept in memory."""

    def __init__(self) -> None:
        self.exporter = InMemorySpanExporter()
        self.provider = TracerProvider()
        self.provider.add_span_processor(SimpleSpanProcessor(self.exporter))
        self.tracer = self.provider.get_tracer("tests")

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, prefix: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name.startswith(prefix)]


@pytest.fixture
def traces() -> Iterator[Traces]:
    traced = Traces()
    yield traced
    traced.provider.shutdown()


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def test_task_span_is_a_child_of_the_submitters_span(traces: Traces) -> None:
    """The task span's parent is the span current where submit() was called."""
    observer = TracingObserver(traces.provider)
    with (
        workpool.Pool(2, observers=[observer]) as pool,
        traces.tracer.start_as_current_span("request") as request,
    ):
        pool.submit(abs, -1).result(timeout=10)
    (task,) = traces.named("workpool.task")
    (run,) = traces.named("workpool.run")
    assert parent_id(task) == request.get_span_context().span_id
    assert parent_id(run) == span_id(task)
    assert task.attributes is not None and task.attributes["workpool.task.outcome"] == "succeeded"


def test_spans_opened_in_a_task_nest_under_its_attempt(traces: Traces) -> None:
    """Across 4 workers and 200 tasks, each span a task opens is a child of its own attempt."""

    def work(i: int) -> int:
        with traces.tracer.start_as_current_span("inner", attributes={"i": i}):
            return i

    with workpool.Pool(4, observers=[TracingObserver(traces.provider)]) as pool:
        for i in range(200):
            with traces.tracer.start_as_current_span("request", attributes={"i": i}):
                pool.submit(work, i)
    by_id = {span_id(s): s for s in traces.spans()}
    inner = traces.named("inner")
    assert len(inner) == 200
    for span in inner:
        run = by_id[parent_id(span)]  # type: ignore[index]
        task = by_id[parent_id(run)]  # type: ignore[index]
        request = by_id[parent_id(task)]  # type: ignore[index]
        assert run.name.startswith("workpool.run") and task.name.startswith("workpool.task")
        assert request.attributes == span.attributes  # the submitter of this very task


def test_each_attempt_gets_a_span_and_failure_sets_error(traces: Traces) -> None:
    """A task failing three times has three attempt spans under one task span, all in error."""
    policy = RetryPolicy(base_delay=0)
    with workpool.Pool(1, observers=[TracingObserver(traces.provider, pool="batch")]) as pool:
        pool.options(retries=2, retry=policy, name="parse").submit(int, "x")
    (task,) = traces.named("workpool.task")
    runs = traces.named("workpool.run")
    assert [r.attributes["workpool.task.attempt"] for r in runs] == [1, 2, 3]  # type: ignore[index]
    assert all(parent_id(r) == span_id(task) for r in runs)
    assert [r.attributes["workpool.task.outcome"] for r in runs] == [  # type: ignore[index]
        "retried",
        "retried",
        "failed",
    ]
    assert task.status.status_code is StatusCode.ERROR
    attributes: Any = task.attributes
    assert attributes["workpool.task.attempts"] == 3 and attributes["workpool.pool"] == "batch"


def test_cancelled_and_rejected_tasks_end_their_spans(traces: Traces) -> None:
    """A task cancelled while queued and one refused by a full queue still end their spans."""
    gate = threading.Event()
    observer = TracingObserver(traces.provider)
    with workpool.Pool(1, queue_size=1, observers=[observer]) as pool:
        pool.submit(gate.wait, 30)
        wait_until(lambda: pool.stats().busy == 1)
        queued = pool.submit(abs, 1)
        with pytest.raises(workpool.QueueFull):
            pool.try_submit(abs, 2)
        queued.cancel()
        gate.set()
    outcomes = sorted(
        s.attributes["workpool.task.outcome"]  # type: ignore[index]
        for s in traces.named("workpool.task")
    )
    assert outcomes == ["cancelled", "rejected", "succeeded"]
    assert len(traces.named("workpool.run")) == 1


def test_the_carrier_restores_the_attempt_context_elsewhere(traces: Traces) -> None:
    """A span opened under attached(trace_carrier(task)) in another thread is a child of the
    task's last attempt: what a process backend does in its worker."""
    with workpool.Pool(1, observers=[TracingObserver(traces.provider)]) as pool:
        task = pool.submit(abs, -1)
        task.result(timeout=10)
    carrier = trace_carrier(task)
    assert carrier is not None and "traceparent" in carrier

    def elsewhere() -> None:
        with attached(carrier), traces.tracer.start_as_current_span("remote"):
            pass

    thread = threading.Thread(target=elsewhere)
    thread.start()
    thread.join()
    (run,) = traces.named("workpool.run")
    (remote,) = traces.named("remote")
    assert parent_id(remote) == span_id(run)


def test_no_carrier_means_no_context() -> None:
    """A task no tracer saw has no carrier, and attached(None) changes nothing."""
    task = workpool.Task(abs, (1,), {}, workpool.TaskOptions())
    assert trace_carrier(task) is None
    with attached(None):
        pass


def current_trace() -> tuple[int, int]:
    """Run in a worker process: the trace and span ids current there."""
    from opentelemetry import trace

    context = trace.get_current_span().get_span_context()
    return context.trace_id, context.span_id


def test_the_trace_crosses_into_a_worker_process(traces: Traces) -> None:
    """A process task runs under its attempt's span, sent over with the task."""
    observer = TracingObserver(traces.provider)
    with workpool.Pool(1, backend="process", observers=[observer]) as pool:
        trace_id, span = pool.submit(current_trace).result(timeout=60)
    (run,) = traces.named("workpool.run")
    assert run.context is not None
    assert (trace_id, span) == (run.context.trace_id, run.context.span_id)


def test_short_process_tasks_in_a_row_each_run_under_their_own_attempt(traces: Traces) -> None:
    """A short task is sent to its worker process ahead of its start, unless it is traced: its
    attempt's span only exists once it starts, and it runs under that span, as any task."""
    observer = TracingObserver(traces.provider)
    with workpool.Pool(1, backend="process", observers=[observer]) as pool:
        tasks = [pool.submit(current_trace) for _ in range(40)]
        seen = {task.id: task.result(timeout=60) for task in tasks}
    runs = {}
    for run in traces.named("workpool.run"):
        assert run.attributes is not None and run.context is not None
        runs[run.attributes["workpool.task.id"]] = (run.context.trace_id, run.context.span_id)
    assert seen == runs
