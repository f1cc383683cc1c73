"""Drives one source: iterate its batches, count them, route them, restart it with backoff when
it fails with a retriable error, and commit what every sink has written.

The worker is the one owner of a source's metrics: it counts each batch from what the batch
reports (:func:`count_batch`) and reads the source's declared connection state
(:meth:`~sluice.plugin.Source.connected`) when ``sluice_source_connected`` is read."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

from sluice.config.models import RetryPolicy
from sluice.errors import is_transient
from sluice.metrics import ComponentMetrics
from sluice.plugin import ComponentContext, EventTimes, Readiness, Source
from sluice.records import SourceBatch
from sluice.runtime.ledger import Ledger
from sluice.runtime.pacing import TokenBucket
from sluice.runtime.retry import Retrying, retrying
from sluice.runtime.router import Router

__all__ = ["SourceFailed", "SourceWorker", "count_batch"]

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
        self.event_times: EventTimes = source.event_times()
        """What the source's event times are (declared by its config)."""
        self.metrics.connected.set_function(self._connected)

    @property
    def component_id(self) -> str:
        return self.ctx.component_id

    async def readiness(self) -> Readiness:
        if self.finished:
            return Readiness(True, "finished")
        if not self.started:
            return Readiness(False, "not started")
        restarting = self.restarting or self._read_failed()
        if restarting is not None:
            return Readiness(False, restarting)
        return await self.source.readiness()

    @property
    def state(self) -> str:
        """``not started``, ``running``, ``restarting`` or ``finished`` (for the dashboard)."""
        if self.finished:
            return "finished"
        if not self.started:
            return "not started"
        restarting = self.restarting is not None or self._read_failed() is not None
        return "restarting" if restarting else "running"

    def _read_failed(self) -> str | None:
        """Why the source restarts, when its read has just failed with a transient error that
        this worker has not taken yet (the read's task ended; the worker runs at the loop's next
        turn). Without it, /readyz would say what the source says of its closed connection
        ("not connected") in between, instead of the error."""
        pending = self._pending
        if pending is None or not pending.done() or pending.cancelled():
            return None
        exc = pending.exception()
        if exc is None or not is_transient(exc):
            return None
        return f"restarting after {type(exc).__name__}: {exc}"

    def _connected(self) -> float:
        """``sluice_source_connected``: the source's own word when it has a connection, else
        whether batches flow; 0 before the start and after the end."""
        if self.finished or not self.started:
            return 0.0
        declared = self.source.connected()
        if declared is None:
            return 1.0 if self._flowing else 0.0
        return 1.0 if declared else 0.0

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
        route = self.router.route
        metrics = self.metrics
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
                # batches arrive: the source is up (and says more through connected())
                self._flowing = True
                self.restarting = None
                retry.reset()
            if self._limiter is not None and batch.records:
                metrics.rate_limited(await self._limiter.acquire(len(batch.records)))
            count_batch(metrics, batch)
            if batch.records or batch.rejected or batch.token is not None:
                await route(self.component_id, batch, self.ledger, metrics)
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
        await self.ledger.flush()


def count_batch(metrics: ComponentMetrics, batch: SourceBatch) -> None:
    """A source's counters for one batch (once per batch, never per record): it "receives" what
    it read (``read_events``/``read_bytes`` when the batch reports them, else its records and
    rejected inputs), "sends" the records it made, dead-letters its rejects and discards, by
    reason, what it turned into no record on purpose."""
    records = batch.records
    rejected = batch.rejected
    read_events = batch.read_events
    read_bytes = batch.read_bytes
    nbytes = 0
    if records:
        nbytes = batch.nbytes if batch.nbytes is not None else sum([len(r.raw) for r in records])
        batch.nbytes = nbytes
    if rejected:
        metrics.dead_letters.inc(len(rejected))
    if read_events is None:
        read_events = len(records) + len(rejected)
    if read_bytes is None:
        read_bytes = nbytes + (sum([len(item.raw) for item in rejected]) if rejected else 0)
    if read_events:
        metrics.received_events.inc(read_events)
    if read_bytes:
        metrics.received_bytes.inc(read_bytes)
    if batch.discarded:
        for reason, count in batch.discarded.items():
            if count:
                metrics.discard(reason, count)
    if records:
        metrics.sent_events.inc(len(records))
        metrics.sent_bytes.inc(nbytes)
        metrics.last_receive_time.set(time.time())
        newest = records[-1].time
        if newest is not None:
            metrics.last_event_time.set(newest)


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
