"""What ops staff see: jobs per kind and status beside the broker's queues, and the workers."""

from __future__ import annotations

from datetime import timedelta

from celery import Celery

from api.schemas import QueueOut, QueuesOut, WorkerOut, WorkersOut
from core.clock import utcnow
from core.queue import ping_workers, queue_lengths
from core.repository import OpsRepository

# A worker that sent no job heartbeat for this long is not listed (unless it answers the ping).
WORKER_SEEN_WITHIN = timedelta(hours=1)
JOB_KINDS = ("train", "preview")


def queues(ops: OpsRepository, celery: Celery) -> QueuesOut:
    counts = ops.job_counts()
    lengths = queue_lengths(celery) or {}
    return QueuesOut(
        queues=[
            QueueOut(
                kind=kind,
                counts={status: n for (k, status), n in counts.items() if k == kind},
                broker_length=lengths.get(kind),
            )
            for kind in JOB_KINDS
        ]
    )


def workers(ops: OpsRepository, celery: Celery, ping_timeout: float) -> WorkersOut:
    """Workers answering Celery's ping now, and those seen in job heartbeats within the hour."""
    pinged = ping_workers(celery, ping_timeout)
    seen = ops.workers_seen(utcnow() - WORKER_SEEN_WITHIN)
    out = []
    for name in sorted(set(seen) | set(pinged or {})):
        info = seen.get(name)
        out.append(
            WorkerOut(
                name=name,
                online=None if pinged is None else name in pinged,
                running_jobs=info.running if info else 0,
                last_heartbeat=info.last_heartbeat if info else None,
                queues=sorted(info.kinds) if info else [],
            )
        )
    return WorkersOut(workers=out)
