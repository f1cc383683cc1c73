"""The ``nats`` sink: records published to a NATS JetStream stream, each acknowledged.

Delivery: effectively-once within the stream's duplicate window, at-least-once beyond it. Every
record of a batch is published with JetStream acknowledgements (the stream's leader answers once
the message is stored on a majority of its replicas); the batch counts as written only when every
one of them is acknowledged. A timeout, a stream with no leader (an election after a server was
lost), a dropped connection: the batch is retried by the runner with the same message ids
(`Nats-Msg-Id`), so what was stored the first time is dropped by the stream as a duplicate. Message
ids come from record fields (`msg_id`, e.g. product and trade id, which also drops the second copy
of a trade published by a redundant ingester) or, by default, from the batch's id and the record's
place in it. A record whose subject cannot be made (a missing field, a value that is not a subject
token) or that is larger than the server's payload limit goes to the dead letters with the reason.

Each message carries its record's kind (`Sluice-Kind`) and event time (`Sluice-Time`) as headers,
which the ``nats`` source reads back. Metrics: ``sluice_nats_publish_ack_seconds`` (from a batch's
first publish to its last acknowledgement), errors by type, repeats the stream dropped
(``sluice_component_dropped_events{reason="duplicate"}``).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import time
from collections.abc import Sequence
from typing import Any

from sluice.errors import PermanentError, RejectedRecords, RetriableError
from sluice.plugin import BatchInfo, ComponentContext, Readiness, Sink
from sluice.records import Record
from sluice.sinks.nats.config import NatsSinkConfig, parse_subject
from sluice.sinks.nats.connection import (
    connect,
    import_nats,
    is_transient_nats_error,
    retriable,
    valid_token,
)

__all__ = ["NatsSink"]

ACK_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)

MSG_ID = "Nats-Msg-Id"
KIND = "Sluice-Kind"
TIME = "Sluice-Time"
_NO_TIME = object()
"""No record's ``when``: the first record's time text is always made."""
EXPECTED_STREAM = "Nats-Expected-Stream"
YIELD_EVERY = 200
"""Messages queued between two turns given to the event loop while a batch is published."""


class _Unaddressable(Exception):
    """A record with no subject or message id: it goes to the dead letters."""


class NatsSink(Sink[NatsSinkConfig]):
    """NATS JetStream stream (publish acknowledged by the stream; repeats dropped by message id)."""

    config_model = NatsSinkConfig
    description = "Publish records to a NATS JetStream stream, acknowledged; ids drop repeats."
    delivery = "effectively-once"
    delivery_note = (
        "A retried batch or a second ingester's copy is dropped by the stream within its "
        "duplicate window (message ids); beyond it a repeat is stored again."
    )
    takes_batch_info = True

    def __init__(self, component_id: str, config: NatsSinkConfig) -> None:
        super().__init__(component_id, config)
        self._pieces = parse_subject(config.subject)
        self._constant_subject = (
            self._pieces[0][0] if len(self._pieces) == 1 and self._pieces[0][1] is None else None
        )
        self._nonce = secrets.token_hex(6)
        self._own_batches = 0
        self._nc: Any = None
        self._js: Any = None
        self._log: Any = None
        self._ctx: ComponentContext | None = None
        self._ack_seconds: Any = None

    async def start(self, ctx: ComponentContext) -> None:
        import_nats()
        self._ctx = ctx
        self._log = ctx.log
        self._ack_seconds = ctx.metrics.histogram(
            "sluice_nats_publish_ack_seconds",
            "From a batch's first publish to the last acknowledgement by the stream.",
            ACK_BUCKETS,
        )
        await self._connect()
        try:
            await self._ensure_stream()
        except BaseException:
            await self._disconnect()
            raise

    async def _connect(self) -> None:
        c = self.config
        self._nc = await connect(c, self._log, f"sluice {self.component_id}")
        self._js = self._nc.jetstream(
            timeout=c.ack_timeout_secs, publish_async_max_pending=c.max_pending
        )

    async def _disconnect(self) -> None:
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.close()

    async def _ensure_stream(self) -> None:
        nats = import_nats()
        c = self.config
        try:
            info = await self._js.stream_info(c.stream)
        except nats.js.errors.NotFoundError:
            info = None
        except Exception as exc:
            raise retriable(exc, f"cannot read stream {c.stream}") from exc
        if info is not None:
            return
        spec = c.create_stream
        if spec is None:
            raise PermanentError(
                f"stream {c.stream} does not exist: create it, or set create_stream"
            )
        api = nats.js.api
        config = api.StreamConfig(
            name=c.stream,
            subjects=c.stream_subjects(),
            num_replicas=spec.replicas,
            storage=api.StorageType.FILE if spec.storage == "file" else api.StorageType.MEMORY,
            duplicate_window=spec.duplicate_window_secs,
            max_age=spec.max_age_secs,
            max_bytes=spec.max_bytes,
        )
        try:
            await self._js.add_stream(config)
        except nats.js.errors.BadRequestError as exc:
            if exc.err_code == 10058:  # created meanwhile (another ingester): take it as it is
                return
            raise PermanentError(f"cannot create stream {c.stream}: {exc.description}") from exc
        except Exception as exc:
            raise retriable(exc, f"cannot create stream {c.stream}") from exc
        self._log.info(
            "nats.stream_created",
            stream=c.stream,
            subjects=config.subjects,
            replicas=spec.replicas,
        )

    def _address(self, record: Record, index: int, prefix: str) -> tuple[str, str]:
        """The record's subject and message id, or :class:`_Unaddressable`."""
        subject = self._constant_subject
        data: dict[str, Any] | None = None
        if subject is None:
            try:
                data = record.data
            except ValueError as exc:
                raise _Unaddressable(f"not JSON, no subject: {exc}") from exc
            parts: list[str] = []
            for literal, name in self._pieces:
                parts.append(literal)
                if name is not None:
                    value = data.get(name)
                    if value is None or isinstance(value, (dict, list)):
                        raise _Unaddressable(f"field {name!r} is missing, null or not a scalar")
                    token = str(value)
                    if not valid_token(token):
                        raise _Unaddressable(
                            f"field {name!r} = {token[:80]!r} is not a subject token (empty, "
                            "or with '.', whitespace or a wildcard)"
                        )
                    parts.append(token)
            subject = "".join(parts)
        fields = self.config.msg_id
        if fields is None:
            return subject, f"{prefix}-{index}"
        if data is None:
            try:
                data = record.data
            except ValueError as exc:
                raise _Unaddressable(f"not JSON, no message id: {exc}") from exc
        values = []
        for name in fields:
            value = data.get(name)
            if value is None:
                raise _Unaddressable(f"field {name!r} of the message id is missing or null")
            try:
                values.append(str(value))
            except RecursionError:  # a list or object ~1,000 levels deep: JSON orjson took
                raise _Unaddressable(
                    f"field {name!r} of the message id is nested too deep to be made text"
                ) from None
        return subject, ":".join(values)

    async def write_batch(self, records: Sequence[Record], batch: BatchInfo | None = None) -> None:
        if self._js is None or self._nc is None or self._nc.is_closed:
            await self._disconnect()
            await self._connect()
        c = self.config
        if batch is not None:
            prefix = f"{self._nonce}-{batch.batch_id}"
        else:
            self._own_batches += 1
            prefix = f"{self._nonce}-x{self._own_batches}"
        rejected: dict[int, str] = {}
        pending: list[tuple[int, asyncio.Future[Any]]] = []
        started = time.perf_counter()
        try:
            # one deadline for the loop (publish_async blocks while max_pending are unanswered);
            # its own per-message wait_stall would cost a task per message
            async with asyncio.timeout(c.ack_timeout_secs):
                await self._publish(records, prefix, rejected, pending)
        except TimeoutError as exc:
            _cancel(pending)
            self._count_error("publish_stalled")
            raise RetriableError(
                f"publish to {c.stream} stalled: {c.max_pending} messages unacknowledged for "
                f"{c.ack_timeout_secs:g}s"
            ) from exc
        except Exception as exc:
            _cancel(pending)
            self._failed(exc)
            raise retriable(exc, f"publish to {c.stream} failed") from exc
        await self._await_acks(pending, rejected, started)
        if rejected:
            raise RejectedRecords(rejected)

    async def _publish(
        self,
        records: Sequence[Record],
        prefix: str,
        rejected: dict[int, str],
        pending: list[tuple[int, asyncio.Future[Any]]],
    ) -> None:
        nats = import_nats()
        js = self._js
        stream = self.config.stream
        address = self._address
        publish = js.publish_async
        append = pending.append
        payload_error = nats.errors.MaxPayloadError
        # records next to each other often share their time, mostly as the very same object: its
        # text is made again only when the record's ``when`` changes (``time`` is a property, a
        # Python call per read, and ``repr`` of a float ~1 us)
        when: object = _NO_TIME
        time_text: str | None = None
        for index, record in enumerate(records):
            try:
                subject, msg_id = address(record, index, prefix)
            except _Unaddressable as exc:
                rejected[index] = str(exc)
                continue
            # the stream's name as nats-py's `stream=` would add it (same header, one dict less)
            headers = {MSG_ID: msg_id, KIND: record.kind, EXPECTED_STREAM: stream}
            if record.when is not when:
                when = record.when
                seconds = record.time
                time_text = None if seconds is None else repr(seconds)
            if time_text is not None:
                headers[TIME] = time_text
            try:
                append((index, await publish(subject, record.raw, headers=headers)))
            except payload_error:
                rejected[index] = f"{len(record.raw)} bytes: larger than the server's max_payload"
                continue
            if index % YIELD_EVERY == YIELD_EVERY - 1:
                # publish_async only queues the message: give the loop a turn so nats-py's
                # flusher sends what is queued and its reader takes the acks that came back,
                # and the stream stores this part of the batch while the rest is being made
                await asyncio.sleep(0)

    async def _await_acks(
        self,
        pending: list[tuple[int, asyncio.Future[Any]]],
        rejected: dict[int, str],
        started: float,
    ) -> None:
        c = self.config
        if not pending:
            return
        futures = [future for _, future in pending]
        _, waiting = await asyncio.wait(futures, timeout=c.ack_timeout_secs)
        if waiting:
            _cancel(pending)
            self._count_error("ack_timeout")
            raise RetriableError(
                f"{len(waiting)} of {len(futures)} messages not acknowledged by stream "
                f"{c.stream} within {c.ack_timeout_secs:g}s"
            )
        duplicates = 0
        transient: BaseException | None = None
        for index, future in pending:
            exc = future.exception()
            if exc is None:
                duplicates += bool(future.result().duplicate)
            elif is_transient_nats_error(exc):
                transient = transient or exc
            else:
                rejected[index] = f"refused by stream {c.stream}: {exc}"
        if transient is not None:
            self._failed(transient)
            raise retriable(transient, f"publish to {c.stream} not acknowledged")
        self._ack_seconds.observe(time.perf_counter() - started)
        if duplicates and self._ctx is not None:
            self._ctx.metrics.drop("duplicate", duplicates)

    def _failed(self, exc: BaseException) -> None:
        self._count_error(type(exc).__name__)

    def _count_error(self, error_type: str) -> None:
        if self._ctx is not None:
            self._ctx.metrics.error(f"nats_{error_type}")

    async def readiness(self) -> Readiness:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return Readiness(False, f"not connected to NATS ({', '.join(self.config.servers)})")
        return Readiness(True)

    async def close(self) -> None:
        await self._disconnect()


def _cancel(pending: list[tuple[int, asyncio.Future[Any]]]) -> None:
    for _, future in pending:
        if not future.done():
            future.cancel()
