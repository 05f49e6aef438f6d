"""The life of a job row, in one place: create, claim with a lease, heartbeat, progress, finish,
release, cancel and retry. Every change of `Job.status` is a function here.

The database is the truth about every job; a broker message only says "look at job X". So every
transition here is one conditional UPDATE, and a task that finds it cannot claim its job (already
done, cancelled, or held by a live worker) simply does nothing. That is what makes tasks idempotent
by job id and lets the reconciler re-send ids freely.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import or_, update
from sqlalchemy.orm import Session

from core import previews, subjects
from core.clock import database_now, utcnow
from core.ids import new_id
from core.repository import OpsRepository
from core.tables import Job, Preview, Subject

log = logging.getLogger("roomfit.jobs")

ACTIVE = ("queued", "running")
FINAL = ("succeeded", "failed", "cancelled")
RETRYABLE = ("failed", "cancelled")
GIVEN_UP = "roomfit.given_up"  # session.info: jobs give_up failed, for given_up()


@dataclass(frozen=True)
class Claim:
    job_id: str
    worker: str
    attempt: int
    # claimed before since it was made or last retried (handed back, or its worker died): it has
    # waited since it was sent again, not since it was made, and a hand-back keeps `attempt` at 1
    ran_before: bool = False


class LeaseLost(RuntimeError):
    """Another worker took the job over (our lease expired): stop without writing anything more."""


class JobCancelled(RuntimeError):
    """The job was cancelled (e.g. its subject deleted) while it ran."""


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


def target_of(session: Session, job: Job) -> Subject | Preview | None:
    """The subject a train job trains, or the preview a preview job paints (None once deleted)."""
    if job.kind == "train" and job.subject_id:
        return session.get(Subject, job.subject_id)
    if job.kind == "preview" and job.preview_id:
        return session.get(Preview, job.preview_id)
    return None


def claim(session: Session, job_id: str, worker: str, lease_seconds: int, max_attempts: int) -> Claim | None:
    """Take the job for this worker, or None when it is not ours to run.

    A job is claimable when queued, or running under a lease that has expired (its worker died).
    Each claim counts an attempt; a job that has used all its attempts fails `too_many_attempts`.
    """
    now = database_now(session)  # leases by the shared clock: a worker's own may be off (core.clock)
    job = session.get(Job, job_id)
    if job is None:
        log.warning("job %s: no such job; message dropped", job_id)
        return None
    # Out of attempts, and not running under a live lease: a duplicate message for a job a worker
    # is running now (a batch-mate's own message, a re-send) must not fail that healthy run.
    orphaned = job.status == "running" and (job.lease_expires_at is None or job.lease_expires_at < now)
    ran_before = job.started_at is not None  # read before this claim writes its own start
    if job.attempts >= max_attempts and (job.status == "queued" or orphaned):
        give_up(session, job, "(the worker running it stopped each time)")
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
    return Claim(job_id=job_id, worker=worker, attempt=job.attempts, ran_before=ran_before)


def claim_next(
    session: Session, kind: str, message_job_id: str, worker: str, lease_seconds: int, max_attempts: int
) -> Claim | None:
    """Take the next job of `kind` that is fair to run, or None when there is none.

    A broker message is a turn, not an assignment: one message lets one job run, and which job is
    decided here, across tenants, so one tenant's burst of fifty previews does not stand in front of
    another tenant's one. The fairest job belongs to the tenant with the fewest jobs of this kind
    running, then the one served least recently, and is that tenant's oldest queued job. Every
    queued job was sent its own message, so messages never run short of jobs; a message whose job
    was run by another turn simply runs someone else's. The message's own job comes first only
    when its worker died (lease expired): the reconciler sent the message to recover exactly it.
    """
    own = session.get(Job, message_job_id)
    if own is not None and own.kind == kind and own.status == "running":
        held = claim(session, message_job_id, worker, lease_seconds, max_attempts)
        if held is not None:
            return held
        # Another turn runs it under a live lease: this turn is still a turn, for the fairest job
        # queued (the job this message stood for may have been run by the other job's message).
    held = claim_fairest(session, kind, worker, lease_seconds, max_attempts)
    if held is not None:
        return held
    if own is not None and own.status not in ("queued",):
        log.info(
            "job %s: not claimable (status %s, worker %s); message dropped", own.id, own.status, own.worker
        )
    return None


def claim_fairest(
    session: Session, kind: str, worker: str, lease_seconds: int, max_attempts: int
) -> Claim | None:
    """Take the queued job of `kind` that is fairest to run next (see claim_next), or None when none
    is queued. A worker filling a batch calls this for each job after the first."""
    ops = OpsRepository(session)
    for _ in range(8):  # another worker may take the chosen job first; choose again
        job_id = ops.fairest_queued_job(kind)
        if job_id is None:
            return None
        held = claim(session, job_id, worker, lease_seconds, max_attempts)
        if held is not None:
            return held
    return None


def heartbeat(session: Session, held: Claim, lease_seconds: int) -> None:
    """Extend our lease. Raises LeaseLost if another worker holds the job, JobCancelled if cancelled."""
    now = database_now(session)
    result = session.execute(
        update(Job)
        .where(Job.id == held.job_id, Job.worker == held.worker, Job.status == "running")
        .values(heartbeat_at=now, lease_expires_at=now + timedelta(seconds=lease_seconds))
        .execution_options(synchronize_session=False)
    )
    session.commit()
    job = session.get(Job, held.job_id, populate_existing=True)
    if job is None or job.cancel_requested or job.status == "cancelled":  # None: deleted with its tenant
        raise JobCancelled(held.job_id)
    if result.rowcount != 1:  # type: ignore[attr-defined]
        raise LeaseLost(held.job_id)


# alike: keyword-only optional fields, as new_job's signature: declarations, nothing to share.
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
    job = _held_row(session, held)
    if stage is not None:
        job.stage = stage
    if progress is not None:
        job.progress = max(0.0, min(1.0, progress))
    # A diverging training's NaN or infinite loss: PostgreSQL's JSON has no such number (the whole
    # report failed), and no chart could draw it. The training itself stops on them (models.divergence).
    if loss_point is not None and math.isfinite(loss_point[1]):
        job.loss_points = [*job.loss_points, [int(loss_point[0]), float(loss_point[1])]]
    if timings:
        job.timings = {**job.timings, **timings}
    _mirror(session, job)
    session.commit()


def finish(
    session: Session, held: Claim | Job, status: str, code: str | None = None, message: str | None = None
) -> None:
    if isinstance(held, Job):
        job = held
    elif status == "cancelled":  # settling a cancel: the row was cancelled by whoever asked
        job = session.get(Job, held.job_id)
        if job is None:
            return
        if job.worker != held.worker:
            raise LeaseLost(held.job_id)
    else:
        job = _held_row(session, held)
    _finish_row(session, job, status, code, message)
    session.commit()


def _held_row(session: Session, held: Claim) -> Job:
    """The job row, locked until commit, if this claim still runs it: LeaseLost when another worker
    holds it or it ended otherwise, JobCancelled when it was cancelled since (ops, a deleted subject
    or preview). What a worker writes through it (progress, a result) then never overwrites a cancel
    that came first, nor does a cancel slip in between the check and the commit (PostgreSQL)."""
    job = session.get(Job, held.job_id, with_for_update=True, populate_existing=True)
    if job is None:
        raise JobCancelled(held.job_id)  # deleted with its tenant, subject or preview
    if job.worker != held.worker:
        raise LeaseLost(held.job_id)
    if job.status != "running":
        if job.cancel_requested or job.status == "cancelled":
            raise JobCancelled(held.job_id)
        raise LeaseLost(held.job_id)
    return job


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


def give_up(session: Session, job: Job, why: str = "") -> None:
    """Fail a job that has used all its attempts (`too_many_attempts`); the caller commits, then
    asks `given_up` for the shop's failure webhooks."""
    message = f"gave up after {job.attempts} attempts" + (f" {why}" if why else "")
    _finish_row(session, job, "failed", "too_many_attempts", message)
    session.info.setdefault(GIVEN_UP, []).append(job.id)


