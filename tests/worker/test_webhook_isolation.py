"""A slow or hostile webhook receiver holds up only its own tenant's deliveries (worker.webhook_post).

Each test runs `worker.events.deliver` in this process on an embedded database, against a real HTTP
receiver on loopback: a raw socket server whose replies a test scripts (trickled a byte at a time,
a huge body, no answer, held until released). Nothing asserts how long anything took: what is checked
is how an attempt ended (its error names the deadline), what the receiver saw (the connection closed
before it finished sending), and which deliveries were done while others were still held.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path

import pytest

import core.webhook_urls
from core.clock import utcnow
from core.ids import new_id
from core.repository import OpsRepository
from core.tables import Tenant, Webhook, WebhookDelivery
from core.webhooks import HEADER, new_delivery, new_secret, verify
from tests.worker.conftest import in_process_runtime
from worker.events import deliver
from worker.runtime import Runtime
from worker.webhook_post import MAX_IN_FLIGHT_PER_TENANT

Reply = Callable[[socket.socket, "Receiver"], None]


class Receiver:
    """A loopback HTTP receiver: each connection's request is read whole, then `reply` answers it."""

    def __init__(self, reply: Reply) -> None:
        self.reply = reply
        self.requests: list[tuple[dict[str, str], bytes]] = []
        self.endings: list[str] = []  # per connection: "sent all" or "closed by the client after N bytes"
        self.release = threading.Event()
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}/hooks"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self._server.accept()
            except OSError:
                return  # closed by the test
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")[1:]
            headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            while len(body) < int(headers.get("content-length", "0")):
                body += conn.recv(65536)
            self.requests.append((headers, body))
            self.reply(conn, self)

    def send(self, conn: socket.socket, pieces: Iterator[bytes]) -> None:
        """Send each piece; record whether all went out or the client closed the connection first."""
        sent = 0
        try:
            for piece in pieces:
                conn.sendall(piece)
                sent += len(piece)
        except OSError:  # broken pipe or reset: the client closed its end
            self.endings.append(f"closed by the client after {sent} bytes")
            return
        self.endings.append("sent all")

    def close(self) -> None:
        self.release.set()
        self._server.close()


@contextmanager
def receiving(reply: Reply) -> Iterator[Receiver]:
    receiver = Receiver(reply)
    try:
        yield receiver
    finally:
        receiver.close()


def wait_until(condition: Callable[[], object], what: str, limit: float = 60.0) -> None:
    """Poll until `condition` holds; the limit only keeps a broken run from hanging."""
    end = time.monotonic() + limit
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"gave up waiting for {what}")
        time.sleep(0.02)


@contextmanager
def runtime_with(tmp_path: Path, **settings: object) -> Iterator[Runtime]:
    """A worker runtime of this process on an embedded database (loopback receivers allowed)."""
    with in_process_runtime(tmp_path, **{"webhook_allow_private": True, **settings}) as runtime:
        yield runtime


def tenant_with_webhook(runtime: Runtime, url: str, secret: str | None = None) -> str:
    with runtime.session() as session:
        tenant = Tenant(id=new_id("ten"), name=new_id("shop"))
        hook = Webhook(id=new_id("whk"), tenant_id=tenant.id, url=url, secret=secret or new_secret())
        session.add_all([tenant, hook])
        session.commit()
        return tenant.id


def pending_delivery(runtime: Runtime, tenant_id: str) -> str:
    """A delivery row as `emit_event` records it, without sending a message (the tests deliver)."""
    with runtime.session() as session:
        delivery = new_delivery(tenant_id, "preview.succeeded", {"id": new_id("prv")})
        session.add(delivery)
        session.commit()
        return delivery.id


def deliver_now(runtime: Runtime, delivery_id: str) -> str:
    with runtime.session() as session:
        return deliver(session, delivery_id)


def row(runtime: Runtime, delivery_id: str) -> WebhookDelivery:
    with runtime.session() as session:
        found = session.get(WebhookDelivery, delivery_id)
        assert found is not None
        session.expunge(found)
        return found


