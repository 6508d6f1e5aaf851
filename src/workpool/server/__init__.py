"""The HTTP job server: ``workpool serve --tasks MODULE`` (needs ``workpool[server]``).

``main(argv)`` is the command line; ``create_app`` (in ``workpool.server.app``) builds the ASGI
application for embedding. Importing this package needs no extra; starting a server does.
"""

from __future__ import annotations

from .cli import main

__all__ = ["main"]
