"""The job server on the PostgreSQL store, against a real PostgreSQL server the test starts."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from server_postgres import fresh_database, postgres_server
from server_support import Gate, Server

pytest.importorskip("fastapi", reason="needs workpool[server]")


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as dsn:
        yield dsn


def test_kill_9_mid_run_then_restart_on_postgres(postgres: str, tmp_path: Path) -> None:
    """On PostgreSQL too, jobs running when the server is killed run after restart, counted."""
    import psycopg

    dsn, gate = fresh_database(postgres), Gate(tmp_path)
    first = Server(dsn, workers=1, log_dir=tmp_path).start()
    try:
        running = first.submit("gated", *gate.args(), kwargs={"value": "a"})["id"]
        gate.wait_started(1)
        waiting = first.submit("add", 2, 2, idempotency_key="pg-1")["id"]
        first.kill()
    finally:
        first.stop()
    with psycopg.connect(dsn) as conn:
        rows = dict(conn.execute("SELECT id, state FROM workpool_jobs").fetchall())
    assert rows == {running: "running", waiting: "queued"}

    gate.open()
    second = Server(dsn, workers=1, log_dir=tmp_path).start()
    try:
        done = second.wait_state(running, "succeeded")
        assert (done["result"], done["attempts"]) == ("a", 2)
        assert second.wait_state(waiting, "succeeded")["result"] == 4
        repeat = second.request(
            "POST", "/jobs", {"task": "add", "args": [2, 2], "idempotency_key": "pg-1"}
        )
        assert repeat.status == 200 and repeat.body["id"] == waiting
    finally:
        second.stop()
