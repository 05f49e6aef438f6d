"""One webhook attempt, bounded so that a slow or hostile receiver holds up only its own tenant.

The webhook pool's threads are shared by every tenant, so each attempt is bounded three ways:

- **Deadline.** The whole HTTP exchange (connect, TLS, send, the answer's status line and headers)
  ends after `ROOMFIT_WEBHOOK_TIMEOUT_SECONDS`, however the receiver paces its bytes. httpx's own
  timeouts are per read or write, so a receiver that trickles a byte a second would never trip them:
  the exchange runs on httpx's async client under `anyio.fail_after`, whose cancellation ends it
  wherever it is. Resolving the host comes before and has its own bound
  (`core.webhook_urls.resolve_with_deadline`, RESOLVE_SECONDS), so one attempt holds a thread for at
  most RESOLVE_SECONDS + the webhook timeout, plus its database reads and writes.
- **No body.** Only the status code matters. The response is streamed and left unread: closing it
  closes the connection, whatever the receiver still had to send. What is read is the status line
  and headers (h11 refuses a head over 100 KiB) and at most one 64 KiB socket read beyond them.
- **Per tenant.** A worker process runs at most MAX_IN_FLIGHT_PER_TENANT attempts of one tenant at
  once (`tenant_slot`). A delivery over that bound is put back for DEFER_SECONDS later (`defer`): its
  message is retried then, no attempt is counted, and the row stays pending, so the reconciler
  re-sends it if that message is lost. The bound is per process: with N webhook worker processes
  (8 threads each), one tenant holds at most 2·N of the 8·N threads.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import anyio
import httpx

from core import webhooks
from core.clock import utcnow
from core.settings import Settings
from core.tables import WebhookDelivery
from core.webhook_urls import Resolver, Target, WebhookUrlRefused, check_webhook_url

log = logging.getLogger("roomfit.webhooks")

MAX_IN_FLIGHT_PER_TENANT = 2
"""Attempts of one tenant running at once in one worker process (of its 8 webhook threads)."""
DEFER_SECONDS = (1.0, 3.0)
"""A delivery over the tenant's bound is tried again after a random delay in this range (spread, so
a burst does not come back all at once)."""

_slots_lock = threading.Lock()
_in_flight: dict[str, int] = {}  # tenant id -> attempts running in this process


@contextmanager
def tenant_slot(tenant_id: str, limit: int = MAX_IN_FLIGHT_PER_TENANT) -> Iterator[bool]:
    """Yields True when the tenant had fewer than `limit` attempts running here (it now has one more
    until the block ends), False when it is at its bound and this delivery must wait its turn."""
    with _slots_lock:
        running = _in_flight.get(tenant_id, 0)
        taken = running < limit
        if taken:
            _in_flight[tenant_id] = running + 1
    try:
        yield taken
    finally:
        if taken:
            with _slots_lock:
                left = _in_flight[tenant_id] - 1
                if left:
                    _in_flight[tenant_id] = left
                else:
                    del _in_flight[tenant_id]  # no entry left behind per tenant ever seen


def defer(delivery: WebhookDelivery) -> None:
    """Put a delivery back for shortly later without counting an attempt: it stays pending (no status
    change), and its message is retried at `next_attempt_at` (worker.tasks), or re-sent by the
    reconciler should that message be lost."""
    delivery.next_attempt_at = utcnow() + timedelta(seconds=random.uniform(*DEFER_SECONDS))


def attempt(
    delivery_id: str,
    url: str,
    secret: str,
    payload: dict[str, Any],
    settings: Settings,
    *,
    resolve: Resolver,
    client: httpx.AsyncClient | None = None,
) -> str | None:
    """Check the URL again and POST the signed event to the checked address: None when the receiver
    answered 2xx, else the error to record."""
    try:
        target = check_webhook_url(url, allow_private=settings.webhook_allow_private, resolve=resolve)
    except WebhookUrlRefused as exc:  # re-pointed inward since registration, or not resolvable now
        log.warning("webhook delivery %s: %s", delivery_id, exc)
        return f"refused: {exc}"
    deadline = settings.webhook_timeout_seconds
    return post_signed(target, secret, payload, deadline_seconds=deadline, client=client)


def post_signed(
    target: Target,
    secret: str,
    payload: dict[str, Any],
    *,
    deadline_seconds: float,
    client: httpx.AsyncClient | None = None,
) -> str | None:
    """POST the signed event to the checked address within `deadline_seconds` in all; None on 2xx.

    `client` is for tests (a transport of their own); without one each attempt has its own client and
    connection, closed when the attempt ends."""
    body = json.dumps(payload, separators=(",", ":"), sort_keys=True).encode()
    default_port = 443 if target.scheme == "https" else 80
    headers = {
        "Content-Type": "application/json",
        "Roomfit-Signature": webhooks.sign(secret, int(time.time()), body),
        "User-Agent": "roomfit-webhooks/1",
        # The URL names the address; Host and TLS (SNI, certificate) keep naming the host.
        "Host": target.host if target.port == default_port else f"{target.host}:{target.port}",
    }
    extensions = {"sni_hostname": target.host} if target.scheme == "https" else {}
    request = _Request(target.url_for_address(), body, headers, extensions)
    try:
        status = _run_alone(_status_within, request, deadline_seconds, client)
    except TimeoutError:
        return f"deadline: no answer within {deadline_seconds:g} s"
    except httpx.HTTPError as exc:
        return f"{type(exc).__name__}: {exc}"[:500]
    return None if 200 <= status < 300 else f"HTTP {status}"


def _run_alone(function: Callable[..., Awaitable[int]], *args: Any) -> int:
    """`function(*args)` on an event loop of its own, so that nothing of one attempt (connections,
    loop) outlives it. The webhook pool's threads are plain threads; a caller whose thread already
    runs a loop (an async caller, a greenlet-based pool, Playwright's sync API in the tests) cannot
    nest another in it, so there the attempt runs on a thread of its own and this one waits."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:  # no loop here: the usual case
        return anyio.run(function, *args)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="webhook-attempt") as alone:
        return alone.submit(anyio.run, function, *args).result()


class _Request:
    def __init__(self, url: str, body: bytes, headers: dict[str, str], extensions: dict[str, str]) -> None:
        self.url, self.body, self.headers, self.extensions = url, body, headers, extensions


async def _status_within(request: _Request, deadline: float, client: httpx.AsyncClient | None) -> int:
    # fail_after's cancel scope is level-triggered: it also ends the clean-up of a connection that
    # the receiver keeps stalling, and it raises TimeoutError once the deadline has passed.
    with anyio.fail_after(deadline):
        if client is not None:
            return await _status(client, request)
        # httpx's per-operation timeout as well: the same number, so the deadline is what trips first.
        async with httpx.AsyncClient(timeout=deadline, follow_redirects=False) as http:
            return await _status(http, request)


async def _status(http: httpx.AsyncClient, request: _Request) -> int:
    async with http.stream(
        "POST", request.url, content=request.body, headers=request.headers, extensions=request.extensions
    ) as response:
        # Leaving the block without reading closes the response, and with its body unread the
        # connection is closed, not kept: a receiver's gigabytes are never read.
        return response.status_code
