"""The ``workpool`` group: subcommands are imported only when they run, so ``--help`` is quick.

A subcommand lives in ``workpool.cli.<name>`` and exposes a click command named ``command``.
Optional subcommands (``bench``, ``serve``) may be absent from a build: the group lists them
and says clearly what is missing when one is asked for. A module may instead expose the older
argparse hook, ``register(subparsers)`` setting ``run=`` as a default; it is adapted here.
"""

from __future__ import annotations

import argparse
import importlib
from typing import Any

import click

from .. import __version__

_COMMANDS = {
    "run": "run shell commands over inputs, N at a time",
    "demo": "filter a batch of real images and show the speedup",
    "bench": "workpool against the stdlib and peer pools, side by side",
    "serve": "the HTTP job server",
}


class LazyGroup(click.Group):
    """A group whose subcommands are modules of this package, imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return list(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name not in _COMMANDS:
            return None
        try:
            module = importlib.import_module(f"{__package__}.{cmd_name}")
        except ModuleNotFoundError as error:
            if error.name != f"{__package__}.{cmd_name}":
                raise
            return _missing(cmd_name)
        command = getattr(module, "command", None)
        if isinstance(command, click.Command):
            return command
        return _from_argparse(cmd_name, module)


def _missing(name: str) -> click.Command:
    """A stand-in that explains the subcommand is not part of this build."""

    @click.command(
        name,
        short_help=f"{_COMMANDS[name]} (not in this build)",
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    def unavailable() -> None:
        raise click.ClickException(
            f"'workpool {name}' is not available in this build of workpool {__version__}"
        )

    return unavailable


def _from_argparse(name: str, module: Any) -> click.Command:
    """Wrap a module's argparse ``register(subparsers)`` hook as a click command."""
    parser = argparse.ArgumentParser(prog="workpool")
    module.register(parser.add_subparsers(dest="command"))

    @click.command(
        name,
        short_help=_COMMANDS[name],
        add_help_option=False,
        context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    )
    @click.pass_context
    def adapted(ctx: click.Context) -> None:
        args = parser.parse_args([name, *ctx.args])
        ctx.exit(int(args.run(args) or 0))

    return adapted


@click.group(
    cls=LazyGroup,
    context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
)
@click.version_option(__version__, "-V", "--version", message="workpool %(version)s")
def cli() -> None:
    """A production worker pool for Python, on the command line.

    \b
      workpool run -j 8 -- gzip -k {}  < files.txt
      workpool demo

    Run 'workpool COMMAND --help' for one command's options. Shell completion:
    eval "$(_WORKPOOL_COMPLETE=bash_source workpool)" (zsh_source, fish_source also work).
    """
