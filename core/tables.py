"""Database tables (SQLAlchemy 2.0). Alembic migrations in `migrations/` are made from these.

Every table that belongs to a tenant has a non-null `tenant_id`; `core.repository` scopes every query
on it. Statuses are short strings (the values are the ones docs/api.md documents) rather than database
enums, so adding a status needs no enum migration on PostgreSQL.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, declared_attr, mapped_column, relationship

from core.clock import utcnow


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    SQLite has no timezone type and hands back naive datetimes; normalising here keeps comparisons
    (leases, expiry) correct in both ways to run.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is not None and value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        return value.astimezone(UTC) if value is not None else None

    def process_result_value(self, value: datetime | None, dialect: Any) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


# Stable constraint names, so migrations can drop and alter them on every backend.
NAMING = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map: ClassVar[dict[Any, Any]] = {
        datetime: UTCDateTime,
        dict[str, Any]: JSON,
        list[Any]: JSON,
    }


class Timestamps:
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(default=utcnow, onupdate=utcnow)


class TenantOwned:
    """A row of one tenant. The relationship is there so that the unit of work inserts a new tenant
    before its rows when both are added in one flush."""

    @declared_attr
    def tenant_id(cls) -> Mapped[str]:
        return mapped_column(String(40), ForeignKey("tenants.id", ondelete="CASCADE"), index=True)

    @declared_attr
    def tenant(cls) -> Mapped[Tenant]:
        return relationship("Tenant", lazy="raise_on_sql", viewonly=False)


class Tenant(Base):
    __tablename__ = "tenants"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)


class ApiKey(Base):
    """A key is stored as its SHA-256 only; `display` keeps the first characters for humans."""

    __tablename__ = "api_keys"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    # Ops keys belong to no tenant: they read every tenant's jobs.
    tenant_id: Mapped[str | None] = mapped_column(
        String(40), ForeignKey("tenants.id", ondelete="CASCADE"), index=True
    )
    kind: Mapped[str] = mapped_column(String(16))  # secret | publishable | ops
    key_hash: Mapped[str] = mapped_column(String(64), unique=True)
    display: Mapped[str] = mapped_column(String(16))
    origins: Mapped[list[Any]] = mapped_column(default=list)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    revoked_at: Mapped[datetime | None] = mapped_column(default=None)


class Subject(TenantOwned, Timestamps, Base):
    __tablename__ = "subjects"
    __table_args__ = (
        UniqueConstraint("tenant_id", "external_id", name="uq_subjects_tenant_external_id"),
        Index("ix_subjects_tenant_status", "tenant_id", "status"),
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    external_id: Mapped[str | None] = mapped_column(String(200), default=None)
    label: Mapped[str | None] = mapped_column(String(100), default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(32), default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    # The current adapter; versions are kept in the blob store under the subject's prefix.
    adapter_version: Mapped[int | None] = mapped_column(Integer, default=None)
    adapter_key: Mapped[str | None] = mapped_column(String(400), default=None)
    adapter_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    adapter_sha256: Mapped[str | None] = mapped_column(String(64), default=None)
    adapter_rank: Mapped[int | None] = mapped_column(Integer, default=None)
    adapter_base_model: Mapped[str | None] = mapped_column(String(300), default=None)

    photos: Mapped[list[SubjectPhoto]] = relationship(
        back_populates="subject", order_by="SubjectPhoto.index", cascade="all, delete-orphan"
    )


class SubjectPhoto(TenantOwned, Base):
    __tablename__ = "subject_photos"
    __table_args__ = (UniqueConstraint("subject_id", "index", name="uq_subject_photos_subject_index"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    index: Mapped[int] = mapped_column(Integer)
    blob_key: Mapped[str] = mapped_column(String(400))
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    box: Mapped[list[Any] | None] = mapped_column(JSON, default=None)  # [x0, y0, x1, y1]
    score: Mapped[float | None] = mapped_column(Float, default=None)
    label: Mapped[str | None] = mapped_column(String(100), default=None)
    source: Mapped[str | None] = mapped_column(String(16), default=None)  # given | detected
    unusable_reason: Mapped[str | None] = mapped_column(Text, default=None)

    subject: Mapped[Subject] = relationship(back_populates="photos")


class Job(TenantOwned, Timestamps, Base):
    """The truth about one piece of background work; the broker only carries this row's id."""

    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_status_lease", "status", "lease_expires_at"),
        Index("ix_jobs_tenant_created", "tenant_id", "created_at"),
        Index("ix_jobs_status_updated_at", "status", "updated_at"),  # core.retention's history sweep
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))  # train | preview
    subject_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    preview_id: Mapped[str | None] = mapped_column(String(40), default=None, index=True)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    stage: Mapped[str | None] = mapped_column(String(32), default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    worker: Mapped[str | None] = mapped_column(String(200), default=None)
    lease_expires_at: Mapped[datetime | None] = mapped_column(default=None)
    heartbeat_at: Mapped[datetime | None] = mapped_column(default=None)
    enqueued_at: Mapped[datetime | None] = mapped_column(default=None)
    started_at: Mapped[datetime | None] = mapped_column(default=None)
    finished_at: Mapped[datetime | None] = mapped_column(default=None)
    cancel_requested: Mapped[bool] = mapped_column(default=False)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    params: Mapped[dict[str, Any]] = mapped_column(default=dict)
    loss_points: Mapped[list[Any]] = mapped_column(default=list)  # [[step, loss], ...]
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)  # stage -> seconds


