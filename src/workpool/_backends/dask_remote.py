"""What runs on a Dask worker: one attempt of a workpool task, inside its context.

The pool ships each attempt as ``run_attempt(fn, args, kwargs, AttemptInfo)``. On the worker it
sets ``workpool.current_task()`` to a stand-in for the client's ``Task``:

- ``deadline`` is this worker's ``time.monotonic()`` at the start plus the task's timeout (the
  client's clock means nothing on another machine), so ``check()`` raises ``TaskTimeout`` once
  the attempt has run that long;
- ``cancelled`` reads the worker's own record of the task: when the pool cancels the Dask future
  (a ``cancel()``, or a timeout), the worker marks the running task cancelled, and ``check()``
  then raises ``CancelledError``. That costs a dict lookup, no network.

With ``isolate``, the call runs in a fresh subprocess of the worker, which is killed at the
deadline or on cancellation: the only way to really stop Python code that never checks its
context. A subprocess that dies (a segfault, ``os._exit``) fails the attempt with
``WorkerCrashed``, carrying its pid and exit code or signal.

This module imports nothing from Dask at import time: the subprocess imports it too.
"""

from __future__ import annotations

import os
import pickle
import subprocess
import sys
import time
from concurrent.futures import CancelledError
from dataclasses import dataclass
from typing import Any, NamedTuple, cast

from .._errors import TaskTimeout, WorkerCrashed
from .._task import Task, _current

_POLL = 0.05
"""Seconds between checks of the deadline and the cancel flag while a subprocess runs."""


@dataclass(frozen=True, slots=True)
class AttemptInfo:
    """What a worker needs to know about the attempt it runs."""

    task_id: str
    attempt: int
    timeout: float | None
    isolate: bool


class _Limits(NamedTuple):
    timeout: float | None


class RemoteTask:
    """Stands in for the client's ``Task`` on the worker: what ``TaskContext`` reads."""

    __slots__ = ("_deadline", "_expired", "_key", "attempts", "id", "options")

    def __init__(self, info: AttemptInfo, key: str | None, deadline: float | None) -> None:
        self.id = info.task_id
        self.attempts = info.attempt
        self.options = _Limits(info.timeout)
        self._deadline = deadline
        self._expired = False
        self._key = key

    @property
    def _cancel_requested(self) -> bool:
        return self._key is not None and _dask_cancelled(self._key)


def _dask_cancelled(key: str) -> bool:
    """Whether this worker was told that the task ``key`` is no longer wanted."""
    try:
        from distributed import get_worker

        state = get_worker().state.tasks.get(key)
    except Exception:  # not on a Dask worker (the subprocess), or Dask changed its internals
        return False
    return state is None or state.state in ("cancelled", "released", "forgotten")


def _current_key() -> str | None:
    try:
        from distributed import get_worker

        key = get_worker().get_current_task()
    except Exception:  # run outside a worker (a test calling run_attempt directly)
        return None
    return key if isinstance(key, str) else None


def run_attempt(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], info: AttemptInfo) -> bytes:
    """Run one attempt on this worker with ``current_task()`` set; the Dask task function.

    Returns the value pickled: a value that cannot be pickled then fails the task here, with a
    clear error, where Dask would fail to send it and leave the client waiting forever.
    """
    deadline = None if info.timeout is None else time.monotonic() + info.timeout
    stand_in = RemoteTask(info, _current_key(), deadline)
    if info.isolate:
        value = _run_in_subprocess(fn, args, kwargs, stand_in)
    else:
        value = _call(fn, args, kwargs, stand_in)
    return dumps_result(value)


def dumps_result(value: Any) -> bytes:
    """``value`` pickled (by cloudpickle if plain pickle cannot), or TypeError saying why not."""
    try:
        return pickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
    except Exception:  # lambdas, local classes: cloudpickle's job
        import cloudpickle  # type: ignore[import-untyped]  # ships no type hints

        try:
            data: bytes = cloudpickle.dumps(value, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception as exc:
            raise TypeError(f"the task's result cannot be pickled: {exc}") from exc
        return data


def _call(fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], stand_in: RemoteTask) -> Any:
    # TaskContext only reads the attributes RemoteTask has: a Task in all that it looks at.
    token = _current.set((cast(Task[Any], stand_in), stand_in.attempts))
    try:
        return fn(*args, **kwargs)
    finally:
        _current.reset(token)


def _run_in_subprocess(
    fn: Any, args: tuple[Any, ...], kwargs: dict[str, Any], stand_in: RemoteTask
) -> Any:
    import cloudpickle  # a dependency of distributed: lambdas and closures cross too

    info = AttemptInfo(stand_in.id, stand_in.attempts, stand_in.options.timeout, False)
    payload = cloudpickle.dumps((fn, args, kwargs, info, stand_in._deadline))
    # A plain subprocess, not multiprocessing: Dask's worker processes are daemons by default,
    # and daemons may not start multiprocessing children.
    # The child imports what the worker can import (the task's module among them).
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in sys.path if p))
    proc = subprocess.Popen(
        [sys.executable, "-m", "workpool._backends.dask_remote"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        env=env,
    )
    output = _supervise(proc, payload, stand_in)
    if proc.returncode != 0 or not output:
        raise WorkerCrashed(
            stand_in.id,
            pid=proc.pid,
            exitcode=proc.returncode,
            reason="the task's subprocess on the Dask worker died",
        )
    ok, value = pickle.loads(output)
    if ok:
        return value
    raise value


def _supervise(proc: subprocess.Popen[bytes], payload: bytes, stand_in: RemoteTask) -> bytes:
    """Feed the subprocess, wait for it, and kill it at the deadline or on cancellation."""
    pending: bytes | None = payload
    while True:
        try:
            output, _ = proc.communicate(pending, timeout=_POLL)
            return output
        except subprocess.TimeoutExpired:
            pending = None  # sent already; communicate() goes on where it stopped
        deadline = stand_in._deadline
        timed_out = deadline is not None and time.monotonic() >= deadline
        if timed_out or stand_in._cancel_requested:
            proc.kill()
            proc.communicate()
            if timed_out:
                raise TaskTimeout(stand_in.id, stand_in.options.timeout)
            raise CancelledError(f"task {stand_in.id} was cancelled")


def _child_main() -> None:
    """The subprocess: read the call from stdin, run it, write the outcome to stdout."""
    # The task may print: keep the real stdout for the outcome and send fd 1 to stderr.
    channel = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    fn, args, kwargs, info, deadline = pickle.loads(sys.stdin.buffer.read())
    stand_in = RemoteTask(info, None, deadline)
    try:
        outcome: tuple[bool, Any] = (True, _call(fn, args, kwargs, stand_in))
    except BaseException as exc:
        outcome = (False, exc)
    import cloudpickle

    try:
        data = cloudpickle.dumps(outcome)
    except Exception as exc:  # an unpicklable result or exception: say what it was
        data = cloudpickle.dumps((False, RuntimeError(f"cannot send the outcome back: {exc!r}")))
    channel.write(data)
    channel.flush()


if __name__ == "__main__":
    _child_main()
