"""`/v1/ops/*` for ops keys: queues, workers, jobs of every tenant, retry and cancel; `/ops` page."""

from __future__ import annotations

import logging
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from celery import Celery
from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import HTMLResponse, JSONResponse
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from api.deps import Caller, OpsCaller, OpsRepoDep, SessionDep, is_id
from api.idempotency import Outcome, body_digest, read_small_body, run_idempotent
from api.openapi import AUTH, IDEMPOTENT_POST, problems
from api.problems import ApiError
from api.schemas import JobOut, JobPage, JobStatus, QueueOut, QueuesOut, WorkerOut, WorkersOut
from core.clock import utcnow
from core.dispatch import send
from core.job_state import JobConflict, request_cancel, reset_for_retry
from core.queue import QUEUES
from core.repository import OpsRepository
from core.tables import Job

log = logging.getLogger("roomfit.api.ops")
router = APIRouter(prefix="/v1/ops", tags=["ops"])
page_router = APIRouter(tags=["ops"])

WORKER_SEEN_WITHIN = timedelta(hours=1)
OPS_PAGE = Path(__file__).resolve().parent.parent / "static" / "ops.html"


def _broker_lengths(celery: Celery) -> dict[str, int] | None:
    """Messages waiting per queue, when the broker can say so cheaply (Redis: LLEN)."""
    url = str(celery.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://")):
        return None
    try:
        with celery.connection_for_read() as conn:
            client = conn.default_channel.client
            return {name: int(client.llen(name)) for name in QUEUES}
    except Exception:
        log.warning("could not read queue lengths from the broker", exc_info=True)
        return None


@router.get(
    "/queues", response_model=QueuesOut, summary="Jobs per kind and status", responses=problems(*AUTH)
)
def queues(_: OpsCaller, ops: OpsRepoDep, request: Request) -> QueuesOut:
    counts = ops.job_counts()
    lengths = _broker_lengths(request.app.state.celery)
    out = []
    for kind in ("train", "preview"):
        per_status = {status: n for (k, status), n in counts.items() if k == kind}
        out.append(QueueOut(kind=kind, counts=per_status, broker_length=(lengths or {}).get(kind)))
    return QueuesOut(queues=out)


def _celery_ping(celery: Celery, timeout: float) -> dict[str, Any] | None:
    url = str(celery.conf.broker_url or "")
    if not url.startswith(("redis://", "rediss://", "amqp://")):
        return None  # the filesystem and memory transports carry no broadcast
    try:
        return celery.control.inspect(timeout=timeout).ping() or {}
    except Exception:
        log.warning("celery inspect failed", exc_info=True)
        return None


@router.get(
    "/workers",
    response_model=WorkersOut,
    summary="Workers: those answering Celery's ping, and those seen in job heartbeats",
    responses=problems(*AUTH),
)
async def workers(_: OpsCaller, session: SessionDep, request: Request) -> WorkersOut:
    pinged = await run_in_threadpool(
        _celery_ping, request.app.state.celery, request.app.state.inspect_timeout
    )
    seen = await run_in_threadpool(_workers_from_jobs, session)
    names = sorted(set(seen) | set(pinged or {}))
    out = []
    for name in names:
        info = seen.get(name, {})
        out.append(
            WorkerOut(
                name=name,
                online=None if pinged is None else name in pinged,
                running_jobs=info.get("running", 0),
                last_heartbeat=info.get("last"),
                queues=sorted(info.get("kinds", set())),
            )
        )
    return WorkersOut(workers=out)


def _workers_from_jobs(session: Session) -> dict[str, dict[str, Any]]:
    since = utcnow() - WORKER_SEEN_WITHIN
    rows = session.execute(
        select(
            Job.worker,
            Job.kind,
            func.max(Job.heartbeat_at),
            func.sum(case((Job.status == "running", 1), else_=0)),
        )
        .where(Job.worker.is_not(None), Job.heartbeat_at >= since)
        .group_by(Job.worker, Job.kind)
    ).all()
    seen: dict[str, dict[str, Any]] = {}
    for worker, kind, last, running in rows:
        info = seen.setdefault(worker, {"running": 0, "last": None, "kinds": set()})
        info["running"] += int(running or 0)
        info["kinds"].add(kind)
        if last is not None and (info["last"] is None or last > info["last"]):
            info["last"] = last
    return seen


@router.get(
    "/jobs",
    response_model=JobPage,
    summary="Jobs of every tenant, newest first",
    responses=problems(*AUTH, 422),
)
def list_jobs(
    _: OpsCaller,
    ops: OpsRepoDep,
    status: Annotated[JobStatus | None, Query()] = None,
    kind: Annotated[str | None, Query(pattern="^(train|preview)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobPage:
    return JobPage(items=[JobOut.of(j) for j in ops.jobs(status=status, kind=kind, limit=limit)])


async def _job_action(
    job_id: str, request: Request, caller: Caller, session: Session, action: str
) -> Response:
    digest = body_digest(await read_small_body(request))
    return await run_in_threadpool(_run_action, job_id, request, caller, session, action, digest)


def _run_action(
    job_id: str, request: Request, caller: Caller, session: Session, action: str, digest: str
) -> Response:
    def produce() -> Outcome:
        job = OpsRepository(session).job(job_id) if is_id(job_id) else None
        if job is None:
            raise ApiError(404, "not_found", f"no job {job_id!r}")
        try:
            if action == "retry":
                reset_for_retry(session, job)
            else:
                request_cancel(session, job)
        except JobConflict as exc:
            raise ApiError(
                409, f"job_not_{'retryable' if action == 'retry' else 'cancellable'}", str(exc)
            ) from exc
        session.flush()
        response = JSONResponse(
            JobOut.of(job).model_dump(mode="json"), status_code=202 if action == "retry" else 200
        )
        after = [lambda: send(session, request.app.state.celery, job)] if action == "retry" else []
        return Outcome(response, after)

    settings = request.app.state.settings
    return run_idempotent(session, caller, request, digest, settings.idempotency_hours, produce)


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    summary="Put a failed or cancelled job back in its queue",
    responses={202: {"description": "Queued again."}, **problems(*AUTH, 404, 409, 413)},
    openapi_extra=IDEMPOTENT_POST,
)
async def retry_job(job_id: str, request: Request, caller: OpsCaller, session: SessionDep) -> Response:
    return await _job_action(job_id, request, caller, session, "retry")


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    summary="Cancel a queued or running job (a running worker stops at its next heartbeat)",
    responses=problems(*AUTH, 404, 409, 413),
    openapi_extra=IDEMPOTENT_POST,
)
async def cancel_job(job_id: str, request: Request, caller: OpsCaller, session: SessionDep) -> Response:
    return await _job_action(job_id, request, caller, session, "cancel")


@page_router.get("/ops", response_class=HTMLResponse, include_in_schema=False)
def ops_page() -> HTMLResponse:
    return HTMLResponse(OPS_PAGE.read_text(encoding="utf-8"))
