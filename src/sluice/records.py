"""The unit of data that flows through a pipeline.

A :class:`Record` carries its JSON encoding (``raw``), the canonical form every sink can write
unchanged, plus routing metadata: its ``kind`` (``ticker``, ``gap``, ``line``...) and, where the
source knows it, its event ``time``. The decoded mapping is computed lazily, only for sinks that need
fields, so a pipeline that moves JSON from a socket to a file never decodes it twice.

A source hands the runner a :class:`SourceBatch`: the records read in one go, the inputs it rejected
(which go to the dead letters with their reason) and an opaque ``token`` that the runner passes back
to :meth:`sluice.plugin.Source.commit` once every record of the batch and of all batches before it
has been written by every sink that takes it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

__all__ = ["Record", "Rejected", "SourceBatch"]


class Record:
    """One record: JSON bytes plus routing metadata. Immutable by convention."""

    __slots__ = ("_data", "kind", "raw", "time")

    def __init__(
        self,
        raw: bytes,
        kind: str = "record",
        time: float | None = None,
        data: dict[str, Any] | None = None,
    ) -> None:
        self.raw = raw
        """The record's JSON text (one object, no trailing newline)."""
        self.kind = kind
        """What the record is, for routing (``source.kind`` in a sink's ``inputs``)."""
        self.time = time
        """Event time, unix seconds, when the source knows it (for lag and freshness)."""
        self._data = data

    @classmethod
    def from_data(
        cls, data: dict[str, Any], kind: str = "record", time: float | None = None
    ) -> Record:
        """Build a record from a mapping; values must be JSON-encodable by orjson."""
        return cls(orjson.dumps(data), kind, time, data)

    @property
    def data(self) -> dict[str, Any]:
        """The decoded mapping (decoded once, on first access)."""
        if self._data is None:
            decoded = orjson.loads(self.raw)
            self._data = decoded if isinstance(decoded, dict) else {"value": decoded}
        return self._data

    def __repr__(self) -> str:
        return f"Record(kind={self.kind!r}, raw={self.raw[:80]!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Record):
            return NotImplemented
        return self.raw == other.raw and self.kind == other.kind

    __hash__ = None  # type: ignore[assignment]


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
