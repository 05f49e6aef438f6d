"""One clock for the database layer: timezone-aware UTC, so SQLite and PostgreSQL agree; and the
database's own clock, which every machine shares, for leases."""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session


def utcnow() -> datetime:
    return datetime.now(UTC)


def database_now(session: Session) -> datetime:
    """Now, by the clock every machine shares: PostgreSQL's. A reconciler's machine whose clock runs
    ahead by more than a lease would take every live lease for expired (and give up a healthy job on
    its last attempt), one behind would leave a dead worker's job waiting; and a worker's claim or
    heartbeat stamped by a clock behind would write leases the others read as expired. SQLite is one
    machine's database, so its clock is this one."""
    if session.get_bind().dialect.name != "postgresql":
        return utcnow()
    found = session.scalar(select(func.clock_timestamp()))  # the moment, not the transaction's start
    assert isinstance(found, datetime)
    return found.astimezone(UTC)
