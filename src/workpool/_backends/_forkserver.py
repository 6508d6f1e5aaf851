"""The forkserver that process workers are forked from: what it imports once, and how it
learns where the main script is.

A forkserver is a small, single-threaded process started once; each worker it forks starts
warm with what it preloaded. Two things make that work for a pool: ``preload`` adds workpool's
worker modules (and the main script, see ``_main_preload``) to the server's preload list before
it starts, and ``start`` starts it with the main script's path in ``WORKPOOL_FORKSERVER_MAIN``,
which CPython before 3.13.8 never passed on (gh-126631).
"""

from __future__ import annotations

import json
import os
import threading

from . import _child

_MAIN_ENV = "WORKPOOL_FORKSERVER_MAIN"
"""Where the forkserver learns the main script's path (``_main_preload``)."""


def preload() -> None:
    """Have the forkserver import workpool once, so that each worker it forks starts warm.

    Without it every worker imports workpool anew (a few hundred milliseconds on a busy machine).
    Too late once the server runs; the user's own preload list is kept. Where that list names
    ``__main__`` (the default), the main script is preloaded too (see ``_main_preload``).
    """
    global _preloaded
    import multiprocessing.forkserver as forkserver  # here: the platform may lack it

    server = forkserver._forkserver
    current = getattr(server, "_preload_modules", None)
    if current is not None and current is _preloaded:
        return  # as we left it (a new list if anyone set it since): every Pool() passes here
    modules = list(current or ["__main__"])
    wanted = [m for m in (*_WORKER_MODULES, _main_preload) if m not in modules]
    if _main_preload in wanted and "__main__" not in modules:
        wanted.remove(_main_preload)
    if wanted:
        forkserver.set_forkserver_preload([*modules, *wanted])
    _preloaded = getattr(server, "_preload_modules", None)


_preloaded: list[str] | None = None
"""The forkserver's preload list as ``preload`` last left it."""


_main_preload = "workpool._backends._main_preload"

_WORKER_MODULES = (
    _child.__name__,
    # What a worker imports as it unpickles its start-up arguments (its Process object, the
    # Dispatch's lock and shared values): some 8 ms per worker, each time one is replaced.
    "multiprocessing.popen_forkserver",
    "multiprocessing.synchronize",
    "multiprocessing.sharedctypes",
)


_starting = threading.Lock()
"""Held while the forkserver is started: workers start side by side, and the main script's
path reaches the server through the environment, which one thread at a time may set."""

if hasattr(os, "register_at_fork"):
    # A fork while another thread holds it would leave the child a copy no thread releases.
    os.register_at_fork(after_in_child=_starting._at_fork_reinit)  # type: ignore[attr-defined]


def start() -> None:
    """Start the forkserver, if it is not running, telling it where the main script is."""
    from multiprocessing import forkserver, spawn

    server = forkserver._forkserver
    if getattr(server, "_forkserver_pid", None) is not None:  # running (or restarted if dead)
        forkserver.ensure_running()
        return
    with _starting:
        data = spawn.get_preparation_data("workpool")
        path = data.get("init_main_from_path")
        if path is None or _main_preload not in getattr(server, "_preload_modules", ()):
            forkserver.ensure_running()
            return
        about = {"path": path, "argv": data.get("sys_argv", []), "sys_path": data["sys_path"]}
        os.environ[_MAIN_ENV] = json.dumps(about)
        try:
            forkserver.ensure_running()
        finally:
            os.environ.pop(_MAIN_ENV, None)
