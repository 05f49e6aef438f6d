"""`Idempotency-Key` on POSTs: the first successful answer is kept and replayed to retries.

The record is claimed (inserted, committed) before the work starts, under a unique constraint on
(key id, Idempotency-Key): two concurrent requests with one key cannot both do the work — the loser
gets 409 `idempotency_key_in_progress` (or the replay, once the winner has finished). The finished
answer is written in the *same* transaction as the rows it created (the request's, committed by
`api.transaction`), so a crash can never leave a subject without its record or a record pointing
at nothing.

What is compared is a digest of method, path and body; for multipart bodies the digest covers the
field names, values and file contents but not the random boundary (see `api.multipart`). Only
successful (2xx) answers are kept: an error releases the key, so a client can fix the cause (say,
wait for its subject to be ready) and retry with the same key. Records live
`settings.idempotency_hours` (at least 24), and expired ones are swept as new ones are written.

Claiming, taking over a stale record, sweeping and releasing must be durable *before* (or apart
from) the request's own transaction, so this module commits them itself, each through
`_commit_early` — the one place in the API that commits besides `api.transaction`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from datetime import timedelta

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from api.deps import Caller
from api.problems import IDEMPOTENCY_KEY_IN_PROGRESS, IDEMPOTENCY_KEY_REUSED, INVALID_IDEMPOTENCY_KEY
from api.transaction import Action
from core.clock import utcnow
from core.ids import new_id
from core.repository import IdempotencyRepository
from core.tables import IdempotencyRecord

log = logging.getLogger("roomfit.api.idempotency")

HEADER = "Idempotency-Key"
MAX_KEY_CHARS = 255
# A claim older than this whose request never finished (the process died) is taken over.
ABANDONED_AFTER = timedelta(minutes=10)
REPLAYED_HEADERS = ("location",)


@dataclass
class Outcome:
    """What a POST produced: its answer (rows added, not committed) and work for after the commit."""

    response: JSONResponse | Response
    after_commit: list[Action] = field(default_factory=list)


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
        raise INVALID_IDEMPOTENCY_KEY(f"{HEADER} must be 1 to {MAX_KEY_CHARS} printable chars")
    return key


def keep(records: IdempotencyRepository, record: IdempotencyRecord, response: Response) -> None:
    """Write a finished answer into its claimed record, in the request's transaction: a 2xx is
    kept for retries; any other answer frees the key."""
    if 200 <= response.status_code < 300:
        record.status_code = response.status_code
        record.response_body = bytes(response.body).decode("utf-8")
        record.response_headers = {k: v for k, v in response.headers.items() if k.lower() in REPLAYED_HEADERS}
    else:
        records.delete(record)


def _commit_early(session: Session) -> None:
    """Commit a change to the records alone, ahead of the request's transaction (see the module's
    docstring); on failure roll back and raise."""
    try:
        session.commit()
    except BaseException:
        session.rollback()
        raise


def release(records: IdempotencyRepository, record_id: str) -> None:
    """Free a claimed key whose request failed (its transaction rolled back), so a retry runs."""
    try:
        records.delete_id(record_id)
        _commit_early(records.session)
    except Exception:
        log.exception("could not release idempotency record %s", record_id)


def claim(
    records: IdempotencyRepository,
    caller: Caller,
    key: str,
    request: Request,
    request_hash: str,
    hours: int,
) -> IdempotencyRecord | Response:
    """Claim `key` for this request: our freshly inserted (committed) record, or the answer to give
    instead (a replay of the kept answer, or a 409)."""
    for _ in range(3):
        now = utcnow()
        existing = records.find(key)
        if existing is not None:
            stale = existing.expires_at <= now or (
                existing.status_code is None and now - existing.created_at > ABANDONED_AFTER
            )
            if not stale:
                return _answer_from(existing, request_hash)
            records.delete(existing)
            _commit_early(records.session)
        records.add(
            record := IdempotencyRecord(
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
        )
        try:
            _commit_early(records.session)
        except IntegrityError:
            continue  # someone claimed it between our read and our insert: look again
        if random.random() < 0.02:
            _sweep(records)
        return record
    raise IDEMPOTENCY_KEY_IN_PROGRESS(
        "a request with this Idempotency-Key is running; retry shortly", headers={"Retry-After": "1"}
    )


def _answer_from(record: IdempotencyRecord, request_hash: str) -> Response:
    if record.request_hash != request_hash:
        raise IDEMPOTENCY_KEY_REUSED("this Idempotency-Key was used with another request body; use a new key")
    if record.status_code is None:
        raise IDEMPOTENCY_KEY_IN_PROGRESS(
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


def _sweep(records: IdempotencyRepository) -> None:
    try:
        records.delete_expired(utcnow())
        _commit_early(records.session)
    except Exception:
        log.warning("sweeping expired idempotency records failed", exc_info=True)
