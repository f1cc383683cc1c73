"""The ``kafka`` sink: each record a message on one topic, keyed by a field (confluent-kafka).

A message's value is the record's JSON exactly; its headers carry the record's kind
(``sluice-kind``) and event time (``sluice-time``), which the ``kafka`` source reads back.

Delivery: at-least-once. A batch counts as written only when librdkafka has a positive delivery
report for every one of its messages (with ``acks: all``: every in-sync replica has it). A failed
report makes the runner retry the whole batch (so messages of it that did arrive are published
again: the loaders or ClickHouse keep one copy, see docs/scaling.md), except errors about the data
itself (a message too large for the broker), which send those records to the dead letters and
count the rest as written. The idempotent producer (on by default) keeps librdkafka's own resends
from repeating a message and each partition in order.

On a broker that is down, librdkafka reconnects by itself; reports fail after
``delivery_timeout_secs`` and the runner retries the batch with backoff. At start the sink reads
the topic's metadata: brokers that do not answer are retried like any sink start; a topic that does
not exist is an error (or is created, with ``partitions``). A fatal producer error (e.g. the
idempotent producer's sequence lost) makes the next attempt use a new producer.

Metrics of its own: ``sluice_kafka_produce_duration_seconds`` (from a batch's first produce call
to its last delivery report) and delivery errors in ``sluice_component_errors`` by librdkafka error
name (``error_type="kafka_<name>"``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec
import orjson

from sluice.errors import RejectedRecords, RetriableError
from sluice.kafka.connection import (
    KIND_HEADER,
    TIME_HEADER,
    LibrdkafkaLog,
    client_config,
    import_kafka,
    kafka_error,
)
from sluice.plugin import ComponentContext, Readiness, Sink
from sluice.records import Record
from sluice.sinks.kafka.config import KafkaSinkConfig

__all__ = ["KafkaSink"]

_UNREACHABLE = ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE", "_AUTHENTICATION")


class KafkaSink(Sink[KafkaSinkConfig]):
    """Kafka topic (at-least-once; a batch is written when every delivery report is positive)."""

    config_model = KafkaSinkConfig
    description = "Publish records to a Kafka topic (librdkafka), keyed by a field."
    delivery_note = (
        "A batch counts as written when every message's delivery report is positive; a retried "
        "batch may publish some messages twice."
    )

    def __init__(self, component_id: str, config: KafkaSinkConfig) -> None:
        super().__init__(component_id, config)
        self._producer: Any = None
        self._log: Any = None
        self._ctx: ComponentContext | None = None
        self._produce_seconds: Any = None
        self._broker_error: str | None = None
        """The latest librdkafka error about reaching the brokers, until a delivery succeeds."""
        self._keys: Callable[[Sequence[Record]], Sequence[bytes | None]] = (
            keys_reader(config.key_field) if config.key_field is not None else _no_keys
        )
        self._kind_headers: dict[str, tuple[str, bytes]] = {}
        """The kind header of each kind seen (made once, not per message)."""
        self._failed: list[tuple[Any, bytes | None]] = []
        """Failed delivery reports of the batch being written: (error, message value)."""

    # -- lifecycle ---------------------------------------------------------------------------------

    async def start(self, ctx: ComponentContext) -> None:
        import_kafka()
        self._ctx = ctx
        self._log = ctx.log
        self._produce_seconds = ctx.metrics.histogram(
            "sluice_kafka_produce_duration_seconds",
            "From a batch's first produce call to its last delivery report.",
        )
        if self._producer is None:
            self._producer = self._new_producer()
        await asyncio.to_thread(self._check_topic)
        c = self.config
        self._log.info(
            "kafka.producer.ready",
            brokers=",".join(c.brokers),
            topic=c.topic,
            acks=c.acks,
            idempotent=c.idempotent,
            compression=c.compression,
        )

    def _new_producer(self) -> Any:
        ck = import_kafka()
        c = self.config
        own: dict[str, Any] = {
            "acks": "all" if c.acks == "all" else str(c.acks),
            "enable.idempotence": c.idempotent,
            "compression.type": c.compression,
            "message.timeout.ms": int(c.delivery_timeout_secs * 1000),
            "error_cb": self._on_client_error,
            "logger": LibrdkafkaLog(self._log),
            # a Python call per delivered message would halve the rate: only failures report,
            # and flush() says when every message of the batch has an answer
            "delivery.report.only.error": True,
            "on_delivery": self._on_delivery,
        }
        return ck.Producer(client_config(c, own))

    def _on_delivery(self, error: Any, message: Any) -> None:
        """A failed delivery report (called from ``flush``, on the writing thread)."""
        if error is not None:
            self._failed.append((error, message.value()))

    def _on_client_error(self, error: Any) -> None:
        """librdkafka's error callback (called from ``poll``/``flush``): brokers out of reach."""
        if error.name() in _UNREACHABLE:
            first = self._broker_error is None
            self._broker_error = f"{error.name()}: {error.str()}"
            if first and self._log is not None:  # once per outage; the errors metric counts all
                self._log.warning(
                    "kafka.brokers.unreachable",
                    brokers=",".join(self.config.brokers),
                    error=self._broker_error,
                )
        if self._ctx is not None:
            self._ctx.metrics.error(f"kafka_{error.name().lower().lstrip('_')}")

    def _check_topic(self) -> None:
        """Read the topic's metadata (blocking): retriable while the brokers do not answer; an
        error naming the topic when it does not exist (unless ``partitions`` creates it)."""
        ck = import_kafka()
        c = self.config
        try:
            # all topics: asking for one by name makes some brokers create it
            metadata = self._producer.list_topics(timeout=c.connect_timeout_secs)
        except ck.KafkaException as exc:
            raise RetriableError(
                f"brokers {','.join(c.brokers)} did not answer: {exc.args[0].str()}"
            ) from exc
        topic = metadata.topics.get(c.topic)
        error = topic.error if topic is not None else None
        if topic is not None and error is None and topic.partitions:
            return
        if error is not None and error.code() != ck.KafkaError.UNKNOWN_TOPIC_OR_PART:
            raise kafka_error(error, f"topic '{c.topic}'")
        if c.partitions is None:
            raise RuntimeError(
                f"topic '{c.topic}' does not exist on {','.join(c.brokers)}; create it, or set "
                "`partitions` to have the sink create it"
            )
        self._create_topic()

    def _create_topic(self) -> None:
        ck = import_kafka()
        c = self.config
        assert c.partitions is not None
        admin = ck.admin.AdminClient(client_config(c, {}))
        new = ck.admin.NewTopic(
            c.topic, num_partitions=c.partitions, replication_factor=c.replication_factor
        )
        future = admin.create_topics([new], request_timeout=c.connect_timeout_secs)[c.topic]
        try:
            future.result(timeout=c.connect_timeout_secs)
        except ck.KafkaException as exc:
            error = exc.args[0]
            if error.code() != ck.KafkaError.TOPIC_ALREADY_EXISTS:
                raise kafka_error(error, f"creating topic '{c.topic}'") from exc
        self._log.info("kafka.topic.created", topic=c.topic, partitions=c.partitions)

    async def close(self) -> None:
        producer, self._producer = self._producer, None
        if producer is not None:
            remaining = await asyncio.to_thread(producer.flush, self.config.delivery_timeout_secs)
            if remaining:
                self._log.warning("kafka.producer.unflushed", messages=remaining)

    async def readiness(self) -> Readiness:
        if self._producer is None:
            return Readiness(False, "no producer")
        if self._broker_error is not None:
            return Readiness(False, f"brokers unreachable: {self._broker_error}")
        return Readiness(True)

    # -- writing -----------------------------------------------------------------------------------

    async def write_batch(self, records: Sequence[Record]) -> None:
        """Publish ``records``; returns once every delivery report is positive.

        Raises RetriableError when a report failed for a passing reason (the whole batch is tried
        again), RejectedRecords naming the records the broker can never take."""
        if not records:
            return
        if self._producer is None:
            self._producer = self._new_producer()
        failures = await asyncio.to_thread(self._produce, records)
        if not failures:
            self._broker_error = None
            return
        for error in failures.values():
            assert self._ctx is not None
            self._ctx.metrics.error(f"kafka_{error.name().lower().lstrip('_')}")
        if any(error.fatal() for error in failures.values()):
            # the producer cannot go on (e.g. the idempotent sequence is lost): a new one next time
            self._producer = None
        sorted_ = {
            i: kafka_error(e, f"delivery to '{self.config.topic}'") for i, e in failures.items()
        }
        retriable = [exc for exc in sorted_.values() if isinstance(exc, RetriableError)]
        if retriable:
            raise RetriableError(
                f"{len(failures)} of {len(records)} deliveries failed: {retriable[0]}"
            )
        raise RejectedRecords({i: str(exc) for i, exc in sorted_.items()})

    def _produce(self, records: Sequence[Record]) -> dict[int, Any]:
        """Produce every record and wait until each has its delivery report (in a worker
        thread); the failed reports by index."""
        ck = import_kafka()
        c = self.config
        producer = self._producer
        produce = producer.produce
        topic, kind_headers = c.topic, self._kind_headers
        failures: dict[int, Any] = {}
        self._failed = []
        started = time.monotonic()
        keys = self._keys(records)  # one decode for the whole batch
        for index, record in enumerate(records):
            kind = kind_headers.get(record.kind)
            if kind is None:
                kind = kind_headers[record.kind] = (KIND_HEADER, record.kind.encode())
            headers = (
                [kind] if record.time is None else [kind, (TIME_HEADER, repr(record.time).encode())]
            )
            try:
                produce(topic, record.raw, keys[index], headers=headers)
            except BufferError:  # librdkafka's queue is full: serve reports, then again
                self._produce_when_room(record, keys[index], headers, index, failures)
            except ck.KafkaException as exc:  # refused locally (e.g. larger than allowed)
                failures[index] = exc.args[0]
        # the sink writes one batch at a time, so the producer's queue holds only this batch;
        # every message either is delivered or fails within delivery_timeout_secs
        deadline = time.monotonic() + c.delivery_timeout_secs + 5.0
        remaining = producer.flush(min(1.0, c.delivery_timeout_secs))
        while remaining and time.monotonic() < deadline:
            remaining = producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        if remaining:
            raise RetriableError(f"{remaining} delivery reports did not come in time")
        if self._failed:
            # rare: find the failed messages' places by their value
            places: dict[bytes, list[int]] = {}
            for index, record in enumerate(records):
                places.setdefault(record.raw, []).append(index)
            for error, value in self._failed:
                for index in places.get(value or b"", [0]):
                    failures[index] = error
        self._produce_seconds.observe(time.monotonic() - started)
        return failures

    def _produce_when_room(
        self,
        record: Record,
        key: bytes | None,
        headers: list[tuple[str, bytes]],
        index: int,
        failures: dict[int, Any],
    ) -> None:
        """Produce one message once librdkafka's queue has room (serving reports meanwhile)."""
        ck = import_kafka()
        producer = self._producer
        while True:
            producer.poll(0.05)
            try:
                producer.produce(self.config.topic, record.raw, key, headers=headers)
            except BufferError:
                continue
            except ck.KafkaException as exc:
                failures[index] = exc.args[0]
            return


