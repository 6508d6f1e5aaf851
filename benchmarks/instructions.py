"""Instructions per task, counted by valgrind's callgrind: a measure a noisy machine cannot move.

On a shared machine, timings drift by 10% to 2x from one run to the next; the number of
instructions that a task costs does not (about 1% run to run). Each case runs in a child
interpreter under callgrind twice, over N and over 2N tasks, and the difference over N is what
one task costs, with start-up and shutdown cancelled out. Every thread's instructions count
(for a round trip, the submitter's and the worker's together). Instructions are not time (a
context switch or a cache miss costs no more of them than an add), so this is a tool for
comparing versions of the pool's own code, not a replacement for ``workpool bench``. Worker
processes are not followed: for processes, the count is the parent's (its submitting thread and
those that talk to the workers), which is what limits their throughput. Slowed down by
callgrind, the parent has its workers idle and sends them a task or two at a time, where a real
run sends about four per write: the count is of that path, and moves by about 3% run to run.

    python -m benchmarks.instructions [--tasks 3000] [--only NAME,...]

Needs ``valgrind`` on the PATH (each case is skipped with a note without it); a case takes
about half a minute.
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import sys

_PRELUDE = """
import asyncio, concurrent.futures as cf, sys, workpool
N = int(sys.argv[1])
def noop(x=None): return None
"""

# Each case: a group, a label, and code that does N tasks (N is defined by the prelude).
CASES: list[tuple[str, str, str]] = [
    (
        "threads: submit all, then results",
        "workpool",
        "with workpool.Pool(2) as p:\n    for t in [p.submit(noop) for _ in range(N)]: t.result()",
    ),
    (
        "threads: submit all, then results",
        "ThreadPoolExecutor",
        "with cf.ThreadPoolExecutor(2) as p:\n"
        "    for t in [p.submit(noop) for _ in range(N)]: t.result()",
    ),
    (
        "threads: one task at a time",
        "workpool",
        "with workpool.Pool(2) as p:\n    for i in range(N): p.submit(noop, i).result()",
    ),
    (
        "threads: one task at a time",
        "ThreadPoolExecutor",
        "with cf.ThreadPoolExecutor(2) as p:\n    for i in range(N): p.submit(noop, i).result()",
    ),
    (
        "processes: submit all, then results (the parent's instructions only)",
        "workpool",
        "if __name__ == '__main__':\n"
        "    with workpool.Pool(2, backend='process') as p:\n"
        "        for t in [p.submit(abs, -1) for _ in range(N)]: t.result()",
    ),
    (
        "processes: submit all, then results (the parent's instructions only)",
        "ProcessPoolExecutor",
        "if __name__ == '__main__':\n"
        "    with cf.ProcessPoolExecutor(2) as p:\n"
        "        for t in [p.submit(abs, -1) for _ in range(N)]: t.result()",
    ),
    (
        "asyncio: sleep(0) items, 64 at a time",
        "workpool AsyncPool.map",
        "async def main():\n"
        "    async with workpool.AsyncPool(64) as pool:\n"
        "        async for _ in pool.map(asyncio.sleep, [0] * N): pass\n"
        "asyncio.run(main())",
    ),
    (
        "asyncio: sleep(0) items, 64 at a time",
        "floor: bare coroutines",
        "async def share(c):\n"
        "    for _ in range(c): await asyncio.sleep(0)\n"
        "async def main():\n"
        "    await asyncio.gather(*(share(N // 64 + (i < N % 64)) for i in range(64)))\n"
        "asyncio.run(main())",
    ),
]

_COLLECTED = re.compile(r"Collected\s*:\s*(\d+)")


def collected(valgrind_output: str) -> int:
    """The instruction count that callgrind reports at exit."""
    found = _COLLECTED.search(valgrind_output)
    if found is None:
        raise RuntimeError(f"no instruction count in valgrind's output:\n{valgrind_output}")
    return int(found.group(1))


def count(code: str, tasks: int) -> int:
    """Instructions of the whole child interpreter that runs ``code`` over ``tasks`` tasks."""
    done = subprocess.run(
        [
            "valgrind",
            "--tool=callgrind",
            "--callgrind-out-file=/dev/null",
            sys.executable,
            "-c",
            _PRELUDE + code,
            str(tasks),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return collected(done.stderr)


def per_task(code: str, tasks: int) -> float:
    """Instructions that one task costs: the runs over 2N and N tasks, differenced."""
    return (count(code, 2 * tasks) - count(code, tasks)) / tasks


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", type=int, default=3000, help="N (the runs do N and 2N)")
    parser.add_argument("--only", default="", help="comma-separated words a group must contain")
    args = parser.parse_args(argv)
    if shutil.which("valgrind") is None:
        print("skipped: valgrind is not installed (e.g. apt install valgrind)")
        return 0
    words = [w for w in args.only.split(",") if w]
    group = None
    ours = 0.0
    for name, label, code in CASES:
        if words and not any(w in name for w in words):
            continue
        if name != group:
            group = name
            print(f"\n{name}  [instructions/task, lower is better]")
        value = per_task(code, args.tasks)
        if label.startswith("workpool"):
            ours = value
            print(f"  {label:28s} {value:10,.0f}")
        elif label.startswith("floor"):
            print(f"  {label:28s} {value:10,.0f}  workpool costs {ours / value:.2f}x this")
        else:
            print(f"  {label:28s} {value:10,.0f}  workpool's advantage {value / ours:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
