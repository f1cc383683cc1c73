"""The ``kafka`` source: JSON messages from Kafka topics, as a member of a consumer group.

Delivery: at-least-once, and effectively-once into a ClickHouse sink (see below). Offsets are
committed only through the runner's acknowledgements: each batch's commit token is the next offset
of every partition read so far, and the runner commits a token only once that batch and every
earlier one are written or dead-lettered by every sink that takes them, so a partition's committed
offset never passes a record that is neither. A loader that dies reads again, from the committed
offsets, what it had not committed: records it wrote may be written twice, none is lost.

Every record carries its :class:`~sluice.records.Origin` (topic, partition, offset); the ClickHouse
sink derives a batch's insert deduplication token from it, so the same records inserted again
after a crash are dropped by ClickHouse (where tokens work: docs/clickhouse.md).

Rebalance: before a partition is given up (``on_revoke``) its done offset is committed; records of
it still in flight are dropped from this consumer's view (their later acknowledgements commit
nothing for it) and are read again by the new owner. A lost partition (``on_lost``) is dropped
without a commit.

A message that is not a JSON object goes to the dead letters, with its topic, partition and offset
in the reason. Brokers that do not answer when reading starts: a retriable error (the runner
restarts with backoff, /readyz names the source); while running, librdkafka reconnects by itself
and the source reports not ready until the brokers answer again. A topic that does not exist is an
error that names it (the run fails).

Per-partition consumer lag (the log end minus the committed offset) is
``sluice_kafka_consumer_lag{topic,partition}`` on /metrics and in the source's status details.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import orjson

from sluice.errors import RetriableError
from sluice.kafka.connection import (
    KIND_HEADER,
    TIME_HEADER,
    LibrdkafkaLog,
    client_config,
    import_kafka,
)
from sluice.plugin import ComponentContext, Readiness, Source
from sluice.records import Origin, Record, Rejected, SourceBatch, finite_time, one_line
from sluice.sources.kafka.config import KafkaSourceConfig

__all__ = ["KafkaSource"]

_UNREACHABLE = ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE", "_AUTHENTICATION")

TopicPartition = tuple[str, int]


class _Offsets:
    """A commit token: the next offset of every partition read so far, each with the assignment
    generation it was read under (so an offset read before a partition was given up and taken
    back never commits)."""

    __slots__ = ("positions",)

    def __init__(self, positions: dict[TopicPartition, tuple[int, int]]) -> None:
        self.positions = positions


class KafkaSource(Source[KafkaSourceConfig]):
    """Kafka topics in a consumer group (at-least-once; offsets committed once the sinks wrote)."""

    config_model = KafkaSourceConfig
    description = "Read JSON messages from Kafka topics in a consumer group (librdkafka)."
    delivery_note = (
        "Offsets are committed once every sink wrote or dead-lettered the records; a restart "
        "reads again what was not committed (ClickHouse drops the repeat by its token)."
    )

    def __init__(self, component_id: str, config: KafkaSourceConfig) -> None:
        super().__init__(component_id, config)
        self._consumer: Any = None
        self._executor: ThreadPoolExecutor | None = None
        self._log: Any = None
        self._ctx: ComponentContext | None = None
        self._generation = 0
        self._assigned: dict[TopicPartition, int] = {}
        """Partitions this consumer owns now, with the generation they were assigned in."""
        self._positions: dict[TopicPartition, tuple[int, int]] = {}
        """Next offset to hand out per owned partition (and its generation)."""
        self._done: _Offsets | None = None
        """The newest token whose batches every sink finished (given to :meth:`commit`)."""
        self._committed: dict[TopicPartition, int] = {}
        self._log_end: dict[TopicPartition, int] = {}
        self._lag_read_at = 0.0
        self._broker_error: str | None = None
        self._resync = False
        self._kinds: dict[bytes, str] = {}
        """``sluice-kind`` header values seen, decoded (see :func:`_kind`)."""

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, ctx: ComponentContext) -> None:
        import_kafka()
        self._ctx = ctx
        self._log = ctx.log
        self._executor = ThreadPoolExecutor(1, thread_name_prefix=f"kafka-{self.component_id}")
        ctx.metrics.gauge_series(
            "sluice_kafka_consumer_lag",
            "Messages of a partition not yet committed by this consumer: the log end minus the "
            "committed offset (read every lag_interval_secs).",
            ("topic", "partition"),
            self._lag_series,
        )

    async def _call(self, fn: Any, *args: Any) -> Any:
        """Run a blocking consumer call on the consumer's own thread (one call at a time)."""
        assert self._executor is not None
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def _new_consumer(self) -> Any:
        ck = import_kafka()
        c = self.config
        own: dict[str, Any] = {
            "group.id": c.group,
            "enable.auto.commit": False,
            "enable.auto.offset.store": False,
            "auto.offset.reset": c.start_at,
            "session.timeout.ms": int(c.session_timeout_secs * 1000),
            # heartbeats well inside the session (librdkafka's default of 3 s would outlast a
            # short session and lose the partitions)
            "heartbeat.interval.ms": min(3000, int(c.session_timeout_secs * 1000) // 3),
            "error_cb": self._on_client_error,
            "logger": LibrdkafkaLog(self._log),
        }
        return ck.Consumer(client_config(c, own))

    def _on_client_error(self, error: Any) -> None:
        """librdkafka's error callback (on the consumer's thread): brokers out of reach."""
        name = error.name()
        if name in _UNREACHABLE:
            first = self._broker_error is None
            self._broker_error = f"{name}: {error.str()}"
            if first:  # once per outage; the errors metric counts every report
                self._log.warning(
                    "kafka.brokers.unreachable",
                    brokers=",".join(self.config.brokers),
                    error=self._broker_error,
                )
        if self._ctx is not None:
            self._ctx.metrics.error(f"kafka_{name.lower().lstrip('_')}")

    def _open(self) -> None:
        """Create the consumer, check the topics and subscribe (blocking, consumer thread)."""
        ck = import_kafka()
        c = self.config
        consumer = self._new_consumer()
        try:
            try:
                metadata = consumer.list_topics(timeout=c.connect_timeout_secs)
            except ck.KafkaException as exc:
                raise RetriableError(
                    f"brokers {','.join(c.brokers)} did not answer: {exc.args[0].str()}"
                ) from exc
            missing = [
                t
                for t in c.topics
                if t not in metadata.topics
                or metadata.topics[t].error is not None
                or not metadata.topics[t].partitions
            ]
            if missing:
                raise RuntimeError(
                    f"topic(s) {', '.join(repr(t) for t in missing)} do not exist on "
                    f"{','.join(c.brokers)}"
                )
            consumer.subscribe(
                list(c.topics),
                on_assign=self._on_assign,
                on_revoke=self._on_revoke,
                on_lost=self._on_lost,
            )
        except BaseException:
            consumer.close()
            raise
        self._broker_error = None
        self._consumer = consumer
        self._log.info("kafka.consumer.subscribed", topics=",".join(c.topics), group=c.group)

    async def close(self) -> None:
        consumer, self._consumer = self._consumer, None
        if consumer is not None:
            # leaving the group revokes the partitions: on_revoke commits what is done
            await self._call(consumer.close)
        if self._executor is not None:
            self._executor.shutdown(wait=False)

    async def readiness(self) -> Readiness:
        if self._broker_error is not None:
            return Readiness(False, f"brokers unreachable: {self._broker_error}")
        return Readiness(True)

    def status_details(self) -> dict[str, Any]:
        """Per-partition offsets and lag, for /api/status and the dashboard."""
        return {
            "partitions": [
                {
                    "topic": topic,
                    "partition": partition,
                    "committed": self._committed.get((topic, partition)),
                    "log_end": self._log_end.get((topic, partition)),
                    "lag": self._lag((topic, partition)),
                }
                for topic, partition in sorted(self._assigned)
            ]
        }

    # -- the group's callbacks (on the consumer's thread, inside consume) --------------------------

    def _on_assign(self, consumer: Any, partitions: Sequence[Any]) -> None:
        self._generation += 1
        for tp in partitions:
            self._assigned[(tp.topic, tp.partition)] = self._generation
        try:
            committed = consumer.committed(partitions, timeout=self.config.connect_timeout_secs)
        except Exception:  # lag stays unknown until this consumer commits
            committed = []
        for tp in committed:
            if tp.offset >= 0:
                self._committed[(tp.topic, tp.partition)] = tp.offset
        self._log.info("kafka.partitions.assigned", partitions=_names(partitions))

    def _on_revoke(self, consumer: Any, partitions: Sequence[Any]) -> None:
        ck = import_kafka()
        revoked = {(tp.topic, tp.partition) for tp in partitions}
        offsets = [
            ck.TopicPartition(topic, partition, offset)
            for (topic, partition), offset in self._committable(revoked).items()
        ]
        if offsets:
            try:
                consumer.commit(offsets=offsets, asynchronous=False)
                for tp in offsets:
                    self._committed[(tp.topic, tp.partition)] = tp.offset
            except ck.KafkaException as exc:  # a repeat for the next owner, not a loss
                self._log.warning("kafka.commit.failed", error=exc.args[0].str(), at="revoke")
        self._forget(revoked)
        self._log.info(
            "kafka.partitions.revoked",
            partitions=_names(partitions),
            committed=",".join(f"{t.topic}/{t.partition}@{t.offset}" for t in offsets) or "none",
        )

    def _on_lost(self, consumer: Any, partitions: Sequence[Any]) -> None:
        self._forget({(tp.topic, tp.partition) for tp in partitions})
        self._log.warning("kafka.partitions.lost", partitions=_names(partitions))

    def _forget(self, partitions: set[TopicPartition]) -> None:
        """Drop ``partitions`` from this consumer's view: records of them still in flight are
        written but commit nothing (the new owner reads them again)."""
        for tp in partitions:
            self._assigned.pop(tp, None)
            self._positions.pop(tp, None)
            self._committed.pop(tp, None)
            self._log_end.pop(tp, None)

    def _committable(self, only: set[TopicPartition] | None = None) -> dict[TopicPartition, int]:
        """Offsets of the done token that this consumer may commit now: partitions it still owns
        under the generation they were read in, ahead of what it committed."""
        done = self._done
        if done is None:
            return {}
        out: dict[TopicPartition, int] = {}
        for tp, (offset, generation) in done.positions.items():
            if only is not None and tp not in only:
                continue
            if self._assigned.get(tp) != generation:
                continue
            if offset > self._committed.get(tp, -1):
                out[tp] = offset
        return out

    # -- reading -----------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[SourceBatch]:
        c = self.config
        if self._consumer is None:
            await self._call(self._open)
        elif self._resync:
            await self._call(self._seek_to_positions)
        self._resync = True  # cleared when a consume result was taken in full
        consume = self._consumer.consume
        while True:
            messages = await self._call(consume, c.max_poll_records, c.poll_timeout_secs)
            if time.monotonic() - self._lag_read_at >= c.lag_interval_secs:
                self._lag_read_at = time.monotonic()
                await self._call(self._read_log_end)
            if not messages:
                continue
            batch = self._to_batch(messages)
            if batch is not None:
                yield batch

    def _to_batch(self, messages: Sequence[Any]) -> SourceBatch | None:
        ck = import_kafka()
        default_kind = self.config.kind
        records: list[Record] = []
        rejected: list[Rejected] = []
        nbytes = 0
        positions: dict[TopicPartition, tuple[int, int]] = {}
        assigned = self._assigned
        loads, kinds = orjson.loads, self._kinds
        last_time_header: bytes | None = None
        last_time: float | None = None
        # a consume result is mostly runs of one partition's messages: its pair, generation and
        # position are looked up and stored once a run
        tp: TopicPartition | None = None
        generation: int | None = None
        offset = -1
        new_origin = tuple.__new__  # Origin(...) through its Python-level __new__ costs 3x more
        for message in messages:
            error = message.error()
            if error is not None:
                self._consume_error(ck, error, message)
                continue
            topic, partition = message.topic(), message.partition()
            if tp is None or partition != tp[1] or topic != tp[0]:
                if tp is not None and generation is not None:
                    positions[tp] = (offset + 1, generation)
                tp = (topic, partition)
                generation = assigned.get(tp)
            if generation is None:  # revoked while this message was on its way
                continue
            offset = message.offset()
            value = message.value()
            try:
                decoded = loads(value)
            except orjson.JSONDecodeError as exc:  # an empty message too
                where = f"topic {topic}, partition {partition}, offset {offset}"
                reason = f"invalid JSON: {exc}" if value else "empty message"
                rejected.append(Rejected(value or b"", f"{reason} ({where})"))
                continue
            if type(decoded) is not dict:
                where = f"topic {topic}, partition {partition}, offset {offset}"
                rejected.append(
                    Rejected(value, f"not a JSON object (a {type(decoded).__name__}) ({where})")
                )
                continue
            kind, event_time = default_kind, None
            headers = message.headers()
            if headers:
                for name, header in headers:
                    if name == KIND_HEADER and header:
                        kind = kinds.get(header) or _kind(kinds, header)
                    elif name == TIME_HEADER:
                        # a producer's messages mostly share the time of their batch
                        if header != last_time_header:
                            last_time_header, last_time = header, finite_time(header)
                        event_time = last_time
            if 10 in value or 13 in value:  # \n, \r as ints: see records.one_line
                # pretty-printed JSON stays one line of JSON Lines (same value, same length)
                value = one_line(value)
            origin = new_origin(Origin, (topic, partition, offset))
            records.append(Record(value, kind, event_time, None, origin))
            nbytes += len(value)
        if tp is not None and generation is not None:
            positions[tp] = (offset + 1, generation)
        # only now, with no error left to raise, do the positions move (a restart seeks to them)
        self._positions.update(positions)
        self._resync = False
        if not records and not rejected:
            return None
        if records:
            self._broker_error = None
        token = _Offsets(dict(self._positions))
        return SourceBatch(records, rejected, token, nbytes)

    def _consume_error(self, ck: Any, error: Any, message: Any) -> None:
        code = error.code()
        if code == ck.KafkaError._PARTITION_EOF:
            return
        if code in (ck.KafkaError.UNKNOWN_TOPIC_OR_PART, ck.KafkaError._UNKNOWN_TOPIC):
            raise RuntimeError(f"topic '{message.topic()}' does not exist: {error.str()}")
        assert self._ctx is not None
        self._ctx.metrics.error(f"kafka_{error.name().lower().lstrip('_')}")
        if error.fatal():
            self._log.error("kafka.consumer.fatal", error=error.str())
            raise RetriableError(f"consumer failed: {error.name()}: {error.str()}")
        self._log.warning("kafka.consume.error", error=f"{error.name()}: {error.str()}")

    def _seek_to_positions(self) -> None:
        """After a restart of ``batches()`` on the same consumer: read again from the first
        offset not handed out (a poll result dropped by a cancellation is not skipped)."""
        ck = import_kafka()
        for (topic, partition), (offset, _generation) in list(self._positions.items()):
            try:
                self._consumer.seek(ck.TopicPartition(topic, partition, offset))
            except ck.KafkaException as exc:
                self._log.warning("kafka.seek.failed", error=exc.args[0].str())

    def _read_log_end(self) -> None:
        """Read each owned partition's log end (consumer thread); clears a broker error when the
        brokers answer again."""
        ck = import_kafka()
        timeout = min(self.config.connect_timeout_secs, 2.0)
        if self._broker_error is not None:
            try:
                self._consumer.list_topics(timeout=timeout)
            except ck.KafkaException:
                return
            self._broker_error = None
        for topic, partition in list(self._assigned):
            try:
                _low, high = self._consumer.get_watermark_offsets(
                    ck.TopicPartition(topic, partition), timeout=timeout
                )
            except ck.KafkaException:
                return
            self._log_end[(topic, partition)] = high

    def _lag(self, tp: TopicPartition) -> int | None:
        end = self._log_end.get(tp)
        if end is None:
            return None
        return max(0, end - self._committed.get(tp, 0))

    def _lag_series(self) -> list[tuple[tuple[str, ...], float]]:
        out: list[tuple[tuple[str, ...], float]] = []
        for tp in list(self._assigned):
            lag = self._lag(tp)
            if lag is not None:
                out.append(((tp[0], str(tp[1])), float(lag)))
        return out

    # -- committing --------------------------------------------------------------------------------

    async def commit(self, token: Any) -> None:
        """Commit, for every partition this consumer still owns, the next offset of the newest
        batch that every sink finished (and every batch before it)."""
        assert isinstance(token, _Offsets)
        self._done = token
        if self._consumer is not None:
            await self._call(self._commit_done)

    def _commit_done(self) -> None:
        ck = import_kafka()
        consumer = self._consumer
        if consumer is None:
            return
        offsets = self._committable()
        if not offsets:
            return
        consumer.commit(
            offsets=[ck.TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            asynchronous=False,
        )
        self._committed.update(offsets)


def _kind(kinds: dict[bytes, str], header: bytes) -> str:
    """The kind a ``sluice-kind`` header names, remembered (a topic carries a few kinds); at most
    1,000 of them are kept, so a producer sending a new kind with every message costs no memory."""
    kind = header.decode("utf-8", "replace")
    if len(kinds) < 1000:
        kinds[header] = kind
    return kind


def _names(partitions: Sequence[Any]) -> str:
    return ",".join(f"{tp.topic}/{tp.partition}" for tp in partitions)
