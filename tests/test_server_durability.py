"""Durability of the job server: kill -9 mid-run, SIGTERM drain, restart on the same file."""

from __future__ import annotations

import signal
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import wait_until
from server_support import Gate, Server

pytest.importorskip("fastapi", reason="needs workpool[server]")


@pytest.fixture
def servers() -> Iterator[list[Server]]:
    """Servers a test starts; any still alive at the end are stopped."""
    started: list[Server] = []
    yield started
    for srv in started:
        srv.stop()


def start(servers: list[Server], db: Path, *args: str, workers: int = 2) -> Server:
    srv = Server(db, *args, workers=workers)
    servers.append(srv)
    return srv.start()


def on_disk(db: Path) -> dict[str, tuple[str, int]]:
    """Each job's state and attempts, read from the SQLite file directly."""
    with sqlite3.connect(db) as conn:
        rows = conn.execute("SELECT id, state, attempts FROM jobs").fetchall()
    return {job_id: (state, attempts) for job_id, state, attempts in rows}


def test_kill_9_mid_run_then_restart_runs_every_job(servers: list[Server], tmp_path: Path) -> None:
    """Jobs running or queued when the server is killed run after restart, attempts counted."""
    db, gate = tmp_path / "jobs.sqlite3", Gate(tmp_path)
    first = start(servers, db, workers=2)
    ids = [first.submit("gated", *gate.args(), kwargs={"value": i})["id"] for i in range(3)]
    gate.wait_started(2)  # two run, one waits
    first.kill()
    assert sorted(on_disk(db)[i][0] for i in ids) == ["queued", "running", "running"]

    second = start(servers, db, workers=2)
    gate.wait_started(4)  # the two interrupted jobs started again
    gate.open()
    done = [second.wait_state(i, "succeeded") for i in ids]
    assert [job["result"] for job in done] == [0, 1, 2]
    assert sorted(job["attempts"] for job in done) == [1, 2, 2]


def test_acknowledged_job_survives_kill_9_before_it_runs(
    servers: list[Server], tmp_path: Path
) -> None:
    """A job answered 202 is on disk at once: killed before it ran, it runs after restart."""
    db, gate = tmp_path / "jobs.sqlite3", Gate(tmp_path)
    first = start(servers, db, workers=1)
    blocker = first.submit("gated", *gate.args())["id"]
    gate.wait_started(1)
    waiting = [first.submit("add", i, i)["id"] for i in range(5)]
    first.kill()
    gate.open()
    second = start(servers, db, workers=1)
    assert [second.wait_state(i, "succeeded")["result"] for i in waiting] == [0, 2, 4, 6, 8]
    assert second.wait_state(blocker, "succeeded")["attempts"] == 2


def test_sigterm_lets_running_jobs_finish_and_keeps_the_queue(
    servers: list[Server], tmp_path: Path
) -> None:
    """On SIGTERM running jobs finish within the grace; queued ones stay queued for next time."""
    db, gate = tmp_path / "jobs.sqlite3", Gate(tmp_path)
    srv = start(servers, db, "--grace", "30", workers=2)
    running = [srv.submit("gated", *gate.args(), kwargs={"value": i})["id"] for i in range(2)]
    gate.wait_started(2)
    queued = srv.submit("add", 20, 22)["id"]
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not srv.listening())  # stopped accepting
    gate.open()
    assert srv.proc.wait(30) == -signal.SIGTERM  # drained, then ended by the signal
    disk = on_disk(db)
    assert [disk[i] for i in running] == [("succeeded", 1), ("succeeded", 1)]
    assert disk[queued] == ("queued", 0)

    again = start(servers, db)
    assert again.wait_state(queued, "succeeded")["result"] == 42


def test_sigterm_past_the_grace_requeues_what_still_runs(
    servers: list[Server], tmp_path: Path
) -> None:
    """A job still running when the grace ends is put back to queued and runs after restart."""
    db, gate = tmp_path / "jobs.sqlite3", Gate(tmp_path)
    srv = start(servers, db, "--grace", "0.5", workers=1)
    job_id = srv.submit("stubborn", *gate.args())["id"]
    gate.wait_started(1)
    assert srv.terminate(timeout=30) == -signal.SIGTERM
    assert on_disk(db)[job_id] == ("queued", 1)

    gate.open()
    again = start(servers, db, workers=1)
    done = again.wait_state(job_id, "succeeded")
    assert done["attempts"] == 2 and done["result"] == "done"


def test_sigterm_refuses_new_jobs_while_draining(servers: list[Server], tmp_path: Path) -> None:
    """After SIGTERM nothing new is accepted: the port closes while running jobs drain."""
    db, gate = tmp_path / "jobs.sqlite3", Gate(tmp_path)
    srv = start(servers, db, "--grace", "30", workers=1)
    srv.submit("gated", *gate.args())
    gate.wait_started(1)
    assert srv.proc is not None
    srv.proc.send_signal(signal.SIGTERM)
    wait_until(lambda: not srv.listening())
    with pytest.raises(OSError):
        srv.request("POST", "/jobs", {"task": "add", "args": [1, 2]})
    gate.open()
    assert srv.proc.wait(30) == -signal.SIGTERM  # drained, then ended by the signal


def test_a_job_that_kills_the_server_is_failed_once_it_has_done_so_three_times(
    servers: list[Server], tmp_path: Path
) -> None:
    """A job that takes the server down runs again at each restart (at least once is the
    promise), whatever its retries; after the third death, the next start fails it."""
    db, gate = tmp_path / "jobs.sqlite3", Gate(tmp_path)
    first = start(servers, db, workers=1)
    job = first.submit("kill_the_process", str(gate.path), retries=0)["id"]
    gate.open()
    assert first.proc is not None and first.proc.wait(30) == 3
    for attempts in (1, 2):
        assert on_disk(db)[job] == ("running", attempts)
        again = Server(db, workers=1)
        servers.append(again)
        assert again.launch().wait(30) == 3  # it ran the job again, and died of it
    assert on_disk(db)[job] == ("running", 3)
    last = start(servers, db, workers=1)
    failed = last.wait_state(job, "failed")
    assert failed["attempts"] == 3
    assert "the server died while this job ran, 3 times" in failed["error"]
    assert last.submit("add", 1, 2)["id"]  # and the server goes on
