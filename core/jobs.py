"""Creating, sending, retrying and cancelling jobs: the parts the API and the worker's tools share.

A job row is written and committed *before* its id goes to the broker. If sending fails (broker
down), the row stays `queued` with no `enqueued_at`, and the reconciler sends it later: a request
that got its 202 never loses its job.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.ids import new_id
from core.job_state import ACTIVE as ACTIVE_STATUSES
from core.job_state import mark_enqueued
from core.queue import enqueue
from core.tables import Job, Preview, Subject

log = logging.getLogger("roomfit.jobs")

RETRYABLE_STATUSES = ("failed", "cancelled")


class JobConflict(ValueError):
    """The job is not in a state that allows the transition asked for."""


def new_job(
    tenant_id: str,
    kind: str,
    *,
    subject_id: str | None = None,
    preview_id: str | None = None,
    params: dict[str, Any] | None = None,
) -> Job:
    """A queued job row (not yet added to a session)."""
    return Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind=kind,
        subject_id=subject_id,
        preview_id=preview_id,
        status="queued",
        params=params or {},
    )


def send(session: Session, celery: Celery, job: Job) -> bool:
    """Put a committed job on its queue; False (logged) if the broker refused. Never raises."""
    try:
        enqueue(celery, job.kind, job.id)
    except Exception:  # broker down: the reconciler re-sends queued jobs without enqueued_at
        log.exception("job %s: could not enqueue; the reconciler will send it", job.id)
        return False
    try:
        mark_enqueued(session, [job.id])
    except Exception:  # only a timestamp; the job itself is on its way
        session.rollback()
        log.exception("job %s: enqueued but enqueued_at not recorded", job.id)
    return True


def _target(session: Session, job: Job) -> Subject | Preview | None:
    if job.kind == "train" and job.subject_id:
        return session.get(Subject, job.subject_id)
    if job.kind == "preview" and job.preview_id:
        return session.get(Preview, job.preview_id)
    return None


def request_cancel(session: Session, job: Job) -> None:
    """Cancel a queued or running job: a running worker sees `cancel_requested` at its next heartbeat."""
    if job.status not in ACTIVE_STATUSES:
        raise JobConflict(f"job {job.id} is {job.status}; only queued or running jobs can be cancelled")
    job.cancel_requested = True
    job.status = "cancelled"
    job.finished_at = utcnow()
    job.lease_expires_at = None
    target = _target(session, job)
    if target is not None and target.status not in ("ready", "succeeded"):
        target.status = "cancelled"


def reset_for_retry(session: Session, job: Job) -> None:
    """Put a failed or cancelled job back in the queue with fresh attempts (commit, then `send`)."""
    if job.status not in RETRYABLE_STATUSES:
        raise JobConflict(f"job {job.id} is {job.status}; only failed or cancelled jobs can be retried")
    target = _target(session, job)
    if target is None and (job.subject_id or job.preview_id):
        raise JobConflict(f"job {job.id}: its subject or preview was deleted")
    job.status = "queued"
    job.cancel_requested = False
    job.attempts = 0
    job.progress = 0.0
    job.stage = None
    job.error_code = None
    job.error_message = None
    job.worker = None
    job.lease_expires_at = None
    job.started_at = None
    job.finished_at = None
    job.enqueued_at = None
    if target is not None:
        target.status = "queued"
        target.progress = 0.0
        target.error_code = None
        target.error_message = None
