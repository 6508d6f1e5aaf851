"""`workpool run`, as users run it: the real command in a subprocess."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from helpers import wait_until

pytest.importorskip("click")

WORKPOOL = [sys.executable, "-m", "workpool.cli"]

WAIT_FOR_RELEASE = 'echo $$ > "$0/$1.pid"; while [ ! -e "$0/release" ]; do sleep 0.02; done'
"""A job that records its pid, then runs until the test creates the file ``release``."""


def workpool_run(
    *args: str, stdin: str = "", cwd: Path | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*WORKPOOL, "run", *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=45,
        cwd=cwd,
    )


def records(stdout: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in stdout.splitlines()]


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting to be reaped does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def all_gone(folder: Path) -> None:
    """Wait until no process whose pid a job recorded in ``folder`` runs."""
    wait_until(lambda: not any(alive(pid) for pid in pids(folder).values()))


def pids(folder: Path) -> dict[str, int]:
    return {p.stem: int(p.read_text()) for p in folder.glob("*.pid") if p.read_text().strip()}


_started: list[subprocess.Popen[str]] = []


@pytest.fixture(autouse=True)
def no_leftover_runs() -> Iterator[None]:
    """A test that fails half-way leaves no `workpool run` behind (nor, through it, its jobs)."""
    yield
    while _started:
        run = _started.pop()
        if run.poll() is None:
            run.send_signal(signal.SIGINT)
            run.send_signal(signal.SIGINT)
            try:
                run.communicate(timeout=10)
            except subprocess.TimeoutExpired:
                run.kill()
                run.communicate()


def start(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.Popen[str]:
    """Start `workpool run` in the background; the test talks to it through its pipes."""
    run = subprocess.Popen(
        [*WORKPOOL, "run", *args],
        stdin=stdin,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _started.append(run)
    return run


def read_until(stream: Any, text: str) -> str:
    """Read lines from ``stream`` until one contains ``text``; return that line."""
    while line := stream.readline():
        if text in line:
            return str(line)
    raise AssertionError(f"{text!r} never appeared")


def test_run_reports_one_json_record_per_stdin_line() -> None:
    """Each input line runs the command once, with {} replaced, and yields one JSON record."""
    done = workpool_run("-j", "2", "--", "echo", "got {}", stdin="a\nb c\n\nd\n")
    assert done.returncode == 0, done.stderr
    by_input = {r["input"]: r for r in records(done.stdout)}
    assert set(by_input) == {"a", "b c", "d"}
    for value, record in by_input.items():
        assert record["stdout"] == f"got {value}\n"
        assert record["exit_code"] == 0 and record["attempts"] == 1
        assert record["timed_out"] is False and record["duration"] >= 0
    assert "3 succeeded" in done.stderr


def test_run_placeholders_substitute_parts_of_the_input() -> None:
    """{.} {/} {//} {/.} and {#} give the path's parts and the job number."""
    done = workpool_run("--", "echo", "{.}|{/}|{//}|{/.}|{#}", ":::", "dir/sub/file.tar.gz")
    assert records(done.stdout)[0]["stdout"] == "dir/sub/file.tar|file.tar.gz|dir/sub|file.tar|1\n"


def test_run_appends_the_input_without_placeholders() -> None:
    """A command without {} gets the input as its last argument, as xargs does."""
    done = workpool_run("--", "echo", "value:", ":::", "x")
    assert records(done.stdout)[0]["stdout"] == "value: x\n"


def test_run_input_is_never_parsed_by_a_shell(tmp_path: Path) -> None:
    """Input lines are passed as single arguments, with or without --shell."""
    hostile = "a; touch pwned $(touch pwned2) `touch pwned3`"
    plain = workpool_run("--", "echo", "{}", stdin=hostile + "\n", cwd=tmp_path)
    shelled = workpool_run("--shell", "--", "echo", "{}", stdin=hostile + "\n", cwd=tmp_path)
    assert records(plain.stdout)[0]["stdout"] == hostile + "\n"
    assert records(shelled.stdout)[0]["stdout"] == hostile + "\n"
    assert list(tmp_path.iterdir()) == []


def test_run_exit_status_is_nonzero_when_a_job_fails() -> None:
    """A failing job makes the run fail, and its record has its exit code and stderr."""
    done = workpool_run("--", "sh", "-c", 'echo oops >&2; exit "$0"', "{}", ":::", "0", "3")
    assert done.returncode == 1
    by_input = {r["input"]: r for r in records(done.stdout)}
    assert by_input["3"]["exit_code"] == 3 and by_input["3"]["status"] == "failed"
    assert by_input["3"]["stderr"] == "oops\n"
    assert by_input["0"]["status"] == "succeeded"


def test_run_missing_command_reports_127() -> None:
    """A command that does not exist fails with 127, as in a shell, and says why."""
    done = workpool_run("--", "no-such-command-here", ":::", "x")
    record = records(done.stdout)[0]
    assert record["exit_code"] == 127 and "no-such-command-here" in record["stderr"]


def test_run_timeout_kills_the_job_and_reports_timed_out(tmp_path: Path) -> None:
    """Past --timeout the job's whole process group is stopped, grandchildren included."""
    script = 'sleep 60 & echo $! > "$0/grandchild.pid"; wait'
    done = workpool_run("--timeout", "0.5", "--", "sh", "-c", script, str(tmp_path), ":::", "x")
    record = records(done.stdout)[0]
    assert done.returncode == 1
    assert record["timed_out"] is True and record["status"] == "timed_out"
    assert record["exit_code"] != 0
    all_gone(tmp_path)


def test_run_retries_a_failing_job_until_it_succeeds(tmp_path: Path) -> None:
    """--retries runs a failed job again; attempts counts every run."""
    script = 'if [ -e "$0/seen" ]; then echo ok; else touch "$0/seen"; exit 1; fi'
    done = workpool_run(
        "--retries", "2", "--retry-delay", "0", "--", "sh", "-c", script, str(tmp_path), ":::", "x"
    )
    record = records(done.stdout)[0]
    assert done.returncode == 0
    assert record["attempts"] == 2 and record["stdout"] == "ok\n"


def test_run_retries_a_timed_out_job() -> None:
    """A job that times out on every attempt reports all its attempts."""
    done = workpool_run("--timeout", "0.2", "--retries", "1", "--retry-delay", "0", "--",
                        "sh", "-c", "sleep 30", "{}", ":::", "x")  # fmt: skip
    record = records(done.stdout)[0]
    assert record["attempts"] == 2 and record["timed_out"] is True


@pytest.mark.parametrize("keep_order", [True, False])
def test_run_keep_order_reports_in_input_order(tmp_path: Path, keep_order: bool) -> None:
    """With --keep-order records follow the input; without it, the order jobs finish in.

    Job 1 ends after job 2: without --keep-order, once job 2's record is written (job 2's
    exit alone could still be reported after job 1's); with it, once job 2 ran, since its
    record waits for job 1's."""
    output = tmp_path / "out.jsonl"
    ready = '[ -e "$0/2.done" ]' if keep_order else '[ -s "$0/out.jsonl" ]'
    script = f'if [ "$1" = 1 ]; then until {ready}; do sleep 0.02; done; fi; touch "$0/$1.done"'
    flags = ["-k"] if keep_order else []
    done = workpool_run("-j", "2", *flags, "-o", str(output), "--", "sh", "-c", script,
                        str(tmp_path), "{}", ":::", "1", "2")  # fmt: skip
    assert done.returncode == 0
    order = [r["input"] for r in records(output.read_text())]
    assert order == (["1", "2"] if keep_order else ["2", "1"])


def test_run_halt_starts_nothing_after_n_failures() -> None:
    """--halt 1 stops starting jobs after the first failure."""
    done = workpool_run("-j", "1", "--halt", "1", "--", "sh", "-c", 'exit "$0"', "{}",
                        ":::", "1", "0", "0", "0")  # fmt: skip
    assert done.returncode == 1
    assert [r["input"] for r in records(done.stdout)] == ["1"]
    assert "--halt 1" in done.stderr


def test_run_dry_run_prints_commands_and_runs_nothing(tmp_path: Path) -> None:
    """--dry-run shows each command line, shell-quoted, and runs none of them."""
    done = workpool_run("--dry-run", "--", "touch", "{}", ":::", "a b", "c", cwd=tmp_path)
    assert done.stdout.splitlines() == ["touch 'a b'", "touch c"]
    assert list(tmp_path.iterdir()) == []


def test_run_resume_skips_what_already_succeeded(tmp_path: Path) -> None:
    """A rerun with --resume runs only the inputs the journal does not record as succeeded."""
    journal = tmp_path / "journal.jsonl"
    log = tmp_path / "ran.log"
    script = 'echo "$1" >> "$0"; [ "$1" != b ] || [ -e "$0.fixed" ]'
    args = ["--resume", str(journal), "--", "sh", "-c", script, str(log), "{}", ":::", "a", "b"]
    first = workpool_run(*args)
    assert first.returncode == 1
    Path(f"{log}.fixed").touch()
    with journal.open("a") as cut_short:
        cut_short.write('{"input": "c", "status": "succ')  # a record a kill cut in half
    second = workpool_run(*args)
    assert second.returncode == 0, second.stderr
    assert sorted(log.read_text().split()) == ["a", "b", "b"]  # a once, b twice
    assert [r["input"] for r in records(second.stdout)] == ["b"]
    assert "1 skipped" in second.stderr
    lines = journal.read_text().splitlines()
    assert json.loads(lines[-1])["status"] == "succeeded"


def test_run_output_goes_to_a_file_with_output(tmp_path: Path) -> None:
    """-o writes the records to a file and leaves stdout empty."""
    target = tmp_path / "results.jsonl"
    done = workpool_run("-o", str(target), "--", "echo", ":::", "x")
    assert done.stdout == ""
    assert records(target.read_text())[0]["stdout"] == "x\n"


def test_run_keeps_only_the_tail_of_long_output() -> None:
    """--max-output keeps the last bytes of stdout and marks the record truncated."""
    done = workpool_run("--max-output", "4", "--", "echo", "abcdefgh", ":::", "x")
    record = records(done.stdout)[0]
    assert record["stdout"] == "h x\n" and record["stdout_truncated"] is True


def test_run_reads_inputs_from_a_file(tmp_path: Path) -> None:
    """-a FILE reads one input per line from the file."""
    inputs = tmp_path / "inputs.txt"
    inputs.write_text("one\r\ntwo\n")
    done = workpool_run("-a", str(inputs), "--", "echo")
    assert sorted(r["stdout"] for r in records(done.stdout)) == ["one\n", "two\n"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["-j", "0", "--", "echo"], "-j"),
        (["--timeout", "-1", "--", "echo"], "--timeout"),
        (["--retries", "1000", "--", "echo"], "--retries"),
        ([], "COMMAND"),
        (["-a", "/no/such/file", "--", "echo"], "/no/such/file"),
    ],
)
def test_run_rejects_bad_arguments_clearly(args: list[str], message: str) -> None:
    """Bad arguments exit with status 2 and name the culprit, without a traceback."""
    from click.testing import CliRunner

    from workpool.cli._app import cli

    result = CliRunner().invoke(cli, ["run", *args])
    assert result.exit_code == 2 and message in result.output


