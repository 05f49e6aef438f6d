"""core.events: the changes of subjects and previews become `events` rows in their own transaction,
on SQLite and PostgreSQL; on PostgreSQL a NOTIFY goes out at commit and never on a rollback."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import psycopg
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session

from core import events, job_state
from core.db import make_engine, session_factory
from core.ids import new_id
from core.migrate import upgrade
from core.tables import Event, Job, Preview, Subject, Tenant


@pytest.fixture
def sessions(database_url: str) -> Any:
    upgrade(database_url)
    engine = make_engine(database_url)
    yield session_factory(engine)
    engine.dispose()


def _rows(session: Session, object_id: str) -> list[tuple[str, str, str | None, float]]:
    query = select(Event.kind, Event.status, Event.stage, Event.progress).where(Event.object_id == object_id)
    return [tuple(r) for r in session.execute(query.order_by(Event.id))]  # type: ignore[misc]


def _subject_with_job(session: Session) -> tuple[Subject, Job]:
    tenant = Tenant(id=new_id("ten"), name=new_id("shop"))
    session.add(tenant)
    session.flush()
    subject = Subject(id=new_id("sub"), tenant_id=tenant.id, name="sofa")
    job = Job(id=new_id("job"), tenant_id=tenant.id, kind="train", subject_id=subject.id)
    session.add_all([subject, job])
    session.commit()
    return subject, job


def test_a_training_s_changes_are_events_and_nothing_after_its_end(sessions: Any) -> None:
    with sessions() as session:
        subject, job = _subject_with_job(session)
        held = job_state.claim(session, job.id, "w1", 30, 3)
        assert held is not None
        job_state.report(session, held, stage="training", progress=0.3)
        job_state.report(session, held, progress=0.6)
        job_state.report(session, held, progress=0.6)  # no change: no event
        subject.status = "ready"
        session.commit()
        subject.stage = "saving"  # after the end: a stream has closed, nothing to tell
        session.commit()
        kinds = _rows(session, subject.id)
    assert kinds[0] == ("status", "queued", None, 0.0)
    assert ("status", "queued", "training", 0.3) in kinds or ("status", "training", "training", 0.3) in kinds
    assert kinds[-2][0] == "progress" and kinds[-2][3] == 0.6
    assert kinds[-1][:2] == ("status", "ready")
    assert [k for k in kinds if k[3] == 0.6 and k[0] == "progress"] == [kinds[-2]]


def test_a_preview_s_stage_is_its_job_s(sessions: Any) -> None:
    with sessions() as session:
        subject, _ = _subject_with_job(session)
        preview = Preview(id=new_id("prv"), tenant_id=subject.tenant_id, subject_id=subject.id, seed=1,
                          width=8, height=8, room_key="r", mask_key="m", job_id=new_id("job"))  # fmt: skip
        job = Job(id=preview.job_id, tenant_id=subject.tenant_id, kind="preview", preview_id=preview.id)
        session.add_all([preview, job])
        session.commit()
        held = job_state.claim(session, job.id, "w1", 30, 3)
        assert held is not None
        job_state.report(session, held, stage="painting", progress=0.5)
        stages = [(kind, stage) for kind, _, stage, _ in _rows(session, preview.id)]
    assert ("status", "painting") in stages


def test_a_rolled_back_change_leaves_no_event(sessions: Any) -> None:
    with sessions() as session:
        subject, _ = _subject_with_job(session)
        before = _rows(session, subject.id)
        subject.progress = 0.5
        session.flush()
        session.rollback()
        assert _rows(session, subject.id) == before


def test_prune_keeps_a_day(sessions: Any) -> None:
    with sessions() as session:
        subject, _ = _subject_with_job(session)
        old = session.scalars(select(Event).where(Event.object_id == subject.id)).one()
        old.created_at = old.created_at - events.KEEP - timedelta(minutes=1)
        subject.progress = 0.2
        session.commit()
        assert events.prune(session) == 1
        session.commit()
        assert [k for k, *_ in _rows(session, subject.id)] == ["progress"]


def test_postgres_notifies_at_commit_only(fresh_postgres_url: str) -> None:
    upgrade(fresh_postgres_url)
    engine = make_engine(fresh_postgres_url)
    conninfo = make_url(fresh_postgres_url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(conninfo, autocommit=True) as listener, session_factory(engine)() as session:
        listener.execute(f"LISTEN {events.CHANNEL}")
        subject, _ = _subject_with_job(session)
        subject.progress = 0.4
        session.flush()
        session.rollback()
        assert [n.payload for n in listener.notifies(timeout=1.0)] == [subject.id]  # the creation only
        session.get(Subject, subject.id).progress = 0.5  # type: ignore[union-attr]
        session.flush()
        assert list(listener.notifies(timeout=0.5)) == []  # not before the commit
        session.commit()
        assert [n.payload for n in listener.notifies(timeout=1.0)] == [subject.id]
    engine.dispose()
