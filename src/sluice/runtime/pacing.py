"""Waiting well: retry backoff with jitter, and the token bucket behind ``rate_limit``."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable

from sluice.config.models import RateLimit, RetryPolicy

__all__ = ["Backoff", "TokenBucket"]


class Backoff:
    """Exponential backoff with jitter.

    Attempt n's backoff is ``min(max, initial * multiplier**(n-1))``; the delay is drawn between
    half and all of it (``equal`` jitter) or between ``initial`` and all of it (``full``), so
    retries spread out but never spin.
    """

    def __init__(self, policy: RetryPolicy, rng: random.Random | None = None) -> None:
        self.policy = policy
        self.attempt = 0
        self._rng = rng or random.Random()

    def reset(self) -> None:
        self.attempt = 0

    def next_delay(self, at_least: float | None = None) -> float:
        """The delay before the next attempt (counting this one)."""
        self.attempt += 1
        p = self.policy
        try:
            grown = p.initial_backoff_secs * p.multiplier ** (self.attempt - 1)
        except OverflowError:  # a sink down for thousands of attempts: the cap holds
            grown = p.max_backoff_secs
        cap = min(p.max_backoff_secs, grown)
        if p.jitter == "full":
            delay = self._rng.uniform(min(p.initial_backoff_secs, cap), cap)
        else:
            delay = cap / 2 + self._rng.uniform(0, cap / 2)
        return max(delay, at_least or 0.0)


class TokenBucket:
    """At most ``events_per_sec`` on average, in bursts of up to ``burst``.

    ``acquire(n)`` takes ``n`` tokens, waiting while the bucket is short; a request larger than the
    bucket is let through once enough tokens have accrued for the bucket to be full, so a large
    batch is delayed, never refused. Returns the seconds waited.
    """

    def __init__(
        self,
        limit: RateLimit,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        """``clock`` and ``sleep`` are the monotonic clock and the wait (a test passes a virtual
        clock whose ``sleep`` advances it, so the bucket's arithmetic is checked exactly)."""
        self.rate = limit.events_per_sec
        self.capacity = float(limit.burst or max(1, int(limit.events_per_sec)))
        self.tokens = self.capacity
        self._clock = clock
        self._sleep = sleep
        self._updated = clock()
        self._lock = asyncio.Lock()

    def _refill(self) -> None:
        now = self._clock()
        self.tokens = min(self.capacity, self.tokens + (now - self._updated) * self.rate)
        self._updated = now

    async def acquire(self, count: int) -> float:
        self._refill()
        if self.tokens >= count and not self._lock.locked():  # never ahead of a waiter
            self.tokens -= count
            return 0.0
        started = self._clock()
        async with self._lock:  # waiters are served in order
            self._refill()
            need = min(float(count), self.capacity)
            while self.tokens < need:
                await self._sleep((need - self.tokens) / self.rate)
                self._refill()
            self.tokens -= count  # may go negative for an oversized request: later ones wait
        return self._clock() - started
