"""``workpool serve``: the HTTP job server, whose own argument parser takes every option."""

from __future__ import annotations

import click


@click.command(
    "serve",
    add_help_option=False,  # --help goes to the server's parser, which knows the options
    context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
    short_help="the HTTP job server",
)
@click.pass_context
def command(ctx: click.Context) -> None:
    """Serve the tasks a module registers with @workpool.task over HTTP (see docs/server.md)."""
    from ..server import main

    ctx.exit(main(list(ctx.args)))
