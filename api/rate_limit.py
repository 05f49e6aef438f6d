"""Per-key rate limits with the `limits` library: Redis in distributed mode, memory when embedded.

A moving window (not a fixed one) so a client cannot double its rate across a window boundary.
Every API replica shares the Redis counters, so the limit is per key, not per process. If the
storage itself fails, the request is let through and the failure logged: a Redis hiccup should
slow nobody's shop down, and the limit is a guard against abuse, not a billing meter.

The API asks from async code (`acheck`), on `limits.aio`'s Redis storage (redis-py's asyncio
client, one per event loop: see core.async_db.PerLoop), so a request never waits in the thread pool
for its counter; it shares the sync storage's keys, which scripts and tests use (`check`). The
memory storage does no I/O, so async code calls the sync one directly.

A busy key does not cost a Redis round trip per request: the async path takes its hits in leases
(`Leases`). A key's first request takes one hit; a lease used up within `LEASE_SECONDS` makes the
next one twice as large, up to 1 % of the limit (at most 64); a lease that expires with hits left
makes the next one half as large. All of a lease's hits are counted in Redis when it is taken, so
the replicas together never admit more than the limit; what a lease leaves unused counts as used
(a key that stops mid-burst may be refused up to one lease's worth early), and since its hits are
counted up to `LEASE_SECONDS` before they are spent, the limit holds over any window that long
plus the period. A key whose lease does not fit what is left of its window takes single hits, so a
key at its limit is refused exactly. At 600/minute (the default) a lease is at most 6 hits.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass, field

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


LEASE_SECONDS = 1.0  # how long a process may spend a lease's hits
MAX_LEASE = 64
MAX_LEASED_KEYS = 10_000  # past it, expired leases are dropped (then all of them, if none expired)


@dataclass
class _Lease:
    size: int
    left: int
    expires: float


@dataclass
class Leases:
    """This process's hits taken ahead for busy keys (see the module's docstring); one per event loop,
    as `acheck` reads and writes it without awaiting in between."""

    cap: int
    leases: dict[str, _Lease] = field(default_factory=dict)
    pending: dict[str, asyncio.Future[None]] = field(default_factory=dict)  # keys taking a lease now

    def spend(self, key_id: str, now: float) -> bool:
        """Spend one hit of this key's lease, if it has one left and still valid."""
        lease = self.leases.get(key_id)
        if lease is None or lease.left <= 0 or now >= lease.expires:
            return False
        lease.left -= 1
        return True

    def next_size(self, key_id: str, now: float) -> int:
        lease = self.leases.get(key_id)
        if lease is None:
            return 1
        if lease.left <= 0 and now < lease.expires:  # spent before it ran out: the key is busy
            return min(self.cap, lease.size * 2)
        if lease.left > 0:  # expired with hits left: the key slowed down
            return max(1, lease.size // 2)
        return lease.size

    def took(self, key_id: str, size: int, now: float) -> None:
        """A lease of `size` hits was counted in storage; this request spends the first."""
        if len(self.leases) >= MAX_LEASED_KEYS and key_id not in self.leases:
            self.leases = {k: v for k, v in self.leases.items() if now < v.expires}
            if len(self.leases) >= MAX_LEASED_KEYS:
                self.leases.clear()
        self.leases[key_id] = _Lease(size=size, left=size - 1, expires=now + LEASE_SECONDS)

    def refused(self, key_id: str, now: float) -> None:
        """A refused key asks for single hits again (one round trip each, not a failed lease first)."""
        if key_id in self.leases:
            self.leases[key_id] = _Lease(size=1, left=0, expires=now)


class RateLimiter:
    def __init__(self, rate: str, storage: Storage, async_uri: str | None = None) -> None:
        self.item: RateLimitItem = parse(rate)
        self.storage = storage
        self.strategy = MovingWindowRateLimiter(storage)
        self._async: PerLoop[AsyncMovingWindow] | None = None
        lease_cap = max(1, min(MAX_LEASE, self.item.amount // 100))
        self._leases: PerLoop[Leases] = PerLoop(lambda: Leases(lease_cap))
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
        leases = self._leases.get()
        while True:
            if leases.spend(key_id, time.monotonic()):
                return Verdict(True, self.item.amount, -1, 0)
            pending = leases.pending.get(key_id)
            if pending is None:
                break
            # One lease request per key in flight: the others wait for it rather than each taking
            # a lease of their own that the next would overwrite (counted, never spent).
            await asyncio.shield(pending)
        taking = leases.pending[key_id] = asyncio.get_running_loop().create_future()
        try:
            return await self._take(leases, key_id)
        finally:
            del leases.pending[key_id]
            taking.set_result(None)

    async def _take(self, leases: Leases, key_id: str) -> Verdict:
        assert self._async is not None
        strategy = self._async.get()
        now = time.monotonic()
        size = leases.next_size(key_id, now)
        ns = "roomfit-key"
        try:
            # A lease that no longer fits the window falls back to one hit, so the limit is exact.
            taken = size if size > 1 and await strategy.hit(self.item, ns, key_id, cost=size) else 0
            if not taken and await strategy.hit(self.item, ns, key_id):
                taken = 1
            if taken:
                leases.took(key_id, taken, now)
                return Verdict(True, self.item.amount, -1, 0)
            leases.refused(key_id, now)
            stats = await strategy.get_window_stats(self.item, ns, key_id)
        except Exception:  # storage down: fail open (see the module's docstring)
            return self._failed_open(key_id)
        return self._refused(stats)

    def _failed_open(self, key_id: str) -> Verdict:
        log.warning("rate limit storage failed; letting key %s through", key_id, exc_info=True)
        return Verdict(True, self.item.amount, self.item.amount, 0)

    def _refused(self, stats: WindowStats) -> Verdict:
        retry_after = max(1, math.ceil(stats.reset_time - time.time()))
        return Verdict(False, self.item.amount, 0, retry_after)
