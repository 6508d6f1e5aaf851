"""Side-by-side benchmarks of workpool against the standard library and its peers.

Run ``python -m benchmarks --help`` from a checkout, or ``workpool bench --help``. Each scenario
module builds *cases* (one contender in one comparison group); ``harness`` runs them in
interleaved rounds, and ``report`` prints and saves the results. Everything inside the package
imports relatively, so it works as ``benchmarks`` in a checkout and wherever it is installed.
"""

from typing import Any

__all__ = ["SCENARIOS", "add_arguments", "build_parser", "main", "run"]


def __getattr__(name: str) -> Any:
    # Lazily: a process pool's new worker imports ``tasks`` from here, and must not pay for the
    # whole harness (its peers, its report: some 200 ms) before its first task.
    if name in __all__:
        from . import cli

        return getattr(cli, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
