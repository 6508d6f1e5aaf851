"""Load benchmark of ``workpool serve``: submissions per second and latency, over loopback.

Starts the server in its own process (or targets ``--url``), then submits jobs from this
process with N client threads on keep-alive connections for a fixed time, and prints the
throughput and the p50/p99 latency of ``POST /jobs`` (the time until the job is on disk and
acknowledged), and how long the server took to run them all.

    python benchmarks/server_load.py --clients 8 --seconds 10
    python benchmarks/server_load.py --synchronous NORMAL      # fsync-light SQLite
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

TASKS = """
import workpool

@workpool.task
def noop(x):
    return x
"""


def main() -> None:
    args = _parse()
    with tempfile.TemporaryDirectory() as root:
        Path(root, "bench_tasks.py").write_text(TASKS)
        port = _free_port()
        server = _start(root, port, args)
        try:
            _wait_ready(port)
            latencies, ids, elapsed = _load(port, args.clients, args.seconds)
            drained = _wait_done(port, ids[-1] if ids else None)
        finally:
            server.send_signal(signal.SIGTERM)
            server.wait(60)
    _report(args, latencies, elapsed, drained)


def _parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, default=8)
    p.add_argument("--seconds", type=float, default=10.0)
    p.add_argument("--workers", type=int, default=4)
    p.add_argument("--synchronous", choices=["FULL", "NORMAL"], default="FULL")
    p.add_argument("--json", action="store_true", help="print one JSON line")
    return p.parse_args()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(root: str, port: int, args: argparse.Namespace) -> subprocess.Popen[bytes]:
    env = dict(os.environ, PYTHONPATH=root, WORKPOOL_TOKEN="bench")
    command = [sys.executable, "-m", "workpool.server", "--tasks", "bench_tasks"]
    command += ["--port", str(port), "--db", str(Path(root, "jobs.sqlite3"))]
    command += ["--workers", str(args.workers), "--synchronous", args.synchronous]
    return subprocess.Popen(command, cwd=root, env=env)


def _wait_ready(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            conn.request("GET", "/healthz")
            if conn.getresponse().status == 200:
                return
        except OSError:
            time.sleep(0.1)  # polling a process we cannot signal from
    raise SystemExit("the server did not start")


def _load(port: int, clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    latencies: list[float] = []
    ids: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients + 1)
    stop_at = [0.0]

    def client() -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        mine: list[float] = []
        last = ""
        headers = {"Authorization": "Bearer bench", "Content-Type": "application/json"}
        start.wait()
        i = 0
        while time.monotonic() < stop_at[0]:
            body = json.dumps({"task": "noop", "args": [i]})
            t0 = time.perf_counter()
            conn.request("POST", "/jobs", body=body, headers=headers)
            response = conn.getresponse()
            payload = response.read()
            mine.append(time.perf_counter() - t0)
            if response.status != 202:
                raise SystemExit(f"submit answered {response.status}: {payload!r}")
            last = json.loads(payload)["id"]
            i += 1
        conn.close()
        with lock:
            latencies.extend(mine)
            ids.append(last)

    threads = [threading.Thread(target=client) for _ in range(clients)]
    for t in threads:
        t.start()
    stop_at[0] = time.monotonic() + seconds
    began = time.monotonic()
    start.wait()
    for t in threads:
        t.join()
    return latencies, ids, time.monotonic() - began


def _wait_done(port: int, job_id: str | None) -> float:
    """Seconds until the queue is empty after the load stopped."""
    began = time.monotonic()
    while job_id is not None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        conn.request("GET", "/api/summary", headers={"Authorization": "Bearer bench"})
        summary = json.loads(conn.getresponse().read())
        conn.close()
        if summary["queued"] == 0 and summary["busy"] == 0:
            break
        time.sleep(0.05)
    return time.monotonic() - began


def _report(
    args: argparse.Namespace, latencies: list[float], elapsed: float, drained: float
) -> None:
    latencies.sort()

    def q(p: float) -> float:
        return latencies[min(len(latencies) - 1, int(p * len(latencies)))] * 1000

    result = {
        "clients": args.clients,
        "workers": args.workers,
        "synchronous": args.synchronous,
        "submitted": len(latencies),
        "submits_per_s": round(len(latencies) / elapsed, 1),
        "p50_ms": round(q(0.50), 2),
        "p99_ms": round(q(0.99), 2),
        "drain_after_load_s": round(drained, 2),
    }
    if args.json:
        print(json.dumps(result))
        return
    for key, value in result.items():
        print(f"{key:>20}: {value}")


if __name__ == "__main__":
    main()
