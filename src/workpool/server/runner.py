"""The runner: jobs from the store onto a workpool ``Pool``, and outcomes back to the store.

::

    POST /jobs ──> store.add (committed) ──> pool.options(...).submit(attempt, job)
                                                   │ each attempt: store.start_attempt
                                                   ▼
                   store.finish <── done callback ─┘

On start, ``recover`` turns every job left running by a dead server back to queued and runs
it again (at least once; its attempts so far stay counted), unless the server has died under
it three times: then it may be what kills the server, and it fails instead. On drain
(SIGTERM), the pool stops taking work, running jobs get a grace period, and whatever is left
is put back to queued.
"""

from __future__ import annotations

import collections
import json
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import Any

from .. import Pool, RetryPolicy, Task, TaskState
from .store import FINAL_STATES, Job, JobSpec, JobStore


class QueueLimitReached(Exception):
    """The server already holds ``queue_size`` queued jobs."""


class NotAccepting(Exception):
    """The server is draining and takes no new job."""


@dataclass(frozen=True)
class Finished:
    """One finished job, as the dashboard and the metrics see it."""

    task: str
    state: str
    run_seconds: float
    at: float


class Runner:
    """Runs stored jobs on a ``Pool`` and records every outcome in the ``JobStore``."""

    def __init__(
        self,
        store: JobStore,
        tasks: Mapping[str, Callable[..., Any]],
        *,
        workers: int = 4,
        backend: str = "thread",
        queue_size: int = 0,
        retry: RetryPolicy | None = None,
    ) -> None:
        self.store = store
        self.tasks = dict(tasks)
        self.queue_size = queue_size
        self.backend = backend
        self._retry = retry or RetryPolicy()
        self.listeners: list[Callable[[Finished], None]] = []
        """Called with each finished job, in the thread that finished it (metrics, logs)."""
        self.pool = Pool(workers=workers, backend=backend)
        self._lock = threading.Lock()
        self._live: dict[str, Task[Any]] = {}
        self._started: dict[str, float] = {}
        self._user_cancelled: set[str] = set()
        self._draining = False
        self._closed = False
        self.recent: collections.deque[Finished] = collections.deque(maxlen=2000)

    @property
    def accepting(self) -> bool:
        return not self._draining

    def start(self) -> int:
        """Run again every job a previous server left queued or running; return how many."""
        jobs = self.store.recover()
        for job in jobs:
            self._dispatch(job)
        return len(jobs)

    def submit(self, spec: JobSpec) -> tuple[Job, bool]:
        """Store the job (committed), then queue it; a repeated key returns the first job."""
        if self._draining:
            raise NotAccepting
        if self.queue_size and self.pool.stats().queued >= self.queue_size:
            raise QueueLimitReached
        job, created = self.store.add(spec)
        if created:
            self._dispatch(job)
        return job, created

    def cancel(self, job_id: str) -> Job | None:
        """Cancel a queued job at once; ask a running one to stop. None if there is no such job."""
        job = self.store.get(job_id)
        if job is None or job.state in FINAL_STATES:
            return job
        with self._lock:
            task = self._live.get(job_id)
            self._user_cancelled.add(job_id)
        if task is None:
            self.store.finish(job_id, "cancelled", None, "cancelled before it ran")
        else:
            task.cancel()  # a queued task resolves now and its callback records it
        return self.store.get(job_id)

    def retry(self, job_id: str) -> Job | None:
        """Run a failed, timed-out or cancelled job once more (its attempts stay counted)."""
        job = self.store.get(job_id)
        if job is None or job.state not in ("failed", "timed_out", "cancelled"):
            return job
        if self._draining:
            raise NotAccepting
        self.store.requeue([job_id])
        job = self.store.get(job_id)
        assert job is not None
        self._dispatch(job)
        return job

    def stop_accepting(self) -> None:
        """Refuse new jobs and start no queued one; running jobs go on. (First step of drain.)"""
        with self._lock:
            self._draining = True
        self.pool.pause()

    def drain(self, grace: float) -> list[str]:
        """Stop starting jobs, give running ones ``grace`` seconds, requeue the rest.

        Returns the ids of the jobs that were still running and were put back to queued.
        """
        self.stop_accepting()
        # Queued tasks are cancelled in the pool; their callbacks leave the jobs queued on disk.
        self.pool.shutdown(wait=True, cancel_futures=True, timeout=grace)
        with self._lock:
            left = dict(self._live)
            self._closed = True
        for task in left.values():
            task.cancel()  # ask what still runs to stop through its context
        self.store.requeue(list(left))
        return list(left)

    # -- inside the pool ----------------------------------------------------------------------

    def _dispatch(self, job: Job) -> None:
        fn = self.tasks.get(job.task)
        if fn is None:
            self.store.finish(job.id, "failed", None, f"task {job.task!r} is not registered")
            return
        # Attempts already made (before a crash) count against the retries.
        retries = max(0, job.retries - job.attempts)
        view = self.pool.options(
            priority=job.priority, timeout=job.timeout, retries=retries, retry=self._retry
        )
        if self.backend == "thread":
            task: Task[Any] = view.submit(self._attempt, job.id, fn, job.args, job.kwargs)
        else:
            task = view.submit(fn, *job.args, **job.kwargs)
        with self._lock:
            self._live[job.id] = task
        task.add_done_callback(partial(self._finished, job.id, job.attempts, job.task))

    def _attempt(self, job_id: str, fn: Callable[..., Any], args: list[Any], kw: Any) -> Any:
        self.store.start_attempt(job_id)
        with self._lock:
            self._started[job_id] = time.monotonic()
        return fn(*args, **kw)

    def _finished(self, job_id: str, before: int, name: str, task: Task[Any]) -> None:
        with self._lock:
            self._live.pop(job_id, None)
            started = self._started.pop(job_id, None)
            by_user = job_id in self._user_cancelled
            self._user_cancelled.discard(job_id)
            draining, closed = self._draining, self._closed
        if closed:
            return  # given up on at drain and already requeued on disk
        state = task.state
        if state is TaskState.CANCELLED and draining and not by_user:
            self.store.requeue([job_id])
            return
        result, error = _outcome(task)
        final = "failed" if state is TaskState.SUCCEEDED and error else state.value
        self.store.finish(job_id, final, result, error)
        run = 0.0 if started is None else time.monotonic() - started
        record = Finished(name, final, run, time.time())
        self.recent.append(record)
        for listener in self.listeners:
            listener(record)


def _outcome(task: Task[Any]) -> tuple[Any, str | None]:
    """The JSON-ready result, or the error text, of a finished task."""
    if task.state is TaskState.CANCELLED:
        return None, "cancelled"
    error = task.exception()
    if error is not None:
        return None, f"{type(error).__name__}: {error}"
    result = task.result()
    try:
        json.dumps(result, allow_nan=False)  # NaN is not JSON: no client could read it back
    except (TypeError, ValueError, RecursionError) as exc:
        return None, f"the result is not JSON: {exc}"
    return result, None
