"""Prometheus metrics of a worker process, served on its own `/metrics` port.

`ROOMFIT_WORKER_METRICS_PORT` (unset or 0: off) turns it on; `ROOMFIT_WORKER_METRICS_HOST` is the
address it binds (default 0.0.0.0). Both are settings (`core.settings`), read by `worker.startup`,
which calls `serve` with them; only a worker uses them.

Mode: one registry per process (prometheus_client's default), NOT the multiprocess mode. `roomfit
worker` runs Celery's solo pool for train and preview (the model lives in the process) and the threads
pool for webhooks and default (cli/main.py): every task runs in the process that called
`serve`, so its counts are in that process's registry, and nothing forks a child that would
count elsewhere. The multiprocess mode (PROMETHEUS_MULTIPROC_DIR: a file per pid, summed at scrape)
exists for prefork pools and gunicorn; here it would only add files and drop the process_* metrics.
A prefork pool would need it: the children's counts would never reach this server.

Several worker processes: each serves its own port, Prometheus scrapes each as a target and the rules
sum across them (`sum by (kind, status) (rate(roomfit_jobs_total[5m]))`). A second process given the
same port on one machine (`roomfit up` passes one environment to its three workers) logs a warning
and runs without metrics rather than not at all.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime

from prometheus_client import Counter, Histogram, start_http_server

log = logging.getLogger("roomfit.worker")

# How a job ended, as counted: the outcomes where this worker finished with it. "lease_lost" (another
# worker finishes it) and "retrying" (it runs again) are not ends, so they are not counted.
FINISHED = ("succeeded", "failed", "cancelled", "handed_back")

# Buckets from a tiny preview (tens of ms) to a long training (hours).
_JOB_BUCKETS = (0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600, 7200, 14400)
_SWAP_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5)
_STEP_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32)

JOBS = Counter(
    "roomfit_jobs_total", "Jobs finished by this worker, by kind and how they ended", ["kind", "status"]
)
JOB_SECONDS = Histogram(
    "roomfit_job_duration_seconds", "From a job's claim to its end", ["kind"], buckets=_JOB_BUCKETS
)
QUEUE_WAIT = Histogram(
    "roomfit_queue_wait_seconds",
    "From a job's creation (a later attempt: its last enqueue) to its claim",
    ["kind"],
    buckets=_JOB_BUCKETS,
)
ADAPTER_CACHE = Counter(
    "roomfit_adapter_cache_total",
    "Adapters a painted batch needed: in this process's memory (hit) or read from disk or blob store (miss)",
    ["result"],
)
ADAPTER_SWAP = Histogram(
    "roomfit_adapter_swap_seconds",
    "Per painted batch: time spent putting its adapters (or full fine-tunes) in place",
    buckets=_SWAP_BUCKETS,
)
TRAIN_STEPS = Counter("roomfit_training_steps_total", "Training steps done by this worker")
TRAIN_STEP_SECONDS = Histogram(
    "roomfit_training_step_seconds", "Time of one training step", buckets=_STEP_BUCKETS
)
PREVIEW_BATCH = Histogram(
    "roomfit_preview_batch_size", "Previews painted in one UNet batch", buckets=(1, 2, 4, 8, 16)
)

PREVIEWS_EXPIRED = Counter(
    "roomfit_previews_expired_total",
    "Previews this worker's reconciler deleted, room photo and all, past ROOMFIT_PREVIEW_RETENTION_DAYS",
)
PREVIEW_EXPIRY_ERRORS = Counter(
    "roomfit_preview_expiry_errors_total",
    "Expired previews whose blobs the blob store would not delete (kept for the next pass)",
)
HISTORY_EXPIRED = Counter(
    "roomfit_history_rows_expired_total",
    "Job rows of deleted previews and subjects, and settled webhook deliveries, this worker's reconciler "
    "deleted past ROOMFIT_PREVIEW_RETENTION_DAYS",
    ["table"],
)


def serve(port: int, host: str) -> int | None:
    """Start this process's /metrics server when `ROOMFIT_WORKER_METRICS_PORT` says so; the port, or
    None when off or the port is taken (logged: metrics are not worth a worker that will not start)."""
    if port == 0:
        return None
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("worker metrics not served on %s:%d: %s", host, port, exc)
        return None
    log.info("worker metrics on http://%s:%d/metrics", host, port)
    return port


def job_claimed(
    kind: str,
    created_at: datetime,
    enqueued_at: datetime | None,
    claimed_at: datetime | None,
    ran_before: bool,
) -> None:
    """A first run waited since the row was made (a broker outage included: the shop waited too);
    a job that ran before since it was last sent (hand back, or the reconciler after its worker
    died), not through its earlier run. Not by attempt: a hand-back does not count one."""
    if claimed_at is None:
        return
    since = enqueued_at if ran_before and enqueued_at is not None else created_at
    QUEUE_WAIT.labels(kind).observe(max(0.0, (claimed_at - since).total_seconds()))


def job_ended(kind: str, outcome: str, claimed: float) -> None:
    """A job's end as `job_runner` names it; `claimed` is `time.monotonic()` at its claim."""
    if outcome not in FINISHED:
        return
    JOBS.labels(kind, outcome).inc()
    JOB_SECONDS.labels(kind).observe(time.monotonic() - claimed)


def batch_painted(size: int, adapters: int, loads: int, swap_seconds: float) -> None:
    """One UNet batch of `size` previews needing `adapters` distinct adapters, of which `loads` were
    read from disk or the blob store (the cache's miss count over the paint): each adapter is one hit
    or one miss, however many previews of the batch use it."""
    PREVIEW_BATCH.observe(size)
    misses = min(max(loads, 0), adapters)
    if misses:
        ADAPTER_CACHE.labels("miss").inc(misses)
    if adapters - misses:
        ADAPTER_CACHE.labels("hit").inc(adapters - misses)
    ADAPTER_SWAP.observe(max(0.0, swap_seconds))


def previews_swept(deleted: int, kept: int) -> None:
    """One retention pass (core.retention): what it deleted, and what it had to keep."""
    if deleted:
        PREVIEWS_EXPIRED.inc(deleted)
    if kept:
        PREVIEW_EXPIRY_ERRORS.inc(kept)


def history_swept(jobs: int, deliveries: int) -> None:
    """One history pass (core.retention.forget_old_history): the rows it deleted, per table."""
    for table, count in (("jobs", jobs), ("webhook_deliveries", deliveries)):
        if count:
            HISTORY_EXPIRED.labels(table=table).inc(count)


class StepClock:
    """Times a training's steps from its progress callbacks (one per step). The first step of a run
    is timed from `start()` (annotation done), so it includes the optimizer's setup."""

    def __init__(self) -> None:
        self._last = time.monotonic()

    def start(self) -> None:
        self._last = time.monotonic()

    def step_done(self) -> None:
        now = time.monotonic()
        TRAIN_STEPS.inc()
        TRAIN_STEP_SECONDS.observe(now - self._last)
        self._last = now
