"""The job server's HTTP API, against a real server process over HTTP on 127.0.0.1."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from server_support import Gate, Server

pytest.importorskip("fastapi", reason="needs workpool[server]")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    root = tmp_path_factory.mktemp("api")
    srv = Server(root / "jobs.sqlite3", "--retry-base-delay", "0.01", workers=4).start()
    yield srv
    srv.stop()


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    return Gate(tmp_path)


def test_submit_answers_202_then_the_job_succeeds_with_its_result(server: Server) -> None:
    """A submitted job is acknowledged as queued and later shows its result and timings."""
    job = server.submit("add", 2, 3)
    assert job["state"] == "queued" and job["attempts"] == 0 and len(job["id"]) == 32
    done = server.wait_state(job["id"], "succeeded")
    assert done["result"] == 5 and done["attempts"] == 1 and done["error"] is None
    assert done["created_at"] <= done["started_at"] <= done["finished_at"]
    assert done["duration"] >= 0


def test_kwargs_and_named_task_reach_the_function(server: Server) -> None:
    """Keyword arguments are passed, and a task registered under a name is called by it."""
    job = server.submit("boom", kwargs={"message": "custom"})
    failed = server.wait_state(job["id"], "failed")
    assert failed["error"] == "ValueError: custom" and failed["result"] is None


def test_retries_are_counted_as_attempts(server: Server) -> None:
    """A failing job with retries=2 runs three times and ends failed with attempts=3."""
    job = server.submit("boom", retries=2)
    failed = server.wait_state(job["id"], "failed")
    assert failed["attempts"] == 3


def test_a_result_that_is_not_json_fails_the_job(server: Server) -> None:
    """A task returning something JSON cannot carry ends failed with a clear error."""
    job = server.submit("unjsonable")
    failed = server.wait_state(job["id"], "failed")
    assert "not JSON" in failed["error"]


def test_a_nan_result_fails_the_job_and_stays_readable(server: Server) -> None:
    """A task returning NaN (not JSON) ends failed, and the job still reads back as JSON."""
    job = server.submit("not_a_number")
    failed = server.wait_state(job["id"], "failed")
    assert "not JSON" in failed["error"] and failed["result"] is None


def test_timeout_ends_the_job_timed_out(server: Server, gate: Gate) -> None:
    """A job past its timeout ends timed_out (the task sees it through its context)."""
    job = server.submit("gated", *gate.args(), timeout=0.2)
    done = server.wait_state(job["id"], "timed_out")
    assert "TaskTimeout" in done["error"] and done["attempts"] == 1


def test_cancel_a_running_job_stops_it(server: Server, gate: Gate) -> None:
    """DELETE on a running job asks it to stop, and it ends cancelled."""
    job = server.submit("gated", *gate.args())
    gate.wait_started(1)
    reply = server.request("DELETE", f"/jobs/{job['id']}")
    assert reply.status == 200
    assert server.wait_state(job["id"], "cancelled")["state"] == "cancelled"


def test_cancel_a_finished_job_leaves_it_as_it_is(server: Server) -> None:
    """Cancelling a job that already ended changes nothing."""
    job = server.submit("add", 1, 1)
    server.wait_state(job["id"], "succeeded")
    reply = server.request("DELETE", f"/jobs/{job['id']}")
    assert reply.status == 200 and reply.body["state"] == "succeeded"


def test_retry_endpoint_runs_a_failed_job_again(server: Server) -> None:
    """POST /jobs/ID/retry runs a failed job once more, its attempts still counted."""
    job = server.submit("boom")
    server.wait_state(job["id"], "failed")
    reply = server.request("POST", f"/jobs/{job['id']}/retry")
    assert reply.status == 202
    again = server.wait_state(job["id"], "failed")
    assert again["attempts"] == 2


def test_retry_of_a_succeeded_job_is_a_conflict(server: Server) -> None:
    """Only failed, timed-out or cancelled jobs can be retried: otherwise 409."""
    job = server.submit("add", 1, 2)
    server.wait_state(job["id"], "succeeded")
    assert server.request("POST", f"/jobs/{job['id']}/retry").status == 409


def test_idempotency_key_returns_the_first_job(server: Server) -> None:
    """A repeat with the same key and body answers 200 with the same job, not a new one."""
    first = server.submit("add", 1, 2, idempotency_key="order-17")
    reply = server.request(
        "POST", "/jobs", {"task": "add", "args": [1, 2], "idempotency_key": "order-17"}
    )
    assert reply.status == 200 and reply.body["id"] == first["id"]


def test_idempotency_key_reused_for_another_request_is_a_conflict(server: Server) -> None:
    """A key reused with a different body answers 409 and names the first job."""
    first = server.submit("add", 1, 2, idempotency_key="order-18")
    reply = server.request(
        "POST", "/jobs", {"task": "add", "args": [9, 9], "idempotency_key": "order-18"}
    )
    assert reply.status == 409 and first["id"] in reply.body["error"]


def test_concurrent_idempotent_submitters_create_one_job(server: Server) -> None:
    """Many clients racing with one key get one job between them."""
    body = {"task": "add", "args": [4, 4], "idempotency_key": "race-1"}
    with ThreadPoolExecutor(8) as clients:
        replies = list(clients.map(lambda _: server.request("POST", "/jobs", body), range(16)))
    assert {r.body["id"] for r in replies} == {replies[0].body["id"]}
    assert sorted(r.status for r in replies) == [200] * 15 + [202]


def test_concurrent_submitters_each_get_their_job(server: Server) -> None:
    """Eight clients submitting at once get 120 distinct jobs, all of which succeed."""

    def submit(i: int) -> str:
        return str(server.submit("add", i, 1000)["id"])

    with ThreadPoolExecutor(8) as clients:
        ids = list(clients.map(submit, range(120)))
    assert len(set(ids)) == 120
    results = {server.wait_state(i, "succeeded")["result"] for i in ids}
    assert results == {i + 1000 for i in range(120)}


def test_list_filters_by_state_and_task_and_pages(server: Server) -> None:
    """GET /jobs filters by state and task, newest first, and pages with its cursor."""
    ids = [server.submit("add", i, 0, priority=i)["id"] for i in range(5)]
    for job_id in ids:
        server.wait_state(job_id, "succeeded")
    seen: list[str] = []
    cursor = ""
    while True:
        page = server.request("GET", f"/jobs?task=add&state=succeeded&limit=2{cursor}").body
        assert len(page["jobs"]) <= 2
        assert all(j["state"] == "succeeded" and j["task"] == "add" for j in page["jobs"])
        seen += [j["id"] for j in page["jobs"]]
        if page["next"] is None:
            break
        cursor = f"&before={page['next']}"
    assert seen[:5] == ids[::-1]  # newest first; nothing else was submitted meanwhile
    assert len(seen) == len(set(seen))


def test_health_and_readiness_answer(server: Server) -> None:
    """/healthz and /readyz answer 200 while the server serves."""
    assert server.request("GET", "/healthz", auth=False).body == {"status": "ok"}
    assert server.request("GET", "/readyz", auth=False).body == {"status": "ready"}


def test_metrics_are_prometheus_text(server: Server) -> None:
    """/metrics parses as Prometheus text and counts jobs by state."""
    job = server.submit("add", 1, 1)
    server.wait_state(job["id"], "succeeded")
    reply = server.request("GET", "/metrics", auth=False)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(reply.raw.decode())}
    jobs = {s.labels["state"]: s.value for s in families["workpool_jobs"].samples}
    assert jobs["succeeded"] >= 1
    assert "workpool_job_run_seconds" in families and "workpool_workers" in families


def test_openapi_document_lists_every_route_and_its_limits(server: Server) -> None:
    """/openapi.json documents each route and method, and the submit body's limits."""
    doc = server.request("GET", "/openapi.json", auth=False).body
    routes = {(path, method) for path, item in doc["paths"].items() for method in item}
    assert routes >= {
        ("/jobs", "post"),
        ("/jobs", "get"),
        ("/jobs/{job_id}", "get"),
        ("/jobs/{job_id}", "delete"),
        ("/jobs/{job_id}/retry", "post"),
        ("/healthz", "get"),
        ("/readyz", "get"),
        ("/metrics", "get"),
    }
    body = doc["components"]["schemas"]["SubmitRequest"]
    assert body["properties"]["retries"]["maximum"] == 100
    assert body["additionalProperties"] is False
    post = doc["paths"]["/jobs"]["post"]["responses"]
    assert {"202", "401", "409", "413", "415", "422", "429"} <= set(post)


def test_dashboard_page_is_served(server: Server) -> None:
    """GET / serves the dashboard HTML with its script inline (no build step)."""
    reply = server.request("GET", "/", auth=False)
    assert reply.status == 200 and reply.headers["content-type"].startswith("text/html")
    assert b'<canvas id="throughput"' in reply.raw and b"/api/summary" in reply.raw
