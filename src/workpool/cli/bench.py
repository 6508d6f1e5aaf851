"""``workpool bench``: workpool against the standard library and its peers, side by side.

The scenarios live in the repository's ``benchmarks/`` package (shipped inside the wheel as
``workpool._benchmarks``); this module finds them and hands over the command line. It is
self-contained: ``run_bench(argv)`` parses its own options, so any command-line framework can
mount it, and ``register`` mounts it on an argparse subcommand parser. With click, pass every
argument through: a command with ``context_settings={"ignore_unknown_options": True,
"allow_extra_args": True, "help_option_names": []}`` that calls ``run_bench(ctx.args)``.
"""

from __future__ import annotations

import importlib
import sys
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

PROG = "workpool bench"
HELP = "run workpool and its peers side by side and print workpool's advantage"
INSTALL = "pip install 'workpool[bench]'"


def harness() -> ModuleType:
    """The benchmarks package: shipped in the wheel, or ``benchmarks/`` of a source checkout."""
    try:
        return importlib.import_module("workpool._benchmarks")
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[3]  # src/workpool/cli/bench.py -> the checkout
    if not (root / "benchmarks" / "__init__.py").is_file():
        raise SystemExit(f"workpool bench: the benchmarks are not installed here ({INSTALL})")
    if str(root) not in sys.path:
        # Process pools' workers import the tasks by module name, so the path must hold it.
        sys.path.insert(0, str(root))
    module = importlib.import_module("benchmarks")
    if Path(module.__file__ or "").resolve().parent != root / "benchmarks":
        raise SystemExit(f"workpool bench: another 'benchmarks' package is in the way: {module}")
    return module


def run_bench(argv: Sequence[str] | None = None) -> int:
    """Run ``workpool bench`` with these arguments (``sys.argv[1:]`` when None)."""
    try:
        bench = harness()
        status: int = bench.main(list(sys.argv[1:] if argv is None else argv), prog=PROG)
    except SystemExit as exit_:  # argparse exits on --help and on bad arguments: return instead
        if isinstance(exit_.code, str):
            print(exit_.code, file=sys.stderr)
            return 1
        return exit_.code or 0
    return status


def register(commands: Any) -> None:
    """Add ``bench`` to an argparse subcommand parser: every argument after it is passed on."""
    # No option prefix: every argument, options included, reaches run_bench as it was typed.
    parser = commands.add_parser("bench", help=HELP, add_help=False, prefix_chars="\0")
    parser.add_argument("bench_args", nargs="*")
    parser.set_defaults(run=lambda args: run_bench(args.bench_args))


def main() -> None:
    sys.exit(run_bench())


if __name__ == "__main__":
    main()
