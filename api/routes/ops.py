"""`/v1/ops/*` for ops keys: queues, workers, jobs of every tenant, retry and cancel.

HTTP only; the rules are in `api.services.ops` and `api.services.jobs`.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import CeleryDep, OpsCaller, OpsRepoDep, PingTimeoutDep
from api.idempotency import Outcome
from api.openapi import AUTH, IDEMPOTENT_POST, problems
from api.posts import PostDep, answer
from api.schemas import JobOut, JobPage, JobStatus, QueuesOut, WorkersOut
from api.services import Done, jobs, ops
from core.tables import Job

router = APIRouter(prefix="/v1/ops", tags=["ops"])


def _job(done: Done[Job], *, status: int) -> Outcome:
    return answer(done, JobOut.of(done.row), status=status)


@router.get(
    "/queues",
    response_model=QueuesOut,
    operation_id="list_queues",
    summary="Jobs per kind and status",
    responses=problems(*AUTH),
)
def queues(_: OpsCaller, repo: OpsRepoDep, celery: CeleryDep) -> QueuesOut:
    return ops.queues(repo, celery)


@router.get(
    "/workers",
    response_model=WorkersOut,
    operation_id="list_workers",
    summary="Workers: those answering Celery's ping, and those seen in job heartbeats",
    responses=problems(*AUTH),
)
def workers(_: OpsCaller, repo: OpsRepoDep, celery: CeleryDep, timeout: PingTimeoutDep) -> WorkersOut:
    return ops.workers(repo, celery, timeout)


# alike: a list route like GET /v1/subjects; FastAPI reads each one's query parameters from its own
# signature, so the two share a shape and no logic
@router.get(
    "/jobs",
    response_model=JobPage,
    operation_id="list_jobs",
    summary="Jobs of every tenant, newest first",
    responses=problems(*AUTH, 422),
)
def list_jobs(
    _: OpsCaller,
    repo: OpsRepoDep,
    status: Annotated[JobStatus | None, Query()] = None,
    kind: Annotated[str | None, Query(pattern="^(train|preview)$")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> JobPage:
    return JobPage(items=[JobOut.of(j) for j in repo.jobs(status=status, kind=kind, limit=limit)])


@router.post(
    "/jobs/{job_id}/retry",
    status_code=202,
    response_model=JobOut,
    operation_id="retry_job",
    summary="Put a failed or cancelled job back in its queue",
    responses={202: {"description": "Queued again."}, **problems(*AUTH, 404, 409, 413)},
    openapi_extra=IDEMPOTENT_POST,
)
async def retry_job(
    job_id: str, _: OpsCaller, post: PostDep, repo: OpsRepoDep, celery: CeleryDep
) -> Response:
    return await post.run(lambda _: _job(jobs.retry_job(repo, celery, job_id), status=202))


@router.post(
    "/jobs/{job_id}/cancel",
    response_model=JobOut,
    operation_id="cancel_job",
    summary="Cancel a queued or running job (a running worker stops at its next heartbeat)",
    responses=problems(*AUTH, 404, 409, 413),
    openapi_extra=IDEMPOTENT_POST,
)
async def cancel_job(job_id: str, _: OpsCaller, post: PostDep, repo: OpsRepoDep) -> Response:
    return await post.run(lambda _: _job(jobs.cancel_job(repo, job_id), status=200))
