"""How a task travels to a worker process, and how its failure comes back.

A task's message is its call pickled with ``pickle``, or with ``cloudpickle`` (the
``workpool[process]`` extra) when plain pickling fails, as it does for lambdas and closures. A
module-level function travels by name, pickled once and kept (``by_name``); the child unpickles
each name once and keeps the function (``_child.named``).
"""

from __future__ import annotations

import pickle
import sys
from types import BuiltinFunctionType, FunctionType
from typing import Any

from .._task import Task
from ..observe.carrier import trace_carrier


class RemoteTraceback(Exception):
    """The worker process's traceback, chained as the ``__cause__`` of a task's exception."""

    def __init__(self, tb: str) -> None:
        super().__init__(tb)
        self.tb = tb

    def __str__(self) -> str:
        return f'\n"""\n{self.tb}"""'


def dumps(obj: Any) -> bytes:
    """Pickle ``obj``; fall back to cloudpickle for what plain pickle refuses (lambdas...)."""
    try:
        return pickle.dumps(obj, pickle.HIGHEST_PROTOCOL)
    except Exception as exc:
        try:
            import cloudpickle  # type: ignore[import-untyped]  # ships no type hints
        except ImportError:
            raise pickle.PicklingError(
                f"{exc}; to send lambdas and closures to worker processes, "
                "pip install 'workpool[process]'"
            ) from exc
        return cloudpickle.dumps(obj, pickle.HIGHEST_PROTOCOL)  # type: ignore[no-any-return]


def task_message(task: Task[Any], *, ahead: bool = False) -> bytes:
    """The pickled call, for the child.

    A task sent ahead has not started: its attempt is the next one, and its deadline is set by
    the child when it starts it.
    """
    deadline = None if ahead else task._deadline
    about = (task._seq, task.attempts + ahead, deadline, task.options.timeout)
    fn: Any = task.fn
    name = by_name(fn) if type(fn) in _NAMED_TYPES else None
    if name is not None:
        fn = None
    return dumps((fn, name, task.args, task.kwargs, (*about, trace_carrier(task))))


_NAMES: dict[Any, bytes] = {}
"""The pickles of module-level functions sent so far. Such a pickle is the function's name,
the same each time, and making it costs more than the rest of a task's message: ``pickle``
imports the module and looks the name up, to check that it leads back to the function."""

_NAMES_MAX = 1024

_NAMED_TYPES = (FunctionType, BuiltinFunctionType)
"""Functions written in Python, and in C (``abs``, ``math.sqrt``): both hash by identity."""


def sent_names() -> tuple[bytes, ...]:
    """The pickles in ``_NAMES``, which other proxies may add to meanwhile: iterating the dict
    itself can fail ("changed size during iteration": an allocation may run the garbage
    collector, and its finalizers let other threads run); its copy is taken in one step."""
    return tuple(_NAMES.copy().values())


def by_name(fn: Any) -> bytes | None:
    """``fn``'s pickle if it is a module-level function (the child unpickles each once and
    keeps it: see ``_child.named``), else None: it travels in the task's message."""
    name = _NAMES.get(fn)
    if name is None:
        if "." in fn.__qualname__:
            return None  # nested in a class or a function: pickled as usual
        try:
            name = pickle.dumps(fn, pickle.HIGHEST_PROTOCOL)  # by name, or it fails
        except Exception:
            return None  # not module-level: cloudpickle sends it whole
        if len(_NAMES) >= _NAMES_MAX:
            _NAMES.clear()
        _NAMES[fn] = name
    module = sys.modules.get(fn.__module__)
    if module is None or getattr(module, fn.__qualname__, None) is not fn:
        return None  # its name leads elsewhere now (redefined), or nowhere: it travels whole
    return name
