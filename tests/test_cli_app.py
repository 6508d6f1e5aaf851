"""The `workpool` command itself: version, help, and subcommands a build may lack."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import workpool

pytest.importorskip("click")

from click.testing import CliRunner, Result  # after the skip without click

from workpool.cli._app import cli

WORKPOOL = [sys.executable, "-m", "workpool.cli"]


def workpool_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*WORKPOOL, *args], capture_output=True, text=True, timeout=30)


def invoke(*args: str) -> Result:
    """Run the command line in this process: quick, for what needs no real process."""
    return CliRunner().invoke(cli, list(args), prog_name="workpool")


def test_version_prints_the_package_version() -> None:
    """`workpool --version` prints the version and exits 0."""
    done = workpool_cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"workpool {workpool.__version__}"


def test_help_lists_every_subcommand() -> None:
    """`workpool --help` names run, demo, bench and serve."""
    done = invoke("--help")
    assert done.exit_code == 0
    for name in ("run", "demo", "bench", "serve", "--version"):
        assert name in done.output


def test_run_help_documents_placeholders_and_signals() -> None:
    """`workpool run --help` explains placeholders, --grace and the exit status."""
    done = invoke("run", "--help")
    assert done.exit_code == 0
    for text in ("{/.}", "--grace", "--resume", "Ctrl-C", "exit status"):
        assert text in done.output


def test_unknown_subcommand_is_a_usage_error() -> None:
    """A misspelt subcommand exits 2 with a message, not a traceback."""
    done = invoke("rnu")
    assert done.exit_code == 2 and "No such command" in done.output


def test_no_subcommand_shows_the_help() -> None:
    """`workpool` alone shows the help."""
    assert "Commands:" in invoke().output


def test_absent_optional_subcommand_says_so() -> None:
    """A subcommand missing from this build says clearly that it is not available."""
    for name in ("bench", "serve"):
        try:
            __import__(f"workpool.cli.{name}")
        except ModuleNotFoundError:
            done = invoke(name, "--anything")
            assert done.exit_code == 1
            assert f"'workpool {name}' is not available" in done.output


def test_argparse_register_hook_is_adapted(monkeypatch: pytest.MonkeyPatch) -> None:
    """A subcommand module with an argparse register() hook runs under click."""
    import types

    def register(commands: object) -> None:
        parser = commands.add_parser("bench")  # type: ignore[attr-defined]
        parser.add_argument("--rounds", type=int, default=1)
        parser.set_defaults(run=lambda args: print(f"rounds={args.rounds}") or 3)

    module = types.ModuleType("workpool.cli.bench")
    module.register = register  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "workpool.cli.bench", module)
    result = invoke("bench", "--rounds", "5")
    assert result.output == "rounds=5\n" and result.exit_code == 3


def test_main_names_the_extra_when_click_is_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    """Without click, `workpool` says which extra to install instead of a traceback."""
    import workpool.cli

    monkeypatch.setitem(sys.modules, "click", None)
    monkeypatch.delitem(sys.modules, "workpool.cli._app", raising=False)
    assert workpool.cli.main(["--version"]) == 1


def test_shell_completion_completes_subcommands_and_options() -> None:
    """click's shell completion works for the installed command's name."""
    env = {**os.environ, "COMP_WORDS": "workpool run --ti", "COMP_CWORD": "2",
           "_WORKPOOL_COMPLETE": "bash_complete"}  # fmt: skip
    done = subprocess.run(
        [sys.executable, "-c", "import sys, workpool.cli; sys.argv[0] = 'workpool';"
         "sys.exit(workpool.cli.main())"],
        env=env, capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert "--timeout" in done.stdout


def test_serve_subcommand_reaches_the_server_parser() -> None:
    """`workpool serve --help` shows the server's own options."""
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-m", "workpool.cli", "serve", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    assert "--tasks" in result.stdout and "workpool serve" in result.stdout
