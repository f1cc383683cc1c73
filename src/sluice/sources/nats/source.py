"""The ``nats`` source: a NATS JetStream stream read through a durable pull consumer.

Delivery: at-least-once. Several loaders (sluice processes) with the same ``durable`` share one
consumer: the stream hands each message to one of them. A message is acknowledged only when every
sink that takes it has written or dead-lettered it (the runner's acknowledgement ledger calls
:meth:`NatsSource.commit` in order; the source then acks every message of the batches up to it).
While a batch waits for a slow sink the source tells the stream it is still in progress (``+WIP``)
every ``progress_interval_secs``, so the stream does not deliver it again elsewhere; a loader that
dies stops doing so, and its unacknowledged messages are delivered again after ``ack_wait_secs`` to
a loader that lives. Repeats are possible then (written, not yet acknowledged): ClickHouse keeps one
copy of each trade (``ReplacingMergeTree``, ``FINAL``), see docs/scaling.md (NATS JetStream).

A message that is not a JSON object goes to the dead letters with its stream and stream sequence in
the reason, and is then terminated (``+TERM``: never delivered again). Servers that cannot be
reached, a stream that does not exist yet (loaders may start before the ingesters that create it),
a stream or consumer with no leader (an election): a retriable error, the runner tries again with
backoff and /readyz names the source, with the reason, until it reads. The connection outlives a restart
of the read loop, so messages already read are still acknowledged on it.

Metrics: ``sluice_nats_consumer_pending_messages`` (in the stream, not yet delivered to any loader)
and ``sluice_nats_consumer_ack_pending_messages`` (delivered, not yet acknowledged), read from the
consumer every ``stats_interval_secs``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import orjson

from sluice.errors import RetriableError
from sluice.plugin import ComponentContext, Readiness, Source
from sluice.records import Record, Rejected, SourceBatch, finite_time, one_line
from sluice.sinks.nats.connection import connect, import_nats, is_transient_nats_error, retriable
from sluice.sources.nats.config import NatsSourceConfig

__all__ = ["NatsSource"]

KIND = "Sluice-Kind"
TIME = "Sluice-Time"


@dataclass
class _Delivery:
    """The messages of one source batch, until the ledger says they are done."""

    messages: list[Any]
    rejected: list[Any] = field(default_factory=list)
    progress_at: float = 0.0


class NatsSource(Source[NatsSourceConfig]):
    """NATS JetStream durable pull consumer (at-least-once; acks after every sink wrote)."""

    config_model = NatsSourceConfig
    description = "Read a NATS JetStream stream through a durable consumer shared by loaders."
    delivery_note = (
        "Acknowledged after every sink wrote; a loader's death redelivers its unacknowledged "
        "messages after ack_wait_secs (repeats possible, none lost)."
    )

    def __init__(self, component_id: str, config: NatsSourceConfig) -> None:
        super().__init__(component_id, config)
        self._nc: Any = None
        self._js: Any = None
        self._log: Any = None
        self._deliveries: OrderedDict[int, _Delivery] = OrderedDict()
        self._next = 0
        self._progress_task: asyncio.Task[None] | None = None
        self._stats_task: asyncio.Task[None] | None = None
        self._pending = 0.0
        self._ack_pending = 0.0

    async def start(self, ctx: ComponentContext) -> None:
        import_nats()
        self._log = ctx.log
        ctx.metrics.gauge(
            "sluice_nats_consumer_pending_messages",
            "Messages of the stream the durable consumer has not delivered yet (to any loader).",
            lambda: self._pending,
        )
        ctx.metrics.gauge(
            "sluice_nats_consumer_ack_pending_messages",
            "Messages the durable consumer delivered that are not acknowledged yet.",
            lambda: self._ack_pending,
        )
        self._progress_task = asyncio.create_task(
            self._report_progress(), name=f"nats-progress:{self.component_id}"
        )
        self._stats_task = asyncio.create_task(
            self._read_stats(), name=f"nats-stats:{self.component_id}"
        )

    async def _connection(self) -> Any:
        """The JetStream context, connecting first when there is no live connection."""
        if self._nc is None or self._nc.is_closed:
            self._nc = await connect(self.config, self._log, f"sluice {self.component_id}")
            self._js = self._nc.jetstream(timeout=max(5.0, self.config.fetch_timeout_secs))
        return self._js

    async def _subscribe(self, js: Any) -> Any:
        nats = import_nats()
        c = self.config
        api = nats.js.api
        try:
            try:
                await js.consumer_info(c.stream, c.durable)
            except nats.js.errors.NotFoundError as exc:
                if exc.err_code == 10059:  # the stream itself: made by an ingester, maybe later
                    raise RetriableError(
                        f"stream {c.stream} does not exist (yet): waiting for it"
                    ) from exc
                await js.add_consumer(
                    c.stream,
                    api.ConsumerConfig(
                        durable_name=c.durable,
                        name=c.durable,
                        ack_policy=api.AckPolicy.EXPLICIT,
                        ack_wait=c.ack_wait_secs,
                        max_ack_pending=c.max_ack_pending,
                        filter_subject=c.filter_subject,
                        deliver_policy=(
                            api.DeliverPolicy.ALL
                            if c.deliver_from == "all"
                            else api.DeliverPolicy.NEW
                        ),
                    ),
                )
                self._log.info("nats.consumer_created", stream=c.stream, durable=c.durable)
            return await js.pull_subscribe_bind(durable=c.durable, stream=c.stream)
        except RetriableError:
            raise
        except Exception as exc:
            raise retriable(exc, f"cannot use consumer {c.durable} of stream {c.stream}") from exc

    async def batches(self) -> AsyncIterator[SourceBatch]:
        import_nats()
        c = self.config
        js = await self._connection()
        subscription = await self._subscribe(js)
        try:
            while True:
                try:
                    messages = await subscription.fetch(c.batch_size, timeout=c.fetch_timeout_secs)
                except TimeoutError:  # nats-py's own and asyncio's
                    continue  # nothing new within the fetch's wait
                except Exception as exc:
                    if is_transient_nats_error(exc):
                        raise retriable(
                            exc, f"fetch from consumer {c.durable} of stream {c.stream} failed"
                        ) from exc
                    raise
                if messages:
                    yield self._batch(messages)
        finally:
            with contextlib.suppress(Exception):
                await subscription.unsubscribe()

    def _batch(self, messages: list[Any]) -> SourceBatch:
        default_kind = self.config.kind
        records: list[Record] = []
        rejected: list[Rejected] = []
        delivery = _Delivery([], progress_at=time.monotonic())
        loads = orjson.loads
        nbytes = 0
        for message in messages:
            raw = message.data
            try:
                value = loads(raw)
                problem = (
                    None
                    if isinstance(value, dict)
                    else f"not a JSON object (a {type(value).__name__})"
                )
            except orjson.JSONDecodeError as exc:
                problem = f"invalid JSON: {exc}"
            if problem is not None:
                meta = message.metadata
                rejected.append(
                    Rejected(
                        raw,
                        f"{problem} (stream {meta.stream}, sequence {meta.sequence.stream}, "
                        f"subject {message.subject})",
                    )
                )
                delivery.rejected.append(message)
                continue
            headers = message.headers
            kind = default_kind
            event_time = None
            if headers:
                if kind is None:
                    kind = headers.get(KIND)
                event_time = finite_time(headers.get(TIME))
            # pretty-printed JSON stays one line of JSON Lines (same value, same length)
            records.append(Record(one_line(raw), kind or "record", event_time, value))
            nbytes += len(raw)
            delivery.messages.append(message)
        self._next += 1
        self._deliveries[self._next] = delivery
        return SourceBatch(records, rejected, self._next, nbytes)

    async def commit(self, token: Any) -> None:
        """Acknowledge every message of the batches up to ``token`` (terminate the rejected)."""
        deliveries = self._deliveries
        done: list[_Delivery] = []
        while deliveries:
            number = next(iter(deliveries))
            if number > token:
                break
            done.append(deliveries.pop(number))
        try:
            for delivery in done:
                for message in delivery.messages:
                    await message.ack()
                for message in delivery.rejected:
                    await message.term()
        except Exception as exc:  # the stream delivers them again after ack_wait: a repeat
            raise retriable(exc, "acknowledging messages failed") from exc

    async def _report_progress(self) -> None:
        """``+WIP`` for the messages still in flight, so a slow sink causes no redelivery."""
        every = self.config.progress_every()
        while True:
            await asyncio.sleep(every / 2)
            now = time.monotonic()
            for delivery in list(self._deliveries.values()):
                if now - delivery.progress_at < every:
                    continue
                delivery.progress_at = now
                try:
                    for message in (*delivery.messages, *delivery.rejected):
                        await message.in_progress()
                except Exception as exc:  # disconnected: the messages may be delivered again
                    self._log.warning("nats.progress_failed", error=str(exc))
                    break

    async def _read_stats(self) -> None:
        c = self.config
        while True:
            await asyncio.sleep(c.stats_interval_secs)
            js = self._js
            if js is None or self._nc is None or not self._nc.is_connected:
                continue
            try:
                info = await js.consumer_info(c.stream, c.durable)
            except Exception as exc:  # the gauges keep their last values
                self._log.debug("nats.consumer_info_failed", error=str(exc))
                continue
            self._pending = float(info.num_pending or 0)
            self._ack_pending = float(info.num_ack_pending or 0)

    async def readiness(self) -> Readiness:
        nc = self._nc
        if nc is None or not nc.is_connected:
            return Readiness(False, f"not connected to NATS ({', '.join(self.config.servers)})")
        return Readiness(True)

    async def close(self) -> None:
        for task in (self._progress_task, self._stats_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        nc, self._nc, self._js = self._nc, None, None
        if nc is not None:
            with contextlib.suppress(Exception):
                await nc.drain()