class Preview(TenantOwned, Timestamps, Base):
    __tablename__ = "previews"
    # what core.retention asks every reconciler pass: the oldest finished previews
    __table_args__ = (Index("ix_previews_status_updated_at", "status", "updated_at"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    subject_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("subjects.id", ondelete="CASCADE"), index=True
    )
    job_id: Mapped[str | None] = mapped_column(String(40), default=None)
    # The key that asked for it: a publishable key may read only the previews it made.
    api_key_id: Mapped[str | None] = mapped_column(String(40), default=None)
    status: Mapped[str] = mapped_column(String(16), default="queued")
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    seed: Mapped[int] = mapped_column(BigInteger)
    steps: Mapped[int | None] = mapped_column(Integer, default=None)
    guidance_scale: Mapped[float | None] = mapped_column(Float, default=None)
    # What the client asked for (auto | adapter | zero_shot) and what it was or will be painted with
    # (adapter | zero_shot: the worker fixes it when it paints, with the adapter's version; null for
    # zero-shot). Rows older than these columns were painted with an adapter (migration 0003).
    requested_mode: Mapped[str] = mapped_column(String(16), default="auto", server_default="adapter")
    mode: Mapped[str] = mapped_column(String(16), default="adapter", server_default="adapter")
    adapter_version: Mapped[int | None] = mapped_column(Integer, default=None)
    width: Mapped[int] = mapped_column(Integer)
    height: Mapped[int] = mapped_column(Integer)
    room_key: Mapped[str] = mapped_column(String(400))
    mask_key: Mapped[str] = mapped_column(String(400))
    result_key: Mapped[str | None] = mapped_column(String(400), default=None)
    error_code: Mapped[str | None] = mapped_column(String(64), default=None)
    error_message: Mapped[str | None] = mapped_column(Text, default=None)
    timings: Mapped[dict[str, Any]] = mapped_column(default=dict)


class Event(Base):
    """A change a client can be told of (status, stage or progress of a subject or a preview),
    written in the same transaction as the change (core.events): what `/events` streams send, in
    `id` order, and where a reconnect with `Last-Event-ID` resumes. Pruned after a day."""

    __tablename__ = "events"
    __table_args__ = (Index("ix_events_object_id_id", "object_id", "id"),)

    # SQLite numbers only an INTEGER PRIMARY KEY by itself.
    id: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"), primary_key=True)
    # sub_... or prv_...: ids are unique across tenants, and a stream is opened only after its
    # caller was shown the object (its tenant's, and for a publishable key, its own preview).
    object_id: Mapped[str] = mapped_column(String(40))
    kind: Mapped[str] = mapped_column(String(16))  # status | progress
    status: Mapped[str] = mapped_column(String(16))
    stage: Mapped[str | None] = mapped_column(String(32), default=None)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    created_at: Mapped[datetime] = mapped_column(default=utcnow, index=True)


class Worker(Base):
    """A worker process as its last heartbeat described it (worker.heartbeat): what `/v1/ops/workers`
    lists. Written only by the process itself; gone workers' rows are deleted by the reconciler."""

    __tablename__ = "workers"

    name: Mapped[str] = mapped_column(String(200), primary_key=True)  # <host>:<pid>, as jobs.worker
    host: Mapped[str] = mapped_column(String(200))
    pid: Mapped[int] = mapped_column(Integer)
    queues: Mapped[list[Any]] = mapped_column(default=list)
    base_model: Mapped[str | None] = mapped_column(String(300), default=None)
    adapter_cache_hits: Mapped[int] = mapped_column(BigInteger, default=0)
    adapter_cache_misses: Mapped[int] = mapped_column(BigInteger, default=0)
    adapter_swap_seconds_mean: Mapped[float | None] = mapped_column(Float, default=None)
    gpu_memory_used_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    gpu_memory_total_bytes: Mapped[int | None] = mapped_column(BigInteger, default=None)
    started_at: Mapped[datetime] = mapped_column(default=utcnow)
    last_seen: Mapped[datetime] = mapped_column(default=utcnow, index=True)
    # last_seen plus the writer's window (a few of its heartbeats): past it the worker is gone. Kept
    # per row so the API needs no copy of each worker's heartbeat setting.
    online_until: Mapped[datetime] = mapped_column(default=utcnow)


class Webhook(Timestamps, Base):
    """One endpoint per tenant. The signing secret must be readable to sign, so it is kept as is."""

    __tablename__ = "webhooks"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(
        String(40), ForeignKey("tenants.id", ondelete="CASCADE"), unique=True
    )
    url: Mapped[str] = mapped_column(String(2000))
    secret: Mapped[str] = mapped_column(String(100))


class WebhookDelivery(TenantOwned, Timestamps, Base):
    __tablename__ = "webhook_deliveries"
    __table_args__ = (
        Index("ix_webhook_deliveries_status_next", "status", "next_attempt_at"),
        Index("ix_webhook_deliveries_status_updated_at", "status", "updated_at"),  # core.retention
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    event: Mapped[str] = mapped_column(String(40))
    payload: Mapped[dict[str, Any]] = mapped_column(default=dict)
    status: Mapped[str] = mapped_column(String(16), default="pending")  # pending | delivered | failed
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(default=None)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)


class IdempotencyRecord(TenantOwned, Base):
    """The first answer to a POST with an Idempotency-Key, replayed for retries of the same body."""

    __tablename__ = "idempotency_records"
    __table_args__ = (UniqueConstraint("api_key_id", "key", name="uq_idempotency_records_key"),)

    # Ops keys belong to no tenant, and their POSTs (retry, cancel) take Idempotency-Key too.
    @declared_attr
    def tenant_id(cls) -> Mapped[str | None]:  # type: ignore[override]
        return mapped_column(
            String(40), ForeignKey("tenants.id", ondelete="CASCADE"), index=True, nullable=True
        )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    api_key_id: Mapped[str] = mapped_column(String(40))
    key: Mapped[str] = mapped_column(String(255))
    method: Mapped[str] = mapped_column(String(8))
    path: Mapped[str] = mapped_column(String(400))
    request_hash: Mapped[str] = mapped_column(String(64))
    status_code: Mapped[int | None] = mapped_column(Integer, default=None)
    response_body: Mapped[str | None] = mapped_column(Text, default=None)
    response_headers: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime] = mapped_column(default=utcnow)
    expires_at: Mapped[datetime] = mapped_column(index=True)


TENANT_TABLES: tuple[type[Base], ...] = (
    ApiKey,
    Subject,
    SubjectPhoto,
    Job,
    Preview,
    Webhook,
    WebhookDelivery,
    IdempotencyRecord,
)
"""Every table with a tenant_id: the isolation test walks this list, and a test checks it is whole."""
