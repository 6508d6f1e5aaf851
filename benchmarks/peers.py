"""Which contenders can run here: peers that are not installed, and workpool backends that are
not there yet, are skipped with a note instead of failing the run."""

from __future__ import annotations

import functools
import importlib.util

import workpool

INSTALL_HINT = "pip install 'workpool[bench]'"


def missing(module: str) -> str | None:
    """A note if ``module`` cannot be imported here, else None."""
    if importlib.util.find_spec(module) is None:
        return f"{module} not installed ({INSTALL_HINT})"
    return None


@functools.cache
def workpool_process() -> str | None:
    """A note if workpool has no process backend yet, else None."""
    try:
        pool = workpool.Pool(1, backend="process")
    except ValueError as exc:
        return f"workpool process backend not available ({exc})"
    pool.shutdown()
    return None


def workpool_async() -> str | None:
    """A note if workpool has no AsyncPool yet, else None."""
    if getattr(workpool, "AsyncPool", None) is None:
        return "workpool.AsyncPool not available in this version"
    return None


def process_pool(workers: int) -> workpool.Pool:
    return workpool.Pool(workers, backend="process")
