"""The SQLite job store, the task registry and the server's settings, in process."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_postgres import fresh_database, postgres_server

import workpool
from workpool._registry import registered_tasks, unregister
from workpool.server.cli import load_config
from workpool.server.store import IdempotencyConflict, JobSpec, JobStore, SQLiteStore, open_store


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A real PostgreSQL server for this module (skips without one)."""
    with postgres_server() as dsn:
        yield dsn


@pytest.fixture(params=["sqlite", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobStore]:
    """Each store behind the ``JobStore`` interface, empty: both must pass the same tests."""
    if request.param == "sqlite":
        s: JobStore = SQLiteStore(str(tmp_path / "jobs.sqlite3"))
    else:
        s = open_store(fresh_database(request.getfixturevalue("postgres")))
    yield s
    s.close()


def test_store_uses_wal_and_survives_reopening(tmp_path: Path) -> None:
    """The file is in WAL mode, and a job added is there when the file is opened again."""
    path = str(tmp_path / "jobs.sqlite3")
    first = SQLiteStore(path)
    job, created = first.add(JobSpec("add", [1, 2]))
    mode = first._db.execute("PRAGMA journal_mode").fetchone()[0]
    first.close()
    again = SQLiteStore(path)
    try:
        assert created and mode == "wal"
        stored = again.get(job.id)
        assert stored is not None and stored.args == [1, 2] and stored.state == "queued"
    finally:
        again.close()


def test_attempts_count_and_recover_requeues_running_jobs(store: JobStore) -> None:
    """Each start counts an attempt; recover puts running jobs back to queued, by priority."""
    low, _ = store.add(JobSpec("add", priority=0))
    high, _ = store.add(JobSpec("add", priority=5))
    assert store.start_attempt(low.id) == 1
    assert store.start_attempt(low.id) == 2
    recovered = store.recover()
    assert [j.id for j in recovered] == [high.id, low.id]
    assert [(j.state, j.attempts) for j in recovered] == [("queued", 0), ("queued", 2)]


def test_recover_fails_a_job_the_server_died_under_three_times(store: JobStore) -> None:
    """Each recover counts a lost run for each job left running; the third fails the job. Its
    attempts do not count: a job retried many times, lost once, runs again."""
    doomed, _ = store.add(JobSpec("add"))
    retried, _ = store.add(JobSpec("add", retries=5))
    for _ in range(4):  # four real attempts, ended as failures
        store.start_attempt(retried.id)
        store.finish(retried.id, "failed", None, "boom")
        store.requeue([retried.id])
    for lost in range(1, 4):
        store.start_attempt(doomed.id)
        if lost == 3:
            store.start_attempt(retried.id)
        recovered = [job.id for job in store.recover()]
        assert recovered == ([doomed.id, retried.id] if lost < 3 else [retried.id])
    failed = store.get(doomed.id)
    assert failed is not None and (failed.state, failed.attempts) == ("failed", 3)
    assert failed.error is not None and "died while this job ran, 3 times" in failed.error
    assert failed.finished_at is not None
    again = store.get(retried.id)
    assert again is not None and (again.state, again.attempts) == ("queued", 5)


def test_a_file_from_before_lost_runs_were_counted_gets_the_column(tmp_path: Path) -> None:
    """A jobs file made before ``lost_runs`` existed is given the column when opened."""
    if sqlite3.sqlite_version_info < (3, 35):
        pytest.skip("DROP COLUMN needs SQLite 3.35")
    path = str(tmp_path / "jobs.sqlite3")
    SQLiteStore(path).close()
    with sqlite3.connect(path) as old:
        old.execute("ALTER TABLE jobs DROP COLUMN lost_runs")
    store = SQLiteStore(path)
    try:
        job, _ = store.add(JobSpec("add"))
        store.start_attempt(job.id)
        assert [j.id for j in store.recover()] == [job.id]
    finally:
        store.close()


def test_idempotency_key_conflict_names_the_first_job(store: JobStore) -> None:
    """The same key with the same request returns the job; with another, it raises."""
    job, created = store.add(JobSpec("add", [1], idempotency_key="k"))
    same, again = store.add(JobSpec("add", [1], idempotency_key="k"))
    assert created and not again and same.id == job.id
    with pytest.raises(IdempotencyConflict, match=job.id):
        store.add(JobSpec("add", [2], idempotency_key="k"))


def test_purge_deletes_only_old_finished_jobs(store: JobStore) -> None:
    """Results past their keep time are deleted; unfinished jobs are never purged."""
    done, _ = store.add(JobSpec("add"))
    waiting, _ = store.add(JobSpec("add"))
    store.finish(done.id, "succeeded", 3, None)
    assert store.purge(time.time() - 3600) == 0
    assert store.purge(time.time() + 1) == 1
    assert store.get(done.id) is None and store.get(waiting.id) is not None


def test_page_filters_and_counts(store: JobStore) -> None:
    """Pages come newest first under filters; counts cover every state."""
    jobs = [store.add(JobSpec("add" if i % 2 else "mul"))[0] for i in range(6)]
    store.finish(jobs[0].id, "failed", None, "ValueError: x")
    page = store.page(state="queued", task="add", before=None, limit=2)
    assert [j.id for j in page] == [jobs[5].id, jobs[3].id]
    rest = store.page(state="queued", task="add", before=page[-1].seq, limit=2)
    assert [j.id for j in rest] == [jobs[1].id]
    assert store.counts() == {
        "queued": 5, "running": 0, "succeeded": 0, "failed": 1, "cancelled": 0, "timed_out": 0
    }  # fmt: skip


def test_finish_refuses_a_state_that_is_not_final(store: JobStore) -> None:
    """Only final states can end a job."""
    job, _ = store.add(JobSpec("add"))
    with pytest.raises(ValueError, match="final"):
        store.finish(job.id, "running", None, None)


def test_task_decorator_registers_by_qualname_and_by_name() -> None:
    """``@workpool.task`` registers under the function's name, or the one given; fn unchanged."""

    @workpool.task
    def double(x: int) -> int:
        return 2 * x

    @workpool.task(name="reports.build")
    def build() -> str:
        return "ok"

    try:
        tasks = registered_tasks()
        assert tasks["double"] is double and tasks["reports.build"] is build
        assert double(4) == 8
    finally:
        unregister("double")
        unregister("reports.build")


def test_task_name_clash_and_bad_names_are_refused() -> None:
    """Two different functions cannot share a name, and names must be plain identifiers."""

    @workpool.task(name="clash")
    def one() -> None: ...

    def two() -> None: ...

    try:
        with pytest.raises(ValueError, match="already registered"):
            workpool.task(name="clash")(two)
        with pytest.raises(ValueError, match="task name"):
            workpool.task(name="no spaces")(two)
        with pytest.raises(TypeError, match="callable"):
            workpool.task(42)  # type: ignore[call-overload]
    finally:
        unregister("clash")


def test_config_file_then_flags_then_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Settings come from the TOML file, flags override it, the token falls back to the env."""
    config = tmp_path / "serve.toml"
    config.write_text('[serve]\ntasks = "myapp.tasks"\nworkers = 8\nqueue-size = 100\n')
    monkeypatch.setenv("WORKPOOL_TOKEN", "from-env")
    settings = load_config(["--config", str(config), "--workers", "3"])
    assert (settings.tasks, settings.workers, settings.queue_size) == ("myapp.tasks", 3, 100)
    assert settings.host == "127.0.0.1" and settings.token == "from-env"


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param([], "--tasks", id="no-tasks"),
        pytest.param(["--tasks", "m", "--workers", "0"], "--workers", id="zero-workers"),
        pytest.param(["--tasks", "m", "--port", "70000"], "--port", id="bad-port"),
        pytest.param(["--tasks", "m", "--grace", "-1"], "--grace", id="negative-grace"),
    ],
)
def test_bad_settings_exit_with_a_usage_error(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A missing or impossible setting exits with status 2 and says which."""
    with pytest.raises(SystemExit) as exit_info:
        load_config(argv)
    assert exit_info.value.code == 2 and message in capsys.readouterr().err


def test_unknown_config_key_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A misspelt key in the config file is an error, not silently ignored."""
    config = tmp_path / "serve.toml"
    config.write_text('tasks = "m"\nworkrs = 3\n')
    with pytest.raises(SystemExit):
        load_config(["--config", str(config)])
    assert "workrs" in capsys.readouterr().err


def test_main_refuses_a_module_that_registers_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    """``--tasks`` naming a module without tasks exits 2 before serving anything."""
    from workpool.server import main

    assert main(["--tasks", "json", "--db", ":memory:"]) == 2
    assert "registers no task" in capsys.readouterr().err


def test_main_refuses_a_module_that_does_not_import(capsys: pytest.CaptureFixture[str]) -> None:
    """``--tasks`` naming a missing module exits 2 and says so."""
    from workpool.server import main

    assert main(["--tasks", "no_such_module_here", "--db", ":memory:"]) == 2
    assert "cannot import" in capsys.readouterr().err


def test_load_tasks_serves_only_the_named_module() -> None:
    """Tasks registered elsewhere are not served by a server for another module."""
    from workpool._registry import load_tasks

    @workpool.task(name="elsewhere")
    def elsewhere() -> None: ...

    try:
        tasks = load_tasks("server_tasks")
        assert "elsewhere" not in tasks and {"add", "boom", "gated"} <= set(tasks)
    finally:
        unregister("elsewhere")
