"""Side-by-side benchmarks of workpool against the standard library and its peers.

Run ``python -m benchmarks --help`` from a checkout, or ``workpool bench --help``. Each scenario
module builds *cases* (one contender in one comparison group); ``harness`` runs them in
interleaved rounds, and ``report`` prints and saves the results. Everything inside the package
imports relatively, so it works as ``benchmarks`` in a checkout and wherever it is installed.
"""

from .cli import SCENARIOS, add_arguments, build_parser, main, run

__all__ = ["SCENARIOS", "add_arguments", "build_parser", "main", "run"]
