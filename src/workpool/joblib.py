"""workpool as a joblib parallel backend (needs ``workpool[joblib]``).

::

    import joblib
    import workpool.joblib

    workpool.joblib.register()
    with joblib.parallel_config(backend="workpool", n_jobs=2, timeout_per_task=30, retries=1):
        results = joblib.Parallel()(joblib.delayed(fit)(fold) for fold in folds)

Code written for joblib (scikit-learn's ``n_jobs`` included) then runs on a workpool ``Pool``:
a worker process that dies fails one batch with ``WorkerCrashed`` instead of breaking the run,
``timeout_per_task`` really stops a hung batch, and ``retries`` reruns a failed one. The
options: ``kind`` (``"process"``, the default, or ``"thread"``), ``timeout_per_task``
(seconds per batch of calls joblib hands over), ``retries``, and any ``Pool`` keyword in
``pool_options``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

from ._pool import Pool

try:
    from joblib import register_parallel_backend  # type: ignore[import-untyped]  # no hints
    from joblib._parallel_backends import (  # type: ignore[import-untyped]
        AutoBatchingMixin,
        ParallelBackendBase,
    )
except ImportError as error:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "workpool's joblib backend needs joblib: pip install 'workpool[joblib]'"
    ) from error

__all__ = ["WorkpoolBackend", "register"]


class WorkpoolBackend(AutoBatchingMixin, ParallelBackendBase):  # type: ignore[misc]  # untyped
    """A joblib backend that runs each batch of calls as one workpool task."""

    supports_retrieve_callback = True
    supports_timeout = True  # Parallel(timeout=...) is honoured by joblib itself

    def __init__(
        self,
        kind: str = "process",
        timeout_per_task: float | None = None,
        retries: int = 0,
        pool_options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.kind = kind
        self.timeout_per_task = timeout_per_task
        self.retries = retries
        self.pool_options = dict(pool_options or {})
        self._pool: Pool | None = None
        self.parallel: Any = None

    def effective_n_jobs(self, n_jobs: int | None) -> int:
        if n_jobs == 0:
            raise ValueError("n_jobs == 0 in Parallel has no meaning")
        if n_jobs is None:
            return 1
        if n_jobs < 0:
            return max((os.cpu_count() or 1) + 1 + n_jobs, 1)
        return n_jobs

    def configure(self, n_jobs: int | None = 1, parallel: Any = None, **backend_kwargs: Any) -> int:
        workers = self.effective_n_jobs(n_jobs)
        if self._pool is None or self._pool.stats().max_workers != workers:
            self.terminate()
            self._pool = Pool(workers, backend=self.kind, **self.pool_options)
        self.parallel = parallel
        return workers

    def submit(self, func: Callable[[], Any], callback: Callable[..., Any] | None = None) -> Any:
        if self._pool is None:
            self.configure(self.parallel.n_jobs if self.parallel else 1, self.parallel)
        assert self._pool is not None
        options = self._pool.options(timeout=self.timeout_per_task, retries=self.retries)
        task = options.submit(func)
        if callback is not None:
            task.add_done_callback(callback)
        return task

    def retrieve_result_callback(self, future: Future[Any]) -> Any:
        return future.result()

    def terminate(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)
            self._pool = None
        self.reset_batch_stats()

    def abort_everything(self, ensure_ready: bool = True) -> None:
        """A call failed: drop what waits, stop what runs, and start afresh if asked."""
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)
            self._pool._abort()  # running process tasks are stopped, thread tasks told to
            self._pool = None
        if ensure_ready and self.parallel is not None:
            self.configure(self.parallel.n_jobs, self.parallel)


def register() -> None:
    """Make ``joblib.parallel_config(backend="workpool")`` available."""
    register_parallel_backend("workpool", WorkpoolBackend)
