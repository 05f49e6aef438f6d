"""Job rows: one claim per job at a time, leases that expire, and a reconciler that loses nothing."""

from __future__ import annotations

import math
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from core import dispatch, job_state
from core.clock import utcnow
from core.ids import new_id
from core.tables import Job, Subject, Tenant

LEASE = 30


def _job(session: Session, status: str = "queued", **values: object) -> Job:
    tenant = Tenant(id=new_id("ten"), name=new_id("t"))
    subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa")
    job = Job(
        id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id, status=status, **values
    )
    session.add(tenant)
    session.flush()  # no ORM relationship orders these inserts: flush the parent first
    session.add(subject)
    session.flush()
    session.add(job)
    session.commit()
    return job


def test_a_job_is_claimed_once(session: Session) -> None:
    job = _job(session)
    first = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
    assert first is not None and first.attempt == 1
    assert job_state.claim(session, job.id, "w2", LEASE, max_attempts=3) is None  # w1's lease is live
    job_state.finish(session, first, "succeeded")
    assert job_state.claim(session, job.id, "w2", LEASE, max_attempts=3) is None  # done stays done
    session.refresh(job)
    assert (job.status, job.attempts, job.worker, job.progress) == ("succeeded", 1, "w1", 1.0)


def test_an_expired_lease_passes_the_job_on(session: Session) -> None:
    job = _job(session)
    first = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
    assert first is not None
    job.lease_expires_at = utcnow() - timedelta(seconds=1)  # w1 died: no heartbeat
    session.commit()
    second = job_state.claim(session, job.id, "w2", LEASE, max_attempts=3)
    assert second is not None and second.attempt == 2
    with pytest.raises(job_state.LeaseLost):
        job_state.heartbeat(session, first, LEASE)  # w1 comes back: it must stop, not write
    with pytest.raises(job_state.LeaseLost):
        job_state.report(session, first, progress=0.5)
    job_state.heartbeat(session, second, LEASE)


def test_cancel_is_seen_by_the_heartbeat(session: Session) -> None:
    job = _job(session)
    held = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
    assert held is not None
    job.cancel_requested = True
    session.commit()
    with pytest.raises(job_state.JobCancelled):
        job_state.heartbeat(session, held, LEASE)


def test_progress_is_mirrored_to_the_subject(session: Session) -> None:
    job = _job(session)
    held = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
    assert held is not None
    job_state.report(session, held, stage="training", progress=0.4, loss_point=(10, 0.25))
    job_state.report(session, held, progress=0.5, loss_point=(20, 0.2), timings={"annotate": 1.5})
    subject = session.get(Subject, job.subject_id)
    session.refresh(job)
    assert (subject.stage, subject.progress) == ("training", 0.5)
    assert job.loss_points == [[10, 0.25], [20, 0.2]] and job.timings == {"annotate": 1.5}
    job_state.finish(session, held, "failed", "no_object_found", "nothing in photo 0")
    session.refresh(subject)
    assert (subject.status, subject.error_code) == ("failed", "no_object_found")


def test_reconciler_resends_orphans_and_lost_messages(session: Session) -> None:
    orphan = _job(session)
    assert job_state.claim(session, orphan.id, "dead", LEASE, max_attempts=3) is not None
    orphan.lease_expires_at = utcnow() - timedelta(seconds=5)
    live = _job(session)
    assert job_state.claim(session, live.id, "alive", LEASE, max_attempts=3) is not None
    lost = _job(session)  # queued in the database, gone from the broker
    waiting = _job(session)  # queued and still in the broker
    worn = _job(session, status="running", attempts=3, lease_expires_at=utcnow() - timedelta(seconds=5))
    session.commit()

    sent: list[tuple[str, str]] = []
    resent = dispatch.reconcile(
        session,
        enqueue=lambda kind, job_id: sent.append((kind, job_id)),
        in_broker={waiting.id},
        max_attempts=3,
        requeue_after=timedelta(minutes=5),
    )
    assert sorted(resent) == sorted([orphan.id, lost.id])
    assert sorted(sent) == sorted([("train", orphan.id), ("train", lost.id)])
    session.refresh(worn)
    assert (worn.status, worn.error_code) == ("failed", "too_many_attempts")
    # the re-sent orphan is claimable again, as a new attempt
    again = job_state.claim(session, orphan.id, "w3", LEASE, max_attempts=3)
    assert again is not None and again.attempt == 2


def test_reconciler_without_broker_view_waits_before_resending(session: Session) -> None:
    fresh = _job(session, enqueued_at=utcnow())
    stale = _job(session, enqueued_at=utcnow() - timedelta(minutes=10))
    resent = dispatch.reconcile(
        session, enqueue=lambda *_: None, in_broker=None, max_attempts=3, requeue_after=timedelta(minutes=5)
    )
    assert resent == [stale.id] and fresh.id not in resent


