"""A stream resumed with a `Last-Event-ID` above every event its object has. On SQLite an event's id
is the table's rowid, which starts again at 1 once the daily prune has emptied the table (PostgreSQL
draws ids from a sequence that never goes back): an embedded service quiet for a day numbers its next
events below the ids its widgets last saw. Such a resume used to wait past every new event (none is
after its id) and send nothing until the object ended, on SQLite only; it starts afresh, as a resume
whose events are no longer kept does (docs/api.md)."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import select, update

from core import events
from core.clock import utcnow
from core.tables import Event, Subject
from tests.api.conftest import ApiEnv, ready_subject
from tests.api.test_fast_reads_match_the_schema import first_event


def _train(env: ApiEnv, subject_id: str, progress: float) -> int:
    """The subject training at `progress` (one event); the newest event id there is."""
    with env.session() as session:
        subject = session.get(Subject, subject_id)
        assert subject is not None
        subject.status, subject.stage, subject.progress = "training", "training", progress
        session.commit()
        return int(session.scalar(select(Event.id).order_by(Event.id.desc()).limit(1)) or 0)


def test_a_resume_above_every_event_of_its_object_starts_afresh(env: ApiEnv) -> None:
    subject_id = ready_subject(env, env.a)
    seen = max(_train(env, subject_id, p) for p in (0.1, 0.2, 0.3))  # the widget's Last-Event-ID
    with env.session() as session:  # a day passes with nothing new: the prune empties the table
        session.execute(update(Event).values(created_at=utcnow() - events.KEEP - timedelta(hours=1)))
        events.prune(session)
        session.commit()
    _train(env, subject_id, 0.6)  # training goes on: id 1 on SQLite
    headers = {**env.a.auth(), "Last-Event-ID": str(seen)}
    first = first_event(env, f"/v1/subjects/{subject_id}/events", headers, wait=3.0)
    assert first is not None, "no event: the resume waits for ids above its own"
    _, data = first  # `progress` on PostgreSQL (after its id), `status` on SQLite (afresh)
    assert (data["status"], data["progress"]) == ("training", 0.6)
