"""Data access: every query of the API and the workers is a method here, scoped when it is built.

Routes and tasks that act for a tenant get a `TenantRepository` and never build a bare `select`, so
a forgotten `where tenant_id = ...` cannot leak another shop's rows. Cross-tenant reads (ops staff,
the reconciler) go through `OpsRepository`, which says so in its name. `IdempotencyRepository` holds
the records of one API key's Idempotency-Keys. Repositories add, delete and query; they never
commit: the caller owns the transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any, TypeVar

from sqlalchemy import Select, and_, bindparam, case, delete, func, select, type_coerce
from sqlalchemy.orm import Session, selectinload

from core.accounts import KEY_COLUMNS, KEY_MATCHES
from core.tables import (
    ApiKey,
    Base,
    Event,
    IdempotencyRecord,
    Job,
    Preview,
    Subject,
    Tenant,
    UTCDateTime,
    Webhook,
    WebhookDelivery,
)

M = TypeVar("M", bound=Base)


class TenantMismatch(ValueError):
    """A row of one tenant was handed to another tenant's repository."""


class TenantRepository:
    def __init__(self, session: Session, tenant_id: str) -> None:
        self.session = session
        self.tenant_id = tenant_id

    # --- generic, used by every domain ------------------------------------------------------
    def select(self, model: type[M]) -> Select[tuple[M]]:
        """`select(model)` already restricted to this tenant; add filters to it, never remove."""
        return select(model).where(model.tenant_id == self.tenant_id)  # type: ignore[attr-defined]

    def get(self, model: type[M], id_: str) -> M | None:
        """The row with this id, or None when it is missing *or belongs to another tenant*."""
        return self.session.scalars(self.select(model).where(model.id == id_)).first()  # type: ignore[attr-defined]

    def list(self, model: type[M], *where: Any, limit: int | None = None) -> Sequence[M]:
        stmt = self.select(model).where(*where).order_by(model.id.desc())  # type: ignore[attr-defined]
        if limit is not None:
            stmt = stmt.limit(limit)
        return self.session.scalars(stmt).all()

    def count(self, model: type[M], *where: Any) -> int:
        stmt = select(func.count()).select_from(self.select(model).where(*where).subquery())
        return int(self.session.scalar(stmt) or 0)

    def add(self, row: M) -> M:
        """Add a row, stamping it with this tenant; a row of another tenant is refused."""
        current = getattr(row, "tenant_id", None)
        if current is not None and current != self.tenant_id:
            raise TenantMismatch(f"{type(row).__name__} of tenant {current} given to tenant {self.tenant_id}")
        row.tenant_id = self.tenant_id  # type: ignore[attr-defined]
        self.session.add(row)
        return row

    def delete(self, row: Base) -> None:
        if getattr(row, "tenant_id", None) != self.tenant_id:
            raise TenantMismatch(f"refusing to delete another tenant's {type(row).__name__}")
        self.session.delete(row)

    # --- subjects, previews, jobs -----------------------------------------------------------
    def tenant(self) -> Tenant:
        tenant = self.session.get(Tenant, self.tenant_id)
        assert tenant is not None, "a repository exists only for a tenant that exists"
        return tenant

    def subjects_page(
        self, *, status: str | None, limit: int, cursor: str | None
    ) -> tuple[Sequence[Subject], str | None]:
        """Newest first. Ids are time-ordered, so the cursor is simply the last id of a page."""
        # The page's photos in one more query, not one per subject (SubjectOut lists them).
        stmt = (
            self.select(Subject)
            .options(selectinload(Subject.photos))
            .order_by(Subject.id.desc())
            .limit(limit + 1)
        )
        if status:
            stmt = stmt.where(Subject.status == status)
        if cursor:
            stmt = stmt.where(Subject.id < cursor)
        rows = self.session.scalars(stmt).all()
        next_cursor = rows[limit - 1].id if len(rows) > limit else None
        return rows[:limit], next_cursor

    def subject_by_external_id(self, external_id: str) -> Subject | None:
        return self.session.scalars(self.select(Subject).where(Subject.external_id == external_id)).first()

    def previews_of_subject(self, subject_id: str) -> Sequence[Preview]:
        return self.session.scalars(self.select(Preview).where(Preview.subject_id == subject_id)).all()

    def jobs_of_subject(self, subject_id: str) -> Sequence[Job]:
        return self.session.scalars(self.select(Job).where(Job.subject_id == subject_id)).all()

    def job(self, job_id: str) -> Job | None:
        """One of the tenant's jobs (the same question `OpsRepository.job` answers across tenants)."""
        return self.get(Job, job_id)

    # --- quotas -------------------------------------------------------------------------------
    def active_jobs(self, kind: str) -> int:
        """The tenant's jobs of `kind` queued or running now."""
        return self.count(Job, Job.kind == kind, Job.status.in_(("queued", "running")))

    def active_previews_of_key(self, key_id: str) -> int:
        """Previews queued or running now that this key asked for."""
        return self.count(Preview, Preview.api_key_id == key_id, Preview.status.in_(("queued", "running")))

    # --- webhooks -----------------------------------------------------------------------------
    def exists_now(self, model: type[M], id_: str) -> bool:
        """Whether the tenant's row exists at this moment, read in a transaction of its own: this
        session's may be failed (until rolled back) or still see a row a deletion has committed away
        since (SQLite's snapshot, PostgreSQL's repeatable reads)."""
        with Session(self.session.get_bind()) as fresh:
            found = fresh.scalar(
                select(model.id).where(model.id == id_, model.tenant_id == self.tenant_id)  # type: ignore[attr-defined]
            )
            return found is not None

    def webhook(self) -> Webhook | None:
        """The tenant's one webhook endpoint, if it set one."""
        return self.session.scalars(self.select(Webhook)).first()

    def pending_deliveries(self) -> int:
        """How many of the tenant's webhook deliveries are not delivered or failed yet."""
        return self.count(WebhookDelivery, WebhookDelivery.status == "pending")


