"""The retention sweep's queries (core.retention): what has been kept long enough, and deleting it.

Apart from core.repository because only the sweep runs them: they cross tenants and delete in
bulk. Each delete repeats its whole condition, so a row that changed since it was found (ops
retried its job) is left alone; the caller commits.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import and_, delete, exists, or_, select
from sqlalchemy.orm import Session

from core.job_state import FINAL
from core.previews import FINISHED
from core.tables import Job, Preview, Subject, WebhookDelivery

SETTLED_DELIVERIES = ("delivered", "failed")  # core.webhooks: nothing more will be sent


def _finished_before(cutoff: datetime) -> tuple[Any, ...]:
    """A preview that ended (core.previews.FINISHED) before `cutoff`: what retention deletes."""
    return (Preview.status.in_(FINISHED), Preview.updated_at < cutoff)


def _orphaned_before(cutoff: datetime) -> tuple[Any, ...]:
    """A job that ended before `cutoff` and whose preview (a preview job) or subject (a training)
    is gone: deleted by the shop, with its subject, or by retention. Nothing leads to it but its id."""
    preview_gone = ~exists().where(Preview.id == Job.preview_id)
    subject_gone = ~exists().where(Subject.id == Job.subject_id)
    return (
        Job.status.in_(FINAL),
        Job.updated_at < cutoff,
        or_(
            and_(Job.preview_id.is_not(None), preview_gone),
            and_(Job.preview_id.is_(None), Job.subject_id.is_not(None), subject_gone),
        ),
    )


def _settled_before(cutoff: datetime) -> tuple[Any, ...]:
    return (WebhookDelivery.status.in_(SETTLED_DELIVERIES), WebhookDelivery.updated_at < cutoff)


class RetentionRepository:
    def __init__(self, session: Session) -> None:
        self.session = session

    def previews_finished_before(
        self, cutoff: datetime, limit: int, after: tuple[datetime, str] | None = None
    ) -> Sequence[tuple[str, str, datetime]]:
        """(tenant, id, finished at) of at most `limit` previews that finished before `cutoff`, oldest
        first (then by id); with `after`, only those past that (finished at, id): the next page."""
        query = select(Preview.tenant_id, Preview.id, Preview.updated_at).where(*_finished_before(cutoff))
        if after is not None:
            at, preview_id = after
            query = query.where(
                or_(Preview.updated_at > at, and_(Preview.updated_at == at, Preview.id > preview_id))
            )
        rows = self.session.execute(query.order_by(Preview.updated_at, Preview.id).limit(limit)).all()
        return [(tenant, preview_id, finished) for tenant, preview_id, finished in rows]

    def delete_finished_previews(self, ids: Sequence[str], cutoff: datetime) -> int:
        """Delete these previews' rows, each only if it is still finished before `cutoff`."""
        result = self.session.execute(
            delete(Preview)
            .where(Preview.id.in_(ids), *_finished_before(cutoff))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def delete_orphaned_jobs(self, cutoff: datetime, limit: int) -> int:
        """Delete at most `limit` of the oldest jobs that ended before `cutoff` with their object."""
        oldest = select(Job.id).where(*_orphaned_before(cutoff)).order_by(Job.updated_at).limit(limit)
        result = self.session.execute(
            delete(Job)
            .where(Job.id.in_(oldest.scalar_subquery()), *_orphaned_before(cutoff))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]

    def delete_settled_deliveries(self, cutoff: datetime, limit: int) -> int:
        """Delete at most `limit` of the oldest webhook deliveries delivered or given up before
        `cutoff` (their payload names the preview or subject); pending ones are never touched."""
        oldest = (
            select(WebhookDelivery.id)
            .where(*_settled_before(cutoff))
            .order_by(WebhookDelivery.updated_at)
            .limit(limit)
        )
        result = self.session.execute(
            delete(WebhookDelivery)
            .where(WebhookDelivery.id.in_(oldest.scalar_subquery()), *_settled_before(cutoff))
            .execution_options(synchronize_session=False)
        )
        return int(result.rowcount or 0)  # type: ignore[attr-defined]
