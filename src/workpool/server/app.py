"""The HTTP API: FastAPI routes over a ``Runner``; every bad input is a 4xx with a JSON error."""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import json
import math
import sys
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from importlib import resources
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException

from .limits import BodyLimit
from .metrics import CONTENT_TYPE, Metrics
from .runner import NotAccepting, QueueLimitReached, Runner
from .store import STATES, IdempotencyConflict, Job, JobSpec

MAX_BODY = 1024 * 1024
JOB_ID = r"^[0-9a-f]{32}$"


@dataclass(frozen=True)
class ServerSettings:
    """What the web layer needs beyond the runner."""

    token: str
    auth_reads: bool = False
    grace: float = 10.0
    keep_results: float = 7 * 24 * 3600.0
    sweep_every: float = 60.0


class SubmitRequest(BaseModel):
    """The body of ``POST /jobs``; unknown fields and loose types are refused."""

    model_config = ConfigDict(extra="forbid", strict=True)

    task: str = Field(min_length=1, max_length=200, description="A registered task's name.")
    args: list[Any] = Field(default_factory=list, description="Positional arguments (JSON).")
    kwargs: dict[str, Any] = Field(default_factory=dict, description="Keyword arguments (JSON).")
    priority: int = Field(0, ge=-1_000_000, le=1_000_000, description="Higher runs first.")
    timeout: float | None = Field(
        None, gt=0, le=7 * 24 * 3600, allow_inf_nan=False, description="Seconds per attempt."
    )
    retries: int = Field(0, ge=0, le=100, description="Attempts after the first.")
    idempotency_key: str | None = Field(
        None, min_length=1, max_length=200, description="A repeat with this key returns the job."
    )


class JobView(BaseModel):
    """A job as the API shows it."""

    id: str
    task: str
    args: list[Any]
    kwargs: dict[str, Any]
    priority: int
    timeout: float | None
    retries: int
    idempotency_key: str | None
    state: Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
    attempts: int
    result: Any
    error: str | None
    created_at: float
    started_at: float | None
    finished_at: float | None
    duration: float | None


class JobPage(BaseModel):
    jobs: list[JobView]
    next: str | None = Field(description="Pass as ?before= for the next page; null at the end.")


class ErrorView(BaseModel):
    error: str
    detail: list[dict[str, Any]] | None = None


_ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": ErrorView} for code in (400, 401, 404, 409, 413, 415, 422, 429, 503)
}
JobId = Annotated[str, Path(pattern=JOB_ID, description="32 hexadecimal digits.")]


def create_app(runner: Runner, settings: ServerSettings) -> FastAPI:
    """The ASGI application: routes, auth, limits, metrics, the dashboard."""
    metrics = Metrics()
    metrics.attach(runner)
    runner.listeners.append(metrics.observe)
    app = FastAPI(
        title="workpool job server",
        version="1",
        lifespan=_lifespan(runner, settings),
        docs_url=None,  # the Swagger page loads scripts from a CDN; /openapi.json is enough
        redoc_url=None,
        responses=_ERRORS,
    )
    app.add_middleware(BodyLimit, max_body=MAX_BODY)
    _install_error_handlers(app)
    write = Depends(_bearer(settings.token, required=True))
    read = Depends(_bearer(settings.token, required=settings.auth_reads))
    _write_routes(app, runner, write)
    _read_routes(app, runner, read)
    _ops_routes(app, runner, metrics, read)
    return app


def _write_routes(app: FastAPI, runner: Runner, write: Any) -> None:
    @app.post("/jobs", status_code=202, response_model=JobView, dependencies=[write, _JSON_BODY])
    def submit_job(body: SubmitRequest) -> JSONResponse:
        """Store a job and queue it; 202 once it is on disk (200 for a repeated key)."""
        spec = _spec(body, runner)
        try:
            job, created = runner.submit(spec)
        except IdempotencyConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except QueueLimitReached:
            raise HTTPException(429, "the queue is full", {"Retry-After": "1"}) from None
        except NotAccepting:
            raise HTTPException(503, "the server is shutting down") from None
        # A plain response: the job is built by us, so re-validating it against JobView (which
        # documents it) would only cost time on the hot path.
        return JSONResponse(job.to_json(), status_code=202 if created else 200)

    @app.delete("/jobs/{job_id}", response_model=JobView, dependencies=[write])
    def cancel_job(job_id: JobId) -> dict[str, Any]:
        """Cancel a queued job; ask a running one to stop. A finished job is left as it is."""
        return _found(runner.cancel(job_id), job_id).to_json()

    @app.post("/jobs/{job_id}/retry", status_code=202, response_model=JobView, dependencies=[write])
    def retry_job(job_id: JobId) -> dict[str, Any]:
        """Run a failed, timed-out or cancelled job once more."""
        try:
            job = _found(runner.retry(job_id), job_id)
        except NotAccepting:
            raise HTTPException(503, "the server is shutting down") from None
        if job.state not in ("queued", "running"):
            raise HTTPException(409, f"job {job_id} is {job.state}; only a failed one is retried")
        return job.to_json()


