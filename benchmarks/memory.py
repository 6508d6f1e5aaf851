"""Memory: peak RSS growth while ``map`` consumes a long generator, each run in a fresh process.

A fresh interpreter per run keeps the numbers clean: what one pool allocated (and the allocator
kept) cannot count against the next. The child opens and warms the pool, takes the peak RSS as
its baseline, maps a no-op (or, with a slow consumer, a task returning 1 KiB) over a generator,
and prints the growth of its peak RSS in MiB. Eager maps hold every item and future at once; a
lazy one holds a bounded window.
"""

from __future__ import annotations

import gc
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

from .contenders import PROCESSES, THREADS
from .harness import Case, Sizes, skipped
from .tasks import kilobyte, noop

CHILD_TIMEOUT = 900.0


def _peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def child(kind: str, label: str, items: int, workers: int, delay: float) -> float:
    """In the fresh process: the peak RSS growth, in MiB, of mapping over ``items`` items."""
    table = THREADS if kind == "thread" else PROCESSES
    contender, map_fn = next((c, c.maps[label]) for c in table if label in c.maps)
    fn = kilobyte if delay else noop
    pool = contender.open(workers)
    try:
        contender.warm(pool, workers)
        gc.collect()
        baseline = _peak_rss_mib()
        for _ in map_fn(pool, fn, (i for i in range(items))):
            if delay:
                time.sleep(delay)
        return _peak_rss_mib() - baseline
    finally:
        contender.close(pool)


def _in_fresh_process(kind: str, label: str, items: int, workers: int, delay: float) -> float:
    package = __package__ or "benchmarks"
    root = Path(__file__).resolve().parents[len(package.split("."))]
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(root), os.environ.get("PYTHONPATH")])),
    )
    argv = [
        sys.executable,
        "-m",
        f"{package}.memory",
        kind,
        label,
        str(items),
        str(workers),
        repr(delay),
    ]
    done = subprocess.run(
        argv, env=env, capture_output=True, text=True, timeout=CHILD_TIMEOUT, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(
            done.stderr.strip().splitlines()[-1]
            if done.stderr.strip()
            else f"exit {done.returncode}"
        )
    return float(json.loads(done.stdout.strip().splitlines()[-1])["mib"])


def memory(sizes: Sizes) -> list[Case]:
    plans = [
        (
            "thread",
            THREADS,
            sizes.memory_items,
            0.0,
            f"threads: map over a generator of {sizes.memory_items:,}",
        ),
        (
            "process",
            PROCESSES,
            sizes.memory_items // 10,
            0.0,
            f"processes: map over a generator of {sizes.memory_items // 10:,}",
        ),
        (
            "thread",
            THREADS,
            sizes.memory_slow_items,
            sizes.memory_slow_delay,
            f"threads: map over {sizes.memory_slow_items:,} items of 1 KiB results, slow consumer",
        ),
    ]
    cases: list[Case] = []
    for kind, table, items, delay, group in plans:
        for contender in table:
            for label in contender.maps:
                if kind == "process" and label not in PROCESS_MEMORY:
                    continue
                why = contender.skip()
                if why:
                    cases.append(skipped("memory", group, label, "MiB", why))
                    continue

                def run(k: str = kind, lb: str = label, n: int = items, d: float = delay) -> float:
                    return _in_fresh_process(k, lb, n, sizes.workers, d)

                cases.append(Case("memory", group, label, run, "MiB"))
    return cases


PROCESS_MEMORY = {"workpool.map", "ProcessPoolExecutor.map", "multiprocessing.Pool.imap"}
"""Process maps fast enough to take a long input in a benchmark run."""


if __name__ == "__main__":
    kind_, label_, items_, workers_, delay_ = sys.argv[1:6]
    growth = child(kind_, label_, int(items_), int(workers_), float(delay_))
    print(json.dumps({"mib": growth}))
