"""Running the job server in a subprocess and talking to it over real HTTP, for the tests."""

from __future__ import annotations

import http.client
import json
import os
import signal
import socket
import subprocess
import sys
from pathlib import Path
from typing import Any

from helpers import wait_until

TESTS = Path(__file__).parent
TOKEN = "test-token-0123456789"
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Reply:
    """A response: status, headers and the decoded JSON body (or the text)."""

    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        try:
            self.body: Any = json.loads(raw) if raw else None
        except ValueError:
            self.body = raw.decode("utf-8", "replace")

    def __repr__(self) -> str:
        return f"<Reply {self.status} {self.body!r}>"


class Server:
    """``python -m workpool.server`` on a free port of 127.0.0.1, with its own SQLite file."""

    def __init__(
        self,
        db: Path | str,
        *args: str,
        workers: int = 2,
        token: str = TOKEN,
        log_dir: Path | None = None,
    ) -> None:
        self.db = db
        self.log_dir = log_dir or Path(db).parent
        self.args = [*args]
        self.workers = workers
        self.token = token
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> Server:
        self.launch()
        wait_until(self._answers, timeout=30)
        return self

    def launch(self) -> subprocess.Popen[bytes]:
        """Start the process, without waiting for it to answer."""
        env = dict(os.environ, PYTHONPATH=str(TESTS), WORKPOOL_TOKEN=self.token)
        command = [sys.executable, "-m", "workpool.server", "--tasks", "server_tasks"]
        command += ["--port", str(self.port), "--db", str(self.db)]
        command += ["--workers", str(self.workers), *self.args]
        self.log = self.log_dir / f"server-{self.port}.log"
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(command, cwd=TESTS, env=env, stderr=log)
        return self.proc

    def _answers(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            err = self.log.read_text()
            raise AssertionError(f"server exited with {self.proc.returncode}: {err}")
        try:
            return self.request("GET", "/healthz").status == 200
        except OSError:
            return False

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
        except OSError:
            return False
        return True

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
        auth: bool = True,
    ) -> Reply:
        sent = dict(AUTH if auth else {})
        if body is not None:
            raw = json.dumps(body).encode()
        if raw is not None:
            sent["Content-Type"] = "application/json"
        sent.update(headers or {})
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            conn.request(method, path, body=raw, headers=sent)
            response = conn.getresponse()
            return Reply(response.status, dict(response.getheaders()), response.read())
        finally:
            conn.close()

    def submit(self, task: str, *args: Any, **fields: Any) -> dict[str, Any]:
        reply = self.request("POST", "/jobs", {"task": task, "args": list(args), **fields})
        assert reply.status == 202, reply
        return dict(reply.body)

    def job(self, job_id: str) -> dict[str, Any]:
        reply = self.request("GET", f"/jobs/{job_id}")
        assert reply.status == 200, reply
        return dict(reply.body)

    def wait_state(self, job_id: str, *states: str, timeout: float = 30) -> dict[str, Any]:
        wait_until(lambda: self.job(job_id)["state"] in states, timeout=timeout)
        return self.job(job_id)

    def terminate(self, timeout: float = 30) -> int:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.kill()  # SIGKILL: no cleanup of any kind
        self.proc.wait(10)

    def stop(self) -> None:
        """End the process whatever its state (test teardown)."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGTERM)
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(10)


class Gate:
    """A cross-process gate: jobs of ``gated`` wait for its file and leave a mark as they start."""

    def __init__(self, root: Path) -> None:
        self.path = root / "gate"
        self.marks = root / "started"
        self.marks.mkdir()

    @property
    def started(self) -> int:
        return len(list(self.marks.iterdir()))

    def wait_started(self, n: int) -> None:
        wait_until(lambda: self.started >= n, timeout=30)

    def open(self) -> None:
        self.path.touch()

    def args(self) -> list[str]:
        return [str(self.path), str(self.marks)]
