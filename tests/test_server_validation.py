"""Bad input of every kind gets a 4xx with a JSON error from the real server, never a 500."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from server_support import AUTH, Server

pytest.importorskip("fastapi", reason="needs workpool[server]")

MIB = 1024 * 1024
GOOD = {"task": "add", "args": [1, 2]}


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    srv = Server(tmp_path_factory.mktemp("validation") / "jobs.sqlite3").start()
    yield srv
    srv.stop()


def with_(**changes: Any) -> dict[str, Any]:
    return {**GOOD, **changes}


BAD_BODIES = [
    pytest.param({"args": [1, 2]}, 422, id="missing-task"),
    pytest.param(with_(task="nope"), 422, id="unknown-task"),
    pytest.param(with_(task="os.system"), 422, id="dotted-path-is-not-a-task"),
    pytest.param(with_(task=""), 422, id="empty-task"),
    pytest.param(with_(task=7), 422, id="task-not-string"),
    pytest.param(with_(task="x" * 201), 422, id="task-too-long"),
    pytest.param(with_(args={"a": 1}), 422, id="args-not-list"),
    pytest.param(with_(args="12"), 422, id="args-string"),
    pytest.param(with_(kwargs=[1]), 422, id="kwargs-not-object"),
    pytest.param(with_(args=[1, 2, 3]), 422, id="too-many-args"),
    pytest.param(with_(args=[1]), 422, id="too-few-args"),
    pytest.param(with_(kwargs={"c": 1}), 422, id="unknown-kwarg"),
    pytest.param(with_(priority="1"), 422, id="priority-string"),
    pytest.param(with_(priority=1.5), 422, id="priority-float"),
    pytest.param(with_(priority=True), 422, id="priority-bool"),
    pytest.param(with_(priority=10**30), 422, id="priority-huge"),
    pytest.param(with_(timeout=-1), 422, id="timeout-negative"),
    pytest.param(with_(timeout=0), 422, id="timeout-zero"),
    pytest.param(with_(timeout="5"), 422, id="timeout-string"),
    pytest.param(with_(timeout=10**9), 422, id="timeout-too-long"),
    pytest.param(with_(retries=101), 422, id="retries-over-100"),
    pytest.param(with_(retries=-1), 422, id="retries-negative"),
    pytest.param(with_(retries=2.0), 422, id="retries-float"),
    pytest.param(with_(retries=None), 422, id="retries-null"),
    pytest.param(with_(idempotency_key=""), 422, id="key-empty"),
    pytest.param(with_(idempotency_key=5), 422, id="key-not-string"),
    pytest.param(with_(idempotency_key="k" * 201), 422, id="key-too-long"),
    pytest.param(with_(surprise=1), 422, id="unknown-field"),
    pytest.param([GOOD], 422, id="body-is-a-list"),
    pytest.param("add", 422, id="body-is-a-string"),
    pytest.param(None, 422, id="body-is-null"),
]


@pytest.mark.parametrize(("body", "status"), BAD_BODIES)
def test_bad_submit_body_is_refused_with_a_json_error(
    server: Server, body: Any, status: int
) -> None:
    """Each malformed submission is refused with its 4xx and an ``error`` message."""
    reply = server.request("POST", "/jobs", raw=json.dumps(body).encode())
    assert reply.status == status, reply
    assert isinstance(reply.body, dict) and reply.body["error"]


BAD_RAW = [
    pytest.param(b"{not json", 422, id="invalid-json"),
    pytest.param(b"", 422, id="empty-body"),
    pytest.param(b'{"task": "add", "args": [1, 2], "timeout": NaN}', 422, id="nan"),
    pytest.param(b'{"task": "add", "args": [1, 2], "timeout": Infinity}', 422, id="infinity"),
    pytest.param(b'{"task": "add", "args": [NaN, 1]}', 422, id="nan-in-args"),
    pytest.param(
        b'{"task": "add", "args": [1], "kwargs": {"b": -Infinity}}', 422, id="inf-in-kwargs"
    ),
    pytest.param(b"\xff\xfe\x00garbage", 422, id="not-utf8"),
    pytest.param(
        b'{"task": "add", "args": ' + b"[" * 100_000 + b"]" * 100_000 + b"}",
        400,
        id="nested-too-deep",
    ),
]


@pytest.mark.parametrize(("raw", "status"), BAD_RAW)
def test_unparseable_body_is_refused(server: Server, raw: bytes, status: int) -> None:
    """Bodies that are not valid JSON (or nest absurdly) are refused with a 4xx."""
    reply = server.request("POST", "/jobs", raw=raw)
    assert reply.status == status, reply
    assert reply.body["error"]


def test_wrong_content_type_is_refused_with_415(server: Server) -> None:
    """A body not sent as application/json is refused with 415."""
    reply = server.request(
        "POST", "/jobs", raw=json.dumps(GOOD).encode(), headers={"Content-Type": "text/plain"}
    )
    assert reply.status == 415 and "application/json" in reply.body["error"]


def raw_exchange(port: int, head: str, chunks: list[bytes]) -> tuple[int, dict[str, Any]]:
    """Send a request's head and body bytes over a socket; return the status and JSON body.

    A plain socket because the server answers 413 and closes without reading the rest: an
    HTTP client still sending the body would see a broken pipe instead of the answer.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(head.encode())
        for chunk in chunks:
            sock.sendall(chunk)
        received = b""
        while data := sock.recv(65536):
            received += data
    status_line, _, rest = received.partition(b"\r\n")
    body = rest.partition(b"\r\n\r\n")[2]
    return int(status_line.split()[1]), json.loads(body)


