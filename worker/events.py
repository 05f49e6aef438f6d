"""Webhook events: recorded as delivery rows in the job's transaction, then sent by a task.

The row is the truth (like jobs): a delivery whose message is lost is found by the reconciler. Each
POST carries `Roomfit-Signature: t=<unix>,v1=<hmac>` (core.webhooks.sign, shared with the API docs)
and is retried with exponential backoff until the shop answers 2xx or the attempts run out.

Deliveries run on their own queue (`webhooks`) and worker pool, never on a GPU worker, with short
timeouts: a slow receiver holds up only deliveries. Before each attempt the URL is checked again
(`core.webhook_urls`) and the POST goes to the address that was checked, so a host re-pointed at
an inward address after registration reaches nothing. A tenant keeps at most
`webhook_max_pending` undelivered events; past that, new ones are recorded as failed.
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
from core.queue import enqueue_delivery
from core.repository import OpsRepository, TenantRepository
from core.tables import Preview, Subject
from core.webhook_urls import Resolver, Target, WebhookUrlRefused, check_webhook_url, system_resolver
from worker.runtime import get_runtime

log = logging.getLogger("roomfit.webhooks")

MAX_DELIVERY_ATTEMPTS = 12  # with backoff capped at an hour: about half a day of retries


def subject_payload(subject: Subject) -> dict[str, Any]:
    return {
        "id": subject.id,
        "name": subject.name,
        "external_id": subject.external_id,
        "status": subject.status,
        "error": _error(subject),
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


# alike: subject_payload's shape on purpose: each event lists its own object's fields
def preview_payload(preview: Preview) -> dict[str, Any]:
    return {
        "id": preview.id,
        "subject_id": preview.subject_id,
        "status": preview.status,
        "mode": preview.mode,  # painted with the subject's adapter, or zero-shot (docs/api.md)
        "adapter_version": preview.adapter_version,
        "result_url": f"/v1/previews/{preview.id}/result" if preview.result_key else None,
        "error": _error(preview),
    }


def _error(row: Subject | Preview) -> dict[str, str | None] | None:
    return {"code": row.error_code, "message": row.error_message} if row.error_code else None


def emit_event(session: Session, tenant_id: str, event: str, data: dict[str, Any]) -> str | None:
    """Record a delivery for the tenant's webhook (if any), commit, and send its id to the queue."""
    repo = TenantRepository(session, tenant_id)
    if repo.webhook() is None:
        session.commit()
        return None
    over_cap = repo.pending_deliveries() >= get_runtime().settings.webhook_max_pending
    delivery = webhooks.new_delivery(tenant_id, event, data)
    session.add(delivery)
    if over_cap:
        # The receiver is down or slow and events pile up: keep the cap, never the queue.
        webhooks.mark_failed(delivery, "too many undelivered events for this webhook")
        session.commit()
        log.warning("webhook delivery %s of tenant %s: over the pending cap, dropped", delivery.id, tenant_id)
        return delivery.id
    session.commit()
    try:
        enqueue_delivery(get_runtime().celery, delivery.id)
    except Exception:  # the broker is down: the reconciler sends pending deliveries later
        log.exception("webhook delivery %s: could not enqueue", delivery.id)
    return delivery.id


def backoff_seconds(attempt: int) -> float:
    """Exponential with full jitter, capped at an hour."""
    return random.uniform(0, min(3600.0, 2.0**attempt))


def deliver(
    session: Session,
    delivery_id: str,
    *,
    client: httpx.Client | None = None,
    resolve: Resolver = system_resolver,
) -> str:
    """Try one delivery; returns delivered | retry | failed | skipped."""
    settings = get_runtime().settings
    delivery = OpsRepository(session).delivery(delivery_id)
    if delivery is None or delivery.status != "pending":
        return "skipped"
    hook = TenantRepository(session, delivery.tenant_id).webhook()
    if hook is None:
        webhooks.mark_failed(delivery, "the webhook was removed")
        session.commit()
        return "failed"
    delivery.attempts += 1
    try:
        target = check_webhook_url(hook.url, allow_private=settings.webhook_allow_private, resolve=resolve)
        error = _post(target, hook.secret, delivery.payload, client, settings.webhook_timeout_seconds)
    except WebhookUrlRefused as exc:  # re-pointed inward since registration, or not resolvable now
        log.warning("webhook delivery %s: %s", delivery_id, exc)
        error = f"refused: {exc}"
    if error is None:
        webhooks.mark_delivered(delivery)
        session.commit()
        return "delivered"
    if delivery.attempts >= MAX_DELIVERY_ATTEMPTS:
        webhooks.mark_failed(delivery, error)
        session.commit()
        return "failed"
    at = utcnow() + timedelta(seconds=backoff_seconds(delivery.attempts))
    webhooks.schedule_retry(delivery, error, at)
    session.commit()
    return "retry"


def _post(
    target: Target, secret: str, payload: dict[str, Any], client: httpx.Client | None, timeout: float
) -> str | None:
    """POST the signed event to the checked address; None when the receiver answered 2xx."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True)
    default_port = 443 if target.scheme == "https" else 80
    headers = {
        "Content-Type": "application/json",
        "Roomfit-Signature": webhooks.sign(secret, int(time.time()), body),
        "User-Agent": "roomfit-webhooks/1",
        # The URL names the address; Host and TLS (SNI, certificate) keep naming the host.
        "Host": target.host if target.port == default_port else f"{target.host}:{target.port}",
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    owned = client is None
    http = client or httpx.Client(timeout=timeout, follow_redirects=False)
    try:
        response = http.post(
            target.url_for_address(), content=body.encode(), headers=headers, extensions=extensions
        )
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    finally:
        if owned:
            http.close()
    return None if 200 <= response.status_code < 300 else f"HTTP {response.status_code}"
