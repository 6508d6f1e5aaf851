"""``workpool run``: a shell command over many inputs, N at a time, with machine-readable results.

The command line is parsed and checked here; ``_runner`` runs the jobs and ``_jobs`` supervises
each one's process group.
"""

from __future__ import annotations

import collections
import json
import os
import sys
from collections.abc import Iterable, Iterator
from contextlib import ExitStack
from typing import IO

import click

from ._display import Display, LiveDisplay
from ._jobs import Limits
from ._runner import Plan, Runner, dry_run

_INPUTS_MARKER = ":::"

_EPILOG = """\b
Placeholders in COMMAND: {} the input, {.} without extension, {/} basename,
{//} directory, {/.} basename without extension, {#} the job number. Without
any placeholder the input is added as the last argument.
\b
Examples:
  find . -name '*.log' | workpool run -j 8 -- gzip -9 {}
  workpool run --timeout 30 --retries 2 -- curl -fsS {} ::: URL1 URL2
  workpool run --resume done.jsonl -a urls.txt -- ./fetch.sh {}
"""


@click.command(
    "run",
    short_help="run a command over inputs, N at a time",
    epilog=_EPILOG,
    context_settings={"allow_interspersed_args": False, "show_default": True},
)
@click.option(
    "-j",
    "--jobs",
    type=click.IntRange(min=1),
    default=os.cpu_count() or 1,
    show_default="the CPU count",
    help="Jobs to run at the same time.",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=None,
    help="Seconds each attempt may run; then its whole process group is stopped.",
)
@click.option(
    "--retries",
    type=click.IntRange(0, 100),
    default=0,
    help="Attempts after the first for a job that fails or times out.",
)
@click.option(
    "--retry-delay",
    type=click.FloatRange(min=0),
    default=0.1,
    help="Seconds before the first retry; doubles for each next one (with jitter).",
)
@click.option(
    "-k", "--keep-order", is_flag=True, help="Report jobs in input order, not as they finish."
)
@click.option(
    "--halt",
    type=click.IntRange(min=1),
    default=None,
    metavar="N",
    help="After N failed jobs, start no new ones (as the first Ctrl-C does).",
)
@click.option(
    "--grace",
    type=click.FloatRange(min=0),
    default=10.0,
    help="Seconds running jobs get to finish after Ctrl-C or SIGTERM.",
)
@click.option(
    "-a",
    "--input-file",
    type=click.File("rb"),
    default=None,
    help="Read inputs from this file, one a line ('-': stdin, the default).",
)
@click.option(
    "-o",
    "--output",
    type=click.File("a", lazy=False),
    default=None,
    help="Append the JSON-lines results to this file instead of stdout.",
)
@click.option(
    "--resume",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    metavar="JOURNAL",
    help="Append results to JOURNAL and skip the inputs it "
    "records as succeeded: a rerun finishes what an interrupted run left.",
)
@click.option(
    "--shell", is_flag=True, help="Run COMMAND with /bin/sh -c, each placeholder shell-quoted."
)
@click.option(
    "--max-output",
    type=click.IntRange(min=0),
    default=65536,
    metavar="BYTES",
    help="Keep the last BYTES of each job's stdout and stderr in its record.",
)
@click.option(
    "--dry-run", "dry", is_flag=True, help="Print the commands that would run; run nothing."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    show_default=False,
    help="Show a progress bar on stderr  [default: when stderr is a terminal]",
)
@click.option("-q", "--quiet", is_flag=True, help="No summary at the end.")
@click.argument("command", nargs=-1, required=True)
def command(
    jobs: int,
    timeout: float | None,
    retries: int,
    retry_delay: float,
    keep_order: bool,
    halt: int | None,
    grace: float,
    input_file: IO[bytes] | None,
    output: IO[str] | None,
    resume: str | None,
    shell: bool,
    max_output: int,
    dry: bool,
    progress: bool | None,
    quiet: bool,
    command: tuple[str, ...],
) -> None:
    """Run COMMAND once per input, N jobs at a time, and print one JSON object per job.

    Inputs are the lines of stdin, of --input-file, or the words after ':::'.
    Each job's record has its input, exit_code, duration, attempts, stdout and
    stderr (their tails), status, and timed_out. The exit status is 0 when every
    job succeeded. The first Ctrl-C (or SIGTERM) starts no new jobs and gives
    running ones --grace seconds; a second Ctrl-C kills them at once. No process
    a job started outlives the command.
    """
    template, inputs, from_stdin = _split_inputs(list(command), input_file)
    if not template:
        raise click.UsageError("COMMAND is missing before ':::'")
    plan = Plan(
        template=template,
        shell=shell,
        jobs=jobs,
        limits=Limits(
            timeout=timeout,
            term_grace=2.0,
            output_limit=max_output,
            retries=retries,
            halt=halt,
        ),
        retries=retries,
        retry_delay=retry_delay,
        keep_order=keep_order,
        halt=halt,
        grace=grace,
        done_before=_succeeded_in(resume) if resume else collections.Counter(),
    )
    if dry:
        sys.exit(dry_run(plan, inputs, output or sys.stdout))
    with ExitStack() as stack:
        results: list[IO[str]] = [output or sys.stdout]
        if resume:
            results.append(stack.enter_context(_journal(resume)))
        live = sys.stderr.isatty() if progress is None else progress
        display = (LiveDisplay if live else Display)(quiet=quiet)
        if from_stdin and sys.stdin.isatty() and not quiet:
            display.notice("workpool: reading inputs from stdin, one a line (Ctrl-D to end)")
        status = Runner(plan, inputs, results, display).run()
    sys.exit(status)