def _read_routes(app: FastAPI, runner: Runner, read: Any) -> None:
    @app.get("/jobs/{job_id}", response_model=JobView, dependencies=[read])
    def get_job(job_id: JobId) -> JSONResponse:
        """A job's state, attempts, result or error, and timings."""
        return JSONResponse(_found(runner.store.get(job_id), job_id).to_json())

    @app.get("/jobs", response_model=JobPage, dependencies=[read])
    def list_jobs(
        state: Literal["queued", "running", "succeeded", "failed", "cancelled", "timed_out"]
        | None = None,
        task: Annotated[str | None, Query(max_length=200)] = None,
        before: Annotated[int | None, Query(ge=0, description="A cursor from `next`.")] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> dict[str, Any]:
        """Jobs newest first, filtered by state and task, a page at a time."""
        jobs = runner.store.page(state=state, task=task, before=before, limit=limit)
        more = len(jobs) == limit
        return {"jobs": [j.to_json() for j in jobs], "next": str(jobs[-1].seq) if more else None}


def _ops_routes(app: FastAPI, runner: Runner, metrics: Metrics, read: Any) -> None:
    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers."""
        return {"status": "ok"}

    @app.get("/readyz", responses={503: {"model": ErrorView}})
    def readyz() -> JSONResponse:
        """Readiness: 200 while jobs are accepted, 503 while draining."""
        if runner.accepting:
            return JSONResponse({"status": "ready"})
        return JSONResponse({"error": "draining"}, status_code=503)

    @app.get("/metrics", response_class=Response, dependencies=[read])
    def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/api/summary", dependencies=[read])
    def summary() -> dict[str, Any]:
        """What the dashboard shows: workers, queue, counts, recent latencies and failures."""
        return _summary(runner)

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def dashboard() -> HTMLResponse:
        page = resources.files(__package__).joinpath("dashboard.html").read_text("utf-8")
        return HTMLResponse(page, headers={"Cache-Control": "no-store"})


def _summary(runner: Runner) -> dict[str, Any]:
    stats = runner.pool.stats()
    now = time.time()
    recent = [r for r in list(runner.recent) if now - r.at <= 300]
    runs = sorted(r.run_seconds for r in recent)
    failures = runner.store.page(state="failed", task=None, before=None, limit=10)
    timeouts = runner.store.page(state="timed_out", task=None, before=None, limit=10)
    latest = sorted([*failures, *timeouts], key=lambda j: j.seq, reverse=True)[:10]
    return {
        "time": now,
        "workers": stats.workers,
        "busy": stats.busy,
        "queued": stats.queued + stats.delayed,
        "finished": stats.finished,
        "counts": runner.store.counts(),
        "accepting": runner.accepting,
        "latency": {q: _quantile(runs, p) for q, p in (("p50", 0.5), ("p90", 0.9), ("p99", 0.99))},
        "failures": [j.to_json() for j in latest],
    }


def _quantile(values: list[float], p: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, math.ceil(p * len(values)) - 1)]


def _spec(body: SubmitRequest, runner: Runner) -> JobSpec:
    fn = runner.tasks.get(body.task)
    if fn is None:
        raise HTTPException(422, f"unknown task {body.task!r}; known: {sorted(runner.tasks)}")
    _check_signature(fn, body)
    try:
        json.dumps([body.args, body.kwargs], allow_nan=False)
    except ValueError:
        raise HTTPException(422, "arguments must be plain JSON: no NaN or Infinity") from None
    return JobSpec(
        task=body.task,
        args=body.args,
        kwargs=body.kwargs,
        priority=body.priority,
        timeout=body.timeout,
        retries=body.retries,
        idempotency_key=body.idempotency_key,
    )


def _check_signature(fn: Callable[..., Any], body: SubmitRequest) -> None:
    try:
        signature = inspect.signature(fn)
    except (TypeError, ValueError):
        return  # a builtin without a signature: the call itself will tell
    try:
        signature.bind(*body.args, **body.kwargs)
    except TypeError as exc:
        raise HTTPException(422, f"arguments do not fit task {body.task!r}: {exc}") from None


def _json_body(request: Request) -> None:
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        raise HTTPException(415, "send the body as JSON, with Content-Type: application/json")


_JSON_BODY = Depends(_json_body)


def _found(job: Job | None, job_id: str) -> Job:
    if job is None:
        raise HTTPException(404, f"no job {job_id}")
    return job


def _bearer(token: str, *, required: bool) -> Callable[[Request], None]:
    expected = f"Bearer {token}".encode()

    def check(request: Request) -> None:
        if not required:
            return
        given = request.headers.get("authorization", "").encode()
        if not hmac.compare_digest(given, expected):
            raise HTTPException(
                401, "missing or wrong bearer token", {"WWW-Authenticate": "Bearer"}
            )

    return check


def _install_error_handlers(app: FastAPI) -> None:
    async def http_error(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, StarletteHTTPException)
        return JSONResponse(
            {"error": str(exc.detail)}, status_code=exc.status_code, headers=exc.headers
        )

    async def invalid(request: Request, exc: Exception) -> JSONResponse:
        assert isinstance(exc, RequestValidationError)
        detail = [
            {"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")), "type": e.get("type")}
            for e in exc.errors()
        ]
        return JSONResponse({"error": "invalid request", "detail": detail}, status_code=422)

    async def too_deep(request: Request, exc: Exception) -> JSONResponse:
        return JSONResponse({"error": "the JSON body is nested too deeply"}, status_code=400)

    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(RequestValidationError, invalid)
    app.add_exception_handler(RecursionError, too_deep)


def _lifespan(runner: Runner, settings: ServerSettings) -> Callable[[FastAPI], Any]:
    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(runner.start)
        sweeper = asyncio.create_task(_sweep(runner, settings))
        try:
            yield
        finally:
            sweeper.cancel()
            left = await run_in_threadpool(runner.drain, settings.grace)
            if left:
                print(f"workpool serve: {len(left)} running jobs put back to queued for the "
                      "next start", file=sys.stderr)  # fmt: skip

    return lifespan


async def _sweep(runner: Runner, settings: ServerSettings) -> None:
    """Delete results older than ``keep_results``, now and then."""
    while True:
        cutoff = time.time() - settings.keep_results
        await run_in_threadpool(runner.store.purge, cutoff)
        await asyncio.sleep(settings.sweep_every)


__all__ = ["MAX_BODY", "STATES", "ServerSettings", "create_app"]