def test_run_sigterm_lets_running_jobs_finish_and_starts_no_more(tmp_path: Path) -> None:
    """SIGTERM: no new job starts, running ones finish within the grace period, status 143."""
    inputs = [str(i) for i in range(1, 9)]  # more than fit the queue: the reader waits
    run = start("-j", "2", "--grace", "30", "--", "sh", "-c", WAIT_FOR_RELEASE, str(tmp_path),
                "{}", ":::", *inputs)  # fmt: skip
    wait_until(lambda: len(pids(tmp_path)) == 2)
    run.send_signal(signal.SIGTERM)
    read_until(run.stderr, "starting no new jobs")
    (tmp_path / "release").touch()
    stdout, stderr = run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGTERM
    done = records(stdout)
    assert sorted(r["input"] for r in done) == sorted(pids(tmp_path))
    assert {r["status"] for r in done} == {"succeeded"} and len(done) == 2
    assert "not started" in stderr


def test_run_grace_period_over_kills_running_jobs(tmp_path: Path) -> None:
    """Jobs still running when the grace period ends are killed, with nothing left behind."""
    run = start("-j", "2", "--grace", "0.3", "--", "sh", "-c",
                'echo $$ > "$0/$1.pid"; sleep 60 & echo $! > "$0/$1-bg.pid"; wait',
                str(tmp_path), "{}", ":::", "1", "2")  # fmt: skip
    wait_until(lambda: len(pids(tmp_path)) == 4)
    run.send_signal(signal.SIGTERM)
    stdout, stderr = run.communicate(timeout=30)
    assert "grace period over" in stderr
    assert {r["status"] for r in records(stdout)} == {"killed"}
    all_gone(tmp_path)


