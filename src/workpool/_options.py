"""Per-task options and the retry policy: frozen values, shared between tasks."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from ._errors import TaskTimeout, WorkerCrashed

_DEFAULT_RETRY_ON: tuple[type[BaseException], ...] = (Exception,)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which failures are retried, and how long to wait before each new attempt.

    The delay before retry ``k`` (1-based) is ``min(max_delay, base_delay * multiplier**(k-1))``,
    shortened at random by up to ``jitter`` of itself so that many failing tasks do not retry in
    lockstep. ``retry_on`` lists the exception types that are retried; ``TaskTimeout`` and
    ``WorkerCrashed`` are retried whenever they match it, and ``Exception`` (the default) matches
    both. ``retry_if`` narrows further with a predicate on the exception.
    """

    retry_on: tuple[type[BaseException], ...] = _DEFAULT_RETRY_ON
    retry_if: Callable[[BaseException], bool] | None = None
    base_delay: float = 0.05
    multiplier: float = 2.0
    max_delay: float = 5.0
    jitter: float = 0.5

    def __post_init__(self) -> None:
        if self.base_delay < 0 or self.max_delay < 0:
            raise ValueError("retry delays must be >= 0")
        if self.multiplier < 1:
            raise ValueError("multiplier must be >= 1")
        if not 0 <= self.jitter <= 1:
            raise ValueError("jitter must be between 0 and 1")

    def should_retry(self, error: BaseException) -> bool:
        """Whether a task that failed with ``error`` may run again."""
        if not isinstance(error, self.retry_on):
            return False
        return self.retry_if is None or bool(self.retry_if(error))

    def delay(self, retry: int, rng: Callable[[], float] = random.random) -> float:
        """Seconds to wait before retry number ``retry`` (1 for the first retry)."""
        exponent = min(retry - 1, 64)  # past this the cap applies anyway; avoid overflow
        full = min(self.max_delay, self.base_delay * math.pow(self.multiplier, exponent))
        return full * (1.0 - self.jitter * rng())


RETRY_TIMEOUTS_AND_CRASHES = RetryPolicy(retry_on=(TaskTimeout, WorkerCrashed))
"""A policy that retries only what went wrong around the task, not the task's own errors."""


@dataclass(frozen=True, slots=True)
class TaskOptions:
    """How one task is scheduled and supervised.

    ``priority``: higher runs first. ``timeout``: seconds of run time per attempt.
    ``retries``: attempts after the first. ``retry``: the policy for those retries.
    ``name``: a label for stats, logs and repr.
    """

    priority: int = 0
    timeout: float | None = None
    retries: int = 0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    name: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.priority, int):
            raise TypeError(f"priority must be an int, not {type(self.priority).__name__}")
        if self.timeout is not None and not self.timeout > 0:
            raise ValueError(f"timeout must be > 0 or None, not {self.timeout!r}")
        if not isinstance(self.retries, int) or self.retries < 0:
            raise ValueError(f"retries must be an int >= 0, not {self.retries!r}")

    def merged(self, **changes: Any) -> TaskOptions:
        """A copy with ``changes`` applied (unknown names raise ``TypeError``)."""
        return replace(self, **changes)


DEFAULT_OPTIONS = TaskOptions()


def task_options(**given: Any) -> TaskOptions:
    """The default options with those ``given`` that are not None (``pool.options(...)``)."""
    return DEFAULT_OPTIONS.merged(**{k: v for k, v in given.items() if v is not None})
