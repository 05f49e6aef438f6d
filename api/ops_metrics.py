"""Ops gauges for Prometheus, read from the database when `/metrics` is scraped: jobs waiting per
queue and the age of the oldest, live workers per queue, pending webhook deliveries.

They are gauges of shared state (every API replica reports the same numbers), computed at scrape
time rather than kept in process memory, so a replica that just started reports the truth at once.
Each is one aggregate query (counts, minimum, heartbeat rows), never a load of the waiting jobs,
so a scrape costs the same with a million jobs queued; the numbers are those of `/v1/ops/queues`.

prometheus_client's default registry, which `/metrics` serves (api.routes.health), refuses a
second collector with the same names; so one collector is registered once per process and reads
the app installed last (one app per process in production; the latest test app in tests).
"""

from __future__ import annotations

import logging
import threading
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

from fastapi import FastAPI
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import REGISTRY, Collector

from api.services.ops import JOB_KINDS, waited
from core import heartbeats
from core.clock import utcnow
from core.queue import QUEUES
from core.repository import OpsRepository

log = logging.getLogger("roomfit.api")


@dataclass
class OpsSnapshot:
    """What one scrape read: per-queue numbers and the webhook backlog."""

    depth: dict[str, int]
    oldest_seconds: dict[str, float]
    workers: dict[str, int]
    webhook_pending: int


class OpsCollector(Collector):
    """Reads the latest installed app's database at each collect; never raises."""

    def __init__(self) -> None:
        self._apps: list[weakref.ref[FastAPI]] = []

    def add(self, app: FastAPI) -> None:
        self._apps = [ref for ref in self._apps if ref() is not None and ref() is not app]
        self._apps.append(weakref.ref(app))

    def _app(self) -> FastAPI | None:
        alive = [app for ref in self._apps if (app := ref()) is not None]
        return alive[-1] if alive else None

    def snapshot(self, app: FastAPI) -> OpsSnapshot:
        now = utcnow()
        with app.state.sessions() as session:
            repo = OpsRepository(session)
            counts = repo.job_counts()
            oldest = repo.oldest_waiting()
            live = heartbeats.live_per_queue(session, now, QUEUES)
            pending = repo.pending_deliveries()
        return OpsSnapshot(
            depth={kind: counts.get((kind, "queued"), 0) for kind in JOB_KINDS},
            oldest_seconds={kind: waited(oldest, now).get(kind, 0.0) for kind in JOB_KINDS},
            workers=live,
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
            ("roomfit_workers", "Online workers (heartbeat within its window), per queue", snap.workers),
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
