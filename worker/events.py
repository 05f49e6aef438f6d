"""Webhook events: recorded as delivery rows in the job's transaction, then sent by a task.

The row is the truth (like jobs): a delivery whose message is lost is found by the reconciler. Each
POST carries `Roomfit-Signature: t=<unix>,v1=<hmac>` (core.webhooks.sign, shared with the API docs)
and is retried with exponential backoff until the shop answers 2xx or the attempts run out.
"""

from __future__ import annotations

import json
import logging
import random
import time
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session

from core import webhooks
from core.clock import utcnow
from core.repository import OpsRepository, TenantRepository
from core.tables import Preview, Subject

log = logging.getLogger("roomfit.webhooks")

MAX_DELIVERY_ATTEMPTS = 12  # with backoff capped at an hour: about half a day of retries
DELIVERY_TIMEOUT_SECONDS = 10.0


def subject_payload(subject: Subject) -> dict[str, Any]:
    return {
        "id": subject.id,
        "name": subject.name,
        "external_id": subject.external_id,
        "status": subject.status,
        "error": {"code": subject.error_code, "message": subject.error_message}
        if subject.error_code
        else None,
        "adapter": (
            {
                "bytes": subject.adapter_bytes,
                "sha256": subject.adapter_sha256,
                "rank": subject.adapter_rank,
                "base_model": subject.adapter_base_model,
            }
            if subject.adapter_key
            else None
        ),
    }


def preview_payload(preview: Preview) -> dict[str, Any]:
    return {
        "id": preview.id,
        "subject_id": preview.subject_id,
        "status": preview.status,
        "result_url": f"/v1/previews/{preview.id}/result" if preview.result_key else None,
        "error": {"code": preview.error_code, "message": preview.error_message}
        if preview.error_code
        else None,
    }


def emit_event(session: Session, tenant_id: str, event: str, data: dict[str, Any]) -> str | None:
    """Record a delivery for the tenant's webhook (if any), commit, and send its id to the queue."""
    if TenantRepository(session, tenant_id).webhook() is None:
        session.commit()
        return None
    delivery = webhooks.new_delivery(tenant_id, event, data)
    session.add(delivery)
    session.commit()
    from worker.celery_app import celery_app

    try:
        celery_app.send_task("roomfit.deliver_webhook", args=[delivery.id], queue="default")
    except Exception:  # the broker is down: the reconciler sends pending deliveries later
        log.exception("webhook delivery %s: could not enqueue", delivery.id)
    return delivery.id


def backoff_seconds(attempt: int) -> float:
    """Exponential with full jitter, capped at an hour."""
    return random.uniform(0, min(3600.0, 2.0**attempt))


def deliver(session: Session, delivery_id: str, client: httpx.Client | None = None) -> str:
    """Try one delivery; returns delivered | retry | failed | skipped."""
    delivery = OpsRepository(session).delivery(delivery_id)
    if delivery is None or delivery.status != "pending":
        return "skipped"
    hook = TenantRepository(session, delivery.tenant_id).webhook()
    if hook is None:
        webhooks.mark_failed(delivery, "the webhook was removed")
        session.commit()
        return "failed"
    body = json.dumps(delivery.payload, separators=(",", ":"), sort_keys=True)
    timestamp = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "Roomfit-Signature": webhooks.sign(hook.secret, timestamp, body),
        "User-Agent": "roomfit-webhooks/1",
    }
    delivery.attempts += 1
    error: str | None = None
    try:
        owned = client is None
        http = client or httpx.Client(timeout=DELIVERY_TIMEOUT_SECONDS, follow_redirects=False)
        try:
            response = http.post(hook.url, content=body.encode(), headers=headers)
        finally:
            if owned:
                http.close()
        if 200 <= response.status_code < 300:
            webhooks.mark_delivered(delivery)
            session.commit()
            return "delivered"
        error = f"HTTP {response.status_code}"
    except httpx.HTTPError as exc:
        error = f"{type(exc).__name__}: {exc}"
    if delivery.attempts >= MAX_DELIVERY_ATTEMPTS:
        webhooks.mark_failed(delivery, error)
        session.commit()
        return "failed"
    at = utcnow() + timedelta(seconds=backoff_seconds(delivery.attempts))
    webhooks.schedule_retry(delivery, error, at)
    session.commit()
    return "retry"