@cache
def key_with_row(model: type[Base]) -> Select[Any]:
    """A presented key (bind `key_hash`; core.accounts.ACTIVE_KEY's columns) and, beside it, the
    row of `model` with id `id` *of the key's tenant* (all None when there is none): a status read's
    two lookups in one round trip. No row at all: the key is unknown or revoked."""
    table = model.__table__
    columns = table.c  # type: ignore[attr-defined]
    joined = ApiKey.__table__.outerjoin(
        table, and_(columns.tenant_id == ApiKey.tenant_id, columns.id == bindparam("id"))
    )
    return select(*KEY_COLUMNS, table).select_from(joined).where(*KEY_MATCHES)


def _aware(moment: datetime) -> datetime:
    """SQLite hands aggregates back without their zone; every time here is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class OpsRepository:
    """Reads across tenants, for ops keys, the reconciler and the CORS preflight only."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def job(self, job_id: str) -> Job | None:
        return self.session.get(Job, job_id)

    def expired_jobs(self, now: datetime) -> Sequence[Job]:
        """Running jobs whose lease ran out (their worker died), locked for this reconciler pass."""
        return self.session.scalars(
            select(Job)
            .where(Job.status == "running", Job.lease_expires_at < now)
            .with_for_update(skip_locked=True)
        ).all()

    def fairest_queued_job(self, kind: str) -> str | None:
        """The queued job of `kind` to run next, fairly across tenants: the tenant with the fewest
        jobs of this kind running, then the one served least recently (never: first), then the one
        waiting longest; and that tenant's oldest queued job. Ids are time-ordered."""
        waiting = dict(
            self.session.execute(
                select(Job.tenant_id, func.min(Job.id))
                .where(Job.kind == kind, Job.status == "queued", Job.cancel_requested.is_(False))
                .group_by(Job.tenant_id)
            ).all()
        )
        if not waiting:
            return None
        served = {
            tenant: (int(running or 0), last)
            for tenant, running, last in self.session.execute(
                select(
                    Job.tenant_id,
                    func.sum(case((Job.status == "running", 1), else_=0)),
                    func.max(Job.started_at),
                )
                .where(Job.kind == kind, Job.tenant_id.in_(list(waiting)), Job.started_at.is_not(None))
                .group_by(Job.tenant_id)
            ).all()
        }
        never = datetime.min.replace(tzinfo=UTC)

        def turn(tenant: str) -> tuple[int, datetime, str]:
            running, last = served.get(tenant, (0, None))
            return running, _aware(last) if last is not None else never, waiting[tenant]

        return waiting[min(waiting, key=turn)]

    def queued_jobs(self) -> Sequence[Job]:
        return self.session.scalars(
            select(Job).where(Job.status == "queued", Job.cancel_requested.is_(False))
        ).all()

    def subjects_in_training(self, subject_ids: Sequence[str]) -> set[str]:
        """Those of `subject_ids` with a training queued or running (core.job_state.ACTIVE)."""
        active = Job.status.in_(("queued", "running"))
        stmt = select(Job.subject_id).where(Job.kind == "train", active, Job.subject_id.in_(subject_ids))
        return set(self.session.scalars(stmt))

    def delivery(self, delivery_id: str) -> WebhookDelivery | None:
        return self.session.get(WebhookDelivery, delivery_id)

    def publishable_origins(self) -> set[str]:
        """Every origin listed on an active publishable key (CORS preflights carry no key)."""
        rows = self.session.scalars(
            select(ApiKey.origins).where(ApiKey.kind == "publishable", ApiKey.revoked_at.is_(None))
        ).all()
        return {origin for origins in rows for origin in origins or ()}

    def stalled_deliveries(self, due_before: datetime) -> Sequence[str]:
        """Ids of pending webhook deliveries whose retry time is long past: their message was lost."""
        return self.session.scalars(
            select(WebhookDelivery.id).where(
                WebhookDelivery.status == "pending", WebhookDelivery.next_attempt_at < due_before
            )
        ).all()

    def pending_deliveries(self) -> int:
        """Webhook deliveries not yet delivered or failed, of every tenant."""
        stmt = select(func.count()).select_from(WebhookDelivery).where(WebhookDelivery.status == "pending")
        return int(self.session.scalar(stmt) or 0)

    def jobs(self, find: JobFilter, limit: int = 100) -> tuple[Sequence[Job], str | None]:
        """Newest first, a page of at most `limit` and the cursor of the next (ids are time-ordered)."""
        stmt = select(Job).where(*find.where()).order_by(Job.id.desc()).limit(limit + 1)
        rows = self.session.scalars(stmt).all()
        return rows[:limit], rows[limit - 1].id if len(rows) > limit else None

    def job_counts(self) -> dict[tuple[str, str], int]:
        rows = self.session.execute(select(Job.kind, Job.status, func.count()).group_by(Job.kind, Job.status))
        return {(kind, status): int(n) for kind, status, n in rows}

    def oldest_waiting(self) -> dict[str, datetime]:
        """Per kind, since when its longest-waiting queued job has waited: since it was made, or
        since its last start for one handed back or retried. Not since `enqueued_at`, which the
        reconciler's re-sends move on and would hide a stuck job."""
        since = case(
            (and_(Job.started_at.is_not(None), Job.started_at > Job.created_at), Job.started_at),
            else_=Job.created_at,
        )
        rows = self.session.execute(
            select(Job.kind, func.min(type_coerce(since, UTCDateTime())))
            .where(Job.status == "queued", Job.cancel_requested.is_(False))
            .group_by(Job.kind)
        )
        return {kind: _aware(moment) for kind, moment in rows if moment is not None}

    def usage(self, day_start: datetime) -> Sequence[Any]:
        """Per tenant with something counted: (tenant_id, name, created_today, queued_now,
        running_now, failed_today); `day_start` is midnight UTC."""
        created = func.sum(case((Job.created_at >= day_start, 1), else_=0))
        failed_today = and_(Job.status == "failed", Job.finished_at >= day_start)
        failed = func.sum(case((failed_today, 1), else_=0))
        queued = func.sum(case((Job.status == "queued", 1), else_=0))
        running = func.sum(case((Job.status == "running", 1), else_=0))
        # Only what a column counts makes a tenant listed: a job that ended today other than by
        # failing (succeeded, cancelled) counts nowhere, so it lists no one.
        busy = (Job.created_at >= day_start) | failed_today | Job.status.in_(ACTIVE)
        return self.session.execute(
            select(Job.tenant_id, Tenant.name, created, queued, running, failed)
            .join(Tenant, Tenant.id == Job.tenant_id)
            .where(busy)
            .group_by(Job.tenant_id, Tenant.name)
            .order_by(created.desc(), Job.tenant_id)
        ).all()

    def status_events(self, object_id: str, after: datetime, until: datetime | None) -> Sequence[Any]:
        """The status events (not progress) of a subject or preview in a time span, oldest first:
        (created_at, status, stage)."""
        stmt = (
            select(Event.created_at, Event.status, Event.stage)
            .where(Event.object_id == object_id, Event.kind == "status", Event.created_at >= after)
            .order_by(Event.id)
        )
        if until is not None:
            stmt = stmt.where(Event.created_at <= until)
        return self.session.execute(stmt).all()


