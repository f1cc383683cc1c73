"""The ``nats`` sink's config: where to publish, the subject template, the message id."""

from __future__ import annotations

import re
import string
from typing import Literal

from pydantic import Field, field_validator

from sluice.config.models import BatchPolicy, SinkConfig, StrictModel
from sluice.sinks.nats.connection import NatsConnectionConfig, valid_token

__all__ = ["NatsSinkConfig", "StreamSpec", "parse_subject"]

_FIELD = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def parse_subject(template: str) -> list[tuple[str, str | None]]:
    """``template`` as ``(literal text, field name or None)`` pieces; a ValueError saying what is
    wrong when it is not a valid subject with ``{field}`` placeholders."""
    pieces: list[tuple[str, str | None]] = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(
            f"{template!r}: {exc} (write a literal brace as '{{{{' or '}}}}')"
        ) from exc
    for literal, name, spec, conversion in parsed:
        if name is not None and (not _FIELD.match(name) or spec or conversion):
            raise ValueError(
                f"{template!r}: '{{{name}}}' is not a record field name (letters, digits, "
                "'_'; no format spec)"
            )
        pieces.append((literal, name))
    sample = "".join(literal + ("x" if name else "") for literal, name in pieces)
    if not all(valid_token(token) for token in sample.split(".")):
        raise ValueError(
            f"{template!r} is not a subject to publish to: tokens separated by '.', none empty, "
            "no whitespace or wildcards ('*', '>')"
        )
    return pieces


class StreamSpec(StrictModel):
    """The stream the sink creates at start when it is missing."""

    subjects: list[str] | None = Field(
        None,
        description=(
            "The stream's subjects; unset: the sink's `subject` with each `{field}` made a `*` "
            "wildcard (`coinbase.{product_id}` -> `coinbase.*`)."
        ),
    )
    replicas: int = Field(
        1, ge=1, le=5, description="Copies of the stream on as many servers (3 survives one loss)."
    )
    storage: Literal["file", "memory"] = Field("file", description="Where the servers keep it.")
    duplicate_window_secs: float = Field(
        120.0,
        gt=0,
        description=(
            "How long the stream remembers message ids (`Nats-Msg-Id`) to drop repeats: a batch "
            "published again (a retry, a second ingester) within it is stored once."
        ),
    )
    max_age_secs: float | None = Field(
        None, gt=0, description="Messages older than this are removed; unset keeps them."
    )
    max_bytes: int | None = Field(
        None, gt=0, description="The stream's size limit (oldest removed first); unset: none."
    )


class NatsSinkConfig(SinkConfig, NatsConnectionConfig):
    """Publish records to a NATS JetStream stream, each acknowledged by the stream."""

    type: Literal["nats"] = "nats"
    subject: str = Field(
        description=(
            "Subject of each message; `{field}` takes a record field's value "
            "(`coinbase.{product_id}`), which must then be a valid subject token (no '.', "
            "whitespace or wildcard), or the record goes to the dead letters."
        ),
        examples=["coinbase.{product_id}"],
    )
    msg_id: list[str] | None = Field(
        None,
        description=(
            "Record fields whose values, joined with ':', make each message's `Nats-Msg-Id`, so "
            "the stream stores a repeat within its duplicate window once (e.g. "
            "`[product_id, trade_id]`: two ingesters of the same trades, A/B). A record missing "
            "one goes to the dead letters. Unset: an id per record of each batch, so a retried "
            "batch is stored once."
        ),
        examples=[["product_id", "trade_id"]],
    )
    create_stream: StreamSpec | None = Field(
        None,
        description=(
            "Create the stream at start when it does not exist (an existing stream is left as it "
            "is). Unset: the stream must exist."
        ),
    )
    ack_timeout_secs: float = Field(
        10.0,
        gt=0,
        description=(
            "Longest wait for the stream's acknowledgements of a batch; then the batch is retried "
            "(the message ids make the repeat harmless)."
        ),
    )
    max_pending: int = Field(
        4000, gt=0, description="Messages published and not yet acknowledged, at most."
    )
    batch: BatchPolicy = Field(
        default_factory=lambda: BatchPolicy(
            max_events=2000, max_bytes=4 * 1024**2, max_age_secs=0.1
        )
    )

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        parse_subject(value)
        return value

    @field_validator("msg_id")
    @classmethod
    def _msg_id(cls, value: list[str] | None) -> list[str] | None:
        if value is not None:
            if not value:
                raise ValueError("name at least one field, or leave msg_id unset")
            for name in value:
                if not _FIELD.match(name):
                    raise ValueError(f"{name!r} is not a record field name")
        return value

    def stream_subjects(self) -> list[str]:
        if self.create_stream is not None and self.create_stream.subjects:
            return self.create_stream.subjects
        return ["".join(lit + ("*" if name else "") for lit, name in parse_subject(self.subject))]
