"""`Idempotency-Key` on POSTs: the first successful answer is kept and replayed to retries.

The record is claimed (inserted, committed) before the work starts, under a unique constraint on
(key id, Idempotency-Key): two concurrent requests with one key cannot both do the work — the loser
gets 409 `idempotency_key_in_progress` (or the replay, once the winner has finished). The finished
answer is written in the *same* transaction as the rows it created, so a crash can never leave a
subject without its record or a record pointing at nothing.

What is compared is a digest of method, path and body; for multipart bodies the digest covers the
field names, values and file contents but not the random boundary (see `api.uploads`). Only
successful (2xx) answers are kept: an error releases the key, so a client can fix the cause (say,
wait for its subject to be ready) and retry with the same key. Records live
`settings.idempotency_hours` (at least 24), and expired ones are swept as new ones are written.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy import delete, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import Caller
from api.problems import ApiError
from core.clock import utcnow
from core.ids import new_id
from core.tables import IdempotencyRecord

log = logging.getLogger("roomfit.api.idempotency")

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
# A claim older than this whose request never finished (the process died) is taken over.
ABANDONED_AFTER = timedelta(minutes=10)
REPLAYED_HEADERS = ("location",)


@dataclass
class Outcome:
    """What a POST produced: its response (rows added, not committed) and work for after the commit."""

    response: JSONResponse | Response
    after_commit: list[Callable[[], None]] = field(default_factory=list)


def request_digest(method: str, path: str, body_digest: str) -> str:
    return hashlib.sha256(f"{method}\n{path}\n{body_digest}".encode()).hexdigest()


def body_digest(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get(HEADER)
    if key is None:
        return None
    key = key.strip()
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable():
        raise ApiError(
            422, "invalid_idempotency_key", f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable chars"
        )
    return key


def run_idempotent(
    session: Session,
    caller: Caller,
    request: Request,
    digest: str,
    hours: int,
    produce: Callable[[], Outcome],
) -> Response:
    """Run `produce` once per (key, Idempotency-Key); commit; run its after-commit work."""
    key = idempotency_key(request)
    if key is None:
        outcome = produce()
        session.commit()
        _after(outcome)
        return outcome.response

    request_hash = request_digest(request.method, request.url.path, digest)
    record = _claim(session, caller, key, request, request_hash, hours)
    if isinstance(record, Response):
        return record
    try:
        outcome = produce()
        response = outcome.response
        if 200 <= response.status_code < 300:
            record.status_code = response.status_code
            record.response_body = bytes(response.body).decode("utf-8")
            record.response_headers = {
                k: v for k, v in response.headers.items() if k.lower() in REPLAYED_HEADERS
            }
            session.add(record)
        else:
            session.delete(record)
        session.commit()
    except BaseException:
        session.rollback()
        _release(session, record.id)
        raise
    _after(outcome)
    return outcome.response


def _after(outcome: Outcome) -> None:
    for action in outcome.after_commit:
        try:
            action()
        except Exception:  # after the commit the answer stands; what failed is logged and retried
            log.exception("after-commit action failed")


def _release(session: Session, record_id: str) -> None:
    try:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.id == record_id))
        session.commit()
    except Exception:
        session.rollback()
        log.exception("could not release idempotency record %s", record_id)


def _find(session: Session, caller: Caller, key: str) -> IdempotencyRecord | None:
    return session.scalars(
        select(IdempotencyRecord).where(
            IdempotencyRecord.api_key_id == caller.key_id, IdempotencyRecord.key == key
        )
    ).first()


def _claim(
    session: Session, caller: Caller, key: str, request: Request, request_hash: str, hours: int
) -> IdempotencyRecord | Response:
    """Our freshly inserted record, or the answer to give instead (a replay or a 409)."""
    for _ in range(3):
        now = utcnow()
        existing = _find(session, caller, key)
        if existing is not None:
            stale = existing.expires_at <= now or (
                existing.status_code is None and now - existing.created_at > ABANDONED_AFTER
            )
            if not stale:
                return _answer_from(existing, request_hash)
            session.delete(existing)
            session.commit()
        record = IdempotencyRecord(
            id=new_id("idm"),
            tenant_id=caller.tenant_id,
            api_key_id=caller.key_id,
            key=key,
            method=request.method,
            path=request.url.path[:400],
            request_hash=request_hash,
            created_at=now,
            expires_at=now + timedelta(hours=hours),
        )
        session.add(record)
        try:
            session.commit()
        except IntegrityError:
            session.rollback()  # someone claimed it between our read and our insert: look again
            continue
        if random.random() < 0.02:
            _sweep(session)
        return record
    raise ApiError(409, "idempotency_key_in_progress", "a request with this Idempotency-Key is running")


def _answer_from(record: IdempotencyRecord, request_hash: str) -> Response:
    if record.request_hash != request_hash:
        raise ApiError(
            409,
            "idempotency_key_reused",
            "this Idempotency-Key was used with another request body; use a new key",
        )
    if record.status_code is None:
        raise ApiError(
            409,
            "idempotency_key_in_progress",
            "the first request with this Idempotency-Key is still running; retry shortly",
            headers={"Retry-After": "1"},
        )
    headers = dict(record.response_headers or {})
    headers["Idempotency-Replayed"] = "true"
    body = record.response_body or ""
    media_type = "application/json" if body else None
    try:
        json.loads(body) if body else None
    except ValueError:
        media_type = None
    return Response(content=body, status_code=record.status_code, headers=headers, media_type=media_type)


def _sweep(session: Session) -> None:
    try:
        session.execute(delete(IdempotencyRecord).where(IdempotencyRecord.expires_at <= utcnow()))
        session.commit()
    except Exception:
        session.rollback()
        log.warning("sweeping expired idempotency records failed", exc_info=True)


MAX_SMALL_BODY = 64 * 1024


async def read_small_body(request: Request) -> bytes:
    """The body of a POST that takes none or a small JSON one; refuse big ones as they stream."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_SMALL_BODY:
            raise ApiError(413, "payload_too_large", f"this request takes at most {MAX_SMALL_BODY} bytes")
        chunks.append(chunk)
    return b"".join(chunks)
