"""The unit of data that flows through a pipeline.

A :class:`Record` carries its JSON encoding (``raw``), the canonical form every sink can write
unchanged, plus routing metadata: its ``kind`` (``ticker``, ``gap``, ``line``...) and, where the
source knows it, its event ``time``. The decoded mapping is computed lazily, only for sinks that need
fields, so a pipeline that moves JSON from a socket to a file never decodes it twice; so is the
event time in seconds when the source gives it as a ``datetime``.

A source hands the runner a :class:`SourceBatch`: the records read in one go, the inputs it rejected
(which go to the dead letters with their reason), what it read and discarded on purpose (counts
only; the runner counts them) and an opaque ``token`` that the runner passes back
to :meth:`sluice.plugin.Source.commit` once every record of the batch and of all batches before it
has been written by every sink that takes it.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, NamedTuple

import msgspec
import orjson

__all__ = [
    "Origin",
    "Record",
    "Rejected",
    "SourceBatch",
    "compact_json",
    "finite_time",
    "join_lines",
    "one_line",
    "origin_key",
]


class Origin(NamedTuple):
    """A record's place in a replayable log: the same record read again has the same origin."""

    stream: str
    """The log's name (a Kafka topic)."""
    partition: int
    offset: int


class Record(msgspec.Struct, gc=False, eq=False):
    """One record: JSON bytes plus routing metadata. Immutable by convention.

    A C-level struct (msgspec) rather than a Python class: creating one costs ~50 ns instead of
    ~170 ns, and records are not tracked by the cyclic garbage collector (they hold no cycles).
    """

    raw: bytes
    """The record's JSON text (one object, no trailing newline)."""
    kind: str = "record"
    """What the record is, for routing (``source.kind`` in a sink's ``inputs``)."""
    when: float | datetime | None = None
    """The event time as the source gave it: unix seconds, or an aware ``datetime`` that
    :attr:`time` turns into seconds on first read (most records' times are never read: a sink
    reads its batch's oldest, the runner a source batch's newest); use :attr:`time`."""
    decoded: dict[str, Any] | None = None
    """The decoded mapping once someone asked for it; use :attr:`data`."""
    origin: Origin | None = None
    """Where a replayable source read the record (a log's stream, partition and offset), so a sink
    can name a batch by the records in it (:func:`origin_key`); None for a live feed."""

    @classmethod
    def from_data(
        cls, data: dict[str, Any], kind: str = "record", time: float | datetime | None = None
    ) -> Record:
        """Build a record from a mapping; values must be JSON-encodable by orjson."""
        return cls(compact_json(data), kind, time, data)

    @property
    def time(self) -> float | None:
        """Event time, unix seconds, when the source knows it (for lag and freshness)."""
        when = self.when
        if isinstance(when, datetime):  # converted once, on first read
            when = self.when = when.timestamp()
        return when

    @property
    def data(self) -> dict[str, Any]:
        """The decoded mapping (decoded once, on first access).

        Raises ``orjson.JSONDecodeError`` (a ValueError) when ``raw`` is not JSON that orjson reads
        (UTF-8, nested at most 1,024 levels); the built-in sources make no such record."""
        if self.decoded is None:
            value = orjson.loads(self.raw)
            self.decoded = value if isinstance(value, dict) else {"value": value}
        return self.decoded

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.raw == other.raw and self.kind == other.kind

    def __repr__(self) -> str:
        return f"Record(kind={self.kind!r}, raw={self.raw[:80]!r})"


@dataclass(slots=True)
class Rejected:
    """An input a source could not turn into a record; it goes to the dead letters."""

    raw: bytes
    """The input exactly as received."""
    reason: str
    """Why it was rejected, for a person to read."""


@dataclass(slots=True)
class SourceBatch:
    """What a source yields: records read together, inputs it rejected, and a commit token."""

    records: Sequence[Record]
    rejected: Sequence[Rejected] = field(default_factory=tuple)
    token: Any = None
    """Passed back to ``Source.commit`` once this batch and all earlier ones are written."""
    nbytes: int | None = None
    """Total length of the records' ``raw``, when the source knows it (saves the runner a pass)."""
    read_events: int | None = None
    """Inputs (frames, lines) read for this batch, counting those that made no record; None: the
    records and rejected inputs are all there was (``sluice_component_received_events``)."""
    read_bytes: int | None = None
    """Bytes of those inputs; None: the bytes of the records and rejected inputs."""
    discarded: Mapping[str, int] | None = None
    """Inputs read and turned into no record on purpose, by reason (a repeat, a type nobody asked
    for): nothing is lost; counted as ``sluice_source_discarded`` by the runner."""


def compact_json(value: Any) -> bytes:
    """``orjson.dumps`` into an exactly sized bytes object.

    orjson's result keeps the ~4 KiB buffer it was written into; a record held in a buffer would
    cost that much (100,000 small records: ~400 MiB instead of ~7 MiB). One copy trims it.
    """
    return bytes(memoryview(orjson.dumps(value)))


def one_line(raw: bytes) -> bytes:
    """``raw`` JSON with its line breaks turned into spaces, so that its record is one line of JSON
    Lines. In valid JSON a raw line break can only be whitespace between tokens (inside a string
    it must be escaped), so the value is unchanged. Sources whose input may be pretty-printed
    (a websocket frame, a log message) pass what they keep through it.

    The bytes are looked for as ints (``10 in raw``: one ``memchr``); a one-byte bytes needle
    (``b"\\n" in raw``) first fails an int conversion, a TypeError made and cleared inside
    CPython, ~0.45 us a test."""
    if 10 in raw or 13 in raw:  # \n, \r
        return raw.replace(b"\n", b" ").replace(b"\r", b" ")
    return raw


def finite_time(text: str | bytes | None) -> float | None:
    """An event time (unix seconds) read from text a peer sent (a message header), or None when
    it is missing, not a number, or not finite (``nan``, ``inf`` would poison lag metrics)."""
    if not text:
        return None
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def join_lines(records: Sequence[Record]) -> bytes:
    """The records' JSON as JSON Lines (each line ends with a newline), in one copy."""
    parts = [record.raw for record in records]
    parts.append(b"")
    return b"\n".join(parts)


ORIGIN_KEY_MAX = 200
"""Longer origin keys are replaced by a digest of them (a batch spread over many partitions)."""


def origin_key(records: Sequence[Record]) -> str | None:
    """A key naming exactly ``records`` by their origins, or None when one has no origin.

    Per (stream, partition), in order of first appearance: the first and last offset and how many
    records of that range the batch holds, e.g. ``ticks/3/1200-1299/100``. The same records read
    again (a loader restarted before it committed, a retried batch) give the same key; any other
    set of records gives another, as a sink sees each partition's records in offset order. Keys
    longer than :data:`ORIGIN_KEY_MAX` are replaced by ``sha256:`` and a digest."""
    if not records:
        return None
    ranges: dict[tuple[str, int], list[int]] = {}
    for record in records:
        origin = record.origin
        if origin is None:
            return None
        span = ranges.get((origin.stream, origin.partition))
        if span is None:
            ranges[(origin.stream, origin.partition)] = [origin.offset, origin.offset, 1]
        else:
            if origin.offset < span[0]:
                span[0] = origin.offset
            if origin.offset > span[1]:
                span[1] = origin.offset
            span[2] += 1
    key = ",".join(
        f"{stream}/{partition}/{low}-{high}/{count}"
        for (stream, partition), (low, high, count) in ranges.items()
    )
    if len(key) > ORIGIN_KEY_MAX:
        key = "sha256:" + hashlib.sha256(key.encode()).hexdigest()
    return key
