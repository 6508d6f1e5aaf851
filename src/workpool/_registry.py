"""The task registry: the explicit allow-list of functions a job server may call.

A module marks its functions with ``@workpool.task`` (or ``@workpool.task(name="...")``);
``workpool serve --tasks MODULE`` imports that one module, named on its command line, and
serves exactly the functions it registered. A request only ever names a registered task:
nothing in a request chooses code to import.
"""

from __future__ import annotations

import importlib
import re
import threading
from collections.abc import Callable
from typing import Any, TypeVar, overload

F = TypeVar("F", bound=Callable[..., Any])

_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.:-]{0,199}$")

_lock = threading.Lock()
_tasks: dict[str, Callable[..., Any]] = {}


@overload
def task(fn: F, /) -> F: ...
@overload
def task(*, name: str | None = None) -> Callable[[F], F]: ...


def task(fn: F | None = None, /, *, name: str | None = None) -> F | Callable[[F], F]:
    """Register ``fn`` as a task a job server may run, under ``name`` or its ``__name__``.

    The function is returned unchanged. Registering a different function under a name already
    taken raises ``ValueError``; registering the same one again (a module re-import) is harmless.
    """

    def register(func: F) -> F:
        if not callable(func):
            raise TypeError(f"@workpool.task needs a callable, not {type(func).__name__}")
        key = name if name is not None else getattr(func, "__name__", "")
        if not isinstance(key, str) or not _NAME.match(key):
            raise ValueError(f"task name must match {_NAME.pattern}, not {key!r}")
        with _lock:
            known = _tasks.get(key)
            if known is not None and _identity(known) != _identity(func):
                raise ValueError(f"a different function is already registered as {key!r}")
            _tasks[key] = func
        return func

    if fn is not None:
        return register(fn)
    return register


def registered_tasks() -> dict[str, Callable[..., Any]]:
    """A copy of the registry: task name to function."""
    with _lock:
        return dict(_tasks)


def load_tasks(module: str) -> dict[str, Callable[..., Any]]:
    """Import ``module`` (a name the operator gave, never a request) and return its tasks.

    Its tasks are those registered while it was imported, and those defined in it or in its
    submodules (when it had been imported before).
    """
    before = registered_tasks()
    importlib.import_module(module)
    return {
        key: fn
        for key, fn in registered_tasks().items()
        if before.get(key) is not fn or _defined_in(fn, module)
    }


def _defined_in(fn: Callable[..., Any], module: str) -> bool:
    home = str(getattr(fn, "__module__", ""))
    return home == module or home.startswith(module + ".")


def unregister(name: str) -> None:
    """Forget the task registered as ``name`` (for tests and reloads)."""
    with _lock:
        _tasks.pop(name, None)


def _identity(fn: Callable[..., Any]) -> tuple[str, str]:
    # A re-imported module makes a new function object for the same definition.
    return (getattr(fn, "__module__", ""), getattr(fn, "__qualname__", repr(fn)))
