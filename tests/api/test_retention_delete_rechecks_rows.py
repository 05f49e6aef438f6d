"""The retention sweep finds expired previews, deletes their blobs, then their rows; between the two a
preview may change (ops retried its job). Its delete repeats the whole condition, so such a row is
left alone (core.retention_repository): only a preview still finished before the cutoff goes."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import update

from core.clock import utcnow
from core.retention_repository import RetentionRepository
from core.tables import Job, Preview
from tests.api.conftest import ApiEnv, create_preview, ready_subject


def _preview(env: ApiEnv, subject_id: str, status: str, days_ago: float) -> str:
    preview = create_preview(env, env.a, subject_id)["id"]
    with env.session() as session:
        values: dict[str, Any] = {"status": status, "updated_at": utcnow() - timedelta(days=days_ago)}
        session.execute(update(Preview).where(Preview.id == preview).values(**values))
        session.execute(update(Job).where(Job.preview_id == preview).values(status=status))
        session.commit()
    return preview


def test_the_row_delete_spares_previews_that_are_not_finished_before_the_cutoff(env: ApiEnv) -> None:
    sid = ready_subject(env, env.a)
    expired = _preview(env, sid, "failed", days_ago=40)
    retried = _preview(env, sid, "failed", days_ago=45)  # found, then put back in the queue
    recent = _preview(env, sid, "succeeded", days_ago=2)  # finished, but inside the retention
    cutoff = utcnow() - timedelta(days=30)
    with env.session() as session:
        found = {row[1] for row in RetentionRepository(session).previews_finished_before(cutoff, 10)}
        assert found == {expired, retried}
        # Between the sweep's read and its delete, ops retried `retried`: queued again, long ago.
        session.execute(update(Preview).where(Preview.id == retried).values(status="queued"))
        session.commit()
    with env.session() as session:
        removed = RetentionRepository(session).delete_finished_previews([expired, retried, recent], cutoff)
        session.commit()
    assert removed == 1
    with env.session() as session:
        assert session.get(Preview, expired) is None
        assert session.get(Preview, retried) is not None
        assert session.get(Preview, recent) is not None
