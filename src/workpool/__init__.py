"""workpool: a production worker pool for Python.

Bounded queues with backpressure, priorities, per-task timeouts and retries, autoscaling,
pause/resume, graceful shutdown with a deadline, and stats, over one ``Pool`` API.
"""

from ._errors import (
    BrokenPool,
    PoolClosed,
    QueueFull,
    TaskTimeout,
    WorkerCrashed,
    WorkpoolError,
)
from ._options import RETRY_TIMEOUTS_AND_CRASHES, RetryPolicy, TaskOptions
from ._pool import Pool, ShutdownReport, TaskOptionsView
from ._registry import task
from ._stats import PoolStats
from ._task import Task, TaskContext, TaskState, current_task
from ._version import __version__

__all__ = [
    "RETRY_TIMEOUTS_AND_CRASHES",
    "BrokenPool",
    "Pool",
    "PoolClosed",
    "PoolStats",
    "QueueFull",
    "RetryPolicy",
    "ShutdownReport",
    "Task",
    "TaskContext",
    "TaskOptions",
    "TaskOptionsView",
    "TaskState",
    "TaskTimeout",
    "WorkerCrashed",
    "WorkpoolError",
    "__version__",
    "current_task",
    "task",
]
