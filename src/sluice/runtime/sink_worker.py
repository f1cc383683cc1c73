"""Drives one sink: start (retried while the far side is down), then batches from its buffer to
``write_batch`` with retries, dead letters for what can never be written, and acknowledgements.

A sink that raises :class:`~sluice.errors.BrokenError` (from ``start`` or ``write_batch``) is not
tried again: one ``sink.broken`` error line, the sink reports not ready, and every batch from then
on goes to the dead letters with that reason, so nothing is lost. The dead-letter sink has nowhere
to send them: when it is broken the run fails (exit 1), its records counted as not written."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from sluice.errors import (
    BrokenError,
    PermanentError,
    RejectedRecords,
    RetriableError,
    is_transient,
)
from sluice.plugin import BatchInfo, ComponentContext, Readiness, Sink, write
from sluice.records import Record, origin_key
from sluice.runtime.buffers import Backlog, Batch, Buffer, BufferClosed, Segment, build_buffer
from sluice.runtime.dead_letters import dead_letter
from sluice.runtime.ledger import Ticket
from sluice.runtime.pacing import TokenBucket
from sluice.runtime.retry import Cadence, retrying

__all__ = ["DropReporter", "SinkWorker"]

_WRITE_CADENCE = Cadence(first=3, every=10)
"""A failing write is a warning for its first three attempts, then every tenth (else debug)."""
DROP_LOG_INTERVAL_SECS = 10.0
"""At most one ``buffer.full.dropping`` line per sink this often."""


class BufferFailed(RuntimeError):
    """A sink's buffer failed to take records (not retriable: the run fails)."""