def given_up(session: Session) -> list[str]:
    """The ids of the jobs `give_up` failed in this session since the last call. Their failure is
    news for the shop's webhook like any other, which a worker sends (core sends no webhooks)."""
    return session.info.pop(GIVEN_UP, [])


def _mirror(session: Session, job: Job) -> None:
    """Subjects and previews show their job's progress, and end when it fails or is cancelled."""
    target = target_of(session, job)
    if isinstance(target, Subject):
        subjects.follow_job(target, job)
    elif isinstance(target, Preview):
        previews.follow_job(target, job)


def release(session: Session, held: Claim) -> None:
    """Give the job up without finishing it: its lease ends now, so the next claim may take it."""
    session.execute(
        update(Job)
        .where(Job.id == held.job_id, Job.worker == held.worker, Job.status == "running")
        .values(lease_expires_at=database_now(session))
        .execution_options(synchronize_session=False)
    )
    session.commit()


def hand_back(session: Session, held: Claim) -> bool:
    """Give the job back because its worker is stopping (SIGTERM on a scale-down or a deploy): the
    lease ends now and this attempt is not counted, since the job did nothing wrong. False when the
    job is no longer this worker's (cancelled, or taken over)."""
    result = session.execute(
        update(Job)
        .where(Job.id == held.job_id, Job.worker == held.worker, Job.status == "running")
        .values(lease_expires_at=database_now(session), attempts=Job.attempts - 1, updated_at=utcnow())
        .execution_options(synchronize_session=False)
    )
    session.commit()
    handed = result.rowcount == 1  # type: ignore[attr-defined]
    if handed:
        log.info("job %s: handed back by %s (worker stopping)", held.job_id, held.worker)
    return handed


