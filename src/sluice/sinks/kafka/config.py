"""Config of the ``kafka`` sink."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field, model_validator

from sluice.config.models import BatchPolicy, BufferPolicy, MiB, SinkConfig
from sluice.kafka.connection import KafkaConnection

__all__ = ["KafkaSinkConfig"]


class KafkaSinkConfig(SinkConfig, KafkaConnection):
    """Publish records to a Kafka topic (one message per record, its JSON as the value)."""

    reserved_settings: ClassVar[dict[str, str]] = {
        "acks": "use `acks`",
        "request.required.acks": "use `acks`",
        "enable.idempotence": "use `idempotent`",
        "compression.type": "use `compression`",
        "compression.codec": "use `compression`",
        "message.timeout.ms": "use `delivery_timeout_secs`",
        "delivery.timeout.ms": "use `delivery_timeout_secs`",
    }

    type: Literal["kafka"] = "kafka"
    topic: str = Field(
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="The topic to publish to.",
        examples=["coinbase-ticker"],
    )
    key_field: str | None = Field(
        "product_id",
        description=(
            "The record's top-level field (any JSON name) whose value is the message key, so "
            "one product's records stay in "
            "order in one partition; null for no key (records spread over partitions). A record "
            "without the field is sent without a key."
        ),
    )
    headers: bool = Field(
        True,
        description=(
            "Send each record's kind and event time as message headers (`sluice-kind`, "
            "`sluice-time`), which sluice's `kafka` source reads back to route and measure lag; "
            "false when no consumer reads them: librdkafka produces ~1.3x as fast without."
        ),
    )
    compression: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        "lz4", description="Compression of message batches."
    )
    acks: Literal["all", 1, 0] = Field(
        "all",
        description=(
            "Acknowledgements a write waits for: `all` in-sync replicas (the default, and what "
            "`idempotent` needs), 1 (the leader only) or 0 (none: records can be lost)."
        ),
    )
    idempotent: bool = Field(
        True,
        description=(
            "Idempotent producer: the broker drops repeats of librdkafka's own retries and keeps "
            "each partition in order. A batch the runner retries may still be published twice. "
            "Against tansu set `false`: a tansu restart can lose acknowledged batches of an "
            "idempotent producer (docs/scaling.md)."
        ),
    )
    delivery_timeout_secs: float = Field(
        30.0,
        gt=0,
        description=(
            "How long librdkafka may try to deliver a message (retrying inside) before its "
            "delivery report fails and the batch is retried by the runner."
        ),
    )
    connect_timeout_secs: float = Field(
        10.0, gt=0, description="Longest wait for the brokers' metadata at start."
    )
    partitions: int | None = Field(
        None,
        ge=1,
        description=(
            "Create the topic with this many partitions when it does not exist (unset: a missing "
            "topic is an error at start)."
        ),
    )
    replication_factor: int = Field(
        1, ge=1, description="Replicas of the topic when `partitions` creates it."
    )
    batch: BatchPolicy = Field(
        default_factory=lambda: BatchPolicy(max_events=10_000, max_bytes=8 * MiB, max_age_secs=0.1),
        description="A batch is a run of produce calls followed by waiting for every report.",
    )
    buffer: BufferPolicy = Field(
        default_factory=lambda: BufferPolicy(max_events=50_000, max_bytes=32 * MiB)
    )

    @model_validator(mode="after")
    def _idempotence_needs_all(self) -> KafkaSinkConfig:
        if self.idempotent and self.acks != "all":
            raise ValueError("`idempotent: true` needs `acks: all` (or set `idempotent: false`)")
        return self
