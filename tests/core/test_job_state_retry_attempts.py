"""A retried job starts again with fresh attempts (core/job_state.py, `reset_for_retry`): one that
failed `too_many_attempts` is claimed again by the next worker, not given up at once."""

from __future__ import annotations

from sqlalchemy.orm import Session

from core import job_state
from core.ids import new_id
from core.tables import Job, Subject, Tenant

MAX_ATTEMPTS = 3


def test_a_job_retried_after_too_many_attempts_is_claimed_again(session: Session) -> None:
    tenant = Tenant(id=new_id("ten"), name=new_id("t"))
    subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa")
    job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id, status="queued")
    session.add(tenant)
    session.flush()
    session.add(subject)
    session.flush()
    session.add(job)
    session.commit()
    job.attempts = MAX_ATTEMPTS  # every attempt's worker died
    session.commit()
    assert job_state.claim(session, job.id, "w1", 30, MAX_ATTEMPTS) is None
    session.refresh(job)
    assert (job.status, job.error_code) == ("failed", "too_many_attempts")

    job_state.reset_for_retry(session, job)
    session.commit()
    held = job_state.claim(session, job.id, "w2", 30, MAX_ATTEMPTS)
    assert held is not None and held.attempt == 1
    session.refresh(job)
    assert (job.status, job.worker, job.attempts) == ("running", "w2", 1)
