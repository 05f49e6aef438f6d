"""Check that a webhook delivery comes from roomfit (written by hand; `make client` leaves it alone).

roomfit POSTs each event as JSON with the header

    Roomfit-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret, "<t>.<raw body>")>

where `secret` is the `whsec_...` that `PUT /v1/webhook` answered (once). Check the signature on the
raw bytes of the body, before parsing them, and refuse old timestamps (a replayed delivery):

    from roomfit_webhooks import HEADER, InvalidSignature, parse_event

    try:
        event = parse_event(secret, request.headers[HEADER], raw_body)
    except InvalidSignature:
        return 400
    if event["type"] == "subject.ready":
        ...

The standard library only: no dependency on the generated client.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from typing import Any

HEADER = "Roomfit-Signature"
TOLERANCE_SECONDS = 300
"""How old (or how far ahead of this clock) a delivery's timestamp may be."""


class InvalidSignature(ValueError):
    """The header does not sign this body with this secret, or its timestamp is too old."""


def _digest(secret: str, timestamp: int, body: bytes) -> str:
    return hmac.new(secret.encode(), str(timestamp).encode() + b"." + body, hashlib.sha256).hexdigest()


def _raw(body: bytes | str) -> bytes:
    return body.encode() if isinstance(body, str) else body


def sign(secret: str, body: bytes | str, timestamp: int | None = None) -> str:
    """The header value roomfit would send with `body` (now, or at `timestamp`): for testing a receiver."""
    at = int(time.time()) if timestamp is None else int(timestamp)
    return f"t={at},v1={_digest(secret, at, _raw(body))}"


def verify(
    secret: str,
    header: str,
    body: bytes | str,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> bool:
    """True when `header` signs `body` with `secret` and its timestamp is within the tolerance."""
    timestamps: list[str] = []
    signatures: list[str] = []
    for item in header.split(","):
        name, sep, value = item.strip().partition("=")
        if sep and name == "t":
            timestamps.append(value)
        elif sep and name == "v1":
            signatures.append(value)
    try:
        timestamp = int(timestamps[0])
        # a hostile timestamp too large for a float raises OverflowError here: a mismatch, not a crash
        age = abs((time.time() if now is None else now) - timestamp)
    except (IndexError, ValueError, OverflowError):
        return False
    if age > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, _raw(body)).encode()
    # compare_digest raises TypeError on a str with non-ASCII characters: compare bytes instead
    # ("replace" also takes a lone surrogate, as a lenient header decoder may hand over)
    return any(hmac.compare_digest(expected, v1.encode("utf-8", "replace")) for v1 in signatures)


def parse_event(
    secret: str,
    header: str | None,
    body: bytes | str,
    *,
    tolerance_seconds: int = TOLERANCE_SECONDS,
    now: float | None = None,
) -> dict[str, Any]:
    """The event (`id`, `type`, `created`, `data`) once its signature checks out, else InvalidSignature."""
    if not header or not verify(secret, header, body, tolerance_seconds=tolerance_seconds, now=now):
        raise InvalidSignature(f"{HEADER} does not match the body, or is older than {tolerance_seconds} s")
    event: dict[str, Any] = json.loads(body)
    return event