def test_run_second_ctrl_c_kills_at_once(tmp_path: Path) -> None:
    """A second SIGINT kills running jobs without waiting for the grace period; status 130."""
    run = start("-j", "2", "--grace", "600", "--", "sh", "-c", WAIT_FOR_RELEASE, str(tmp_path),
                "{}", ":::", "1", "2", "3")  # fmt: skip
    wait_until(lambda: len(pids(tmp_path)) == 2)
    run.send_signal(signal.SIGINT)
    read_until(run.stderr, "starting no new jobs")
    run.send_signal(signal.SIGINT)
    stdout, _ = run.communicate(timeout=30)
    assert run.returncode == 128 + signal.SIGINT
    assert [r["exit_code"] for r in records(stdout)] == [128 + signal.SIGKILL] * 2
    all_gone(tmp_path)


def test_run_sigterm_stops_reading_stdin(tmp_path: Path) -> None:
    """With stdin still open, SIGTERM ends the run once running jobs finish."""
    run = start("--", "sh", "-c", WAIT_FOR_RELEASE, str(tmp_path), "{}", stdin=subprocess.PIPE)
    assert run.stdin is not None
    run.stdin.write("1\n")
    run.stdin.flush()
    wait_until(lambda: len(pids(tmp_path)) == 1)
    run.send_signal(signal.SIGTERM)
    read_until(run.stderr, "starting no new jobs")
    (tmp_path / "release").touch()
    assert run.stdout is not None
    stdout = run.stdout.read()  # to its end, while stdin stays open
    assert run.wait(timeout=30) == 128 + signal.SIGTERM
    run.stdin.close()
    assert [r["status"] for r in records(stdout)] == ["succeeded"]


