"""Worker processes' heartbeat rows (`workers`): each process writes its own, ops reads them all.

A row says what a worker process is (host, pid, queues, base model) and how it is doing (adapter
cache, GPU memory) as of `last_seen`; `online_until` is `last_seen` plus the writer's window. The
jobs a worker runs are not copied here: they are the running jobs whose `worker` is its name, read
beside the rows, so the two never disagree.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from core.tables import Job, Worker

# A worker is offline once this many of its heartbeats in a row are missing.
MISSED_BEATS = 3


def window(heartbeat_seconds: float) -> timedelta:
    """How long after its last heartbeat a worker still counts as online."""
    return timedelta(seconds=MISSED_BEATS * heartbeat_seconds)


def record(session: Session, name: str, now: datetime, heartbeat_seconds: float, **fields: Any) -> None:
    """Write this worker's row (made on its first heartbeat, updated on each after); the caller commits."""
    row = session.get(Worker, name)
    if row is None:
        row = Worker(name=name, started_at=now)
        session.add(row)
    for key, value in fields.items():
        setattr(row, key, value)
    row.last_seen = now
    row.online_until = now + window(heartbeat_seconds)


def sign_off(session: Session, name: str, now: datetime) -> None:
    """A worker stopping cleanly: offline from `now` (listed until the forget window passes, as a
    killed one is); the caller commits."""
    session.execute(update(Worker).where(Worker.name == name).values(online_until=now))


@dataclass
class Listed:
    """A worker row and the ids of the jobs it runs now."""

    row: Worker
    current_jobs: list[str]


def listed(session: Session, now: datetime, forget_seconds: float) -> list[Listed]:
    """Workers seen within `forget_seconds` (online or not), by name, each with its running jobs."""
    rows = session.scalars(
        select(Worker)
        .where(Worker.online_until >= now - timedelta(seconds=forget_seconds))
        .order_by(Worker.name)
    ).all()
    running = _running(session, rows)
    return [Listed(row, running.get(row.name, [])) for row in rows]


def _running(session: Session, rows: Sequence[Worker]) -> dict[str, list[str]]:
    if not rows:
        return {}
    found: dict[str, list[str]] = defaultdict(list)
    for job_id, worker in session.execute(
        select(Job.id, Job.worker)
        .where(Job.status == "running", Job.worker.in_([r.name for r in rows]))
        .order_by(Job.id)
    ):
        found[worker].append(job_id)
    return found


def live_per_queue(session: Session, now: datetime, queues: Sequence[str]) -> dict[str, int]:
    """How many online workers consume each of `queues`."""
    counts = dict.fromkeys(queues, 0)
    for served in session.scalars(select(Worker.queues).where(Worker.online_until >= now)):
        for queue in set(served or ()):
            if queue in counts:
                counts[queue] += 1
    return counts


def prune(session: Session, now: datetime, forget_seconds: float) -> int:
    """Delete the rows of workers offline for longer than `forget_seconds`; the caller commits."""
    cutoff = now - timedelta(seconds=forget_seconds)
    result = session.execute(delete(Worker).where(Worker.online_until < cutoff))
    return int(result.rowcount or 0)  # type: ignore[attr-defined]
