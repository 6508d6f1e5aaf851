"""Where jobs live: the ``JobStore`` interface and its SQLite implementation.

The runner and the web layer talk only to ``JobStore``, a handful of methods, so that a
PostgreSQL store can stand in when one SQLite file is outgrown. Every method that changes a
job commits before it returns: a submit acknowledged with 202 is already on disk.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

STATES = ("queued", "running", "succeeded", "failed", "cancelled", "timed_out")
FINAL_STATES = frozenset(STATES[2:])


@dataclass(frozen=True)
class JobSpec:
    """What a client asked to run: validated, not yet stored."""

    task: str
    args: list[Any] = field(default_factory=list)
    kwargs: dict[str, Any] = field(default_factory=dict)
    priority: int = 0
    timeout: float | None = None
    retries: int = 0
    idempotency_key: str | None = None

    def fingerprint(self) -> str:
        """The request's content, to tell a true repeat from a reused idempotency key."""
        body = [self.task, self.args, self.kwargs, self.priority, self.timeout, self.retries]
        return json.dumps(body, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class Job:
    """One stored job: its request, where it is, and how it ended."""

    id: str
    seq: int
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    timeout: float | None
    retries: int
    idempotency_key: str | None
    state: str
    attempts: int
    result: Any
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None

    def to_json(self) -> dict[str, Any]:
        """The job as the HTTP API shows it."""
        body = {name: getattr(self, name) for name in _PUBLIC_FIELDS}
        body["duration"] = (
            None
            if self.started_at is None or self.finished_at is None
            else self.finished_at - self.started_at
        )
        return body


_PUBLIC_FIELDS = (
    *("id", "task", "args", "kwargs", "priority", "timeout", "retries", "idempotency_key"),
    *("state", "attempts", "result", "error", "created_at", "started_at", "finished_at"),
)


class IdempotencyConflict(Exception):
    """An idempotency key was reused with a different request."""

    def __init__(self, job_id: str) -> None:
        self.job_id = job_id
        super().__init__(f"idempotency key already used by job {job_id} for a different request")


LOST_RUNS_TOLERATED = 2
"""A job that was running when the server died runs again (whatever its retries), this many
times; the next time the server dies under it, it is failed instead: it may be what kills it."""

LOST_RUNS_ERROR = (
    f"given up: the server died while this job ran, {LOST_RUNS_TOLERATED + 1} times; "
    "a job that kills its process (os._exit, a crash) is contained on --backend process"
)


class JobStore(Protocol):
    """The durable record of jobs; every change is committed before the call returns."""

    def add(self, spec: JobSpec) -> tuple[Job, bool]:
        """Store a new queued job; or return the job its idempotency key made (False)."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def page(
        self, *, state: str | None, task: str | None, before: int | None, limit: int
    ) -> list[Job]:
        """Jobs newest first, only those in ``state``/of ``task`` if given, below ``before``."""
        ...

    def start_attempt(self, job_id: str) -> int:
        """Mark the job running and count one more attempt; return the count."""
        ...

    def finish(self, job_id: str, state: str, result: Any, error: str | None) -> None: ...

    def requeue(self, job_ids: Sequence[str]) -> None:
        """Put jobs back to queued (interrupted or retried by hand), keeping their attempts."""
        ...

    def recover(self) -> list[Job]:
        """After a restart: running jobs back to queued, each with one more lost run, except
        those lost more than ``LOST_RUNS_TOLERATED`` times (failed with ``LOST_RUNS_ERROR``);
        return every queued job, in run order."""
        ...

    def counts(self) -> dict[str, int]:
        """How many jobs are in each state."""
        ...

    def purge(self, finished_before: float) -> int:
        """Delete finished jobs older than ``finished_before``; return how many."""
        ...

    def close(self) -> None: ...


_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    priority INTEGER NOT NULL,
    timeout REAL,
    retries INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    lost_runs INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS jobs_state ON jobs (state, seq);
CREATE INDEX IF NOT EXISTS jobs_finished ON jobs (finished_at);
"""

_COLUMNS = (
    "id, seq, task, args, kwargs, priority, timeout, retries, idempotency_key, state, attempts, "
    "result, error, created_at, started_at, finished_at"
)


class SQLiteStore:
    """A ``JobStore`` in one SQLite file in WAL mode.

    ``synchronous="FULL"`` (the default) makes each commit survive a power cut, not only a
    killed process; ``"NORMAL"`` keeps it safe from ``kill -9`` only, and is faster.
    """

    def __init__(self, path: str, *, synchronous: str = "FULL") -> None:
        if synchronous.upper() not in ("FULL", "NORMAL"):
            raise ValueError(f"synchronous must be FULL or NORMAL, not {synchronous!r}")
        self.path = path
        # One connection shared under a lock: SQLite serialises writers anyway, and the
        # worker threads, the event loop's helpers and the sweeper all write.
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute(f"PRAGMA synchronous={synchronous.upper()}")
        self._db.execute("PRAGMA busy_timeout=5000")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(jobs)")}
        if "lost_runs" not in columns:  # a file from before it was counted
            self._db.execute("ALTER TABLE jobs ADD COLUMN lost_runs INTEGER NOT NULL DEFAULT 0")

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    def add(self, spec: JobSpec) -> tuple[Job, bool]:
        fingerprint = spec.fingerprint()
        with self._transaction() as db:
            if spec.idempotency_key is not None:
                row = db.execute(
                    f"SELECT {_COLUMNS}, fingerprint FROM jobs WHERE idempotency_key = ?",
                    (spec.idempotency_key,),
                ).fetchone()
                if row is not None:
                    if row[-1] != fingerprint:
                        raise IdempotencyConflict(row[0])
                    return _job(row[:-1]), False
            job_id = uuid.uuid4().hex
            db.execute(
                "INSERT INTO jobs (id, task, args, kwargs, priority, timeout, retries, "
                "idempotency_key, fingerprint, state, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?)",
                (
                    job_id,
                    spec.task,
                    json.dumps(spec.args),
                    json.dumps(spec.kwargs),
                    spec.priority,
                    spec.timeout,
                    spec.retries,
                    spec.idempotency_key,
                    fingerprint,
                    time.time(),
                ),
            )
            row = db.execute(f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return _job(row), True

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            row = self._db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE id = ?", (job_id,)
            ).fetchone()
        return None if row is None else _job(row)

    def page(
        self, *, state: str | None, task: str | None, before: int | None, limit: int
    ) -> list[Job]:
        where, params = ["1=1"], []  # type: list[str], list[Any]
        for clause, value in (("state = ?", state), ("task = ?", task), ("seq < ?", before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        sql = f"SELECT {_COLUMNS} FROM jobs WHERE {' AND '.join(where)} ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*params, limit)).fetchall()
        return [_job(row) for row in rows]

    def start_attempt(self, job_id: str) -> int:
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = 'running', attempts = attempts + 1, started_at = ? "
                "WHERE id = ?",
                (time.time(), job_id),
            )
            row = db.execute("SELECT attempts FROM jobs WHERE id = ?", (job_id,)).fetchone()
        return int(row[0]) if row else 0

    def finish(self, job_id: str, state: str, result: Any, error: str | None) -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET state = ?, result = ?, error = ?, finished_at = ? WHERE id = ?",
                (state, json.dumps(result), error, time.time(), job_id),
            )

    def requeue(self, job_ids: Sequence[str]) -> None:
        with self._transaction() as db:
            db.executemany(
                "UPDATE jobs SET state = 'queued', result = NULL, error = NULL, finished_at = NULL "
                "WHERE id = ?",
                [(job_id,) for job_id in job_ids],
            )

    def recover(self) -> list[Job]:
        with self._transaction() as db:
            db.execute("UPDATE jobs SET lost_runs = lost_runs + 1 WHERE state = 'running'")
            db.execute(
                "UPDATE jobs SET state = 'failed', error = ?, finished_at = ? "
                "WHERE state = 'running' AND lost_runs > ?",
                (LOST_RUNS_ERROR, time.time(), LOST_RUNS_TOLERATED),
            )
            db.execute("UPDATE jobs SET state = 'queued' WHERE state = 'running'")
            rows = db.execute(
                f"SELECT {_COLUMNS} FROM jobs WHERE state = 'queued' ORDER BY priority DESC, seq"
            ).fetchall()
        return [_job(row) for row in rows]

    def counts(self) -> dict[str, int]:
        with self._lock:
            rows = self._db.execute("SELECT state, COUNT(*) FROM jobs GROUP BY state").fetchall()
        found = dict.fromkeys(STATES, 0)
        found.update({state: int(n) for state, n in rows})
        return found

    def purge(self, finished_before: float) -> int:
        with self._transaction() as db:
            cursor = db.execute(
                "DELETE FROM jobs WHERE finished_at IS NOT NULL AND finished_at < ?",
                (finished_before,),
            )
        return cursor.rowcount

    def close(self) -> None:
        with self._lock:
            self._db.close()


def dumps(value: Any) -> str:
    """JSON text of a value already known to be JSON-ready."""
    return json.dumps(value)


def open_store(db: str, *, synchronous: str = "FULL") -> JobStore:
    """The store ``--db`` names: a ``postgresql://`` URL, or else a SQLite file path."""
    if db.startswith(("postgresql://", "postgres://")):
        from .store_postgres import PostgresStore

        return PostgresStore(db)
    return SQLiteStore(db, synchronous=synchronous)


def _job(row: Sequence[Any]) -> Job:
    (job_id, seq, task, args, kwargs, priority, timeout, retries, key, state, attempts,
     result, error, created, started, finished) = row  # fmt: skip
    return Job(
        id=job_id,
        seq=seq,
        task=task,
        args=json.loads(args),
        kwargs=json.loads(kwargs),
        priority=priority,
        timeout=timeout,
        retries=retries,
        idempotency_key=key,
        state=state,
        attempts=attempts,
        result=None if result is None else json.loads(result),
        error=error,
        created_at=created,
        started_at=started,
        finished_at=finished,
    )