ACTIVE = ("queued", "running")


@dataclass
class JobFilter:
    """What `GET /v1/ops/jobs` narrows to; None: any. `since` <= created_at < `until`."""

    status: str | None = None
    kind: str | None = None
    tenant_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    cursor: str | None = None

    def where(self) -> list[Any]:
        found: list[Any] = []
        for column, value in (
            (Job.status, self.status),
            (Job.kind, self.kind),
            (Job.tenant_id, self.tenant_id),
        ):
            if value is not None:
                found.append(column == value)
        if self.since is not None:
            found.append(Job.created_at >= self.since)
        if self.until is not None:
            found.append(Job.created_at < self.until)
        if self.cursor is not None:
            found.append(Job.id < self.cursor)
        return found


class IdempotencyRepository:
    """The Idempotency-Key records of one API key (keys are per API key, not per tenant: ops keys
    belong to no tenant and use them too)."""

    def __init__(self, session: Session, api_key_id: str) -> None:
        self.session = session
        self.api_key_id = api_key_id

    def find(self, key: str) -> IdempotencyRecord | None:
        return self.session.scalars(
            select(IdempotencyRecord).where(
                IdempotencyRecord.api_key_id == self.api_key_id, IdempotencyRecord.key == key
            )
        ).first()

    def add(self, record: IdempotencyRecord) -> None:
        if record.api_key_id != self.api_key_id:
            raise ValueError(f"record of key {record.api_key_id} given to key {self.api_key_id}")
        self.session.add(record)

    def delete(self, record: IdempotencyRecord) -> None:
        self.session.delete(record)

    def delete_id(self, record_id: str) -> None:
        """Delete by id, without loading the row (the session may have forgotten it by rollback)."""
        self.session.execute(
            delete(IdempotencyRecord).where(
                IdempotencyRecord.id == record_id, IdempotencyRecord.api_key_id == self.api_key_id
            )
        )

    def delete_expired(self, now: datetime) -> None:
        """Every key's expired records: the sweep runs as any key writes a new one."""
        self.session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= now))