def answer_200(conn: socket.socket, receiver: Receiver) -> None:
    receiver.send(conn, iter([b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"]))


def held_then_200(conn: socket.socket, receiver: Receiver) -> None:
    receiver.release.wait(120)
    answer_200(conn, receiver)


# --- 1. resolving the host has a deadline -------------------------------------------------------
def test_a_host_whose_dns_never_answers_ends_the_attempt_at_the_resolve_deadline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """deliver resolves with `resolve_with_deadline`: the attempt ends (retry, not resolvable) while
    the lookup itself is still hanging. With the unbounded resolver it would end only once the
    lookup came back."""
    real_getaddrinfo = socket.getaddrinfo
    started, returned, release = threading.Event(), threading.Event(), threading.Event()

    def hanging_getaddrinfo(host: str, *args: object, **kwargs: object) -> object:
        if host != "slow-dns.example":
            return real_getaddrinfo(host, *args, **kwargs)  # type: ignore[arg-type]
        started.set()
        release.wait(30)  # a resolver that never answers (30 s only so a broken run ends)
        returned.set()
        raise socket.gaierror(socket.EAI_AGAIN, "Temporary failure in name resolution")

    monkeypatch.setattr(socket, "getaddrinfo", hanging_getaddrinfo)
    monkeypatch.setattr(core.webhook_urls, "RESOLVE_SECONDS", 0.5)
    try:
        with runtime_with(tmp_path) as runtime:
            tenant_id = tenant_with_webhook(runtime, "http://slow-dns.example:8080/hooks")
            delivery_id = pending_delivery(runtime, tenant_id)
            outcome = deliver_now(runtime, delivery_id)
            assert started.is_set(), "the host was never looked up"
            assert not returned.is_set(), "the attempt waited for the hanging lookup"
            assert outcome == "retry"
            ended = row(runtime, delivery_id)
            assert ended.status == "pending" and ended.attempts == 1
            assert "cannot be resolved" in (ended.last_error or "")
    finally:
        release.set()


# --- 2. the response body is never read --------------------------------------------------------
HUGE = 64 * 1024 * 1024  # far beyond loopback's socket buffers: only a reader lets it all out


def answer_huge_body(conn: socket.socket, receiver: Receiver) -> None:
    head = f"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: {HUGE}\r\n\r\n"
    chunk = b"x" * 65536
    receiver.send(conn, iter([head.encode(), *(chunk for _ in range(HUGE // len(chunk)))]))


def test_a_huge_response_body_is_not_read(tmp_path: Path) -> None:
    """A 2xx with 64 MiB behind it counts as delivered, and the worker closes the connection after
    the status: the receiver cannot get its body out."""
    with runtime_with(tmp_path) as runtime, receiving(answer_huge_body) as receiver:
        delivery_id = pending_delivery(runtime, tenant_with_webhook(runtime, receiver.url))
        assert deliver_now(runtime, delivery_id) == "delivered"
        wait_until(lambda: receiver.endings, "the receiver to stop sending")
        assert receiver.endings[0].startswith("closed by the client"), receiver.endings
        assert row(runtime, delivery_id).status == "delivered"


def test_an_attempt_from_a_thread_that_runs_an_event_loop_is_delivered(tmp_path: Path) -> None:
    """An attempt runs on an event loop of its own; a caller whose thread already runs one (an async
    caller, or Playwright's sync API earlier in a test run) cannot nest another there, and every
    attempt failed "Already running asyncio in this thread". It now runs beside that loop."""
    with runtime_with(tmp_path) as runtime, receiving(answer_200) as receiver:
        delivery_id = pending_delivery(runtime, tenant_with_webhook(runtime, receiver.url))

        async def from_a_running_loop() -> str:
            return deliver_now(runtime, delivery_id)

        # on a thread of its own: this one may run a loop already (Playwright's, after browser tests)
        with ThreadPoolExecutor(max_workers=1) as caller:
            assert caller.submit(asyncio.run, from_a_running_loop()).result() == "delivered"
        assert row(runtime, delivery_id).status == "delivered"


# --- 3. one attempt has a whole deadline ---------------------------------------------------------
def trickle(conn: socket.socket, receiver: Receiver) -> None:
    """A valid 200, one byte every 0.15 s: each read gets a byte well within a 1 s read timeout."""
    reply = b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n" + b"X-Pad: slowly\r\n" * 3 + b"\r\n"

    def one_byte_at_a_time() -> Iterator[bytes]:
        for byte in reply:
            time.sleep(0.15)
            yield bytes([byte])

    receiver.send(conn, one_byte_at_a_time())


def test_a_receiver_that_trickles_its_answer_is_cut_off_at_the_deadline(tmp_path: Path) -> None:
    with runtime_with(tmp_path, webhook_timeout_seconds=1.0) as runtime, receiving(trickle) as receiver:
        delivery_id = pending_delivery(runtime, tenant_with_webhook(runtime, receiver.url))
        outcome = deliver_now(runtime, delivery_id)
        ended = row(runtime, delivery_id)
        assert outcome == "retry", ended.last_error
        assert ended.status == "pending" and ended.attempts == 1
        assert "deadline" in (ended.last_error or ""), ended.last_error
        wait_until(lambda: receiver.endings, "the receiver to stop trickling")
        assert receiver.endings[0].startswith("closed by the client"), receiver.endings


def never_answer(conn: socket.socket, receiver: Receiver) -> None:
    receiver.release.wait(120)


def test_a_receiver_that_never_answers_ends_at_the_deadline(tmp_path: Path) -> None:
    with runtime_with(tmp_path, webhook_timeout_seconds=1.0) as runtime, receiving(never_answer) as receiver:
        delivery_id = pending_delivery(runtime, tenant_with_webhook(runtime, receiver.url))
        assert deliver_now(runtime, delivery_id) == "retry"
        ended = row(runtime, delivery_id)
        assert ended.attempts == 1 and "deadline" in (ended.last_error or ""), ended.last_error
        assert receiver.requests, "the request never reached the receiver"


# --- 4. deliveries in flight per tenant are bounded -----------------------------------------------
def test_a_tenant_at_its_bound_waits_its_turn_and_another_tenant_is_delivered(tmp_path: Path) -> None:
    """A pool of three threads, as the webhook pool is shared: the slow tenant's receiver holds two
    deliveries; its third is put back (no attempt counted, still pending) instead of taking the last
    thread, so the other tenant's delivery goes out while the two are still held. Once the receiver
    lets go, the put-back delivery is delivered."""
    assert MAX_IN_FLIGHT_PER_TENANT == 2  # the threads below are counted for this bound
    # the longest deadline allowed, so the held deliveries are still held when the test checks
    with (
        runtime_with(tmp_path, webhook_timeout_seconds=30.0) as runtime,
        receiving(held_then_200) as slow,
        receiving(answer_200) as fast,
        ThreadPoolExecutor(max_workers=3) as pool,
    ):
        slow_tenant = tenant_with_webhook(runtime, slow.url)
        secret = new_secret()
        other_tenant = tenant_with_webhook(runtime, fast.url, secret)
        held = [pending_delivery(runtime, slow_tenant) for _ in range(2)]
        over = pending_delivery(runtime, slow_tenant)
        other = pending_delivery(runtime, other_tenant)

        held_runs = [pool.submit(deliver_now, runtime, d) for d in held]
        wait_until(lambda: len(slow.requests) == 2, "both held deliveries to reach the slow receiver")
        before = utcnow()
        over_run = pool.submit(deliver_now, runtime, over)
        other_run = pool.submit(deliver_now, runtime, other)

        assert other_run.result(timeout=120) == "delivered"
        assert not any(run.done() for run in held_runs), "the other tenant waited for the slow receiver"
        assert over_run.result(timeout=120) == "retry"
        put_back = row(runtime, over)
        assert put_back.status == "pending" and put_back.attempts == 0 and put_back.last_error is None
        assert put_back.next_attempt_at is not None and _naive(put_back.next_attempt_at) > _naive(before)
        assert len(slow.requests) == 2, "the delivery over the bound reached the receiver"
        headers, body = fast.requests[0]
        assert verify(secret, headers[HEADER.lower()], body)  # signed as before

        # Not lost: still pending, so the reconciler re-sends it if its retry message is lost.
        with runtime.session() as session:
            assert over in OpsRepository(session).stalled_deliveries(utcnow() + timedelta(hours=1))
        slow.release.set()
        assert [run.result(timeout=120) for run in held_runs] == ["delivered", "delivered"]
        assert deliver_now(runtime, over) == "delivered"
        assert row(runtime, over).attempts == 1


def _naive(at: datetime) -> datetime:
    # SQLite hands back naive datetimes; utcnow() is aware (UTC)
    return at.replace(tzinfo=None)
