"""A ``JobStore`` in PostgreSQL, for when one SQLite file is outgrown (``workpool[postgres]``).

Same table and behaviour as the SQLite store; ``--db postgresql://...`` selects it. Several
servers may share one database: idempotency keys are settled by a unique index, not a lock.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Sequence
from typing import Any

from .store import (
    _COLUMNS,
    FINAL_STATES,
    LOST_RUNS_ERROR,
    LOST_RUNS_TOLERATED,
    STATES,
    IdempotencyConflict,
    Job,
    JobSpec,
    _job,
    dumps,
)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS workpool_jobs (
    seq BIGSERIAL PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    task TEXT NOT NULL,
    args TEXT NOT NULL,
    kwargs TEXT NOT NULL,
    priority INTEGER NOT NULL,
    timeout DOUBLE PRECISION,
    retries INTEGER NOT NULL,
    idempotency_key TEXT UNIQUE,
    fingerprint TEXT NOT NULL,
    state TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    result TEXT,
    error TEXT,
    created_at DOUBLE PRECISION NOT NULL,
    started_at DOUBLE PRECISION,
    finished_at DOUBLE PRECISION
);
CREATE INDEX IF NOT EXISTS workpool_jobs_state ON workpool_jobs (state, seq);
CREATE INDEX IF NOT EXISTS workpool_jobs_finished ON workpool_jobs (finished_at);
ALTER TABLE workpool_jobs ADD COLUMN IF NOT EXISTS lost_runs INTEGER NOT NULL DEFAULT 0;
"""


class PostgresStore:
    """A ``JobStore`` on one PostgreSQL connection; each change commits before returning."""

    def __init__(self, dsn: str) -> None:
        try:
            import psycopg
        except ImportError as exc:  # pragma: no cover  # depends on the environment
            raise ImportError(
                "a PostgreSQL job store needs psycopg: pip install 'workpool[postgres]'"
            ) from exc
        self._conn = psycopg.connect(dsn, autocommit=True)
        self._lock = threading.Lock()  # one connection, shared by the worker threads
        with self._lock, self._conn.transaction():
            self._conn.execute(_SCHEMA)

    def _one(self, sql: str, params: Sequence[Any] = ()) -> Any:
        with self._lock, self._conn.transaction():
            return self._conn.execute(sql, params).fetchone()

    def _all(self, sql: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._lock, self._conn.transaction():
            return self._conn.execute(sql, params).fetchall()

    def add(self, spec: JobSpec) -> tuple[Job, bool]:
        fingerprint = spec.fingerprint()
        row = self._one(
            "INSERT INTO workpool_jobs (id, task, args, kwargs, priority, timeout, retries, "
            "idempotency_key, fingerprint, state, created_at) "
            "VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'queued', %s) "
            f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {_COLUMNS}",
            (
                uuid.uuid4().hex, spec.task, dumps(spec.args), dumps(spec.kwargs), spec.priority,
                spec.timeout, spec.retries, spec.idempotency_key, fingerprint, time.time(),
            ),
        )  # fmt: skip
        if row is not None:
            return _job(row), True
        first = self._one(
            f"SELECT {_COLUMNS}, fingerprint FROM workpool_jobs WHERE idempotency_key = %s",
            (spec.idempotency_key,),
        )
        if first[-1] != fingerprint:
            raise IdempotencyConflict(first[0])
        return _job(first[:-1]), False

    def get(self, job_id: str) -> Job | None:
        row = self._one(f"SELECT {_COLUMNS} FROM workpool_jobs WHERE id = %s", (job_id,))
        return None if row is None else _job(row)

    def page(
        self, *, state: str | None, task: str | None, before: int | None, limit: int
    ) -> list[Job]:
        where, params = ["TRUE"], []  # type: list[str], list[Any]
        for clause, value in (("state = %s", state), ("task = %s", task), ("seq < %s", before)):
            if value is not None:
                where.append(clause)
                params.append(value)
        rows = self._all(
            f"SELECT {_COLUMNS} FROM workpool_jobs WHERE {' AND '.join(where)} "
            "ORDER BY seq DESC LIMIT %s",
            (*params, limit),
        )
        return [_job(row) for row in rows]

    def start_attempt(self, job_id: str) -> int:
        row = self._one(
            "UPDATE workpool_jobs SET state = 'running', attempts = attempts + 1, started_at = %s "
            "WHERE id = %s RETURNING attempts",
            (time.time(), job_id),
        )
        return int(row[0]) if row else 0

    def finish(self, job_id: str, state: str, result: Any, error: str | None) -> None:
        if state not in FINAL_STATES:
            raise ValueError(f"not a final state: {state!r}")
        self._one(
            "UPDATE workpool_jobs SET state = %s, result = %s, error = %s, finished_at = %s "
            "WHERE id = %s RETURNING 1",
            (state, dumps(result), error, time.time(), job_id),
        )

    def requeue(self, job_ids: Sequence[str]) -> None:
        if job_ids:
            self._all(
                "UPDATE workpool_jobs SET state = 'queued', result = NULL, error = NULL, "
                "finished_at = NULL WHERE id = ANY(%s) RETURNING 1",
                (list(job_ids),),
            )

    def recover(self) -> list[Job]:
        with self._lock, self._conn.transaction():
            self._conn.execute(
                "UPDATE workpool_jobs SET lost_runs = lost_runs + 1 WHERE state = 'running'"
            )
            self._conn.execute(
                "UPDATE workpool_jobs SET state = 'failed', error = %s, finished_at = %s "
                "WHERE state = 'running' AND lost_runs > %s",
                (LOST_RUNS_ERROR, time.time(), LOST_RUNS_TOLERATED),
            )
            self._conn.execute("UPDATE workpool_jobs SET state = 'queued' WHERE state = 'running'")
            rows = self._conn.execute(
                f"SELECT {_COLUMNS} FROM workpool_jobs WHERE state = 'queued' "
                "ORDER BY priority DESC, seq"
            ).fetchall()
        return [_job(row) for row in rows]

    def counts(self) -> dict[str, int]:
        rows = self._all("SELECT state, COUNT(*) FROM workpool_jobs GROUP BY state")
        found = dict.fromkeys(STATES, 0)
        found.update({state: int(n) for state, n in rows})
        return found

    def purge(self, finished_before: float) -> int:
        rows = self._all(
            "DELETE FROM workpool_jobs WHERE finished_at IS NOT NULL AND finished_at < %s "
            "RETURNING 1",
            (finished_before,),
        )
        return len(rows)

    def close(self) -> None:
        with self._lock:
            self._conn.close()
