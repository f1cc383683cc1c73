"""Config of the ``kafka`` source."""

from __future__ import annotations

from typing import ClassVar, Literal

from pydantic import Field

from sluice.config.models import SourceConfig
from sluice.kafka.connection import KafkaConnection

__all__ = ["KafkaSourceConfig"]


class KafkaSourceConfig(SourceConfig, KafkaConnection):
    """Read JSON messages from Kafka topics as a member of a consumer group."""

    reserved_settings: ClassVar[dict[str, str]] = {
        "group.id": "use `group`",
        "enable.auto.commit": "offsets are committed by sluice once the sinks wrote the records",
        "enable.auto.offset.store": "offsets are committed by sluice once the sinks wrote",
        "auto.offset.reset": "use `start_at`",
        "session.timeout.ms": "use `session_timeout_secs`",
        "heartbeat.interval.ms": "set from `session_timeout_secs` (a third of it, at most 3 s)",
    }

    type: Literal["kafka"] = "kafka"
    topics: list[str] = Field(
        min_length=1,
        description="Topics to read (each must exist).",
        examples=[["coinbase-ticker"]],
    )
    group: str = Field(
        min_length=1,
        description=(
            "Consumer group: the loaders of one group share the topics' partitions, and the "
            "group's committed offsets are where a loader resumes."
        ),
        examples=["clickhouse-loaders"],
    )
    start_at: Literal["earliest", "latest"] = Field(
        "earliest",
        description="Where to start in a partition the group has no committed offset for.",
    )
    kind: str = Field(
        "record",
        description=(
            "The records' kind, for routing, when a message does not say (a message published by "
            "sluice's `kafka` sink carries its record's kind and event time in headers)."
        ),
    )
    session_timeout_secs: float = Field(
        45.0,
        ge=1,
        description=(
            "How long the group waits for a silent member before giving its partitions to the "
            "others (librdkafka `session.timeout.ms`)."
        ),
    )
    max_poll_records: int = Field(
        10_000, ge=1, description="Messages read at most in one go (one source batch)."
    )
    poll_timeout_secs: float = Field(
        0.2, gt=0, description="Longest wait for messages in one poll."
    )
    connect_timeout_secs: float = Field(
        10.0, gt=0, description="Longest wait for the brokers' metadata when (re)starting."
    )
    lag_interval_secs: float = Field(
        5.0, gt=0, description="How often the log end of each partition is read, for the lag."
    )
