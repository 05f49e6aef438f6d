"""`/v1/ops/*` for ops keys: queues, workers, jobs of every tenant (with a job's timeline), each
tenant's usage today, retry and cancel.

HTTP only; the rules are in `api.services.ops` and `api.services.jobs`.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from fastapi import APIRouter, Query, Response

from api.deps import CeleryDep, OpsCaller, OpsRepoDep, SettingsDep
from api.idempotency import Outcome
from api.openapi import AUTH, IDEMPOTENT_POST, problems
from api.ops_schemas import JobPage, OpsJobOut, QueuesOut, UsageOut, WorkersOut
from api.posts import PostDep, answer
from api.problems import validation_failed
from api.schemas import JobOut, JobStatus
from api.services import Done, jobs, ops
from core.clock import utcnow
from core.repository import JobFilter
from core.tables import Job

router = APIRouter(prefix="/v1/ops", tags=["ops"])

_JOB_ID = r"^job_[0-9A-Z]{26}$"
_TENANT_ID = r"^ten_[0-9A-Z]{26}$"


def _job(done: Done[Job], *, status: int) -> Outcome:
    return answer(done, JobOut.of(done.row), status=status)


def _utc(moment: datetime | None, name: str) -> datetime | None:
    """The query's time `name` in UTC; a time given without a zone is UTC."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    try:
        return moment.astimezone(UTC)
    except OverflowError:
        # 0001-01-01T00:00+05:00 is before year 1 in UTC, 9999-12-31T23:00-05:00 after year 9999
        raise validation_failed(
            [{"loc": ("query", name), "msg": "out of range once in UTC", "type": "value_error"}]
        ) from None


@router.get(
    "/queues",
    response_model=QueuesOut,
    operation_id="list_queues",
    summary="Per queue: jobs per status, the broker's length, the oldest waiting job, live workers",
    responses=problems(*AUTH),
)
def queues(_: OpsCaller, repo: OpsRepoDep, celery: CeleryDep) -> QueuesOut:
    return ops.queues(repo, celery, utcnow())


@router.get(
    "/workers",
    response_model=WorkersOut,
    operation_id="list_workers",
    summary="Worker processes from their heartbeats; offline ones stay listed a while",
    responses=problems(*AUTH),
)
def workers(_: OpsCaller, repo: OpsRepoDep, settings: SettingsDep) -> WorkersOut:
    return ops.workers(repo, utcnow(), settings.worker_forget_seconds)


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
    tenant_id: Annotated[str | None, Query(pattern=_TENANT_ID)] = None,
    since: Annotated[
        datetime | None, Query(description="created at or after (ISO 8601; no zone: UTC)")
    ] = None,
    until: Annotated[datetime | None, Query(description="created before (ISO 8601; no zone: UTC)")] = None,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
    cursor: Annotated[
        str | None, Query(pattern=_JOB_ID, description="`next_cursor` of the previous page")
    ] = None,
) -> JobPage:
    find = JobFilter(status, kind, tenant_id, _utc(since, "since"), _utc(until, "until"), cursor)
    if find.since is not None and find.until is not None and find.since >= find.until:
        raise validation_failed(
            [{"loc": ("query", "until"), "msg": "must be after since", "type": "value_error"}]
        )
    rows, next_cursor = repo.jobs(find, limit)
    return JobPage(items=[JobOut.of(j) for j in rows], next_cursor=next_cursor)


@router.get(
    "/jobs/{job_id}",
    response_model=OpsJobOut,
    operation_id="get_ops_job",
    summary="A job of any tenant with its loss points and timeline (queued, claimed, stages, finished)",
    responses=problems(*AUTH, 404),
)
def get_job(job_id: str, _: OpsCaller, repo: OpsRepoDep) -> OpsJobOut:
    return ops.job_with_timeline(repo, jobs.find_job(repo, job_id))


@router.get(
    "/usage",
    response_model=UsageOut,
    operation_id="get_usage",
    summary="Per tenant: jobs created and failed today (UTC), queued and running now",
    responses=problems(*AUTH),
)
def usage(_: OpsCaller, repo: OpsRepoDep) -> UsageOut:
    return ops.usage(repo, utcnow())


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
    job_id: str, _: OpsCaller, post: PostDep, repo: OpsRepoDep, celery: CeleryDep, settings: SettingsDep
) -> Response:
    days = settings.preview_retention_days
    return await post.run(lambda _: _job(jobs.retry_job(repo, celery, job_id, days), status=202))


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
