"""`GET /v1/jobs/{id}`: a job of the caller's tenant (secret keys) or of any tenant (ops keys)."""

from __future__ import annotations

from fastapi import APIRouter

from api.deps import JobRepoDep
from api.openapi import AUTH, problems
from api.schemas import JobOut
from api.services.jobs import find_job

router = APIRouter(prefix="/v1/jobs", tags=["jobs"])


@router.get(
    "/{job_id}",
    response_model=JobOut,
    operation_id="get_job",
    summary="A job: kind, status, stage, progress, attempts, timings, error, training loss points",
    responses=problems(*AUTH, 404),
)
def get_job(job_id: str, repo: JobRepoDep) -> JobOut:
    return JobOut.of(find_job(repo, job_id))
