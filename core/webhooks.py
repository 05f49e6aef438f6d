"""Webhooks: signing, shared by the API (which hands out secrets) and the worker (which signs
deliveries), and the life of a delivery row (pending → delivered | failed), all in one place.

`Roomfit-Signature: t=<unix>,v1=<hex hmac_sha256(secret, "<t>.<body>")>` as docs/api.md documents. The
timestamp is inside the signed text, so a receiver that also rejects old timestamps is safe from
replays; `verify` does both and is what a shop's own code should do (it is here for tests and docs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from datetime import datetime
from typing import Any

from core.clock import utcnow
from core.ids import new_id
from core.tables import WebhookDelivery

SECRET_PREFIX = "whsec_"
HEADER = "Roomfit-Signature"


def new_secret() -> str:
    return SECRET_PREFIX + secrets.token_urlsafe(32)


def _digest(secret: str, timestamp: int, body: bytes | str) -> str:
    raw = body.encode() if isinstance(body, str) else body
    signed = str(int(timestamp)).encode() + b"." + raw
    return hmac.new(secret.encode(), signed, hashlib.sha256).hexdigest()


def sign(secret: str, timestamp: int, body: bytes | str) -> str:
    """The value of the `Roomfit-Signature` header for `body` sent at `timestamp` (unix seconds)."""
    return f"t={int(timestamp)},v1={_digest(secret, timestamp, body)}"


def verify(
    secret: str, header: str, body: bytes | str, *, tolerance_seconds: int = 300, now: float | None = None
) -> bool:
    """True when `header` signs `body` with `secret` and its timestamp is within the tolerance."""
    parts: dict[str, list[str]] = {}
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep:
            parts.setdefault(name, []).append(value)
    try:
        timestamp = int(parts["t"][0])
        # a hostile timestamp too large for a float raises OverflowError here: a mismatch, not a 500
        age = abs((time.time() if now is None else now) - timestamp)
    except (KeyError, ValueError, OverflowError):
        return False
    if age > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body).encode()
    # compare_digest raises TypeError on a str with non-ASCII characters: compare bytes instead
    return any(
        hmac.compare_digest(expected, candidate.encode("utf-8", "replace"))
        for candidate in parts.get("v1", [])
    )


def new_delivery(tenant_id: str, event: str, data: dict[str, Any]) -> WebhookDelivery:
    """A pending delivery of `event` (not yet added to a session), due now."""
    return WebhookDelivery(
        id=new_id("whd"),
        tenant_id=tenant_id,
        event=event,
        status="pending",
        payload={"id": new_id("evt"), "type": event, "created": int(time.time()), "data": data},
        next_attempt_at=utcnow(),
    )


def mark_delivered(delivery: WebhookDelivery) -> None:
    delivery.status = "delivered"
    delivery.last_error = None


def mark_failed(delivery: WebhookDelivery, error: str) -> None:
    """No more attempts: the webhook was removed or the attempts ran out."""
    delivery.status = "failed"
    delivery.last_error = error


def schedule_retry(delivery: WebhookDelivery, error: str, at: datetime) -> None:
    delivery.last_error = error
    delivery.next_attempt_at = at
