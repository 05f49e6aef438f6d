"""The reconciler loop: every worker process runs one, so no job waits on a single scheduler.

Running it in several processes at once is safe: `core.dispatch.reconcile` only re-sends ids, and
a duplicate message is dropped by `claim`. Losing a worker (lease expiry) or the broker's data
(queued jobs missing from it) therefore loses no job. Each pass also deletes old events, the
heartbeat rows of workers gone longer than `ROOMFIT_WORKER_FORGET_SECONDS`, and previews past
`ROOMFIT_PREVIEW_RETENTION_DAYS` with the job rows and webhook deliveries left of them (core.retention),
and this machine's training checkpoints that no job will resume (worker.checkpoint_sweep).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import timedelta

from celery import Celery
from sqlalchemy.orm import Session

from core import dispatch, events, heartbeats, retention
from core.clock import utcnow
from core.queue import enqueue, enqueue_delivery, job_ids_in_broker
from core.repository import OpsRepository
from worker import metrics
from worker.checkpoint_sweep import forget_stale_checkpoints
from worker.job_runner import emit_given_up
from worker.runtime import Runtime

log = logging.getLogger("roomfit.reconciler")
HISTORY_SWEEP_SECONDS = 600.0  # how often each worker process deletes old history (core.retention)


def reconcile_once(runtime: Runtime) -> list[str]:
    settings = runtime.settings
    sender = _Sender(runtime.celery)
    with runtime.session() as session:
        events.prune(session)  # what no reconnect will ask for any more (core.events.KEEP)
        heartbeats.prune(session, utcnow(), settings.worker_forget_seconds)  # workers gone for good
        session.commit()
        _resend_stalled_deliveries(session, sender, timedelta(seconds=2 * settings.lease_seconds))
        resent = dispatch.reconcile(
            session,
            enqueue=sender.job,
            in_broker=job_ids_in_broker(sender.app),
            max_attempts=settings.max_attempts,
            requeue_after=timedelta(seconds=2 * settings.lease_seconds),
        )
        emit_given_up(session)
    # after the jobs: a blob store that is down must not keep a lost job from being re-sent
    days = settings.preview_retention_days
    with runtime.session() as session:
        swept = retention.forget_old_previews(session, runtime.blobs, utcnow(), days)
    metrics.previews_swept(swept.deleted, swept.kept)
    if time.monotonic() >= runtime.history_sweep_due:
        # Not every pass: the rows it keeps (the trainings of subjects that still exist) are read
        # again each time, and a sweep of something kept for days can be minutes late.
        runtime.history_sweep_due = time.monotonic() + HISTORY_SWEEP_SECONDS
        with runtime.session() as session:
            history = retention.forget_old_history(session, utcnow(), days)
        metrics.history_swept(history.jobs, history.deliveries)
    with runtime.session() as session:
        forget_stale_checkpoints(session, settings.var_dir)
    return resent


def start_reconciler(runtime: Runtime, interval: float | None = None) -> threading.Event:
    """Start the loop in a daemon thread; set the returned event to stop it."""
    stop = threading.Event()
    period = interval or max(2.0, runtime.settings.lease_seconds / 2)

    def loop() -> None:
        while not stop.wait(period):
            try:
                reconcile_once(runtime)
            except Exception:  # the database or broker is down: try again next period
                log.exception("reconciler pass failed")

    threading.Thread(target=loop, name="reconciler", daemon=True).start()
    return stop


class _Sender:
    """The pass's messages. The first the broker refuses (it is down) is logged and the rest of this
    pass sends nothing more, rather than wait out each refusal, but goes on: the jobs it gives up are
    failed and get their failure webhooks (`emit_given_up`), the sweeps run, and the next pass sends
    what this one could not (a lost job's lease stays expired or its id out of the broker; a stalled
    delivery stays pending)."""

    def __init__(self, app: Celery) -> None:
        self.app = app
        self.refused = False

    def send(self, what: str, message_id: str, send: Callable[[], None]) -> bool:
        if self.refused:
            return False
        try:
            send()
        except Exception:
            self.refused = True
            log.exception("reconciler: the broker refused %s %s; the next pass sends it", what, message_id)
            return False
        return True

    def job(self, kind: str, job_id: str) -> None:
        self.send("job", job_id, lambda: enqueue(self.app, kind, job_id))


def _resend_stalled_deliveries(session: Session, sender: _Sender, grace: timedelta) -> None:
    """Webhook deliveries still pending well after their retry time lost their message: send again.
    A duplicate is harmless: `deliver` skips a delivery that is no longer pending."""
    for delivery_id in OpsRepository(session).stalled_deliveries(utcnow() - grace):
        if sender.send(
            "webhook delivery", delivery_id, lambda d=delivery_id: enqueue_delivery(sender.app, d)
        ):
            log.warning("reconciler: re-sent webhook delivery %s", delivery_id)
