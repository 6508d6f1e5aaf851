"""``python -m benchmarks`` / ``workpool bench``: pick scenarios, run them, report."""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from . import report
from .dispatch import dispatch, latency, startup
from .harness import Case, Sizes, run_cases, summarise
from .load import cpu, io
from .memory import memory
from .timeouts import timeouts

SCENARIOS: dict[str, Callable[[Sizes], list[Case]]] = {
    "dispatch": dispatch,
    "latency": latency,
    "io": io,
    "cpu": cpu,
    "memory": memory,
    "startup": startup,
    "timeouts": timeouts,
}
MEMORY_ROUNDS = 2
"""Memory runs are long (eager peers hold millions of futures) and barely vary: fewer rounds."""


def build_parser(prog: str = "workpool bench") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run workpool and its peers side by side and print workpool's advantage.",
    )
    add_arguments(parser)
    return parser


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--only",
        type=_scenarios,
        default=list(SCENARIOS),
        help=f"comma-separated scenarios to run (default: all of {','.join(SCENARIOS)})",
    )
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke run of seconds")
    parser.add_argument(
        "--scale",
        type=_fraction,
        default=1.0,
        metavar="FACTOR",
        help="multiply every task count by FACTOR (0.1: a tenth of the work)",
    )
    parser.add_argument(
        "--rounds",
        type=_positive,
        default=None,
        help="interleaved rounds per case (default 5, or 1 with --quick)",
    )
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")
    parser.add_argument("--chart", type=Path, metavar="PATH", help="write a PNG chart (matplotlib)")
    parser.add_argument("--markdown", type=Path, metavar="PATH", help="write the table as Markdown")
    parser.add_argument("-v", "--verbose", action="store_true", help="print each measurement")


def _scenarios(text: str) -> list[str]:
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in SCENARIOS]
    if unknown or not names:
        bad = ", ".join(unknown) or repr(text)
        raise argparse.ArgumentTypeError(
            f"unknown scenario {bad}; choose from {', '.join(SCENARIOS)}"
        )
    return names


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, not {value}")
    return value


def _fraction(text: str) -> float:
    value = float(text)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
    return value


def run(args: argparse.Namespace) -> int:
    """Run the chosen scenarios, print the table, write the files asked for."""
    if args.chart and importlib.util.find_spec("matplotlib") is None:
        # Say so now, not after a run of many minutes.
        raise SystemExit("--chart needs matplotlib: pip install 'workpool[bench]'")
    sizes = (Sizes.quick() if args.quick else Sizes()).scaled(args.scale)
    rounds = args.rounds or (1 if args.quick else 5)
    cases: list[Case] = []
    for name in args.only:
        started = time.perf_counter()
        print(f"running {name} ...", file=sys.stderr, flush=True)
        scenario = SCENARIOS[name](sizes)
        run_cases(
            scenario,
            min(rounds, MEMORY_ROUNDS) if name == "memory" else rounds,
            verbose=args.verbose,
        )
        cases += scenario
        print(f"  {name} took {time.perf_counter() - started:.1f} s", file=sys.stderr, flush=True)
    summaries = summarise(cases)
    print(report.text_table(summaries))
    if args.json:
        report.write_json(args.json, report.to_json(summaries, sizes, rounds))
    if args.markdown:
        args.markdown.write_text(report.markdown_table(summaries))
    if args.chart:
        info = report.machine()
        title = f"workpool against its peers: {info['cpu']}, {info['cpus']} CPUs"
        title += f", Python {info['python']}"
        report.chart(summaries, args.chart, title)
    return 0


def main(argv: Sequence[str] | None = None, prog: str = "python -m benchmarks") -> int:
    args = build_parser(prog).parse_args(argv)
    return run(args)
