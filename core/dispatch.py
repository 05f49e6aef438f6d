"""Sending jobs to the broker, and sending them again when they were lost.

A job row is written and committed *before* its id goes to the broker. If sending fails (broker
down), the row stays `queued` with no `enqueued_at`, and the reconciler sends it later: a request
that got its 202 never loses its job.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from datetime import timedelta

from celery import Celery
from sqlalchemy import update
from sqlalchemy.orm import Session

from core import job_state
from core.clock import database_now, utcnow
from core.queue import enqueue
from core.repository import OpsRepository
from core.tables import Job

log = logging.getLogger("roomfit.jobs")


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


def mark_enqueued(session: Session, job_ids: Iterable[str]) -> None:
    now = utcnow()
    session.execute(
        update(Job)
        .where(Job.id.in_(list(job_ids)))
        .values(enqueued_at=now)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def _sent_since_claimed(job: Job) -> bool:
    """An orphaned job (lease expired) that was sent again since its last claim (by a pass before
    this one, or its worker's hand-back): its message is on its way, as a queued job's is. Sending it
    again each pass piled up a message per pass per orphan while the pool was busy, and KEDA scales
    the pool on the queue's length. A claim since (started_at) makes it an orphan again."""
    return job.enqueued_at is not None and job.started_at is not None and job.enqueued_at > job.started_at


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
      An orphan already sent again since its last claim is waited for the same way.
    Jobs out of attempts are failed with `too_many_attempts` instead.
    """
    now = database_now(session)
    ops = OpsRepository(session)
    resent: list[str] = []
    for job in [*ops.expired_jobs(now), *ops.queued_jobs()]:
        if job.status == "queued" or _sent_since_claimed(job):
            if in_broker is not None and job.id in in_broker:
                continue
            if in_broker is None and job.enqueued_at and now - job.enqueued_at < requeue_after:
                continue
        if job.attempts >= max_attempts:
            job_state.give_up(session, job)
            continue
        job.enqueued_at = now
        resent.append(job.id)
    session.commit()
    for job_id in resent:
        job = ops.job(job_id)
        enqueue(job.kind, job_id)  # type: ignore[union-attr]
        log.warning("reconciler: re-sent job %s", job_id)
    return resent
