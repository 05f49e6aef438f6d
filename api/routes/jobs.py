"""`GET /v1/jobs/{id}`: a job of the caller's tenant (secret keys) or of any tenant (ops keys)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import JobReader, SessionDep, is_id
from api.openapi import AUTH, problems
from api.problems import ApiError
from api.schemas import JobOut
from core.repository import OpsRepository, TenantRepository
from core.tables import Job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}",
    response_model=JobOut,
    summary="A job: kind, status, stage, progress, attempts, timings, error, training loss points",
    responses=problems(*AUTH, 404),
)
def get_job(job_id: str, caller: JobReader, session: SessionDep) -> JobOut:
    if not is_id(job_id):
        job = None
    elif caller.kind == "ops":
        job = OpsRepository(session).job(job_id)
    else:
        assert caller.tenant_id is not None
        job = TenantRepository(session, caller.tenant_id).get(Job, job_id)
    if job is None:
        raise ApiError(404, "not_found", f"no job {job_id!r}")
    return JobOut.of(job)
