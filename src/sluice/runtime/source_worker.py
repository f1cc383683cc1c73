"""Drives one source: iterate its batches, route them, restart it with backoff when it fails
with a retriable error, and commit what every sink has written."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sluice.config.models import RetryPolicy
from sluice.errors import is_transient
from sluice.plugin import ComponentContext, Readiness, Source
from sluice.records import SourceBatch
from sluice.runtime.ledger import Ledger
from sluice.runtime.pacing import TokenBucket
from sluice.runtime.retry import Retrying, retrying
from sluice.runtime.router import Router

__all__ = ["SourceFailed", "SourceWorker"]

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
        self.ledger = Ledger(source.commit, self._commit_failed)
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
        committer = asyncio.create_task(self.ledger.run(), name=f"commit:{self.component_id}")
        try:
            await self._read_with_restarts()
        finally:
            committer.cancel()
            self.finished = True
            self.metrics.connected.set(0)

    async def _read_with_restarts(self) -> None:
        retry = retrying(self._restart_policy, self.log, "source.restarting")
        if not self.started:
            await self.source.start(self.ctx)
            self.started = True
            self.log.info("source.started")
        while not self._stopping:
            iterator = self.source.batches()
            try:
                ended = await self._read(iterator, retry)
            except asyncio.CancelledError:
                if self._stopping:
                    return
                raise
            except Exception as exc:
                if not is_transient(exc):
                    raise SourceFailed(f"source '{self.component_id}' failed: {exc!r}") from exc
                if self._stopping:
                    return
                delay = retry.failed(exc)
                self.metrics.error(type(exc).__name__)
                self.metrics.reconnects.inc()
                self.metrics.connected.set(0)
                self._flowing = False
                self.restarting = (
                    f"restarting after {type(exc).__name__}: {exc} (attempt {retry.attempt})"
                )
                await self._sleep_unless_stopped(delay)
                continue
            finally:
                await _aclose(iterator)
            if ended:
                self.log.info("source.finished", batches=self.ledger.completed_batches)
                return

    async def _read(self, iterator: AsyncIterator[SourceBatch], retry: Retrying) -> bool:
        """Route batches; True when the source ended, False when stopped."""
        count_received = not self.source.counts_received
        route = self.router.route
        count = self._count
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
                retry.reset()
            if self._limiter is not None and batch.records:
                self.metrics.rate_limited(await self._limiter.acquire(len(batch.records)))
            count(batch, count_received)
            await route(self.component_id, batch, self.ledger, self.metrics)
        return False

    def _count(self, batch: SourceBatch, count_received: bool) -> None:
        """The source's counters, once per batch: it "receives" what it read, valid or not
        (unless the source counts its raw input itself), and "sends" the records it made."""
        metrics = self.metrics
        records = batch.records
        rejected = batch.rejected
        if rejected:
            metrics.dead_letters.inc(len(rejected))
            if count_received:
                metrics.received_events.inc(len(rejected))
                metrics.received_bytes.inc(sum([len(item.raw) for item in rejected]))
        if records:
            nbytes = batch.nbytes
            if nbytes is None:
                nbytes = batch.nbytes = sum([len(r.raw) for r in records])
            if count_received:
                metrics.received_events.inc(len(records))
                metrics.received_bytes.inc(nbytes)
            metrics.sent_events.inc(len(records))
            metrics.sent_bytes.inc(nbytes)
            metrics.last_receive_time.set(time.time())
            newest = records[-1].time
            if newest is not None:
                metrics.last_event_time.set(newest)

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
        await self.ledger.flush()


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
