"""`resolve_with_deadline` (the API's webhook-host lookups) on a small shared pool: a lookup that
timed out before it even started must not stay queued. It used to run later anyway, so one tenant
registering hosts whose DNS hangs built a queue of lookups nobody waited for any more, and every
other tenant's registration waited behind it (and timed out) long after that tenant stopped.
"""

from __future__ import annotations

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core import webhook_urls

POOL = 4


def test_a_timed_out_lookup_that_never_started_is_dropped(monkeypatch: pytest.MonkeyPatch) -> None:
    release = threading.Event()
    started: list[str] = []
    lock = threading.Lock()

    def hanging_dns(host: str, port: int) -> list[str]:
        with lock:
            started.append(host)
        release.wait(30)  # a DNS server that does not answer (a test cannot wait the OS's timeout)
        return ["93.184.216.34"]

    pool = ThreadPoolExecutor(max_workers=POOL, thread_name_prefix="resolve-test")
    monkeypatch.setattr(webhook_urls, "_RESOLVERS", pool)
    monkeypatch.setattr(webhook_urls, "system_resolver", hanging_dns)
    monkeypatch.setattr(webhook_urls, "RESOLVE_SECONDS", 0.05)
    try:
        for n in range(3 * POOL):
            with pytest.raises(OSError, match="longer than"):
                webhook_urls.resolve_with_deadline(f"h{n}.slow.example", 443)
    finally:
        release.set()
        pool.shutdown(wait=True)
    # Only the lookups the pool had started ran; the others were dropped when their caller gave up.
    assert sorted(started) == sorted(f"h{n}.slow.example" for n in range(POOL))


def test_a_host_whose_dns_hangs_holds_one_thread_and_others_resolve(monkeypatch: pytest.MonkeyPatch) -> None:
    """Every delivery of a tenant asks for its one webhook host. When that host's DNS hangs, each
    lookup used to take a pool thread of its own until the OS gave up, so a few retries filled the
    pool and other tenants' hosts could not be resolved. The same host is now looked up once at a time."""
    release = threading.Event()
    started: list[str] = []
    lock = threading.Lock()

    def dns(host: str, port: int) -> list[str]:
        with lock:
            started.append(host)
        if host.endswith("slow.example"):
            release.wait(30)
        return ["93.184.216.34"]

    pool = ThreadPoolExecutor(max_workers=POOL, thread_name_prefix="resolve-test")
    monkeypatch.setattr(webhook_urls, "_RESOLVERS", pool)
    monkeypatch.setattr(webhook_urls, "system_resolver", dns)
    monkeypatch.setattr(webhook_urls, "RESOLVE_SECONDS", 0.05)
    try:
        for _ in range(3 * POOL):  # the hanging tenant's deliveries, each retried
            with pytest.raises(OSError, match="longer than"):
                webhook_urls.resolve_with_deadline("hooks.slow.example", 443)
        for n in range(POOL):  # every other tenant still resolves, at once
            assert webhook_urls.resolve_with_deadline(f"t{n}.fast.example", 443) == ["93.184.216.34"]
        assert started.count("hooks.slow.example") == 1
        # Once it has answered, the host is looked up afresh (no answer is kept for later callers).
        release.set()
        for _ in range(1000):
            if ("hooks.slow.example", 443) not in webhook_urls._IN_FLIGHT:
                break
            time.sleep(0.01)
        monkeypatch.setattr(webhook_urls, "RESOLVE_SECONDS", 10.0)
        assert webhook_urls.resolve_with_deadline("HOOKS.slow.example", 443) == ["93.184.216.34"]
        assert started.count("HOOKS.slow.example") == 1
    finally:
        release.set()
        pool.shutdown(wait=True)
