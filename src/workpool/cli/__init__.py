"""The ``workpool`` command: one module per subcommand, each a thin client of the public API.

The command line needs the ``workpool[cli]`` extra (click and rich); the core does not.
``main`` says so plainly when it is missing instead of failing with a traceback.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

_CLI_DEPENDENCIES = {"click", "rich"}


def main(argv: Sequence[str] | None = None) -> int:
    """The console entry point: run the command line and return its exit status."""
    try:
        from ._app import cli
    except ImportError as error:
        if error.name not in _CLI_DEPENDENCIES:
            raise
        print(
            f"workpool: the command line needs {error.name}: pip install 'workpool[cli]'",
            file=sys.stderr,
        )
        return 1
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="workpool")
    except SystemExit as done:
        return _status(done.code)
    return 0


def _status(code: object) -> int:
    if code is None:
        return 0
    if isinstance(code, int):
        return code
    print(code, file=sys.stderr)  # sys.exit("message") prints it and fails, as Python does
    return 1


__all__ = ["main"]
