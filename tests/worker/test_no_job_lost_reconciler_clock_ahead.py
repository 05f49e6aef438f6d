"""Every worker runs a reconciler, each on its own machine's clock. One whose clock runs ahead of
the others' by more than a lease saw every live lease as expired: it gave up a healthy job on its
last attempt (`too_many_attempts`, the running worker's result then refused) and sent the others
again. On PostgreSQL the reconciler reads leases against the database's clock, the one clock all
machines share; and a worker writes its leases by it as well."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta

import pytest
from sqlalchemy.orm import Session

from core import dispatch, job_state
from core.clock import utcnow
from core.db import make_engine, session_factory
from core.ids import new_id
from core.migrate import upgrade
from core.tables import Job, Subject, Tenant

LEASE = 30
AHEAD = timedelta(minutes=10)  # an unsynchronised machine's clock


@pytest.fixture
def session(fresh_postgres_url: str) -> Iterator[Session]:
    upgrade(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url)
    with session_factory(engine)() as s:
        yield s
    engine.dispose()


def _claimed(session: Session, worker: str, attempts_before: int) -> job_state.Claim:
    tenant = Tenant(id=new_id("ten"), name=new_id("t"))
    subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa")
    job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id)
    job.attempts = attempts_before
    session.add(tenant)
    session.flush()
    session.add(subject)
    session.flush()
    session.add(job)
    session.commit()
    held = job_state.claim(session, job.id, worker, LEASE, max_attempts=3)
    assert held is not None
    return held


def test_a_reconciler_whose_clock_runs_ahead_leaves_live_leases_alone(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    last_try = _claimed(session, "w1", attempts_before=2)  # its third and last attempt, running now
    first_try = _claimed(session, "w2", attempts_before=0)

    def ahead() -> datetime:
        return utcnow() + AHEAD

    monkeypatch.setattr(dispatch, "utcnow", ahead)  # this reconciler's machine
    sent: list[str] = []
    resent = dispatch.reconcile(
        session,
        enqueue=lambda _kind, job_id: sent.append(job_id),
        in_broker=set(),
        max_attempts=3,
        requeue_after=timedelta(seconds=2 * LEASE),
    )
    monkeypatch.undo()

    assert resent == [] and sent == []
    for held in (last_try, first_try):
        row = session.get(Job, held.job_id, populate_existing=True)
        assert row is not None
        assert (row.status, row.worker, row.error_code) == ("running", held.worker, None)
        job_state.heartbeat(session, held, LEASE)  # still its worker's: it goes on
    job_state.finish(session, last_try, "succeeded")


def test_a_worker_whose_clock_runs_behind_writes_leases_by_the_databases_clock(
    session: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The other side of the same skew: a worker whose clock is behind stamped its claim's and its
    heartbeats' leases with it, so every other machine read them as expired at once and took its
    running job over. Leases are now written by the database's clock too."""

    def behind() -> datetime:
        return utcnow() - AHEAD

    monkeypatch.setattr(job_state, "utcnow", behind)  # this worker's machine
    held = _claimed(session, "w-late", attempts_before=0)
    job_state.heartbeat(session, held, LEASE)
    monkeypatch.undo()

    row = session.get(Job, held.job_id, populate_existing=True)
    assert row is not None and row.lease_expires_at is not None
    assert row.lease_expires_at > utcnow()  # a live lease, as the database's clock reads it
    resent = dispatch.reconcile(
        session,
        enqueue=lambda _kind, _job_id: None,
        in_broker=set(),
        max_attempts=3,
        requeue_after=timedelta(seconds=2 * LEASE),
    )
    assert resent == []
    assert job_state.claim(session, held.job_id, "w-other", LEASE, max_attempts=3) is None
