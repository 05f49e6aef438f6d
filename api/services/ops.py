"""What ops staff see: the queues (the database's counts beside the broker's lengths), the workers
(from their heartbeats), a job's timeline and each tenant's usage today."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta

from celery import Celery

from api.ops_schemas import (
    AdapterCacheOut,
    GpuOut,
    OpsJobOut,
    QueueOut,
    QueuesOut,
    TenantUsageOut,
    TimelineEntry,
    TimelineEvent,
    UsageOut,
    WorkerOut,
    WorkersOut,
)
from api.schemas import JobOut
from core import heartbeats
from core.queue import queue_lengths
from core.repository import OpsRepository
from core.tables import Job

JOB_KINDS = ("train", "preview")
# A subject's or preview's statuses (core.events) that end a job's run, and the one that waits.
FINISHED = ("ready", "succeeded", "failed", "cancelled")
# A job's creation and its object's first event are written in one flush, the event a moment first.
_SAME_FLUSH = timedelta(seconds=1)


def waited(oldest: dict[str, datetime], now: datetime) -> dict[str, float]:
    """Seconds each kind's longest-waiting job has waited (kinds with none waiting left out)."""
    return {kind: max(0.0, (now - since).total_seconds()) for kind, since in oldest.items()}


def queues(ops: OpsRepository, celery: Celery, now: datetime) -> QueuesOut:
    counts = ops.job_counts()
    lengths = queue_lengths(celery) or {}
    oldest = ops.oldest_waiting()
    seconds = waited(oldest, now)
    live = heartbeats.live_per_queue(ops.session, now, JOB_KINDS)
    return QueuesOut(
        queues=[
            QueueOut(
                kind=kind,
                counts={status: n for (k, status), n in sorted(counts.items()) if k == kind},
                broker_length=lengths.get(kind),
                oldest_queued_at=oldest.get(kind),
                oldest_queued_seconds=seconds.get(kind),
                workers=live[kind],
            )
            for kind in JOB_KINDS
        ]
    )


def workers(ops: OpsRepository, now: datetime, forget_seconds: float) -> WorkersOut:
    """Workers with a heartbeat within `forget_seconds`; offline once past their window."""
    out = []
    for seen in heartbeats.listed(ops.session, now, forget_seconds):
        row = seen.row
        used, total = row.gpu_memory_used_bytes, row.gpu_memory_total_bytes
        out.append(
            WorkerOut(
                name=row.name,
                host=row.host,
                pid=row.pid,
                queues=list(row.queues or []),
                online=row.online_until >= now,
                current_jobs=seen.current_jobs,
                running_jobs=len(seen.current_jobs),
                base_model=row.base_model,
                adapter_cache=AdapterCacheOut(
                    hits=row.adapter_cache_hits,
                    misses=row.adapter_cache_misses,
                    swap_seconds_mean=row.adapter_swap_seconds_mean,
                ),
                gpu=GpuOut(used_bytes=used, total_bytes=total) if used is not None and total else None,
                started_at=row.started_at,
                last_heartbeat=row.last_seen,
            )
        )
    return WorkersOut(workers=out)


def job_with_timeline(ops: OpsRepository, job: Job) -> OpsJobOut:
    object_id = job.preview_id or job.subject_id
    found = (
        ops.status_events(
            object_id,
            job.created_at - _SAME_FLUSH,
            job.finished_at + _SAME_FLUSH if job.finished_at else None,
        )
        if object_id
        else []
    )
    return OpsJobOut(**JobOut.of(job).model_dump(), timeline=timeline(job, found))


def timeline(job: Job, found: Sequence[tuple[datetime, str, str | None]]) -> list[TimelineEntry]:
    """The job's life from its object's status events (created_at, status, stage): each return to
    `queued`, each claim (a new attempt), each stage, each end. Without events (kept a day) only the
    job's own times are known."""
    if not found:
        return list(_from_job_times(job))
    entries = [TimelineEntry(at=job.created_at, event="queued", status="queued", stage=None, attempt=0)]
    attempt, before = 0, ("queued", None)
    for at, status, stage in found:
        event: TimelineEvent
        if status == "queued":
            if before[0] == "queued":
                continue  # the creation's own event (entered above), or nothing new
            event = "queued"
        elif status in FINISHED:
            event = "finished"
        elif before[0] == "queued" or before[0] in FINISHED:
            attempt += 1
            event = "claimed"
        elif (status, stage) == before:
            continue
        else:
            event = "stage"
        entries.append(TimelineEntry(at=at, event=event, status=status, stage=stage, attempt=attempt))
        before = (status, stage)
    return entries


def _from_job_times(job: Job) -> Iterable[TimelineEntry]:
    yield TimelineEntry(at=job.created_at, event="queued", status="queued", stage=None, attempt=0)
    if job.started_at is not None:
        yield TimelineEntry(
            at=job.started_at, event="claimed", status="running", stage=None, attempt=max(job.attempts, 1)
        )
    if job.finished_at is not None:
        yield TimelineEntry(
            at=job.finished_at, event="finished", status=job.status, stage=job.stage, attempt=job.attempts
        )


def usage(ops: OpsRepository, now: datetime) -> UsageOut:
    day_start = now.replace(hour=0, minute=0, second=0, microsecond=0)
    return UsageOut(
        day=day_start.date(),
        tenants=[
            TenantUsageOut(
                tenant_id=tenant_id,
                name=name,
                created_today=int(created or 0),
                queued_now=int(queued or 0),
                running_now=int(running or 0),
                failed_today=int(failed or 0),
            )
            for tenant_id, name, created, queued, running, failed in ops.usage(day_start)
        ],
    )
