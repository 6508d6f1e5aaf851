"""``workpool demo``: a small pool at work, with the speedup over running one by one.

The tasks wait on I/O (simulated by a short sleep), the case threads speed up in Python.
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import workpool


def register(commands: Any) -> None:
    parser = commands.add_parser("demo", help="run a small example and show the speedup")
    parser.add_argument("-n", "--tasks", type=int, default=200, help="tasks to run (200)")
    parser.add_argument("-j", "--workers", type=int, default=16, help="worker threads (16)")
    parser.add_argument("--delay", type=float, default=0.01, help="seconds of I/O per task")
    parser.set_defaults(run=run)


def fetch(item: int, delay: float) -> int:
    """Stands in for a network call: waits, then returns a value."""
    time.sleep(delay)
    return item * item


def run(args: argparse.Namespace) -> int:
    items = range(args.tasks)
    started = time.perf_counter()
    expected = [fetch(i, args.delay) for i in items]
    sequential = time.perf_counter() - started

    started = time.perf_counter()
    with workpool.Pool(args.workers) as pool:
        results = list(pool.map(fetch, items, [args.delay] * args.tasks))
        stats = pool.stats()
    parallel = time.perf_counter() - started

    assert results == expected
    speedup = sequential / parallel
    print(f"{args.tasks} tasks of {args.delay * 1000:g} ms I/O each")
    print(f"  one by one:          {sequential:8.3f} s")
    print(f"  workpool, {args.workers:2d} threads: {parallel:8.3f} s")
    print(f"  speedup {speedup:.1f}x, parallel efficiency {speedup / args.workers:.0%}")
    print(f"  succeeded={stats.succeeded} failed={stats.failed} workers={stats.workers}")
    return 0
