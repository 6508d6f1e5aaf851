"""The command line of the job server: flags, an optional TOML config file, and the run loop."""

from __future__ import annotations

import argparse
import math
import os
import secrets
import sys
from dataclasses import dataclass, fields
from types import FrameType
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .runner import Runner

_EXTRA = "pip install 'workpool[server]'"


@dataclass
class ServeConfig:
    """Every setting of ``workpool serve``; flags beat the config file, which beats these."""

    tasks: str = ""
    host: str = "127.0.0.1"
    port: int = 8080
    db: str = "workpool-jobs.sqlite3"
    workers: int = 4
    backend: str = "thread"
    queue_size: int = 0
    grace: float = 10.0
    keep_results: float = 7 * 24 * 3600.0
    retry_base_delay: float = 0.05
    retry_max_delay: float = 5.0
    synchronous: str = "FULL"
    auth_reads: bool = False
    token: str | None = None


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="workpool serve",
        description="Serve the tasks a module registers with @workpool.task over HTTP.",
    )
    p.add_argument("--tasks", help="module that registers the tasks (e.g. myapp.tasks)")
    p.add_argument("--config", help="a TOML file with any of these settings (flags win)")
    p.add_argument("--host", help="address to bind (default 127.0.0.1)")
    p.add_argument("--port", type=int, help="port (default 8080; 0 picks a free one)")
    p.add_argument("--db", help="SQLite file of the jobs (default workpool-jobs.sqlite3)")
    p.add_argument("--workers", type=int, help="worker count (default 4)")
    p.add_argument("--backend", help="pool backend (default thread)")
    p.add_argument("--queue-size", type=int, help="most queued jobs before 429 (0: no limit)")
    p.add_argument("--grace", type=float, help="seconds running jobs get on SIGTERM (10)")
    p.add_argument("--keep-results", type=float, help="seconds finished jobs are kept (7 days)")
    p.add_argument("--retry-base-delay", type=float, help="first retry backoff, seconds")
    p.add_argument("--retry-max-delay", type=float, help="longest retry backoff, seconds")
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], help="SQLite fsync level")
    p.add_argument(
        "--auth-reads", action="store_true", default=None, help="require the token for reads"
    )
    p.add_argument("--token", help="bearer token (default: $WORKPOOL_TOKEN, else a random one)")
    return p


def load_config(argv: list[str] | None) -> ServeConfig:
    """Settings from the flags, the config file and ``WORKPOOL_TOKEN``; exits on bad ones."""
    parser = _parser()
    ns = vars(parser.parse_args(argv))
    values: dict[str, Any] = {}
    config_path = ns.pop("config")
    if config_path:
        values.update(_read_toml(parser, config_path))
    values.update({k: v for k, v in ns.items() if v is not None})
    known = {f.name for f in fields(ServeConfig)}
    unknown = sorted(set(values) - known)
    if unknown:
        parser.error(f"unknown settings in the config file: {', '.join(unknown)}")
    config = ServeConfig(**values)
    config.token = config.token or os.environ.get("WORKPOOL_TOKEN") or None
    _check(parser, config)
    return config


def _read_toml(parser: argparse.ArgumentParser, path: str) -> dict[str, Any]:
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover  # Python 3.10 has no tomllib
        import tomli as tomllib  # type: ignore[import-not-found, unused-ignore]  # 3.10 only
    try:
        with open(path, "rb") as f:
            data = tomllib.load(f)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        parser.error(f"cannot read config {path}: {exc}")
    section = data.get("serve", data)
    return {str(k).replace("-", "_"): v for k, v in section.items()}


def _check(parser: argparse.ArgumentParser, c: ServeConfig) -> None:
    if not c.tasks:
        parser.error("--tasks MODULE is required (a module that uses @workpool.task)")
    if c.workers < 1:
        parser.error("--workers must be >= 1")
    if not 0 <= c.port <= 65535:
        parser.error("--port must be between 0 and 65535")
    if c.queue_size < 0 or c.grace < 0 or c.keep_results <= 0:
        parser.error("--queue-size and --grace must be >= 0, --keep-results > 0")


class _CannotStart(Exception):
    """A setting that passed parsing but cannot be served; the message says which."""


def main(argv: list[str] | None = None) -> int:
    """Run the job server until SIGTERM or Ctrl-C; return the exit status."""
    config = load_config(argv)
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401  # fail here, with the extra's name, not halfway
    except ImportError as exc:
        print(f"workpool serve needs its extra: {_EXTRA} ({exc})", file=sys.stderr)
        return 2
    try:
        return _serve(config)
    except _CannotStart as exc:
        print(f"workpool serve: {exc}", file=sys.stderr)
        return 2


def _serve(config: ServeConfig) -> int:
    from .app import ServerSettings, create_app
    from .store import open_store

    tasks = _tasks(config.tasks)
    token = config.token
    if token is None:
        token = secrets.token_urlsafe(24)
        print(f"workpool serve: no --token or WORKPOOL_TOKEN; this run's token: {token}",
              file=sys.stderr)  # fmt: skip
    try:
        store = open_store(config.db, synchronous=config.synchronous)
    except Exception as exc:  # any driver's connect error: report, exit 2
        raise _CannotStart(f"cannot open --db: {exc}") from None
    try:
        runner = _runner(config, store, tasks)
        settings = ServerSettings(
            token=token, auth_reads=config.auth_reads, grace=config.grace,
            keep_results=config.keep_results,
        )  # fmt: skip
        return _run(create_app(runner, settings), runner, config)
    finally:
        store.close()


def _tasks(module: str) -> dict[str, Any]:
    from .._registry import load_tasks

    sys.path.insert(0, os.getcwd())  # as `python -m` does, so that --tasks finds local modules
    try:
        tasks = load_tasks(module)  # named by the operator, never by a request
    except ImportError as exc:
        raise _CannotStart(f"cannot import --tasks {module}: {exc}") from None
    if not tasks:
        raise _CannotStart(f"{module} registers no task: decorate functions with @workpool.task")
    return tasks


def _runner(config: ServeConfig, store: Any, tasks: dict[str, Any]) -> Runner:
    from .. import RetryPolicy
    from .runner import Runner

    try:
        retry = RetryPolicy(base_delay=config.retry_base_delay, max_delay=config.retry_max_delay)
        return Runner(
            store, tasks, workers=config.workers, backend=config.backend,
            queue_size=config.queue_size, retry=retry,
        )  # fmt: skip
    except (TypeError, ValueError) as exc:
        raise _CannotStart(str(exc)) from None


def _run(app: Any, runner: Runner, config: ServeConfig) -> int:
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame: FrameType | None) -> None:
            # At the signal itself, not once uvicorn has closed its connections: no queued
            # job may start after SIGTERM.
            runner.stop_accepting()
            super().handle_exit(sig, frame)

    server = Server(
        uvicorn.Config(
            app, host=config.host, port=config.port, log_level="warning",
            timeout_graceful_shutdown=max(1, math.ceil(config.grace)), lifespan="on",
        )
    )  # fmt: skip
    try:
        # After draining on SIGTERM, uvicorn raises the signal again, so that the process ends
        # as killed by it (status -15/143), the Unix convention; Ctrl-C ends here.
        server.run()
    except KeyboardInterrupt:
        return 130
    return 0 if server.started else 1
