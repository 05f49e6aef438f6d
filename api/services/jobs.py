"""Jobs: find one (a tenant's, or any for ops), put one back in its queue, cancel one."""

from __future__ import annotations

from collections.abc import Callable

from celery import Celery
from sqlalchemy.orm import Session

from api.deps import is_id
from api.problems import JOB_NOT_CANCELLABLE, JOB_NOT_RETRYABLE, NOT_FOUND, Problem
from api.services import Done
from api.services.previews import KEEP_BEFORE_EXPIRY
from core import previews
from core.clock import utcnow
from core.dispatch import send
from core.job_state import JobConflict, request_cancel, reset_for_retry
from core.repository import OpsRepository, TenantRepository
from core.tables import Job, Preview


def find_job(repo: TenantRepository | OpsRepository, job_id: str) -> Job:
    """The job, as far as `repo` sees (its tenant's, or every tenant's); else 404 `not_found`."""
    job = repo.job(job_id) if is_id(job_id) else None
    if job is None:
        raise NOT_FOUND(f"no job {job_id!r}")
    return job


def retry_job(ops: OpsRepository, celery: Celery, job_id: str, retention_days: float) -> Done[Job]:
    """A failed or cancelled job back in its queue, with fresh attempts, sent once committed. Not a
    preview's that retention deletes within KEEP_BEFORE_EXPIRY: a sweep may be deleting its room
    photo now (it drops the blobs before the row), and the retry would fail for want of it."""

    def retry(session: Session, job: Job) -> None:
        preview = session.get(Preview, job.preview_id) if job.preview_id else None
        expiry = previews.expires_at(preview, retention_days) if preview is not None else None
        if preview is not None and expiry is not None and expiry - KEEP_BEFORE_EXPIRY <= utcnow():
            raise JOB_NOT_RETRYABLE(
                f"job {job_id}: preview {preview.id} is past its retention (deleted from "
                f"{expiry:%Y-%m-%d %H:%M} UTC); its photos are gone or going. Make a new preview."
            )
        reset_for_retry(session, job)

    job = _transition(ops, job_id, retry, JOB_NOT_RETRYABLE)
    return Done(job, [lambda: send(ops.session, celery, job)])


def cancel_job(ops: OpsRepository, job_id: str) -> Done[Job]:
    """A queued or running job cancelled (a running worker stops at its next heartbeat)."""
    return Done(_transition(ops, job_id, request_cancel, JOB_NOT_CANCELLABLE))


def _transition(
    ops: OpsRepository, job_id: str, change: Callable[[Session, Job], None], refused: Problem
) -> Job:
    """Apply one of core.job_state's transitions; a job in the wrong state answers 409 `refused`."""
    job = find_job(ops, job_id)
    try:
        change(ops.session, job)
    except JobConflict as exc:
        raise refused(str(exc)) from exc
    ops.session.flush()
    return job
