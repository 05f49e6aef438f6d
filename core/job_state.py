"""The life of a job row: claim with a lease, heartbeat, progress, finish, and reconcile.

The database is the truth about every job; a broker message only says "look at job X". So every
transition here is one conditional UPDATE, and a task that finds it cannot claim its job (already
done, cancelled, or held by a live worker) simply does nothing. That is what makes tasks idempotent
by job id and lets the reconciler re-send ids freely.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, select, update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.tables import Job, Preview, Subject

log = logging.getLogger("roomfit.jobs")

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled")


@dataclass(frozen=True)
class Claim:
    job_id: str
    worker: str
    attempt: int


class LeaseLost(RuntimeError):
    """Another worker took the job over (our lease expired): stop without writing anything more."""


class JobCancelled(RuntimeError):
    """The job was cancelled (e.g. its subject deleted) while it ran."""


def claim(session: Session, job_id: str, worker: str, lease_seconds: int, max_attempts: int) -> Claim | None:
    """Take the job for this worker, or None when it is not ours to run.

    A job is claimable when queued, or running under a lease that has expired (its worker died).
    Each claim counts an attempt; a job that has used all its attempts fails `too_many_attempts`.
    """
    now = utcnow()
    job = session.get(Job, job_id)
    if job is None:
        log.warning("job %s: no such job; message dropped", job_id)
        return None
    if job.attempts >= max_attempts and job.status in ACTIVE:
        _finish_row(
            session,
            job,
            "failed",
            "too_many_attempts",
            f"gave up after {job.attempts} attempts (the worker running it stopped each time)",
        )
        session.commit()
        return None
    result = session.execute(
        update(Job)
        .where(
            Job.id == job_id,
            Job.cancel_requested.is_(False),
            or_(Job.status == "queued", (Job.status == "running") & (Job.lease_expires_at < now)),
        )
        .values(
            status="running",
            worker=worker,
            attempts=Job.attempts + 1,
            lease_expires_at=now + timedelta(seconds=lease_seconds),
            heartbeat_at=now,
            started_at=now,
            error_code=None,
            error_message=None,
            updated_at=now,
        )
        .execution_options(synchronize_session=False)
    )
    session.commit()
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.refresh(job)
        log.info(
            "job %s: not claimable (status %s, worker %s); message dropped", job_id, job.status, job.worker
        )
        return None
    session.refresh(job)
    log.info("job %s: claimed by %s, attempt %d", job_id, worker, job.attempts)
    return Claim(job_id=job_id, worker=worker, attempt=job.attempts)


def heartbeat(session: Session, held: Claim, lease_seconds: int) -> None:
    """Extend our lease. Raises LeaseLost if another worker holds the job, JobCancelled if cancelled."""
    now = utcnow()
    result = session.execute(
        update(Job)
        .where(Job.id == held.job_id, Job.worker == held.worker, Job.status == "running")
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    job = session.get(Job, held.job_id)
    session.refresh(job)  # type: ignore[arg-type]
    if job is None or job.cancel_requested or job.status == "cancelled":
        raise JobCancelled(held.job_id)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(held.job_id)


def report(
    session: Session,
    held: Claim,
    *,
    stage: str | None = None,
    progress: float | None = None,
    loss_point: tuple[int, float] | None = None,
    timings: dict[str, float] | None = None,
) -> None:
    """Write progress to the job row (and mirror it onto its subject or preview for the API)."""
    job = session.get(Job, held.job_id)
    if job is None or job.worker != held.worker:
        raise LeaseLost(held.job_id)
    if stage is not None:
        job.stage = stage
    if progress is not None:
        job.progress = max(0.0, min(1.0, progress))
    if loss_point is not None:
        job.loss_points = [*job.loss_points, [int(loss_point[0]), float(loss_point[1])]]
    if timings:
        job.timings = {**job.timings, **timings}
    _mirror(session, job)
    session.commit()


def finish(
    session: Session, held: Claim | Job, status: str, code: str | None = None, message: str | None = None
) -> None:
    job = held if isinstance(held, Job) else session.get(Job, held.job_id)
    if job is None:
        return
    if isinstance(held, Claim) and job.worker != held.worker:
        raise LeaseLost(held.job_id)
    _finish_row(session, job, status, code, message)
    session.commit()


def _finish_row(session: Session, job: Job, status: str, code: str | None, message: str | None) -> None:
    assert status in FINAL, status
    job.status = status
    job.error_code = code
    job.error_message = message
    job.finished_at = utcnow()
    job.lease_expires_at = None
    if status == "succeeded":
        job.progress = 1.0
    _mirror(session, job)


def _mirror(session: Session, job: Job) -> None:
    """Subjects and previews show their job's progress; statuses are set by the tasks themselves."""
    target: Any = None
    if job.kind == "train" and job.subject_id:
        target = session.get(Subject, job.subject_id)
    elif job.kind == "preview" and job.preview_id:
        target = session.get(Preview, job.preview_id)
    if target is None:
        return
    target.progress = job.progress
    if isinstance(target, Subject):
        target.stage = job.stage
    if job.status in ("failed", "cancelled"):
        target.status = job.status
        target.error_code = job.error_code
        target.error_message = job.error_message


def release(session: Session, held: Claim) -> None:
    """Give the job up without finishing it: its lease ends now, so the next claim may take it."""
    session.execute(
        update(Job)
        .where(Job.id == held.job_id, Job.worker == held.worker, Job.status == "running")
        .values(lease_expires_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()


def mark_enqueued(session: Session, job_ids: Iterable[str]) -> None:
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)))
        .values(enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def reconcile(
    session: Session,
    *,
    enqueue: Callable[[str, str], None],
    in_broker: set[str] | None,
    max_attempts: int,
    requeue_after: timedelta,
) -> list[str]:
    """Re-send the ids of jobs that would otherwise never finish; returns those ids.

    - running jobs whose lease expired: their worker died (kill -9, node lost);
    - queued jobs missing from the broker: the broker lost its data. `in_broker` is the set of job
      ids the broker holds; when it cannot be known (None), queued jobs not (re)sent for
      `requeue_after` are sent again — a duplicate message is harmless, claim() drops it.
    Jobs out of attempts are failed with `too_many_attempts` instead.
    """
    now = utcnow()
    resent: list[str] = []
    expired = session.scalars(
        select(Job)
        .where(Job.status == "running", Job.lease_expires_at < now)
        .with_for_update(skip_locked=True)
    ).all()
    queued = session.scalars(select(Job).where(Job.status == "queued", Job.cancel_requested.is_(False))).all()
    for job in [*expired, *queued]:
        if job.status == "queued":
            if in_broker is not None and job.id in in_broker:
                continue
            if in_broker is None and job.enqueued_at and now - job.enqueued_at < requeue_after:
                continue
        if job.attempts >= max_attempts:
            _finish_row(session, job, "failed", "too_many_attempts", f"gave up after {job.attempts} attempts")
            continue
        job.enqueued_at = now
        resent.append(job.id)
    session.commit()
    for job_id in resent:
        job = session.get(Job, job_id)
        enqueue(job.kind, job_id)  # type: ignore[union-attr]
        log.warning("reconciler: re-sent job %s", job_id)
    return resent
