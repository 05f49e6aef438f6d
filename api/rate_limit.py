"""Per-key rate limits with the `limits` library: Redis in distributed mode, memory when embedded.

A moving window (not a fixed one) so a client cannot double its rate across a window boundary.
Every API replica shares the Redis counters, so the limit is per key, not per process. If the
storage itself fails, the request is let through and the failure logged: a Redis hiccup should
slow nobody's shop down, and the limit is a guard against abuse, not a billing meter.

The API asks from async code (`acheck`), on `limits.aio`'s Redis storage (redis-py's asyncio
client, one per event loop: see core.async_db.PerLoop), so a request never waits in the thread pool
for its counter; it shares the sync storage's keys, which scripts and tests use (`check`). The
memory storage does no I/O, so async code calls the sync one directly.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.aio.storage import Storage as AsyncStorage
from limits.aio.strategies import MovingWindowRateLimiter as AsyncMovingWindow
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter
from limits.util import WindowStats

from core.async_db import PerLoop
from core.settings import Settings

log = logging.getLogger("roomfit.api.rate_limit")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int  # -1: not read (allowed requests skip it)
    retry_after: int


class RateLimiter:
    def __init__(self, rate: str, storage: Storage, async_uri: str | None = None) -> None:
        self.item: RateLimitItem = parse(rate)
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self._async: PerLoop[AsyncMovingWindow] | None = None
        if async_uri is not None:
            uri = async_uri

            def make() -> AsyncMovingWindow:
                store: AsyncStorage = storage_from_string(f"async+{uri}", implementation="redispy")
                return AsyncMovingWindow(store)

            self._async = PerLoop(make)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        broker = settings.resolved_broker_url
        if broker.startswith(("redis://", "rediss://")):
            return cls(settings.rate_limit, storage_from_string(broker), async_uri=broker)
        return cls(settings.rate_limit, storage_from_string("memory://"))

    def check(self, key_id: str) -> Verdict:
        try:
            if self.strategy.hit(self.item, "roomfit-key", key_id):
                # One round trip on the common path; the window is read only to refuse.
                return Verdict(True, self.item.amount, -1, 0)
            stats = self.strategy.get_window_stats(self.item, "roomfit-key", key_id)
        except Exception:  # storage down: fail open (see the module's docstring)
            return self._failed_open(key_id)
        return self._refused(stats)

    async def acheck(self, key_id: str) -> Verdict:
        if self._async is None:
            return self.check(key_id)
        strategy = self._async.get()
        try:
            if await strategy.hit(self.item, "roomfit-key", key_id):
                return Verdict(True, self.item.amount, -1, 0)
            stats = await strategy.get_window_stats(self.item, "roomfit-key", key_id)
        except Exception:  # storage down: fail open (see the module's docstring)
            return self._failed_open(key_id)
        return self._refused(stats)

    def _failed_open(self, key_id: str) -> Verdict:
        log.warning("rate limit storage failed; letting key %s through", key_id, exc_info=True)
        return Verdict(True, self.item.amount, self.item.amount, 0)

    def _refused(self, stats: WindowStats) -> Verdict:
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, self.item.amount, 0, retry_after)
