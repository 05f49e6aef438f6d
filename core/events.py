"""Events: every change of a subject's or a preview's status, stage or progress becomes a row of
`events` in the transaction that makes it, whoever makes it (the API creating a preview, a worker
reporting progress, ops cancelling a job). So the `/events` streams (api.event_streams) miss
nothing and send nothing that was rolled back, in both ways to run.

A session hook (`before_flush`) writes the rows: one per object per flush, `status` when the
status or stage moved (or the object is new), `progress` when only the progress did. A preview's
stage is its job's (previews have no stage column). On PostgreSQL the same transaction also sends
`NOTIFY roomfit_events, '<object id>'`, delivered at commit, which wakes the API processes that
stream that object; SQLite has no such thing and the API polls the table instead. Deleting a
subject or a preview writes no row (none is left to describe) but sends the same NOTIFY, so its
open streams look, find it gone and end.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import bindparam, delete, event, inspect, select
from sqlalchemy.orm import Session

from core.clock import utcnow
from core.tables import Event, Job, Preview, Subject

CHANNEL = "roomfit_events"
TERMINAL = {"subject": ("ready", "failed", "cancelled"), "preview": ("succeeded", "failed", "cancelled")}
KEEP = timedelta(days=1)

# An object's events after `after` (bind `object_id`, `after`), oldest first.
EVENTS_AFTER = (
    select(Event.id, Event.kind, Event.status, Event.stage, Event.progress)
    .where(Event.object_id == bindparam("object_id"), Event.id > bindparam("after"))
    .order_by(Event.id)
    .limit(500)
)
# The newest event of an object (bind `object_id`): where a fresh stream starts.
LAST_EVENT = (
    select(Event.id, Event.kind, Event.status, Event.stage, Event.progress)
    .where(Event.object_id == bindparam("object_id"))
    .order_by(Event.id.desc())
    .limit(1)
)
# Objects with events after `after` (bind `after`): the SQLite poller's question.
OBJECTS_AFTER = select(Event.id, Event.object_id).where(Event.id > bindparam("after")).order_by(Event.id)
NEWEST_ID = select(Event.id).order_by(Event.id.desc()).limit(1)
# A streamed object's status now (bind `object_id`), by its kind; no row once deleted (deleting one
# writes no event). A stream that waited and found no event asks it: gone, or ended without an event
# it can see (one committed under a lower id than the stream has read past: ids are drawn at insert,
# not at commit), it ends all the same.
OBJECT_STATUS = {
    "subject": select(Subject.status).where(Subject.id == bindparam("object_id")),
    "preview": select(Preview.status).where(Preview.id == bindparam("object_id")),
}


def _changed(obj: Any, *names: str) -> bool:
    state = inspect(obj)
    return any(state.attrs[name].history.has_changes() for name in names)


def _preview_stage(session: Session, preview: Preview) -> str | None:
    job = session.identity_map.get(Session.identity_key(Job, preview.job_id)) if preview.job_id else None
    return job.stage if isinstance(job, Job) else None


def _record(session: Session, _context: Any, _instances: Any) -> None:
    found: dict[str, Event] = {}
    for obj in [*session.new, *session.dirty]:
        if isinstance(obj, Subject | Preview):
            new = obj in session.new
            if not new and not _changed(obj, "status") and obj.status in TERMINAL[kind_of(obj.id)]:
                continue  # ended: its stream has closed; only a new status (a retry) is news
            moved = new or _changed(obj, "status", *(("stage",) if isinstance(obj, Subject) else ()))
            if not (moved or _changed(obj, "progress")):
                continue
            stage = obj.stage if isinstance(obj, Subject) else _preview_stage(session, obj)
        elif isinstance(obj, Job) and obj.preview_id and _changed(obj, "stage"):
            # Often not loaded yet: job_state.report flushes the job before it mirrors it.
            with session.no_autoflush:
                preview = session.get(Preview, obj.preview_id)
            if preview is None or preview.status in TERMINAL["preview"]:
                continue
            obj, moved, stage = preview, True, obj.stage
        else:
            continue
        if obj.id is None:
            continue
        kind = "status" if moved else "progress"
        earlier = found.get(obj.id)
        if earlier is not None and earlier.kind == "status":
            kind = "status"
        found[obj.id] = Event(
            object_id=obj.id,
            kind=kind,
            status=obj.status or "queued",
            stage=stage,
            progress=float(obj.progress or 0.0),
            created_at=utcnow(),
        )
    # A deleted object has no row left to write an event for, but its open streams must look and end:
    # on PostgreSQL wake them now (NOTIFY at commit); on SQLite they look at their next heartbeat.
    gone = {obj.id for obj in session.deleted if isinstance(obj, Subject | Preview) and obj.id}
    if found:
        session.add_all(found.values())
    if found or gone:
        session.info.setdefault("roomfit.notify", set()).update(found, gone)


def _notify(session: Session, _context: Any) -> None:
    ids = session.info.pop("roomfit.notify", None)
    if not ids:
        return
    connection = session.connection()
    if connection.dialect.name != "postgresql":
        return
    for object_id in sorted(ids):
        # Held by PostgreSQL until this transaction commits, dropped if it rolls back.
        values = {"channel": CHANNEL, "id": object_id}
        connection.exec_driver_sql("SELECT pg_notify(%(channel)s, %(id)s)", values)


def install() -> None:
    """Hook every session of this process (idempotent; core.db calls it)."""
    if not event.contains(Session, "before_flush", _record):
        event.listen(Session, "before_flush", _record)
        event.listen(Session, "after_flush", _notify)


def prune(session: Session) -> int:
    """Delete events older than `KEEP` (a reconnect that late starts afresh); the caller commits."""
    result = session.execute(delete(Event).where(Event.created_at < utcnow() - KEEP))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]


def kind_of(object_id: str) -> str:
    return "subject" if object_id.startswith("sub_") else "preview"
