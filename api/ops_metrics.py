"""Ops gauges for Prometheus, read from the database when `/metrics` is scraped: jobs waiting per
queue and the age of the oldest, live workers per queue, pending webhook deliveries.

They are gauges of shared state (every API replica reports the same numbers), computed at scrape
time rather than kept in process memory, so a replica that just started reports the truth at once.
The numbers come from the same repository reads as `/v1/ops/queues` and `/v1/ops/workers`.

prometheus_client's default registry, which `/metrics` serves (api.routes.health), refuses a
second collector with the same names; so one collector is registered once per process and reads
the app installed last (one app per process in production; the latest test app in tests).
"""

from __future__ import annotations

import logging
import threading
import time
import weakref
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from api.services.ops import JOB_KINDS
from core.clock import utcnow
from core.queue import QUEUES, ping_workers
from core.repository import OpsRepository, WorkerSeen

log = logging.getLogger("roomfit.api")

# Celery's ping waits its whole timeout for late answers: keep a scrape short, and ask at most this
# often (Prometheus scrapes every 15-30 s; several replicas and Prometheus servers multiply that).
PING_TIMEOUT_MAX = 0.5
PING_CACHE_SECONDS = 10.0
# Deliveries are pending until delivered or failed; every pending one has a `next_attempt_at`
# (core.webhooks.new_delivery), so "due before the far future" is all of them.
_FAR_FUTURE = timedelta(days=365 * 100)


@dataclass
class OpsSnapshot:
    """What one scrape read: per-queue numbers and the webhook backlog."""

    depth: dict[str, int]
    oldest_seconds: dict[str, float]
    workers: dict[str, int]
    webhook_pending: int


@dataclass
class _PingCache:
    at: float = float("-inf")
    nodes: dict[str, Any] | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


def _since(moment: datetime, now: datetime) -> float:
    # SQLite hands datetimes back without their zone; every stored time is UTC.
    aware = moment if moment.tzinfo is not None else moment.replace(tzinfo=now.tzinfo)
    return max(0.0, (now - aware).total_seconds())


def _host_queues_pinged(nodes: Iterable[str]) -> set[tuple[str, str]]:
    """(host, queue) of each node answering the ping: `roomfit worker` names a node
    `<queue>-<queue>@<host>` (cli.main), embedded mode `<queue>-<pid>@<host>` (cli.embedded)."""
    found = set()
    for node in nodes:
        prefix, _, host = node.partition("@")
        found |= {(host, q) for q in prefix.split("-") if q in QUEUES}
    return found


def _host_queues_seen(seen: dict[str, WorkerSeen]) -> set[tuple[str, str]]:
    """(host, kind) of each process seen in job heartbeats (`jobs.worker` is `<host>:<pid>`)."""
    return {(name.rpartition(":")[0] or name, kind) for name, info in seen.items() for kind in info.kinds}


class OpsCollector(Collector):
    """Reads the latest installed app's database at each collect; never raises."""

    def __init__(self) -> None:
        self._apps: list[weakref.ref[FastAPI]] = []
        self._ping = _PingCache()

    def add(self, app: FastAPI) -> None:
        self._apps = [ref for ref in self._apps if ref() is not None and ref() is not app]
        self._apps.append(weakref.ref(app))

    def _app(self) -> FastAPI | None:
        alive = [app for ref in self._apps if (app := ref()) is not None]
        return alive[-1] if alive else None

    def _pinged(self, app: FastAPI) -> dict[str, Any] | None:
        """Celery's ping answer, at most PING_CACHE_SECONDS old; one scrape asks, the others wait
        for it rather than each asking the broker."""
        cache = self._ping
        with cache.lock:
            if time.monotonic() - cache.at >= PING_CACHE_SECONDS:
                timeout = min(float(app.state.inspect_timeout), PING_TIMEOUT_MAX)
                cache.nodes = ping_workers(app.state.celery, timeout)
                cache.at = time.monotonic()
            return cache.nodes

    def snapshot(self, app: FastAPI) -> OpsSnapshot:
        now = utcnow()
        live_since = now - timedelta(seconds=app.state.settings.lease_seconds)
        with app.state.sessions() as session:
            repo = OpsRepository(session)
            counts = repo.job_counts()
            queued = repo.queued_jobs()
            seen = repo.workers_seen(live_since)
            pending = len(repo.stalled_deliveries(now + _FAR_FUTURE))
        oldest = dict.fromkeys(JOB_KINDS, 0.0)
        for job in queued:
            # Waiting since it was created, or since it was last started (handed back, retried);
            # not since `enqueued_at`, which the reconciler's re-sends move on and would hide a
            # stuck job.
            waited = min(_since(m, now) for m in (job.created_at, job.started_at) if m is not None)
            oldest[job.kind] = max(oldest.get(job.kind, 0.0), waited)
        live = _host_queues_seen(seen) | _host_queues_pinged(self._pinged(app) or {})
        return OpsSnapshot(
            depth={kind: counts.get((kind, "queued"), 0) for kind in JOB_KINDS},
            oldest_seconds=oldest,
            workers={q: len({host for host, queue in live if queue == q}) for q in QUEUES},
            webhook_pending=pending,
        )

    def collect(self) -> Iterator[Metric]:
        app = self._app()
        up = GaugeMetricFamily("roomfit_ops_metrics_up", "1 when the ops gauges could be read")
        try:
            snap = self.snapshot(app) if app is not None else None
        except Exception as exc:  # a scrape must answer even with the database down: gauges absent
            log.warning("ops metrics unavailable: %s: %s", type(exc).__name__, exc)
            snap = None
        up.add_metric([], 0.0 if snap is None else 1.0)
        yield up
        if snap is None:
            return
        per_queue = (
            ("roomfit_queue_depth", "Jobs queued, per queue", snap.depth),
            ("roomfit_queue_oldest_seconds", "Age of the oldest queued job (0: none)", snap.oldest_seconds),
            ("roomfit_workers", "Live workers (job heartbeat or Celery ping), per queue", snap.workers),
        )
        for name, doc, values in per_queue:
            family = GaugeMetricFamily(name, doc, labels=["queue"])
            for queue, value in values.items():
                family.add_metric([queue], float(value))
            yield family
        yield GaugeMetricFamily(
            "roomfit_webhook_deliveries_pending",
            "Webhook deliveries not yet delivered or failed",
            value=float(snap.webhook_pending),
        )

    def describe(self) -> Iterator[Metric]:
        # Names only, so registering never runs a query (prometheus_client calls collect otherwise).
        yield GaugeMetricFamily("roomfit_ops_metrics_up", "")
        for name in ("roomfit_queue_depth", "roomfit_queue_oldest_seconds", "roomfit_workers"):
            yield GaugeMetricFamily(name, "", labels=["queue"])
        yield GaugeMetricFamily("roomfit_webhook_deliveries_pending", "")


_COLLECTOR = OpsCollector()
_registered = False
_register_lock = threading.Lock()


def install_ops_metrics(app: FastAPI) -> None:
    """Serve the ops gauges from `app`'s database on `/metrics`. Safe to call again, and for
    another app (that one is then read)."""
    global _registered
    with _register_lock:
        _COLLECTOR.add(app)
        if not _registered:
            REGISTRY.register(_COLLECTOR)
            _registered = True