def request_cancel(session: Session, job: Job) -> None:
    """Cancel a queued or running job: a running worker sees `cancel_requested` at its next heartbeat."""
    if job.status not in ACTIVE:
        raise JobConflict(f"job {job.id} is {job.status}; only queued or running jobs can be cancelled")
    job.cancel_requested = True
    job.status = "cancelled"
    job.finished_at = utcnow()
    job.lease_expires_at = None
    target = target_of(session, job)
    if isinstance(target, Subject):
        subjects.mark_cancelled(target)
    elif isinstance(target, Preview):
        previews.mark_cancelled(target)


def reset_for_retry(session: Session, job: Job) -> None:
    """Put a failed or cancelled job back in the queue with fresh attempts (commit, then send it)."""
    if job.status not in RETRYABLE:
        raise JobConflict(f"job {job.id} is {job.status}; only failed or cancelled jobs can be retried")
    target = target_of(session, job)
    if target is None and (job.subject_id or job.preview_id):
        raise JobConflict(f"job {job.id}: its subject or preview was deleted")
    if isinstance(target, Subject):
        if OpsRepository(session).subjects_in_training([target.id]):
            raise JobConflict(f"job {job.id}: subject {target.id} has another training queued or running")
        version = job.params.get("adapter_version")
        if version is not None and int(version) <= (target.adapter_version or 0):
            # The subject has moved on since (a later training succeeded): this one takes the next
            # version on its first attempt, as a new training would, never an older number back.
            job.params = {k: v for k, v in job.params.items() if k != "adapter_version"}
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
    if isinstance(target, Subject):
        subjects.reset_for_training(target)
    elif isinstance(target, Preview):
        previews.reset_for_rendering(target)
