"""Webhook events: recorded as delivery rows in the job's transaction, then sent by a task.

The row is the truth (like jobs): a delivery whose message is lost is found by the reconciler. Each
POST carries `Roomfit-Signature: t=<unix>,v1=<hmac>` (core.webhooks.sign, shared with the API docs)
and is retried with exponential backoff until the shop answers 2xx or the attempts run out.

Deliveries run on their own queue (`webhooks`) and worker pool, never on a GPU worker, and each
attempt is bounded (worker.webhook_post): the host's resolution and the whole HTTP exchange have
deadlines, the response body is never read, and one tenant runs at most two attempts at once per
worker process (more wait their turn, uncounted), so a slow receiver delays only its own tenant's
events. Before each attempt the URL is checked again (`core.webhook_urls`) and the POST goes to the
address that was checked, so a host re-pointed at an inward address after registration reaches
nothing. A tenant keeps at most `webhook_max_pending` undelivered events; past that, new ones are
recorded as failed.
"""

from __future__ import annotations

import logging
import random
from datetime import timedelta
from typing import Any

import httpx
from sqlalchemy.orm import Session

from core import webhooks
from core.clock import utcnow
from core.queue import enqueue_delivery
from core.repository import OpsRepository, TenantRepository
from core.tables import Preview, Subject
from core.webhook_urls import Resolver, resolve_with_deadline
from worker.runtime import get_runtime
from worker.webhook_post import attempt, defer, tenant_slot

log = logging.getLogger("roomfit.webhooks")

# With backoff_seconds' waits, the attempts span 5 to 10 hours: a receiver down for up to five hours
# (a deploy gone wrong, a night's outage) loses no event.
MAX_DELIVERY_ATTEMPTS = 16
FIRST_RETRY_SECONDS, LONGEST_WAIT_SECONDS = 60.0, 3600.0


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
    """The wait after failed attempt `attempt` (1, 2, ...): doubling from a minute, capped at an hour,
    with equal jitter (half of it fixed, half random) so that many deliveries' retries spread out
    while the whole schedule stays certain. Full jitter from 2 s, as before, spent all the attempts
    within about an hour at worst."""
    ceiling = min(LONGEST_WAIT_SECONDS, FIRST_RETRY_SECONDS * 2.0 ** (attempt - 1))
    return random.uniform(ceiling / 2, ceiling)


def deliver(
    session: Session,
    delivery_id: str,
    *,
    client: httpx.AsyncClient | None = None,
    resolve: Resolver = resolve_with_deadline,
) -> str:
    """Try one delivery; returns delivered | retry | failed | skipped. The attempt's bounds (DNS and
    whole-exchange deadlines, no body read, attempts per tenant at once) are worker.webhook_post's."""
    settings = get_runtime().settings
    delivery = OpsRepository(session).delivery(delivery_id)
    if delivery is None or delivery.status != "pending":
        return "skipped"
    hook = TenantRepository(session, delivery.tenant_id).webhook()
    if hook is None:
        webhooks.mark_failed(delivery, "the webhook was removed")
        session.commit()
        return "failed"
    with tenant_slot(delivery.tenant_id) as slot:
        if slot:
            delivery.attempts += 1
            payload = delivery.payload
            error = attempt(
                delivery_id, hook.url, hook.secret, payload, settings, resolve=resolve, client=client
            )
    if not slot:
        # The tenant already has its share of this process's webhook threads: its turn comes shortly,
        # and waiting for it is not an attempt (the task retries a "retry" at next_attempt_at).
        defer(delivery)
        session.commit()
        return "retry"
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
