"""The ``nats`` source's config: the stream, the durable consumer, the fetch and the acks."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator, model_validator

from sluice.config.models import SourceConfig
from sluice.sinks.nats.connection import NatsConnectionConfig

__all__ = ["NatsSourceConfig"]

_NAME = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class NatsSourceConfig(SourceConfig, NatsConnectionConfig):
    """Read a NATS JetStream stream through a durable pull consumer that loaders share."""

    type: Literal["nats"] = "nats"
    durable: str = Field(
        description=(
            "The durable consumer's name. Every loader with the same `durable` shares it: each "
            "message goes to one of them, and one not acknowledged within `ack_wait_secs` (its "
            "loader died) goes to another. Created at start when missing."
        ),
        examples=["clickhouse-loaders"],
    )
    filter_subject: str | None = Field(
        None,
        description="Only messages on these subjects (wildcards allowed); unset: the whole stream.",
        examples=["coinbase.>"],
    )
    batch_size: int = Field(
        500, gt=0, le=10_000, description="Messages asked for in one fetch, at most."
    )
    fetch_timeout_secs: float = Field(
        1.0, gt=0, description="Longest wait of one fetch for its first message."
    )
    ack_wait_secs: float = Field(
        30.0,
        gt=0,
        description=(
            "When the consumer is created: how long a message delivered to a loader may go "
            "unacknowledged before the stream delivers it again (to any loader). A loader that "
            "still works on a message says so every `progress_interval_secs` (`+WIP`), so only "
            "a dead loader's messages are delivered again."
        ),
    )
    progress_interval_secs: float | None = Field(
        None,
        gt=0,
        description="How often messages still being written are reported in progress; unset: "
        "a third of `ack_wait_secs`.",
    )
    max_ack_pending: int = Field(
        20_000,
        gt=0,
        description=(
            "When the consumer is created: messages delivered and not yet acknowledged, at most, "
            "across all loaders (the stream's backpressure)."
        ),
    )
    deliver_from: Literal["all", "new"] = Field(
        "all",
        description="When the consumer is created: start at the stream's first message or after "
        "its last.",
    )
    kind: str | None = Field(
        None,
        description=(
            "The records' kind, for routing; unset: the kind a sluice `nats` sink wrote in the "
            "message's `Sluice-Kind` header, else `record`."
        ),
    )
    stats_interval_secs: float = Field(
        5.0, gt=0, description="How often the consumer's pending counts are read for /metrics."
    )

    @field_validator("durable")
    @classmethod
    def _durable(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("a durable name is 1-64 letters, digits, '_' or '-'")
        return value

    @model_validator(mode="after")
    def _progress(self) -> NatsSourceConfig:
        if self.progress_interval_secs is not None and (
            self.progress_interval_secs >= self.ack_wait_secs
        ):
            raise ValueError("progress_interval_secs must be shorter than ack_wait_secs")
        return self

    def progress_every(self) -> float:
        if self.progress_interval_secs is not None:
            return self.progress_interval_secs
        return self.ack_wait_secs / 3