def test_body_over_one_mib_is_refused_with_413(server: Server) -> None:
    """A declared body over 1 MiB is refused with 413 before any of it is read."""
    head = (
        "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nContent-Length: {2 * MIB}\r\n\r\n"
    )
    status, body = raw_exchange(server.port, head, [])
    assert status == 413 and body["error"]


def test_chunked_body_over_one_mib_is_refused_with_413(server: Server) -> None:
    """A chunked body (no Content-Length) that grows past 1 MiB is refused with 413."""
    head = (
        "POST /jobs HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        f"Authorization: {AUTH['Authorization']}\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    piece = 64 * 1024
    chunks = [f"{piece:x}\r\n".encode() + b"x" * piece + b"\r\n" for _ in range(16)]
    # Exactly 1 MiB, then one byte more: the server has read everything sent when it refuses,
    # so its close is clean (unread bytes would make the kernel reset the connection).
    chunks.append(b"1\r\nx\r\n")
    status, body = raw_exchange(server.port, head, chunks)
    assert status == 413 and body["error"]


def test_body_just_under_the_limit_is_accepted(server: Server) -> None:
    """A body a little under 1 MiB is read and its job accepted."""
    arg = "y" * (MIB - 1000)
    reply = server.request("POST", "/jobs", {"task": "boom", "args": [arg]})
    assert reply.status == 202


@pytest.mark.parametrize(
    "headers",
    [
        pytest.param({}, id="none"),
        pytest.param({"Authorization": "Bearer wrong"}, id="wrong-token"),
        pytest.param({"Authorization": "Basic dGVzdA=="}, id="basic"),
        pytest.param({"Authorization": "Bearer"}, id="empty-bearer"),
    ],
)
def test_mutating_endpoints_need_the_token(server: Server, headers: dict[str, str]) -> None:
    """Submit, cancel and retry answer 401 without the right bearer token."""
    job_id = "0" * 32
    for method, path, body in (
        ("POST", "/jobs", GOOD),
        ("DELETE", f"/jobs/{job_id}", None),
        ("POST", f"/jobs/{job_id}/retry", None),
    ):
        reply = server.request(method, path, body, headers=headers, auth=False)
        assert reply.status == 401, (method, path, reply)
        assert reply.headers["www-authenticate"] == "Bearer"


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        pytest.param("GET", "/jobs/not-an-id", 422, id="malformed-id"),
        pytest.param("GET", "/jobs/" + "a" * 32, 404, id="unknown-id"),
        pytest.param("DELETE", "/jobs/" + "a" * 32, 404, id="cancel-unknown"),
        pytest.param("POST", "/jobs/" + "a" * 32 + "/retry", 404, id="retry-unknown"),
        pytest.param("GET", "/jobs?state=exploded", 422, id="bad-state"),
        pytest.param("GET", "/jobs?limit=0", 422, id="limit-zero"),
        pytest.param("GET", "/jobs?limit=100000", 422, id="limit-huge"),
        pytest.param("GET", "/jobs?limit=ten", 422, id="limit-text"),
        pytest.param("GET", "/jobs?before=-1", 422, id="cursor-negative"),
        pytest.param("GET", "/nowhere", 404, id="unknown-route"),
        pytest.param("PUT", "/jobs", 405, id="wrong-method"),
    ],
)
def test_bad_reads_get_a_json_4xx(server: Server, method: str, path: str, status: int) -> None:
    """Malformed ids, filters and routes are refused with a JSON 4xx."""
    reply = server.request(method, path)
    assert reply.status == status, reply
    assert reply.body["error"]


def test_reads_are_open_unless_auth_reads(server: Server, tmp_path: Any) -> None:
    """Reads need no token by default, and need one with --auth-reads."""
    assert server.request("GET", "/jobs", auth=False).status == 200
    locked = Server(tmp_path / "jobs.sqlite3", "--auth-reads").start()
    try:
        for path in ("/jobs", "/metrics", "/api/summary", "/jobs/" + "a" * 32):
            assert locked.request("GET", path, auth=False).status == 401, path
        assert locked.request("GET", "/jobs").status == 200
        assert locked.request("GET", "/healthz", auth=False).status == 200
    finally:
        locked.stop()


def test_server_binds_to_loopback_by_default(server: Server) -> None:
    """Without --host the server listens on 127.0.0.1 only (read from the kernel's table)."""
    table = Path("/proc/net/tcp")
    if not table.exists():
        pytest.skip("needs Linux's /proc/net/tcp to see the listening address")
    listening = [
        fields[1].split(":")[0]
        for fields in (line.split() for line in table.read_text().splitlines()[1:])
        if fields[3] == "0A" and int(fields[1].split(":")[1], 16) == server.port
    ]
    assert listening == ["0100007F"]  # 127.0.0.1, little-endian hex
