"""`ping` of an S3 that accepts connections but never answers ends within seconds, not minutes.

A refused connection already failed fast (test_blobstore.py's dead endpoint). A hung one (an
overloaded gateway, a stopped container whose port still accepts) waited the full read timeout
meant for large bodies (60 s), three attempts over: /readyz and a worker's start hung three
minutes, each readiness probe holding an API thread all that time.

The hung S3 is a socket that accepts and stays silent: a real SeaweedFS cannot be made to hang on
demand. It stands in for the server only; the store and botocore run unchanged.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest

from core.blobstore import BlobStoreUnavailable
from core.s3_blobstore import S3BlobStore

# ping's bound: a few seconds of silence per attempt, few attempts; ample against a one-line HEAD
BOUND_S = 20.0


@pytest.fixture
def hung_endpoint() -> Iterator[str]:
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(listener.accept()[0])  # read nothing, answer nothing
            except TimeoutError:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{listener.getsockname()[1]}"
    stop.set()
    thread.join(timeout=5)
    listener.close()
    for conn in accepted:
        conn.close()


def test_ping_of_a_hung_s3_fails_within_seconds(hung_endpoint: str) -> None:
    # the store as blob_store_from_settings makes it: default timeouts and retries
    store = S3BlobStore("roomfit-hung", endpoint_url=hung_endpoint, access_key="k", secret_key="s")
    outcome: list[BaseException | None] = []

    def ping() -> None:
        try:
            store.ping()
            outcome.append(None)
        except BaseException as exc:  # handed to the test thread
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=ping, daemon=True)  # daemon: a hang must not hold the run
    thread.start()
    thread.join(timeout=BOUND_S)
    assert not thread.is_alive(), f"ping still waiting after {BOUND_S:.0f} s"
    assert isinstance(outcome[0], BlobStoreUnavailable), outcome
    assert time.monotonic() - started < BOUND_S