class SinkWorker:
    """One sink, its buffer and its delivery loop."""

    def __init__(
        self,
        sink: Sink,  # type: ignore[type-arg]
        ctx: ComponentContext,
        dead_letters: SinkWorker | None,
    ) -> None:
        self.sink = sink
        self.ctx = ctx
        self.config = sink.config
        self.buffer: Buffer = build_buffer(
            self.config.buffer,
            self.config.batch,
            ctx.data_dir / "buffer",
            on_error=self._buffer_failed,
            log=ctx.log,
            metrics=ctx.metrics,
        )
        self.dead_letters = dead_letters
        """Where this sink's rejected records go; None for the dead-letter sink itself."""
        self.metrics = ctx.metrics
        self.log = ctx.log
        self.started = False
        self.measures_lag = True
        """False when a source feeding this sink has recorded event times (no lag is observed)."""
        self.in_flight: Batch | None = None
        self.batches_tried = 0
        """Batches handed to the sink so far: the ``batch_id`` of the latest (:class:`BatchInfo`)."""
        self._offering = 0
        """Records waiting for room in the buffer (their source is blocked on them)."""
        self._write_retry = retrying(
            self.config.retry, self.log, "sink.write.retrying", cadence=_WRITE_CADENCE
        )
        """The retry state of writes; its ``since`` is when the current run of failures began."""
        self.broken: BrokenError | None = None
        """Set when the sink can write nothing until someone acts; its batches go to dead letters."""
        self._limiter = TokenBucket(self.config.rate_limit) if self.config.rate_limit else None
        self.drops = DropReporter(self.log)
        self.metrics.gauge(
            "sluice_buffer_events", "Records held in a sink's buffer.", lambda: self.buffer.events
        )
        self.metrics.gauge(
            "sluice_buffer_bytes", "Bytes held in a sink's buffer.", lambda: self.buffer.nbytes
        )
        self.metrics.gauge(
            "sluice_buffer_max_events",
            "Capacity of a sink's buffer, in records.",
            lambda: self.config.buffer.max_events,
        )
        self.metrics.gauge(
            "sluice_buffer_max_bytes",
            "Capacity of a sink's buffer, in bytes.",
            lambda: self.config.buffer.max_bytes,
        )
        if self.buffer.durable:
            self.metrics.gauge(
                "sluice_buffer_disk_bytes",
                "Bytes of a disk buffer's log files on disk.",
                self.buffer.disk_bytes,
            )
        self.metrics.gauge(
            "sluice_sink_write_failing_seconds",
            "How long a sink's writes have been failing (0 while they succeed).",
            self.failing_for,
        )

    @property
    def component_id(self) -> str:
        return self.ctx.component_id

    def failing_for(self) -> float:
        """Seconds since the current run of failed writes began; 0 when writes succeed."""
        since = self._write_retry.since
        return 0.0 if since is None else time.monotonic() - since

    def unwritten(self) -> int:
        """Records held in memory, waiting to enter the buffer, or being written now (a durable
        buffer's records are safe)."""
        if self.buffer.durable:
            return self._offering
        in_flight = len(self.in_flight.records) if self.in_flight is not None else 0
        return self.buffer.events + in_flight + self._offering

    def _buffer_failed(self, exc: BaseException) -> None:
        """Count a disk buffer's I/O error (the buffer logs it, with the path, at its cadence)."""
        self.metrics.error("buffer_io")

    def backlog(self) -> Backlog | None:
        """Records and bytes a durable buffer keeps for the next start (once it finished); None
        for a buffer that keeps nothing."""
        return self.buffer.backlog() if self.buffer.durable else None

    async def _pause(self, delay: float) -> bool:
        """Wait ``delay`` before a retry; False when the pipeline stops and what is pending is
        safe on disk, so the retries can end now (the next start picks it up)."""
        try:
            async with asyncio.timeout(delay):
                await self.buffer.abandoned.wait()
        except TimeoutError:
            return True
        return False

    async def readiness(self) -> Readiness:
        if self.broken is not None:
            return Readiness(False, f"broken: {self.broken}")
        failing = self.buffer.failing
        if failing is not None:
            return Readiness(False, f"buffer writes failing: {failing}")
        if not self.started:
            return Readiness(False, "not started (retrying)")
        if self._write_retry.since is not None:
            return Readiness(False, f"writes failing for {self.failing_for():.0f}s")
        return await self.sink.readiness()

    async def offer(self, segment: Segment) -> None:
        """Hand a segment to this sink; counts it received, or dropped by policy."""
        count = len(segment.records)
        self.metrics.received_events.inc(count)
        self.metrics.received_bytes.inc(segment.nbytes)
        self._offering += count
        try:
            accepted = await self.buffer.put(segment)
        except BufferClosed:
            # only after a forced stop; the records are counted as not written
            self.metrics.unwritten.inc(count)
            segment.ticket.release()  # abandoned
            return
        except Exception as exc:
            # a bug, not a condition: fail the run rather than let the source restart past it
            self.metrics.unwritten.inc(count)
            segment.ticket.release()  # abandoned
            raise BufferFailed(f"sink '{self.component_id}' buffer failed: {exc!r}") from exc
        finally:
            self._offering -= count
        if not accepted:
            self.metrics.drop("buffer_full", count)
            segment.ticket.release()  # dropped by policy
            self.drops.dropped(count)

    async def start(self) -> None:
        """Start the sink, retrying while the far side is unavailable."""
        retry = retrying(self.config.retry, self.log, "sink.start.failed")
        while True:
            try:
                await self.sink.start(self.ctx)
            except BrokenError as exc:
                self._break(exc)
                return
            except Exception as exc:
                if not is_transient(exc):
                    raise
                delay = retry.failed(exc)
                self.metrics.error("start")
                if not await self._pause(delay):
                    self.log.info("sink.start.abandoned", reason="stopping; the buffer is on disk")
                    return
                continue
            self.started = True
            self.log.info("sink.started")
            return

    def _break(self, exc: BrokenError) -> None:
        """Stop trying the sink: one error line; the run fails if this is the dead-letter sink."""
        self.broken = exc
        self.metrics.error("broken")
        self.log.error(
            "sink.broken",
            error=str(exc),
            then="the run fails" if self.dead_letters is None else "records go to the dead letters",
        )
        if self.dead_letters is None:
            raise exc

    async def run(self) -> None:
        """Write batches until the buffer is closed and empty."""
        try:
            await self._run()
        finally:
            self.drops.flush()

    async def _run(self) -> None:
        if not self.started:
            await self.start()
        while (batch := await self.buffer.next_batch()) is not None:
            self.in_flight = batch
            delivered = await self._deliver(batch)
            self.in_flight = None
            if not delivered:
                # stopping with the batch still on disk: not acknowledged, kept for the next start
                await self.buffer.aclose()
                return
            for segment in batch.segments:
                segment.ticket.release()  # written, or its rejects handed to the dead letters

    async def _deliver(self, batch: Batch) -> bool:
        """Write ``batch`` (or dead-letter what cannot be); False if abandoned on a stop."""
        records = batch.records
        if self._limiter is not None:
            self.metrics.rate_limited(await self._limiter.acquire(len(records)))
        retry = self._write_retry
        started = time.monotonic()
        self.batches_tried += 1
        batch_id = self.batches_tried
        origin = origin_key(records) if self.sink.takes_batch_info else None
        while True:
            if self.broken is not None:
                reason = f"sink broken: {self.broken}"
                await self._to_dead_letters(batch, dict.fromkeys(range(len(records)), reason))
                self._recovered()
                return True
            try:
                await write(self.sink, records, BatchInfo(batch_id, retry.attempt + 1, origin))
            except asyncio.CancelledError:
                raise
            except BrokenError as exc:
                self._break(exc)
                continue
            except RejectedRecords as exc:
                rejected = {i: r for i, r in exc.rejected.items() if 0 <= i < len(records)}
                rejected_bytes = sum(len(records[i].raw) for i in rejected)
                self._written(
                    batch, len(records) - len(rejected), batch.nbytes - rejected_bytes, started
                )
                await self._to_dead_letters(batch, rejected)
                return True
            except PermanentError as exc:
                self.metrics.error("permanent")
                reason = str(exc) or type(exc).__name__
                await self._to_dead_letters(batch, dict.fromkeys(range(len(records)), reason))
                self._recovered()
                return True
            except Exception as exc:
                self.metrics.error(_error_type(exc))
                if retry.exhausted():
                    attempts = self.config.retry.max_attempts
                    reason = f"gave up after {attempts} attempts: {exc}"
                    self.log.error("sink.write.gave_up", attempts=attempts, error=str(exc))
                    await self._to_dead_letters(batch, dict.fromkeys(range(len(records)), reason))
                    self._recovered()
                    return True
                delay = retry.failed(exc, records=len(records))
                self.metrics.retries.inc()
                if not await self._pause(delay):
                    self.log.info(
                        "sink.write.abandoned",
                        records=len(records),
                        reason="stopping; the batch stays in the disk buffer for the next start",
                    )
                    return False
                continue
            self._written(batch, len(records), batch.nbytes, started)
            return True

    def _written(self, batch: Batch, count: int, nbytes: int, started: float) -> None:
        now = time.monotonic()
        self.metrics.sent_events.inc(count)
        self.metrics.sent_bytes.inc(nbytes)
        self.metrics.flush_seconds.observe(now - started)
        oldest = batch.records[0].time if batch.records and self.measures_lag else None
        if oldest is not None:
            self.metrics.lag_seconds.observe(max(0.0, time.time() - oldest))
        self._recovered()

    def _recovered(self) -> None:
        """The batch is done (written or dead-lettered): a run of failures, if any, ends."""
        if self._write_retry.since is not None:
            self._write_retry.recovered("sink.write.recovered")

    async def _to_dead_letters(self, batch: Batch, rejected: dict[int, str]) -> None:
        """Send ``rejected`` (index in batch -> reason) to the dead letters, keeping acks pending."""
        if not rejected:
            return
        first_reason = next(iter(rejected.values()))
        if self.dead_letters is None:
            # the dead-letter sink itself refused them: nowhere left to put them
            self.metrics.error("dead_letter_lost", len(rejected))
            self.log.error(
                "dead_letters.lost",
                records=len(rejected),
                reason=first_reason,
                sample=batch.records[next(iter(rejected))].raw[:200].decode("utf-8", "replace"),
            )
            return
        self.metrics.dead_letters.inc(len(rejected))
        # a broken sink said why once (sink.broken); each batch it passes on is not news
        log = self.log.debug if self.broken is not None else self.log.warning
        log("sink.dead_letters", records=len(rejected), reason=first_reason)
        offset = 0
        for segment in batch.segments:
            end = offset + len(segment.records)
            letters: list[Record] = [
                dead_letter(segment.records[i - offset].raw, rejected[i], self.component_id, "sink")
                for i in range(offset, end)
                if i in rejected
            ]
            offset = end
            if letters:
                await self.dead_letters.accept_dead_letters(letters, segment.ticket.split())

    async def accept_dead_letters(self, letters: Sequence[Record], ticket: Ticket) -> None:
        """Queue dead letters on this (the dead-letter) sink; ``ticket`` (a piece of the batch they
        came from) is released once they are written."""
        await self.offer(Segment(letters, sum(len(r.raw) for r in letters), ticket))


class DropReporter:
    """Logs ``drop_newest`` drops at a bounded cadence: the first drop at once, then at most one
    line every ``interval_secs``, each with the drops since the last line and the total."""

    def __init__(
        self,
        log: Any,
        interval_secs: float = DROP_LOG_INTERVAL_SECS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log = log
        self.interval_secs = interval_secs
        self.clock = clock
        self.total = 0
        self._unlogged = 0
        self._logged_at: float | None = None

    def dropped(self, count: int) -> None:
        self.total += count
        self._unlogged += count
        now = self.clock()
        if self._logged_at is None or now - self._logged_at >= self.interval_secs:
            self._logged_at = now
            self._log()

    def flush(self) -> None:
        """Log what was dropped since the last line (at the end of a run)."""
        if self._unlogged:
            self._log()

    def _log(self) -> None:
        self.log.warning(
            "buffer.full.dropping",
            dropped=self._unlogged,
            dropped_total=self.total,
            policy="drop_newest",
        )
        self._unlogged = 0


def _error_type(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, ConnectionError):
        return "connection"
    if isinstance(exc, OSError):
        return "io"
    if isinstance(exc, RetriableError):
        return "retriable"
    return type(exc).__name__
