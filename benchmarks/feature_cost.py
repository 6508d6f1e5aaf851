"""Per-task cost of each feature: what a submission pays for what it asks for.

The pool's own work for a task (submit, start, finish, resolve, read the result) is run in one
thread, with the worker's loop driven inline, so that what is measured is the feature and not
how the machine schedules threads (which, for no-op tasks on threads, varies more between two
runs than any feature costs). Configurations run interleaved, round after round; prints the
median CPU time per task and the difference from a plain ``submit``.

    python -m benchmarks.feature_cost [--tasks 50000] [--rounds 7]

A feature that is not used costs nothing: the plain row is the pool with every feature off,
and each other row turns exactly one on.
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Callable
from typing import Any

import workpool
from workpool._backends.base import Backend, Interruption
from workpool._engine import WorkerSlot
from workpool._task import Task


def noop() -> None:
    pass


class _Inline(Backend):
    """A worker that is never started: the benchmark runs its loop itself."""

    name = "inline"

    @staticmethod
    def default_workers() -> int:
        return 1

    def start(self, slot: WorkerSlot) -> None:
        slot.handle = True

    def wake(self, slot: WorkerSlot) -> None:
        pass

    def interrupt(self, slot: WorkerSlot, task: Task[Any], why: Interruption) -> None:
        pass

    def join(self, timeout: float | None) -> bool:
        return True


Submit = Callable[[workpool.Pool], Callable[..., Any]]

CONFIGS: dict[str, tuple[dict[str, Any], Submit]] = {
    "plain submit": ({}, lambda pool: pool.submit),
    "priority=5": ({}, lambda pool: pool.options(priority=5).submit),
    "timeout=60 (a deadline each)": ({}, lambda pool: pool.options(timeout=60).submit),
    "retries=2 (none needed)": ({}, lambda pool: pool.options(retries=2).submit),
    "name=...": ({}, lambda pool: pool.options(name="job").submit),
    "queue_size=10**6 (bounded)": ({"queue_size": 10**6}, lambda pool: pool.submit),
    "rate_limit=(10**9, 1)": ({"rate_limit": (10**9, 1.0)}, lambda pool: pool.submit),
    "an observer (no-op)": ({"observers": [workpool.Observer()]}, lambda pool: pool.submit),
}


def run(tasks: int, pool_args: dict[str, Any], submitter: Submit) -> float:
    """CPU seconds per task: submit ``tasks`` no-ops, run them inline, read every result."""
    pool = workpool.Pool(1, **pool_args)
    core = pool._core
    core.backend = _Inline(core)
    submit = submitter(pool)
    start = time.process_time()
    submitted = [submit(noop) for _ in range(tasks)]
    slot = next(iter(core.engine._slots.values()))
    task = core.take(slot)
    while isinstance(task, Task):
        task = core.done(slot, task, task.fn(*task.args, **task.kwargs), None)
    for done in submitted:
        done.result()
    elapsed = time.process_time() - start
    pool.shutdown(wait=False)
    return elapsed / tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    times: dict[str, list[float]] = {name: [] for name in CONFIGS}
    for _ in range(args.rounds):
        for name, (pool_args, submitter) in CONFIGS.items():
            times[name].append(run(args.tasks, pool_args, submitter))
    base = statistics.median(times["plain submit"])
    print(f"{'configuration':32} {'us/task':>8} {'vs plain':>9}")
    for name, samples in times.items():
        median = statistics.median(samples)
        print(f"{name:32} {median * 1e6:8.2f} {(median - base) * 1e6:+8.2f}")


if __name__ == "__main__":
    main()
