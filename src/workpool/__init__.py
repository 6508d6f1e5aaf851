"""workpool: a production worker pool for Python.

Bounded queues with backpressure, priorities, per-task timeouts and retries, autoscaling,
pause/resume, graceful shutdown with a deadline, and stats, over one ``Pool`` API.
"""

from ._async_pool import AsyncPool
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
