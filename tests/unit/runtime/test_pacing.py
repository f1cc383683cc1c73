import asyncio
import random

from sluice.config.models import RateLimit, RetryPolicy
from sluice.runtime.pacing import Backoff, TokenBucket
from tests.unit.runtime.virtual_clock import VirtualClock


def test_backoff_grows_and_is_capped_with_equal_jitter() -> None:
    backoff = Backoff(RetryPolicy(initial_backoff_secs=0.1, max_backoff_secs=1.0), random.Random(1))
    delays = [backoff.next_delay() for _ in range(10)]
    caps = [min(1.0, 0.1 * 2**i) for i in range(10)]
    for delay, cap in zip(delays, caps, strict=True):
        assert cap / 2 <= delay <= cap


def test_full_jitter_never_goes_below_the_initial_delay() -> None:
    policy = RetryPolicy(initial_backoff_secs=0.5, max_backoff_secs=8, jitter="full")
    backoff = Backoff(policy, random.Random(2))
    delays = [backoff.next_delay() for _ in range(20)]
    assert min(delays) >= 0.5
    assert max(delays) <= 8


def test_retry_after_hint_is_respected() -> None:
    backoff = Backoff(RetryPolicy(initial_backoff_secs=0.1))
    assert backoff.next_delay(at_least=5.0) == 5.0


async def test_token_bucket_holds_the_rate() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(RateLimit(events_per_sec=1024, burst=128), clock, clock.sleep)
    waited = [await bucket.acquire(64) for _ in range(10)]
    # 640 events at 1024/s with a 128-event head start: the first two requests are free, each
    # of the other eight waits for its 64 tokens, 0.5 s in all
    assert waited == [0.0, 0.0] + [0.0625] * 8
    assert clock.sleeps == [0.0625] * 8
    assert clock.now == (640 - 128) / 1024
    assert bucket.tokens == 0


async def test_token_bucket_serves_concurrent_waiters_in_order() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(RateLimit(events_per_sec=1024, burst=64), clock, clock.sleep)
    await bucket.acquire(64)
    served: list[int] = []

    async def take(n: int) -> None:
        await bucket.acquire(64)
        served.append(n)

    await asyncio.gather(*(take(n) for n in range(5)))
    assert served == [0, 1, 2, 3, 4]
    assert clock.now == 5 * 64 / 1024


async def test_token_bucket_lets_an_oversized_request_through() -> None:
    clock = VirtualClock()
    bucket = TokenBucket(RateLimit(events_per_sec=8192, burst=16), clock, clock.sleep)
    assert await bucket.acquire(512) == 0  # larger than the bucket: let through, not refused
    assert bucket.tokens == 16 - 512
    waited = await bucket.acquire(16)  # the next request pays for it: (496 + 16) / 8192 s
    assert waited == 512 / 8192
    assert clock.sleeps == [512 / 8192]
