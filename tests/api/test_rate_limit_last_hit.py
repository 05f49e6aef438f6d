"""A key at its limit is refused exactly, with leases: a lease that no longer fits what is left of
the window falls back to a single hit (api/rate_limit.py, `RateLimiter._take`), on a real Redis."""

from __future__ import annotations

import secrets

from limits.storage import storage_from_string

from api.rate_limit import RateLimiter
from tests.loops import run_async


def test_the_last_hit_that_a_lease_no_longer_fits_is_still_admitted(redis_url: str) -> None:
    # 250/minute: leases of at most 2 hits, taken 1, 2, 2, ... = 249; the 250th fits one hit only
    limiter = RateLimiter("250/minute", storage_from_string(redis_url), async_uri=redis_url)
    key = secrets.token_hex(6)

    async def requests(count: int) -> list[bool]:
        return [(await limiter.acheck(key)).allowed for _ in range(count)]

    verdicts = run_async(requests(255))
    assert verdicts == [True] * 250 + [False] * 5
