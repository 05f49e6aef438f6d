"""Webhook signing, shared by the API (which hands out secrets) and the worker (which signs deliveries).

`Roomfit-Signature: t=<unix>,v1=<hex hmac_sha256(secret, "<t>.<body>")>` as API.md documents. The
timestamp is inside the signed text, so a receiver that also rejects old timestamps is safe from
replays; `verify` does both and is what a shop's own code should do (it is here for tests and docs).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time

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
    except (KeyError, ValueError):
        return False
    if abs((time.time() if now is None else now) - timestamp) > tolerance_seconds:
        return False
    expected = _digest(secret, timestamp, body)
    return any(hmac.compare_digest(expected, candidate) for candidate in parts.get("v1", []))
