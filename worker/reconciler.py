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
    # The jobs first, in a transaction of their own: no housekeeping below, failing (a lock timeout,
    # a blob store down, a bug), may keep a lost job from being sent again.
    with runtime.session() as session:
        requeue_after = timedelta(seconds=2 * settings.lease_seconds)
        resent = dispatch.reconcile(
            session,
            enqueue=sender.job,
            # a message a consumer took longer ago than that and never acknowledged: its consumer
            # was killed, and Redis hides it for the visibility timeout (core.queue.job_ids_in_broker)
            in_broker=job_ids_in_broker(sender.app, unacked_within=requeue_after.total_seconds()),
            max_attempts=settings.max_attempts,
            requeue_after=requeue_after,
        )
        emit_given_up(session)
    # Then each sweep on its own: one that fails is logged and the others still run.
    _sweep("webhook deliveries", runtime, lambda s: _resend_stalled_deliveries(s, sender, requeue_after))
    _sweep("events", runtime, lambda s: events.prune(s))  # what no reconnect will ask for (KEEP)
    forget = settings.worker_forget_seconds
    _sweep("worker rows", runtime, lambda s: heartbeats.prune(s, utcnow(), forget))  # gone for good
    _sweep("previews", runtime, lambda s: _forget_old_previews(runtime, s))
    if time.monotonic() >= runtime.history_sweep_due:
        # Not every pass: the rows it keeps (the trainings of subjects that still exist) are read
        # again each time, and a sweep of something kept for days can be minutes late.
        runtime.history_sweep_due = time.monotonic() + HISTORY_SWEEP_SECONDS
        _sweep("history", runtime, lambda s: _forget_old_history(runtime, s))
    _sweep("checkpoints", runtime, lambda s: forget_stale_checkpoints(s, settings.var_dir))
    return resent


def _sweep(what: str, runtime: Runtime, step: Callable[[Session], object]) -> None:
    """One housekeeping step in a session of its own, committed; a failure is logged, not raised."""
    try:
        with runtime.session() as session:
            step(session)
            session.commit()
    except Exception:  # the database or blob store is down, or a bug: the next pass tries again
        log.exception("reconciler: sweeping %s failed", what)


def _forget_old_previews(runtime: Runtime, session: Session) -> None:
    days = runtime.settings.preview_retention_days
    swept = retention.forget_old_previews(session, runtime.blobs, utcnow(), days)
    metrics.previews_swept(swept.deleted, swept.kept)


def _forget_old_history(runtime: Runtime, session: Session) -> None:
    history = retention.forget_old_history(session, utcnow(), runtime.settings.preview_retention_days)
    metrics.history_swept(history.jobs, history.deliveries)


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
