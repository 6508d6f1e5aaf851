"""A throwaway PostgreSQL server for the tests: initdb in a temporary directory, then postgres.

Skips when no PostgreSQL binaries are installed (``apt-get install postgresql``) or psycopg is
missing. As root it runs the server as the ``postgres`` user, which refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from helpers import LONG_LIVED, wait_until
from server_support import free_port


def _bin_dir() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    return Path(candidates[-1]).parent if candidates else None


def _as_user() -> dict[str, str]:
    """Popen's arguments to run as the postgres user when we are root (else none)."""
    if os.geteuid() != 0:
        return {}
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        pytest.skip("running as root and there is no postgres user to run PostgreSQL as")
    return {"user": "postgres", "group": "postgres"}


@contextmanager
def postgres_server() -> Iterator[str]:
    """Start PostgreSQL on a free port of 127.0.0.1; yield an admin DSN; stop it at the end."""
    psycopg = pytest.importorskip("psycopg", reason="needs psycopg (workpool[postgres])")
    bin_dir = _bin_dir()
    if bin_dir is None:
        pytest.skip("no PostgreSQL server binaries (apt-get install postgresql)")
    as_user = _as_user()
    root = Path(tempfile.mkdtemp(prefix="workpool-pg-"))
    if as_user:
        shutil.chown(root, "postgres")
    data, port = root / "data", free_port()
    subprocess.run(
        [str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "wp", "--no-sync",
         "-E", "UTF8"],
        check=True, capture_output=True, cwd=root, **as_user,  # type: ignore[call-overload]
    )  # fmt: skip
    server = subprocess.Popen(
        [str(bin_dir / "postgres"), "-D", str(data), "-p", str(port), "-k", str(root),
         "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=root,
        **as_user,  # type: ignore[call-overload]
    )  # fmt: skip
    dsn = f"postgresql://wp@127.0.0.1:{port}/postgres"

    def ready() -> bool:
        assert server.poll() is None, "postgres exited at start"
        try:
            psycopg.connect(dsn, connect_timeout=2).close()
        except psycopg.OperationalError:
            return False
        return True

    LONG_LIVED.add(server.pid)  # it serves the whole module: not a leak of one test
    try:
        wait_until(ready, timeout=30)
        yield dsn
    finally:
        server.send_signal(signal.SIGINT)  # PostgreSQL's "fast" shutdown
        server.wait(30)
        LONG_LIVED.discard(server.pid)
        shutil.rmtree(root, ignore_errors=True)


def fresh_database(admin_dsn: str) -> str:
    """Create an empty database on the server and return its DSN."""
    import psycopg

    name = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin_dsn, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return admin_dsn.rsplit("/", 1)[0] + "/" + name