def test_run_leaves_no_background_process_of_a_finished_job(tmp_path: Path) -> None:
    """A job that exits leaving a background process behind: that process is killed too."""
    done = workpool_run("--", "sh", "-c", 'sleep 60 & echo $! > "$0/bg.pid"', str(tmp_path),
                        ":::", "x")  # fmt: skip
    assert done.returncode == 0
    all_gone(tmp_path)


def test_run_progress_bar_goes_to_stderr_only() -> None:
    """With --progress the bar is drawn on stderr and stdout stays pure JSON lines."""
    done = workpool_run("--progress", "-j", "2", "--", "echo", ":::", "a", "b", "c")
    assert done.returncode == 0
    assert len(records(done.stdout)) == 3
    assert "3/3" in done.stderr


def test_run_stops_when_its_output_is_closed(tmp_path: Path) -> None:
    """When the reader of the results goes away (`| head -1`), the next write kills the rest."""
    script = (
        'echo $$ > "$0/$1.pid"; [ "$1" = 1 ] && exit 0; [ "$1" = 3 ] && exec sleep 60;'
        'while [ ! -e "$0/release" ]; do sleep 0.02; done'
    )
    run = start("-j", "3", "--", "sh", "-c", script, str(tmp_path), "{}", ":::", "1", "2", "3")
    assert run.stdout is not None
    assert json.loads(run.stdout.readline())["input"] == "1"
    run.stdout.close()
    wait_until(lambda: len(pids(tmp_path)) == 3)
    (tmp_path / "release").touch()
    _, stderr = run.communicate(timeout=30)
    assert run.returncode == 1, stderr
    assert "output closed" in stderr
    all_gone(tmp_path)


def test_run_timeout_kills_a_job_that_ignores_sigterm(tmp_path: Path) -> None:
    """A job deaf to SIGTERM is killed with SIGKILL shortly after its timeout."""
    script = 'trap "" TERM; echo $$ > "$0/job.pid"; sleep 60; sleep 60'
    done = workpool_run("--timeout", "0.3", "--", "sh", "-c", script, str(tmp_path), ":::", "x")
    record = records(done.stdout)[0]
    assert record["timed_out"] is True and record["signal"] == signal.SIGKILL
    assert record["exit_code"] == 128 + signal.SIGKILL
    all_gone(tmp_path)


def test_run_resume_after_an_interruption_runs_each_input_once(tmp_path: Path) -> None:
    """Interrupted, then rerun with the same journal: what succeeded is not run again."""
    journal = tmp_path / "journal.jsonl"
    script = (
        'echo "$1" >> "$0/ran.log"; [ "$1" != b ] || [ -e "$0/release" ] && exit 0;'
        'echo $$ > "$0/$1.pid"; exec sleep 60'
    )
    args = ["-j", "1", "--grace", "0", "--resume", str(journal), "--", "sh", "-c", script,
            str(tmp_path), "{}", ":::", "a", "b", "c"]  # fmt: skip
    first = start(*args)
    wait_until(lambda: "b" in pids(tmp_path))
    first.send_signal(signal.SIGTERM)
    first.communicate(timeout=30)
    assert first.returncode == 128 + signal.SIGTERM
    (tmp_path / "release").touch()
    second = workpool_run(*args)
    assert second.returncode == 0, second.stderr
    assert (tmp_path / "ran.log").read_text().split() == ["a", "b", "b", "c"]
    statuses = [(r["input"], r["status"]) for r in records(journal.read_text())]
    assert statuses == [("a", "succeeded"), ("b", "killed"), ("b", "succeeded"), ("c", "succeeded")]
