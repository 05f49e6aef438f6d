"""Job rows: one claim per job at a time, leases that expire, and a reconciler that loses nothing."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy.orm import Session

from core import dispatch, job_state
from core.clock import utcnow
from core.db import make_engine, session_factory
from core.ids import new_id
from core.migrate import upgrade
from core.tables import Job, Subject, Tenant

LEASE = 30


@pytest.fixture
def session(database_url: str) -> Iterator[Session]:
    upgrade(database_url)
    engine = make_engine(database_url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


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
