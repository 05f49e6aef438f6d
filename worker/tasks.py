"""Celery tasks. Each takes a job (or delivery) id, reads everything else from the database, and is
idempotent by that id: `core.job_state.claim` lets exactly one run do the work.
"""

from __future__ import annotations

import logging

from worker.celery_app import celery_app
from worker.job_runner import TRANSIENT_ERRORS, run_job
from worker.runtime import get_runtime

log = logging.getLogger("roomfit.worker")

# Declared retries (Celery's autoretry) for errors that pass: a blob store or database blip.
RETRY = {
    "autoretry_for": TRANSIENT_ERRORS,
    "retry_backoff": 2,
    "retry_backoff_max": 120,
    "retry_jitter": True,
    "max_retries": 8,
}


@celery_app.task(name="roomfit.train_subject", **RETRY)
def train_subject(job_id: str) -> str:
    from worker.train_job import train_subject_work

    return run_job(get_runtime(), job_id, train_subject_work, kind="train")


@celery_app.task(name="roomfit.render_preview", **RETRY)
def render_preview(job_id: str) -> str:
    from worker.preview_job import render_previews

    # one message may paint several queued previews in one batch (worker.preview_job)
    return ",".join(render_previews(get_runtime(), job_id))


@celery_app.task(name="roomfit.deliver_webhook", bind=True, max_retries=None)
def deliver_webhook(self, delivery_id: str) -> str:  # type: ignore[no-untyped-def]
    from core.repository import OpsRepository
    from worker.events import deliver

    runtime = get_runtime()
    with runtime.session() as session:
        outcome = deliver(session, delivery_id)
        if outcome == "retry":
            row = OpsRepository(session).delivery(delivery_id)
            assert row is not None and row.next_attempt_at is not None
            raise self.retry(eta=row.next_attempt_at)
    return outcome
