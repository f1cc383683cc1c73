import random
import time

from sluice.config.models import RateLimit, RetryPolicy
from sluice.runtime.pacing import Backoff, TokenBucket


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
    bucket = TokenBucket(RateLimit(events_per_sec=1000, burst=100))
    started = time.monotonic()
    waited = 0.0
    for _ in range(10):
        waited += await bucket.acquire(50)
    elapsed = time.monotonic() - started
    # 500 events at 1000/s with a 100-event head start: about 0.4 s
    assert 0.3 <= elapsed <= 1.0
    assert waited > 0


async def test_token_bucket_lets_an_oversized_request_through() -> None:
    bucket = TokenBucket(RateLimit(events_per_sec=10_000, burst=10))
    await bucket.acquire(500)  # larger than the bucket: let through, not refused
    assert bucket.tokens < 0
    waited = await bucket.acquire(10)  # the next request pays for it: ~500/10000 s
    assert waited >= 0.03
