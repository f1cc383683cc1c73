"""The ``kafka`` sink: each record a message on one topic, keyed by a field (confluent-kafka).

A message's value is the record's JSON exactly; its headers carry the record's kind
(``sluice-kind``) and event time (``sluice-time``), which the ``kafka`` source reads back (unless
``headers: false``).

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
from operator import attrgetter
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
PRODUCE_SLICE = 1000
"""Messages produced between two turns of the event loop (a few milliseconds of work)."""
_json = msgspec.json.Encoder().encode


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
        failures = await self._produce(records)
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

    async def _produce(self, records: Sequence[Record]) -> dict[int, Any]:
        """Produce every record and wait until each has its delivery report; the failed reports
        by index.

        ``produce`` only queues a message (librdkafka's threads send it), so it runs here on the
        event loop, a slice of the batch at a time with the loop served between slices: a worker
        thread would only share the GIL with the loop, at the cost of switching between them.
        Waiting for the reports (``flush``, which releases the GIL) is what goes to a thread."""
        producer = self._producer
        failures: dict[int, Any] = {}
        self._failed = []
        started = time.monotonic()
        keys = self._keys(records)
        index, count = 0, len(records)
        while index < count:
            index, full = self._produce_slice(records, keys, index, failures)
            if full:  # librdkafka's queue is full: serve reports (in a thread), then again
                await asyncio.to_thread(producer.poll, 0.05)
            elif index < count:
                await asyncio.sleep(0)
        # the sink writes one batch at a time, so the producer's queue holds only this batch;
        # every message either is delivered or fails within delivery_timeout_secs
        remaining = await asyncio.to_thread(self._wait_for_reports, producer)
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

    def _produce_slice(
        self,
        records: Sequence[Record],
        keys: Sequence[bytes | None],
        start: int,
        failures: dict[int, Any],
    ) -> tuple[int, bool]:
        """Produce records from ``start`` on, at most :data:`PRODUCE_SLICE`; where it stopped, and
        whether it stopped because librdkafka's queue is full (that record not produced)."""
        ck = import_kafka()
        produce = self._producer.produce
        topic, kind_headers = self.config.topic, self._kind_headers
        # records next to each other mostly share their kind and often their time (a source's
        # batch read at one instant, often the very same object): the headers are made again
        # only when either changes. ``when`` is compared, not ``time``: the property is a
        # Python call per record (~0.2 us), read here only when the headers are made again
        kind = when = headers = None
        with_headers = self.config.headers  # else None throughout
        end = min(len(records), start + PRODUCE_SLICE)
        for index, record, key in zip(
            range(start, end), records[start:end], keys[start:end], strict=True
        ):
            if with_headers and (
                headers is None
                or record.kind != kind
                or (record.when is not when and record.when != when)
            ):
                kind, when = record.kind, record.when
                kind_header = kind_headers.get(kind)
                if kind_header is None:
                    kind_header = kind_headers[kind] = (KIND_HEADER, kind.encode())
                seconds = record.time
                # msgspec writes a float's shortest round-trip text, as repr does, ~10x faster
                headers = (
                    [kind_header]
                    if seconds is None
                    else [kind_header, (TIME_HEADER, _json(seconds))]
                )
            try:
                produce(topic, record.raw, key, headers=headers)
            except BufferError:
                return index, True
            except ck.KafkaException as exc:  # refused locally (e.g. larger than allowed)
                failures[index] = exc.args[0]
        return end, False

    def _wait_for_reports(self, producer: Any) -> int:
        """Wait (blocking, in a worker thread) until every queued message has its report, or
        until ``delivery_timeout_secs`` and a margin passed; the messages still without one."""
        c = self.config
        deadline = time.monotonic() + c.delivery_timeout_secs + 5.0
        remaining: int = producer.flush(min(1.0, c.delivery_timeout_secs))
        while remaining and time.monotonic() < deadline:
            remaining = producer.flush(min(1.0, max(0.0, deadline - time.monotonic())))
        return remaining


def _key_decoder(field: str) -> msgspec.json.Decoder[Any]:
    """A decoder of one JSON object's ``field`` alone, as the attribute ``value`` (None when the
    object lacks it). The field is any JSON name (``product-id``, ``a.b``, ``class``): it is the
    struct field's encoded name, never a Python attribute."""
    key = msgspec.defstruct("Key", [("value", Any, msgspec.field(default=None, name=field))])
    return msgspec.json.Decoder(key)


def _deep_key(raw: bytes, field: str) -> Any:
    """``field`` of a record msgspec could not walk (nested ~1,000 levels deep, past Python's
    recursion limit, which msgspec uses; or not UTF-8): orjson reads up to 1,024 levels with no
    Python recursion. None when orjson refuses it too or it is not a JSON object."""
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data.get(field) if isinstance(data, dict) else None


def key_reader(field: str) -> Callable[[Record], bytes | None]:
    """A function giving a record's message key: the value of ``field`` (text as UTF-8, any other
    JSON value as its JSON), None when the record lacks it, is not a JSON object, or the value is
    nested too deep to be written as JSON. Only that field is decoded (msgspec skips the others),
    about ten times cheaper than the whole record. No record makes it raise."""
    decode = _key_decoder(field).decode

    def key(record: Record) -> bytes | None:
        decoded = record.decoded
        if decoded is not None:
            value = decoded.get(field)
        else:
            try:
                value = decode(record.raw).value
            except (msgspec.DecodeError, msgspec.ValidationError):
                return None  # not one JSON object
            except (RecursionError, UnicodeDecodeError):  # msgspec recurses in Python's stack
                value = _deep_key(record.raw, field)
        if value is None:
            return None
        try:
            return key_bytes(value)
        except (TypeError, RecursionError):  # nested past what orjson writes (255 levels)
            return None

    return key


def keys_reader(field: str) -> Callable[[Sequence[Record]], list[bytes | None]]:
    """A function giving the message keys of a batch, as :func:`key_reader` gives them one by one.

    The common batch (no record decoded yet, every key an integer, or every key text) takes no
    Python code per record: msgspec decodes each record's field through ``map`` and the keys are
    made the same way (~0.6 us a record against ~0.8 us in a loop); any other batch goes record
    by record. A msgspec decode per record costs less than one decode of the batch joined into
    one JSON array, which copies the batch (4 MB for 10,000 records of 400 bytes) up to three
    times."""
    one = key_reader(field)
    decode = _key_decoder(field).decode
    errors = (msgspec.DecodeError, msgspec.ValidationError, RecursionError, UnicodeDecodeError)
    value_of, raw_of, decoded_of = attrgetter("value"), attrgetter("raw"), attrgetter("decoded")

    def keys(records: Sequence[Record]) -> list[bytes | None]:
        if list(map(decoded_of, records)).count(None) == len(records):
            try:
                values = list(map(value_of, map(decode, map(raw_of, records))))
            except errors:  # a record not one JSON object, or too deep: record by record
                pass
            else:
                types = set(map(type, values))
                if types == {int}:
                    return list(map(_json, values))
                if types == {str}:
                    return list(map(str.encode, values))
        return list(map(one, records))

    return keys


def key_bytes(value: Any) -> bytes:
    """A key field's value as the message key: text as UTF-8, any other JSON value as its JSON.

    An integer's JSON comes from msgspec (the same digits as orjson's): orjson gives each result a
    large buffer first, and a batch of keys held in a list cost ~4 us each that way instead of
    ~0.1 us. Other values keep orjson's text, so their keys (and partitions) stay as they were."""
    if isinstance(value, str):
        return value.encode()
    if type(value) is int:
        return _json(value)
    return orjson.dumps(value)


def _no_keys(records: Sequence[Record]) -> list[None]:
    return [None] * len(records)
