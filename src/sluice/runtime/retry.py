"""Retrying, in one place: backoff with jitter, the attempt count, the attempt limit and how often a
failure is logged.

Every retry loop of the runner (a source restarting, a sink starting, a sink writing a batch, a disk
buffer appending) holds one :class:`Retrying` from :func:`retrying`, and calls
:meth:`Retrying.failed` for each failure: it counts the attempt, draws the delay (at least the error's
``retry_after_secs``), logs the failure at the loop's cadence and returns the delay. The loop then
waits as suits it (interruptible by a stop or not) and tries again; :meth:`Retrying.recovered` logs
the end of a run of failures and starts the count afresh.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sluice.config.models import RetryPolicy
from sluice.runtime.pacing import Backoff

__all__ = ["Cadence", "Retrying", "retrying"]


@dataclass(frozen=True, slots=True)
class Cadence:
    """Which failures are logged as warnings (the others at debug level).

    The first ``first`` attempts, then every ``every``-th attempt, and, with ``every_secs``, at most
    one warning that often past the first."""

    first: int = 1_000_000_000
    every: int = 0
    every_secs: float | None = None


EVERY_ATTEMPT = Cadence()
"""A warning for every failure (restarts and start attempts: each is news)."""


class Retrying:
    """One retried operation's state; see :func:`retrying`."""

    def __init__(
        self,
        policy: RetryPolicy,
        log: Any,
        event: str,
        *,
        cadence: Cadence = EVERY_ATTEMPT,
        rng: random.Random | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.policy = policy
        self.log = log
        self.event = event
        self.cadence = cadence
        self.clock = clock
        self._backoff = Backoff(policy, rng)
        self.since: float | None = None
        """When the current run of failures began; None while the operation succeeds."""
        self._logged_at: float | None = None

    @property
    def attempt(self) -> int:
        """Failed attempts in the current run of failures."""
        return self._backoff.attempt

    def exhausted(self) -> bool:
        """True when the failure being handled is the last attempt ``max_attempts`` allows."""
        limit = self.policy.max_attempts
        return limit is not None and self._backoff.attempt + 1 >= limit

    def failed(self, exc: BaseException, **fields: Any) -> float:
        """Count a failed attempt, log it at the cadence, and return the delay before the next.

        The line carries ``error``, ``error_type``, ``attempt`` and ``retry_in_secs``; ``fields``
        add to (or replace) them."""
        delay = self._backoff.next_delay(getattr(exc, "retry_after_secs", None))
        now = self.clock()
        if self.since is None:
            self.since = now
        attempt = self._backoff.attempt
        cadence = self.cadence
        loud = attempt <= cadence.first or (cadence.every and attempt % cadence.every == 0)
        if (
            not loud
            and cadence.every_secs is not None
            and (self._logged_at is None or now - self._logged_at >= cadence.every_secs)
        ):
            loud = True
        if loud:
            self._logged_at = now
        line = {
            "error": str(exc) or type(exc).__name__,
            "error_type": type(exc).__name__,
            "attempt": attempt,
            "retry_in_secs": round(delay, 3),
            **fields,
        }
        (self.log.warning if loud else self.log.debug)(self.event, **line)
        return delay

    def recovered(self, event: str | None = None, **fields: Any) -> float | None:
        """The operation succeeded: log ``event`` (with how long it failed) if it had failed, and
        start counting afresh. Returns the seconds it failed for, or None."""
        since = self.since
        self._backoff.reset()
        self.since = self._logged_at = None
        if since is None:
            return None
        failed_for = self.clock() - since
        if event is not None:
            self.log.info(event, failed_for_secs=round(failed_for, 2), **fields)
        return failed_for

    def reset(self) -> None:
        """Start counting afresh without logging."""
        self._backoff.reset()
        self.since = self._logged_at = None


def retrying(
    policy: RetryPolicy,
    log: Any,
    event: str,
    *,
    cadence: Cadence = EVERY_ATTEMPT,
    rng: random.Random | None = None,
) -> Retrying:
    """The retry state for one loop: ``policy`` sets the backoff and the attempt limit, ``event``
    names the log line of a failure, ``cadence`` how often it is a warning."""
    return Retrying(policy, log, event, cadence=cadence, rng=rng)
