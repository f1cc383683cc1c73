"""A clock for the token bucket that moves only when the bucket sleeps, so its arithmetic can be
checked exactly (how many waits, how long in all) whatever else the machine is doing."""

from __future__ import annotations

import asyncio


class VirtualClock:
    """Call it for the time; ``sleep`` records the delay, advances the time by it and yields.

    Use delays that are exact in binary (rates and counts that are powers of two) so the sums are
    exact."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert len(self.sleeps) < 10_000, "the bucket keeps sleeping"
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)
