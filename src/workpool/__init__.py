"""workpool: a production worker pool for Python.

Bounded queues with backpressure, priorities, per-task timeouts and retries, autoscaling,
pause/resume, graceful shutdown with a deadline, and stats, over one ``Pool`` API.
"""

from typing import TYPE_CHECKING

from ._errors import (
    BrokenPool,
    PoolClosed,
    QueueFull,
    TaskTimeout,
    WorkerCrashed,
    WorkpoolError,
)
from ._events import LoggingObserver, Observer
from ._executors import ProcessPoolExecutor, ThreadPoolExecutor
from ._options import RETRY_TIMEOUTS_AND_CRASHES, RetryPolicy, TaskOptions
from ._pool import Pool, ShutdownReport, TaskOptionsView
from ._registry import task
from ._stats import PoolStats
from ._task import Task, TaskContext, TaskState, current_task
from ._version import __version__
from .observe.progress import progress

if TYPE_CHECKING:  # a type checker sees the import (and no __getattr__ to accept typos)
    from ._async_pool import AsyncPool
else:

    def __getattr__(name: str) -> object:
        # AsyncPool is imported on first use: it brings asyncio, a quarter of what ``import
        # workpool`` took (30 of 125 ms here), paid by every user of threads and processes,
        # and by the forkserver, which imports workpool before it forks the first worker.
        if name == "AsyncPool":
            from ._async_pool import AsyncPool

            globals()["AsyncPool"] = AsyncPool
            return AsyncPool
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

    def __dir__() -> list[str]:
        return sorted({*globals(), *__all__})


__all__ = [
    "RETRY_TIMEOUTS_AND_CRASHES",
    "AsyncPool",
    "BrokenPool",
    "LoggingObserver",
    "Observer",
    "Pool",
    "PoolClosed",
    "PoolStats",
    "ProcessPoolExecutor",
    "QueueFull",
    "RetryPolicy",
    "ShutdownReport",
    "Task",
    "TaskContext",
    "TaskOptions",
    "TaskOptionsView",
    "TaskState",
    "TaskTimeout",
    "ThreadPoolExecutor",
    "WorkerCrashed",
    "WorkpoolError",
    "__version__",
    "current_task",
    "progress",
    "task",
]
