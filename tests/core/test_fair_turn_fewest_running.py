"""The fair turn (core.repository.OpsRepository.fairest_queued_job): the tenant with the fewest jobs of
the kind running goes first, before the one served least recently; so a shop whose work is still
running waits while another shop, with nothing running, takes the free worker."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import update
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.ids import new_id
from core.repository import OpsRepository
from core.tables import Job, Subject, Tenant


def _shop(session: Session) -> tuple[str, str]:
    tenant = Tenant(id=new_id("ten"), name=new_id("t"))
    session.add(tenant)
    session.flush()
    subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa")
    session.add(subject)
    session.flush()
    return tenant.id, subject.id


def _job(session: Session, shop: tuple[str, str], status: str, started_minutes_ago: float | None) -> str:
    tenant_id, subject_id = shop
    started = utcnow() - timedelta(minutes=started_minutes_ago) if started_minutes_ago is not None else None
    job = Job(
        id=new_id("job"),
        tenant_id=tenant_id,
        kind="train",
        subject_id=subject_id,
        status=status,
        started_at=started,
    )
    session.add(job)
    session.flush()
    return job.id


def test_the_tenant_with_fewer_running_goes_before_the_one_served_longer_ago(session: Session) -> None:
    busy, idle = _shop(session), _shop(session)
    _job(session, busy, "running", started_minutes_ago=10)  # served long ago, and still running
    busy_waiting = _job(session, busy, "queued", started_minutes_ago=None)  # waiting longest, too
    _job(session, idle, "succeeded", started_minutes_ago=1)  # served a minute ago, nothing running
    idle_waiting = _job(session, idle, "queued", started_minutes_ago=None)
    session.commit()

    assert OpsRepository(session).fairest_queued_job("train") == idle_waiting

    # Once the busy tenant's job is done, it was served longest ago: its turn.
    running = update(Job).where(Job.tenant_id == busy[0], Job.status == "running")
    session.execute(running.values(status="succeeded"))
    session.commit()
    assert OpsRepository(session).fairest_queued_job("train") == busy_waiting
