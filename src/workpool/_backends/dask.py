"""A Dask cluster as workers.

A worker slot is a *lane*: at most one Dask future in flight, not a thread. The queue, the
priorities, the retries and the deadlines stay in workpool, so ``workers`` bounds the work handed
to the cluster and backpressure holds however big the cluster is::

    start/wake(slot) ──> host.take ──> client.submit(run_attempt, ...) ──> Dask future
                                                                              │ completes
    pump thread <── as_completed(with_results=True) <─────────────────────────┘
         └──> host.done(slot, task, value, error) ──> the lane's next task: submit, park, retire

One pump thread per pool reads the completions (Dask fetches the results on its event loop), so
no workpool code, and no lock of the pool, ever runs on Dask's event loop or its callback thread.

Dask cannot stop a running task. ``interrupt`` cancels the task's Dask future: the pool stops
waiting for it at once, and the worker marks the task cancelled, which ``current_task().check()``
sees there; code that never checks runs on until it returns, and its result is dropped. With
``isolate=True`` every attempt runs in a subprocess of the Dask worker, which is killed at the
deadline or on cancellation (see ``dask_remote``).

A Dask worker that dies under a task (``KilledWorker``) fails the attempt with ``WorkerCrashed``,
which the task's retry policy may retry; the lane goes on. The local cluster that a pool starts
tells Dask's scheduler not to rerun such tasks itself (``allowed-failures`` 0), so that the pool's
policy decides; a cluster the user brings keeps its own setting.
"""

from __future__ import annotations

import itertools
import logging
import os
import pickle
import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import CancelledError
from typing import Any

from .._engine import RETIRE, Directive, Next, WorkerSlot
from .._errors import WorkerCrashed
from .._task import Task
from .base import Backend, Interruption
from .dask_remote import AttemptInfo, run_attempt

_log = logging.getLogger("workpool")

_LOCAL_CLUSTER_DEFAULTS: Mapping[str, Any] = {
    "host": "127.0.0.1",  # never listen beyond this machine unless told to
    "processes": True,
}


def _import_distributed() -> Any:
    try:
        import distributed
    except ImportError as exc:
        raise ImportError(
            "the 'dask' backend needs Dask distributed: pip install 'workpool[dask]'"
        ) from exc
    return distributed


class _Lane:
    __slots__ = ("future", "parked_at", "task")

    def __init__(self) -> None:
        self.task: Task[Any] | None = None
        self.future: Any = None  # the Dask future of ``task``'s current attempt
        self.parked_at: float | None = None