def _split_inputs(
    words: list[str], input_file: IO[bytes] | None
) -> tuple[list[str], Iterable[str], bool]:
    """The command template, its inputs, and whether those come from stdin."""
    if _INPUTS_MARKER in words:
        if input_file is not None:
            raise click.UsageError("give inputs after ':::' or with --input-file, not both")
        at = words.index(_INPUTS_MARKER)
        return words[:at], words[at + 1 :], False
    fd = sys.stdin.fileno() if input_file is None else input_file.fileno()
    return words, _lines(fd), fd == sys.stdin.fileno()


def _lines(fd: int) -> Iterator[str]:
    """The non-empty lines read from ``fd``, without their line ends.

    Reads the descriptor directly rather than through ``sys.stdin``: the reader thread may still
    be blocked here when the command exits, and a thread blocked inside a buffered file object
    holds its lock, which interpreter shutdown then waits for.
    """
    pending = b""
    while chunk := os.read(fd, 65536):
        pending += chunk
        *lines, pending = pending.split(b"\n")
        yield from _decoded(lines)
    yield from _decoded([pending])


def _decoded(lines: list[bytes]) -> Iterator[str]:
    for line in lines:
        line = line.removesuffix(b"\r")
        if line.strip():
            yield os.fsdecode(line)  # undecodable bytes survive the round trip to argv


def _succeeded_in(journal: str) -> collections.Counter[str]:
    """How many times each input succeeded according to the journal (absent: none)."""
    done: collections.Counter[str] = collections.Counter()
    try:
        with open(journal, encoding="utf-8", errors="surrogateescape") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                except ValueError:
                    continue  # a line cut short when a run was killed: that job runs again
                if isinstance(record, dict) and record.get("status") == "succeeded":
                    done[str(record.get("input"))] += 1
    except FileNotFoundError:
        pass
    return done


def _journal(path: str) -> IO[str]:
    """The journal, opened for appending, starting on a fresh line."""
    stream = open(path, "a+", encoding="utf-8")  # noqa: SIM115  # closed by the caller's stack
    if stream.tell() > 0:
        stream.seek(stream.tell() - 1)
        if stream.read(1) != "\n":
            stream.write("\n")  # the last record was cut short: keep the next one whole
    return stream