def test_a_duplicate_message_leaves_a_job_on_its_last_attempt_running(session: Session) -> None:
    """Two attempts given back (transient errors), the third running under a live lease: another
    message for it (a batch-mate's own, a re-send) is dropped, not a reason to give the job up."""
    job = _job(session)
    for _ in range(2):
        given_back = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
        assert given_back is not None
        job_state.release(session, given_back)
    held = job_state.claim_next(session, "train", job.id, "w1", LEASE, max_attempts=3)
    assert held is not None and held.attempt == 3
    assert job_state.claim_next(session, "train", job.id, "w2", LEASE, max_attempts=3) is None
    session.refresh(job)
    assert (job.status, job.worker, job.error_code) == ("running", "w1", None)
    job_state.heartbeat(session, held, LEASE)  # still w1's
    assert job_state.given_up(session) == []
    # Once its lease runs out (w1 died), the same message gives it up, and says so.
    job.lease_expires_at = utcnow() - timedelta(seconds=1)
    session.commit()
    assert job_state.claim_next(session, "train", job.id, "w2", LEASE, max_attempts=3) is None
    session.refresh(job)
    assert (job.status, job.error_code) == ("failed", "too_many_attempts")
    assert job_state.given_up(session) == [job.id]


def test_a_turn_whose_job_runs_elsewhere_runs_the_fairest_queued_one(session: Session) -> None:
    """A1, A2 (one shop) and B1 (another), a message each. w1 takes A1's; w2 takes A2's and runs B1
    (fairer). w1, done, takes B1's message: B1 runs on w2, so that turn must run A2, or A2 would
    wait for the reconciler with no message left."""
    a1 = _job(session)
    a2 = _job(session)
    a2.tenant_id = a1.tenant_id
    session.get(Subject, a2.subject_id).tenant_id = a1.tenant_id  # type: ignore[union-attr]
    b1 = _job(session)
    session.commit()
    first = job_state.claim_next(session, "train", a1.id, "w1", LEASE, max_attempts=3)
    second = job_state.claim_next(session, "train", a2.id, "w2", LEASE, max_attempts=3)
    assert first is not None and second is not None
    assert (first.job_id, second.job_id) == (a1.id, b1.id)
    job_state.finish(session, first, "succeeded")
    third = job_state.claim_next(session, "train", b1.id, "w1", LEASE, max_attempts=3)
    assert third is not None and third.job_id == a2.id


def test_a_result_after_a_cancel_is_refused(session: Session) -> None:
    """Ops cancels a running job; its worker, not yet told by a heartbeat, writes progress and then
    its result: both are refused, and the cancel stands."""
    job = _job(session)
    held = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
    assert held is not None
    job_state.request_cancel(session, job)
    session.commit()
    with pytest.raises(job_state.JobCancelled):
        job_state.report(session, held, progress=0.9)
    session.rollback()
    with pytest.raises(job_state.JobCancelled):
        job_state.finish(session, held, "succeeded")
    session.rollback()
    job_state.finish(session, held, "cancelled")  # the worker settling the cancel: allowed
    session.refresh(job)
    subject = session.get(Subject, job.subject_id)
    assert (job.status, subject.status) == ("cancelled", "cancelled")  # type: ignore[union-attr]


def test_a_training_is_not_retried_beside_another_and_takes_a_new_version(session: Session) -> None:
    old = _job(session, status="failed", params={"adapter_version": 2})
    subject = session.get(Subject, old.subject_id)
    assert subject is not None
    subject.adapter_version = 3  # trained twice since the old one failed
    newer = Job(id=new_id("job"), tenant_id=old.tenant_id, kind="train", subject_id=subject.id)
    session.add(newer)
    session.commit()
    with pytest.raises(job_state.JobConflict, match="another training"):
        job_state.reset_for_retry(session, old)
    session.rollback()
    newer.status = "succeeded"
    session.commit()
    job_state.reset_for_retry(session, old)
    assert old.status == "queued" and "adapter_version" not in old.params


def test_the_heartbeat_of_a_job_deleted_with_its_tenant_says_cancelled(session: Session) -> None:
    job = _job(session)
    held = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
    assert held is not None
    session.delete(job)
    session.commit()
    with pytest.raises(job_state.JobCancelled):
        job_state.heartbeat(session, held, LEASE)


def test_a_loss_that_is_not_a_number_is_not_recorded(session: Session) -> None:
    """A diverging training reports NaN or infinite losses until it is stopped: PostgreSQL's JSON
    has no such numbers (the write failed, and with it the progress), and no reader could draw them."""
    job = _job(session)
    held = job_state.claim(session, job.id, "w1", LEASE, max_attempts=3)
    assert held is not None
    for step, loss in ((1, 0.5), (2, math.nan), (3, math.inf), (4, -math.inf), (5, 0.25)):
        job_state.report(session, held, progress=step / 10, loss_point=(step, loss))
    session.expire_all()
    row = session.get(Job, job.id)
    assert row is not None and row.loss_points == [[1, 0.5], [5, 0.25]] and row.progress == 0.5
