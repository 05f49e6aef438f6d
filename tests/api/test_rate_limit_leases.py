"""Rate limits taken in leases (api/rate_limit.py): a busy key costs far fewer Redis round trips than
requests, yet every replica together admits exactly the limit, on a real Redis."""

from __future__ import annotations

import asyncio
import secrets

import pytest
import redis

from api.rate_limit import LEASE_SECONDS, Leases, RateLimiter
from tests.loops import run_async


def _limiter(rate: str, redis_url: str) -> RateLimiter:
    from limits.storage import storage_from_string

    return RateLimiter(rate, storage_from_string(redis_url), async_uri=redis_url)


def _scripts_run(redis_url: str) -> int:
    """Lua scripts Redis has run so far: each hit or window read of `limits` is one."""
    stats = redis.Redis.from_url(redis_url).info("commandstats")
    return sum(int(v["calls"]) for k, v in stats.items() if k in ("cmdstat_evalsha", "cmdstat_eval"))


async def _burst(limiters: list[RateLimiter], key: str, clients: int, each: int) -> list[bool]:
    """`clients` concurrent clients, each sending `each` requests in turn, spread over the replicas."""

    async def client(n: int) -> list[bool]:
        return [(await limiters[(n + i) % len(limiters)].acheck(key)).allowed for i in range(each)]

    return [v for verdicts in await asyncio.gather(*(client(n) for n in range(clients))) for v in verdicts]


def test_a_busy_key_takes_leases_not_a_round_trip_per_request(redis_url: str) -> None:
    limiter = _limiter("100000/minute", redis_url)
    before = _scripts_run(redis_url)
    verdicts = run_async(_burst([limiter], secrets.token_hex(6), clients=50, each=20))
    scripts = _scripts_run(redis_url) - before
    assert all(verdicts) and len(verdicts) == 1000
    # Leases grow 1, 2, 4 … 64: about 22 round trips for 1000 requests (one per request without).
    assert scripts <= 40, scripts


@pytest.mark.parametrize("rate", ["300/minute", "5000/minute"])
def test_replicas_with_leases_admit_exactly_the_limit(redis_url: str, rate: str) -> None:
    limit = int(rate.split("/")[0])
    replicas = [_limiter(rate, redis_url), _limiter(rate, redis_url)]
    key = secrets.token_hex(6)
    verdicts = run_async(_burst(replicas, key, clients=50, each=limit // 40))  # 25 % over the limit
    assert sum(verdicts) == limit
    refused = run_async(replicas[0].acheck(key))
    assert not refused.allowed and 1 <= refused.retry_after <= 60


def test_the_limit_is_still_per_key(redis_url: str) -> None:
    limiter = _limiter("300/minute", redis_url)
    busy, quiet = secrets.token_hex(6), secrets.token_hex(6)
    assert sum(run_async(_burst([limiter], busy, clients=10, each=40))) == 300
    assert run_async(limiter.acheck(quiet)).allowed


def test_a_lease_grows_while_spent_in_time_and_shrinks_when_left_over() -> None:
    leases = Leases(cap=8)
    assert leases.next_size("k", 0.0) == 1
    sizes, now = [], 0.0
    for _ in range(5):  # each lease spent at once: the next is twice as large, up to the cap
        size = leases.next_size("k", now)
        leases.took("k", size, now)
        while leases.spend("k", now):
            pass
        sizes.append(size)
    assert sizes == [1, 2, 4, 8, 8]
    leases.took("k", 8, now)
    assert leases.spend("k", now)  # 6 of 8 left …
    later = now + LEASE_SECONDS
    assert not leases.spend("k", later)  # … and they expire unspent
    assert leases.next_size("k", later) == 4
    leases.refused("k", later)
    assert leases.next_size("k", later) == 1
