"""Per-key rate limits with the `limits` library: Redis in distributed mode, memory when embedded.

A moving window (not a fixed one) so a client cannot double its rate across a window boundary.
Every API replica shares the Redis counters, so the limit is per key, not per process. If the
storage itself fails, the request is let through and the failure logged: a Redis hiccup should
slow nobody's shop down, and the limit is a guard against abuse, not a billing meter.
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass

from limits import RateLimitItem, parse
from limits.storage import Storage, storage_from_string
from limits.strategies import MovingWindowRateLimiter

from core.settings import Settings

log = logging.getLogger("roomfit.api.rate_limit")


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    limit: int
    remaining: int  # -1: not read (allowed requests skip it)
    retry_after: int


class RateLimiter:
    def __init__(self, rate: str, storage: Storage) -> None:
        self.item: RateLimitItem = parse(rate)
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)

    @classmethod
    def from_settings(cls, settings: Settings) -> RateLimiter:
        broker = settings.resolved_broker_url
        uri = broker if broker.startswith(("redis://", "rediss://")) else "memory://"
        return cls(settings.rate_limit, storage_from_string(uri))

    def check(self, key_id: str) -> Verdict:
        try:
            if self.strategy.hit(self.item, "roomfit-key", key_id):
                # One round trip on the common path; the window is read only to refuse.
                return Verdict(True, self.item.amount, -1, 0)
            stats = self.strategy.get_window_stats(self.item, "roomfit-key", key_id)
        except Exception:  # storage down: fail open (see the module's docstring)
            log.warning("rate limit storage failed; letting key %s through", key_id, exc_info=True)
            return Verdict(True, self.item.amount, self.item.amount, 0)
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, self.item.amount, 0, retry_after)
