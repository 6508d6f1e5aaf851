"""Backends by name, imported only when a pool asks for one."""

from __future__ import annotations

import functools
import importlib

from .base import Backend, Interruption, WorkerHost

_REGISTRY = {
    "thread": ("workpool._backends.thread", "ThreadBackend"),
    "process": ("workpool._backends.process", "ProcessBackend"),
    "dask": ("workpool._backends.dask", "DaskBackend"),
}


@functools.cache  # importlib.import_module at every Pool() costs a few microseconds
def backend_class(name: str) -> type[Backend]:
    """The backend class registered as ``name``; ValueError for an unknown one."""
    try:
        module_name, class_name = _REGISTRY[name]
    except KeyError:
        known = ", ".join(repr(n) for n in _REGISTRY)
        raise ValueError(f"unknown backend {name!r}; choose one of {known}") from None
    cls: type[Backend] = getattr(importlib.import_module(module_name), class_name)
    return cls


__all__ = ["Backend", "Interruption", "WorkerHost", "backend_class"]
