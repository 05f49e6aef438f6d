"""How one webhook delivery ends (worker/events.py, `deliver`): a delivery already delivered is not
posted again by a duplicate message, and one whose attempts have run out fails for good."""

from __future__ import annotations

import socket
from pathlib import Path

from core.tables import WebhookDelivery
from tests.worker.test_webhook_isolation import (
    Receiver,
    answer_200,
    deliver_now,
    pending_delivery,
    receiving,
    row,
    runtime_with,
    tenant_with_webhook,
)
from worker.events import MAX_DELIVERY_ATTEMPTS


def answer_500(conn: socket.socket, receiver: Receiver) -> None:
    reply = b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    receiver.send(conn, iter([reply]))


def test_a_duplicate_message_of_a_delivered_event_posts_nothing(tmp_path: Path) -> None:
    with runtime_with(tmp_path) as runtime, receiving(answer_200) as receiver:
        delivery_id = pending_delivery(runtime, tenant_with_webhook(runtime, receiver.url))
        assert deliver_now(runtime, delivery_id) == "delivered"
        assert deliver_now(runtime, delivery_id) == "skipped"
        assert len(receiver.requests) == 1
        assert (row(runtime, delivery_id).status, row(runtime, delivery_id).attempts) == ("delivered", 1)


def test_the_last_attempt_that_fails_ends_the_delivery(tmp_path: Path) -> None:
    with runtime_with(tmp_path) as runtime, receiving(answer_500) as receiver:
        delivery_id = pending_delivery(runtime, tenant_with_webhook(runtime, receiver.url))
        assert deliver_now(runtime, delivery_id) == "retry"
        with runtime.session() as session:  # every attempt but the last has failed the same way
            delivery = session.get(WebhookDelivery, delivery_id)
            assert delivery is not None
            delivery.attempts = MAX_DELIVERY_ATTEMPTS - 1
            session.commit()
        assert deliver_now(runtime, delivery_id) == "failed"
        ended = row(runtime, delivery_id)
        assert (ended.status, ended.attempts) == ("failed", MAX_DELIVERY_ATTEMPTS)
        assert deliver_now(runtime, delivery_id) == "skipped"
        assert len(receiver.requests) == 2
