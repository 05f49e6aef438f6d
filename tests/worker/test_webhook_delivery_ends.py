"""How one webhook delivery ends (worker/events.py, `deliver`): a delivery already delivered is not
posted again by a duplicate message, one whose attempts have run out fails for good, and the waits
between attempts outlast a receiver's outage of hours."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest

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
from worker.events import MAX_DELIVERY_ATTEMPTS, backoff_seconds


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


@pytest.mark.parametrize("draw", ["shortest", "longest"])
def test_the_retries_outlast_a_five_hour_outage(monkeypatch: pytest.MonkeyPatch, draw: str) -> None:
    """Whatever the jitter draws, the waits between all of a delivery's attempts add up to five hours
    at least (a receiver down that long loses nothing) and ten at most (a dead one is given up)."""
    monkeypatch.setattr(random, "uniform", lambda low, high: low if draw == "shortest" else high)
    total = sum(backoff_seconds(attempt) for attempt in range(1, MAX_DELIVERY_ATTEMPTS))
    assert 5 * 3600 <= total <= 10.1 * 3600
    assert backoff_seconds(1) <= 60  # the first retry comes soon: most failures are brief
