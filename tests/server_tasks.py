"""Tasks that the job server tests serve (``--tasks server_tasks``)."""

from __future__ import annotations

import os
import time
import uuid

import workpool


@workpool.task
def add(a: int, b: int) -> int:
    return a + b


@workpool.task(name="boom")
def fail(message: str = "boom") -> None:
    raise ValueError(message)


@workpool.task
def unjsonable() -> object:
    return object()


@workpool.task
def not_a_number() -> float:
    return float("nan")


@workpool.task
def gated(gate: str, started_dir: str, value: object = None) -> object:
    """Leave a mark in ``started_dir``, then wait (cooperatively) until the file ``gate`` exists."""
    with open(os.path.join(started_dir, uuid.uuid4().hex), "w") as f:
        f.write(str(os.getpid()))
    context = workpool.current_task()
    while not os.path.exists(gate):
        context.check()  # a cancel or a deadline stops the wait
        time.sleep(0.01)  # polling a file: the gate crosses processes
    return value


@workpool.task
def stubborn(gate: str, started_dir: str) -> str:
    """As ``gated``, but ignores cancellation: only the gate ends it."""
    with open(os.path.join(started_dir, uuid.uuid4().hex), "w") as f:
        f.write(str(os.getpid()))
    while not os.path.exists(gate):
        time.sleep(0.01)
    return "done"


@workpool.task
def kill_the_process(gate: str) -> None:
    """On the thread backend, this takes the whole server down with it, once ``gate`` exists
    (so that the server has answered the submission first)."""
    while not os.path.exists(gate):
        time.sleep(0.01)  # polling a file: the gate crosses processes
    os._exit(3)
