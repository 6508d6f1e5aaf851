"""Imported by the forkserver at its start: run the pool's main script there, once.

``set_forkserver_preload(["__main__"])`` (the default) is meant to import the main script in the
forkserver, so that the workers it forks have it already. Before CPython 3.13.8 that never
happened (gh-126631): the server is never told the script's path, and every new worker ran the
whole script again, about 100 ms for a script that imports much. The parent passes the path,
``sys.argv`` and ``sys.path`` in ``WORKPOOL_FORKSERVER_MAIN`` while it starts the server; this
module imports the script as the fixed stdlib does (as ``__mp_main__``, each worker then skips
it). Where that fails, nothing changes: each worker imports the script itself and reports its
error as before.
"""

from __future__ import annotations

import json
import os
import sys

ENV = "WORKPOOL_FORKSERVER_MAIN"


def _import_main() -> None:
    raw = os.environ.pop(ENV, None)
    if not raw:
        return
    from multiprocessing import process, spawn

    about = json.loads(raw)
    argv, sys.argv = sys.argv, about["argv"]
    sys.path[:] = about["sys_path"]
    process.current_process()._inheriting = True  # type: ignore[attr-defined]  # as the stdlib
    try:
        spawn.import_main_path(about["path"])
    except BaseException:  # a worker re-imports it and reports the error
        pass
    finally:
        del process.current_process()._inheriting  # type: ignore[attr-defined]
        sys.argv = argv


_import_main()
