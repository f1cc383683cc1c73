"""Drives one source: iterate its batches, route them, restart it with backoff when it fails
with a retriable error, and commit what every sink has written."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

from sluice.config.models import RetryPolicy
from sluice.errors import RetriableError
from sluice.plugin import ComponentContext, Readiness, Source
from sluice.records import SourceBatch
from sluice.runtime.acks import CommitTracker
from sluice.runtime.pacing import Backoff, TokenBucket
from sluice.runtime.router import Router

__all__ = ["SourceFailed", "SourceWorker"]

_RETRIABLE = (RetriableError, OSError, TimeoutError)
_RESTART = RetryPolicy(initial_backoff_secs=0.5, max_backoff_secs=30.0)


class SourceFailed(RuntimeError):
    """A source raised an error that restarting will not fix."""


class SourceWorker:
    """One source and the loop that feeds its batches to the router."""

    def __init__(self, source: Source, ctx: ComponentContext, router: Router) -> None:  # type: ignore[type-arg]
        self.source = source
        self.ctx = ctx
        self.router = router
        self.log = ctx.log
        self.metrics = ctx.metrics
        self.tracker = CommitTracker(source.commit, self._commit_failed)
        self.started = False
        self.finished = False
        self.restarting: str | None = None
        """Why the source is being restarted (between a retriable failure and its next batch)."""
        self._flowing = False
        self._stopping = False
        self._waiting = False
        self._task: asyncio.Task[None] | None = None
        self._pending: asyncio.Task[SourceBatch | None] | None = None
        self._limiter = TokenBucket(source.config.rate_limit) if source.config.rate_limit else None
        self._restart_policy: RetryPolicy = source.restart_policy() or _RESTART

    @property
    def component_id(self) -> str:
        return self.ctx.component_id

    async def readiness(self) -> Readiness:
        if self.finished:
            return Readiness(True, "finished")
        if not self.started:
            return Readiness(False, "not started")
        if self.restarting is not None:
            return Readiness(False, self.restarting)
        return await self.source.readiness()

    @property
    def state(self) -> str:
        """``not started``, ``running``, ``restarting`` or ``finished`` (for the dashboard)."""
        if self.finished:
            return "finished"
        if not self.started:
            return "not started"
        return "restarting" if self.restarting is not None else "running"

    def _commit_failed(self, exc: BaseException) -> None:
        self.metrics.error("commit")
        self.log.warning("source.commit.failed", error=str(exc), error_type=type(exc).__name__)

    async def run(self) -> None:
        """Read until the source ends or :meth:`stop` is called. Raises SourceFailed."""
        self._task = asyncio.current_task()
        committer = asyncio.create_task(self.tracker.run(), name=f"commit:{self.component_id}")
        try:
            await self._read_with_restarts()
        finally:
            committer.cancel()
            self.finished = True
            self.metrics.connected.set(0)

    async def _read_with_restarts(self) -> None:
        backoff = Backoff(self._restart_policy)
        if not self.started:
            await self.source.start(self.ctx)
            self.started = True
            self.log.info("source.started")
        while not self._stopping:
            iterator = self.source.batches()
            try:
                ended = await self._read(iterator, backoff)
            except _RETRIABLE as exc:
                if self._stopping:
                    return
                delay = backoff.next_delay(getattr(exc, "retry_after_secs", None))
                self.metrics.error(type(exc).__name__)
                self.metrics.reconnects.inc()
                self.metrics.connected.set(0)
                self._flowing = False
                self.restarting = (
                    f"restarting after {type(exc).__name__}: {exc} (attempt {backoff.attempt})"
                )
                self.log.warning(
                    "source.restarting",
                    error=str(exc) or type(exc).__name__,
                    error_type=type(exc).__name__,
                    attempt=backoff.attempt,
                    retry_in_secs=round(delay, 2),
                )
                await self._sleep_unless_stopped(delay)
                continue
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except Exception as exc:
                raise SourceFailed(f"source '{self.component_id}' failed: {exc!r}") from exc
            finally:
                await _aclose(iterator)
            if ended:
                self.log.info("source.finished", batches=self.tracker.completed_batches)
                return

    async def _read(self, iterator: AsyncIterator[SourceBatch], backoff: Backoff) -> bool:
        """Route batches; True when the source ended, False when stopped."""
        count_received = not self.source.counts_received
        route = self.router.route
        loop = asyncio.get_running_loop()
        while not self._stopping:
            # the source's wait runs in its own task, so that a stop cancels the wait only while
            # no batch is ready: a batch already read is always routed
            pending = loop.create_task(_next_batch(iterator))
            self._pending = pending
            try:
                batch = await pending
            except asyncio.CancelledError:
                if self._stopping and pending.cancelled():
                    return False
                raise
            finally:
                self._pending = None
            if batch is None:
                return True
            if not self._flowing:
                # the runner's view of "connected": batches arrive; a plugin may say more
                self._flowing = True
                self.restarting = None
                self.metrics.connected.set(1)
            backoff.reset()
            if self._limiter is not None and batch.records:
                self.metrics.rate_limited(await self._limiter.acquire(len(batch.records)))
            await route(self.component_id, batch, self.tracker, self.metrics, count_received)
        return False

    async def _sleep_unless_stopped(self, delay: float) -> None:
        self._waiting = True
        try:
            await asyncio.sleep(delay)
        except asyncio.CancelledError:
            if not self._stopping:
                raise
        finally:
            self._waiting = False

    def stop(self) -> None:
        """Stop reading; a batch already read is routed first."""
        self._stopping = True
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
        elif self._waiting and self._task is not None:
            self._task.cancel()  # sleeping before a restart

    async def final_commit(self) -> None:
        await self.tracker.flush()


async def _aclose(iterator: Any) -> None:
    aclose = getattr(iterator, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):  # torn down; its error was reported already
            await aclose()


async def _next_batch(iterator: AsyncIterator[SourceBatch]) -> SourceBatch | None:
    """The iterator's next batch, or None at its end."""
    try:
        return await anext(iterator)
    except StopAsyncIteration:
        return None