def key_reader(field: str) -> Callable[[Record], bytes | None]:
    """A function giving a record's message key: the value of ``field`` (text as UTF-8, any other
    JSON value as its JSON), None when the record lacks it or is not a JSON object. Only that
    field is decoded (msgspec skips the others), about ten times cheaper than the whole record."""
    decoder = msgspec.json.Decoder(msgspec.defstruct("Key", [(field, Any, None)]))
    missing = object()

    def key(record: Record) -> bytes | None:
        decoded = record.decoded
        if decoded is not None:
            value = decoded.get(field)
        else:
            try:
                value = getattr(decoder.decode(record.raw), field, missing)
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None
        if value is None or value is missing:
            return None
        return value.encode() if isinstance(value, str) else orjson.dumps(value)

    return key


def keys_reader(field: str) -> Callable[[Sequence[Record]], list[bytes | None]]:
    """A function giving the message keys of a batch, as :func:`key_reader` gives them one by one,
    decoding the field of every record in one msgspec call over the batch (the records' JSON
    joined into one array): about half the cost of a call per record. A batch with a record that
    is not a JSON object (or already decoded) takes the record-by-record way."""
    one = key_reader(field)
    struct = msgspec.defstruct("Key", [(field, Any, None)])
    decoder = msgspec.json.Decoder(list[struct])  # type: ignore[valid-type]

    def keys(records: Sequence[Record]) -> list[bytes | None]:
        if any(record.decoded is not None for record in records):
            return [one(record) for record in records]
        try:
            decoded = decoder.decode(b"[" + b",".join([record.raw for record in records]) + b"]")
        except (msgspec.DecodeError, msgspec.ValidationError):
            return [one(record) for record in records]
        if len(decoded) != len(records):  # a record holding more than one value (``1,2``)
            return [one(record) for record in records]
        out: list[bytes | None] = []
        for item in decoded:
            value = getattr(item, field)
            if value is None:
                out.append(None)
            elif isinstance(value, str):
                out.append(value.encode())
            else:
                out.append(orjson.dumps(value))
        return out

    return keys


def _no_keys(records: Sequence[Record]) -> list[None]:
    return [None] * len(records)