class DaskBackend(Backend):
    """Workers are lanes on a Dask cluster: a local one by default, or the one given.

    Options (as ``Pool(backend="dask", ...)`` keywords): ``address`` of a running scheduler, or a
    ``client`` to use (never closed by the pool); ``cluster_options`` for the ``LocalCluster``
    started otherwise; ``isolate`` to run each attempt in a killable subprocess on the worker;
    ``submit_options`` passed to every ``client.submit`` (say, ``resources``).
    """

    name = "dask"
    _pools = itertools.count(1)

    def __init__(
        self,
        *args: Any,
        address: str | None = None,
        client: Any = None,
        cluster_options: Mapping[str, Any] | None = None,
        isolate: bool = False,
        submit_options: Mapping[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        distributed = _import_distributed()
        given = sum(x is not None for x in (address, client, cluster_options))
        if given > 1:
            raise TypeError("give at most one of address, client and cluster_options")
        self._isolate = bool(isolate)
        self._submit_options = dict(submit_options or {})
        self._prefix = f"workpool-{uuid.uuid4().hex[:8]}-"
        self._cluster: Any = None
        self._owns_client = client is None
        if client is not None:
            if getattr(client, "asynchronous", False):
                raise TypeError("the dask backend needs a synchronous distributed.Client")
            self._client = client
        elif address is not None:
            self._client = distributed.Client(address, set_as_default=False)
        else:
            self._cluster = _start_local_cluster(distributed, cluster_options or {})
            try:
                self._client = distributed.Client(self._cluster, set_as_default=False)
            except BaseException:
                self._cluster.close()
                raise
        self._killed_worker: type[BaseException] = distributed.KilledWorker
        self._completions = distributed.as_completed(
            loop=self._client.loop, with_results=True, raise_errors=False
        )
        self._lock = threading.Lock()
        self._changed = threading.Condition(self._lock)
        self._inflight: dict[Any, tuple[WorkerSlot, Task[Any]]] = {}
        self._parked: dict[int, WorkerSlot] = {}
        self._stopping = False
        self._pump: threading.Thread | None = None
        self._init_error: BaseException | None = None
        if self.initializer is not None:
            self._register_initializer(distributed)

    @property
    def client(self) -> Any:
        """The ``distributed.Client`` the pool submits to."""
        return self._client

    @staticmethod
    def default_workers() -> int:
        # The local cluster's thread count. The backend cannot see a remote cluster before the
        # pool is built: pass workers=sum(client.nthreads().values()) for one.
        return os.cpu_count() or 1

    # -- the seam -----------------------------------------------------------------------------

    def start(self, slot: WorkerSlot) -> None:
        slot.handle = _Lane()
        if self._init_error is not None:
            self.host.broken(slot, self._init_error)
            return
        with self._lock:
            if self._pump is None:
                self._pump = threading.Thread(
                    target=self._run_pump, name=f"workpool-dask-{next(self._pools)}", daemon=True
                )
                self._pump.start()
        self._advance(slot, self.host.take(slot))

    def wake(self, slot: WorkerSlot) -> None:
        with self._lock:
            self._parked.pop(slot.id, None)
        self._advance(slot, self.host.take(slot))

    def interrupt(self, slot: WorkerSlot, task: Task[Any], why: Interruption) -> None:
        # Dask cannot stop a running task: cancelling its future ends the pool's wait for it
        # and marks it cancelled on the worker (current_task().check() raises there; an
        # isolated attempt's subprocess is killed). The lane then retires or goes on.
        lane = slot.handle
        with self._lock:
            # The lane may have moved on to another task since: never cancel that one.
            future = lane.future if lane is not None and lane.task is task else None
        if future is not None:
            future.cancel(reason=f"workpool: {why}")

    def join(self, timeout: float | None) -> bool:
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._lock:
            self._stopping = True
            self._changed.notify_all()
            pump = self._pump
        if pump is not None and pump is not threading.current_thread():
            pump.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
            if pump.is_alive():
                return False
        self._close_owned()
        return True

    # -- lanes --------------------------------------------------------------------------------

    def _advance(self, slot: WorkerSlot, task: Next) -> None:
        """Carry out what the pool told ``slot``: submit a task, park, or retire."""
        while task is not None and task is not RETIRE:
            try:
                future = self._submit(task)
            except Exception as exc:  # the client is closed, or the call cannot be pickled
                if threading.current_thread() is threading.main_thread() and self._refuse_later(
                    slot, task, exc
                ):
                    return
                task = self.host.done(slot, task, None, exc)
                continue
            with self._lock:
                slot.handle.task, slot.handle.future = task, future
                self._inflight[future.key] = (slot, task)
                self._completions.add(future)
                self._changed.notify_all()
            return
        with self._lock:
            if task is None:
                slot.handle.parked_at = time.monotonic()
                self._parked[slot.id] = slot
                self._changed.notify_all()

    def _refuse_later(self, slot: WorkerSlot, task: Task[Any], error: Exception) -> bool:
        """Report an attempt Dask would not take from a thread of its own, never the main one,
        where a Ctrl-C can land (see ``WorkerHost.done``); False if no thread can start.

        Not waited for: the task's callbacks run there, and the caller may hold a lock they
        need (joblib submits holding one)."""

        def refused() -> None:
            try:
                self._advance(slot, self.host.done(slot, task, None, error))
            except Exception:  # a bug must not leave the lane silent
                _log.exception("workpool's Dask backend failed to report %s", task.id)

        try:
            threading.Thread(target=refused, name="workpool-dask-refused", daemon=True).start()
        except RuntimeError:  # out of threads: report it here after all
            return False
        return True

    def _submit(self, task: Task[Any]) -> Any:
        info = AttemptInfo(task.id, task.attempts, task.options.timeout, self._isolate)
        return self._client.submit(
            run_attempt,
            task.fn,
            task.args,
            task.kwargs,
            info,
            key=f"{self._prefix}{task.id}-{task.attempts}",
            priority=task.options.priority,
            pure=False,
            **self._submit_options,
        )

    def _run_pump(self) -> None:
        """Hand each finished Dask future to the pool, and retire lanes idle for too long."""
        completions = self._completions
        while True:
            with self._lock:
                if not self._inflight:
                    if self._stopping:
                        return
                    self._changed.wait(self._park_wait())
                busy = bool(self._inflight)
            self._retire_idle()
            if busy:
                try:
                    future, outcome = next(completions)
                except StopIteration:
                    continue
                try:
                    self._finish(future, outcome)
                except Exception:  # a bug must not silence every later completion
                    _log.exception("workpool's Dask pump failed to hand over %s", future.key)

    def _finish(self, future: Any, outcome: Any) -> None:
        with self._lock:
            entry = self._inflight.pop(future.key, None)
        if entry is None:
            return
        slot, task = entry
        with self._lock:
            slot.handle.task = slot.handle.future = None
        value, error = self._translate(future, outcome, task)
        del future, outcome
        self._advance(slot, self.host.done(slot, task, value, error))

    def _translate(
        self, future: Any, outcome: Any, task: Task[Any]
    ) -> tuple[Any, BaseException | None]:
        """A Dask outcome as a value or workpool's error: worker loss becomes WorkerCrashed."""
        status = future.status
        if status == "finished":
            try:
                return pickle.loads(outcome), None
            except Exception as exc:  # say, the result's class is not importable here
                return None, exc
        if status == "error":
            _, error, traceback = outcome
            if isinstance(error, self._killed_worker):
                worker = getattr(getattr(error, "last_worker", None), "address", "?")
                reason = f"Dask worker {worker} died under it (KilledWorker)"
                return None, WorkerCrashed(task.id, reason=reason)
            return None, error.with_traceback(traceback)
        if task._cancel_requested or task._expired:
            return None, CancelledError(f"task {task.id} was cancelled")
        # Not asked for by the pool: the client lost its scheduler, or someone else cancelled.
        return None, WorkerCrashed(task.id, reason=f"the Dask future was {status}: {outcome!r}")

    # -- idle lanes ---------------------------------------------------------------------------

    def _park_wait(self) -> float | None:
        """Called under the lock: how long until the first parked lane's idle time is up."""
        limit = self.host.park_timeout()
        if limit is None or not self._parked:
            return None
        first: float = min(slot.handle.parked_at for slot in self._parked.values())
        return max(0.0, first + limit - time.monotonic())

    def _retire_idle(self) -> None:
        limit = self.host.park_timeout()
        if limit is None:
            return
        now = time.monotonic()
        with self._lock:
            due = [s for s in self._parked.values() if now - s.handle.parked_at >= limit]
            for slot in due:
                del self._parked[slot.id]
        for slot in due:
            verdict = self.host.idle_expired(slot)
            if verdict is None:  # below min_workers: stay parked
                with self._lock:
                    slot.handle.parked_at = now
                    self._parked[slot.id] = slot
            # RETIRE: the lane is gone. WOKEN: wake() is on its way and takes for the lane.
            assert verdict in (None, RETIRE, Directive.WOKEN)

    # -- setup and teardown -------------------------------------------------------------------

    def _register_initializer(self, distributed: Any) -> None:
        """Run the initializer once on every worker of the cluster, present and future."""
        initializer, initargs = self.initializer, self.initargs

        class _Initializer(distributed.WorkerPlugin):  # type: ignore[misc]  # Dask is untyped
            def setup(self, worker: Any) -> None:
                assert initializer is not None
                initializer(*initargs)

        try:
            self._client.register_plugin(_Initializer(), name=f"{self._prefix}initializer")
        except Exception as exc:
            self._init_error = exc

    def _close_owned(self) -> None:
        if self._owns_client:
            self._client.close()
        elif self.initializer is not None and self._init_error is None:
            # A cluster the user brought outlives the pool: take the pool's setup off it.
            try:
                self._client.unregister_worker_plugin(f"{self._prefix}initializer")
            except Exception:  # the client is closed already: nothing of ours to remove
                _log.debug("could not unregister the initializer plugin", exc_info=True)
        if self._cluster is not None:
            self._cluster.close()
            self._cluster = None


def _start_local_cluster(distributed: Any, options: Mapping[str, Any]) -> Any:
    import dask

    settings = dict(_LOCAL_CLUSTER_DEFAULTS, **options)
    if "dashboard_address" not in options:
        # The scheduler serves /health and /metrics even with the dashboard off: on a free
        # port of this machine, rather than on 8787 (warning when that is taken).
        settings["dashboard_address"] = "127.0.0.1:0"
        settings["scheduler_kwargs"] = {"dashboard": False, **settings.get("scheduler_kwargs", {})}
    if not settings.get("processes", True):
        settings.pop("host", None)  # in-process workers talk inproc://, not TCP
    # The pool's retry policy, not Dask's scheduler, decides whether a task whose worker died
    # runs again.
    with dask.config.set({"distributed.scheduler.allowed-failures": 0}):
        return distributed.LocalCluster(**settings)
