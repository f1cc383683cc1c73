"""The ``generator`` source: synthetic JSON records at a set rate or as fast as possible.

Each record is ``{"seq": n, "time": "<RFC 3339 UTC>", "payload": "xxxx…"}``, padded so that its JSON
is ``record_bytes`` long. ``seq`` counts from 0 with no gaps, so a test can check that every record
arrived exactly once. Delivery: nothing to replay; a restart starts again from 0.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from itertools import repeat
from typing import Any, Literal

from pydantic import Field

from sluice.config.models import SourceConfig
from sluice.plugin import ComponentContext, Source
from sluice.records import Record, SourceBatch

__all__ = ["GeneratorSource", "GeneratorSourceConfig", "encode_synthetic"]

_TEMPLATE = b'{"seq":%d,"time":"%s","payload":"%s"}'


def encode_synthetic(seq: int, time_text: bytes, payload: bytes) -> bytes:
    """The JSON of one synthetic record (shared with the benchmark's baseline)."""
    return _TEMPLATE % (seq, time_text, payload)


def payload_for(record_bytes: int, time_text: bytes) -> bytes:
    """A payload that makes a record with a six-digit ``seq`` exactly ``record_bytes`` long."""
    overhead = len(encode_synthetic(100_000, time_text, b""))
    return b"x" * max(0, record_bytes - overhead)


def now_text() -> tuple[float, bytes]:
    now = time.time()
    text = datetime.fromtimestamp(now, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode()
    return now, text


class GeneratorSourceConfig(SourceConfig):
    """Synthetic records, for tests, demos and benchmarks."""

    type: Literal["generator"] = "generator"
    events_per_sec: float | None = Field(
        None,
        gt=0,
        description="Records per second; unset means as fast as the pipeline takes them.",
    )
    count: int | None = Field(
        None, ge=0, description="Records to produce before the source ends; unset is endless."
    )
    record_bytes: int = Field(400, ge=40, le=1_000_000, description="Length of each record's JSON.")
    batch_size: int = Field(500, gt=0, le=100_000, description="Records per batch at most.")
    kind: str = Field("generated", description="The records' kind, for routing.")


class GeneratorSource(Source[GeneratorSourceConfig]):
    """Synthetic records with a gap-free ``seq`` (no replay: a restart begins at 0 again)."""

    config_model = GeneratorSourceConfig
    delivery = "at-most-once"
    delivery_note = "Nothing to replay: a restart begins again at seq 0."
    description = "Synthetic JSON records at a set rate or as fast as possible."

    def __init__(self, component_id: str, config: GeneratorSourceConfig) -> None:
        super().__init__(component_id, config)
        self.produced = 0
        self._log: Any = None

    async def batches(self) -> AsyncIterator[SourceBatch]:
        c = self.config
        kind = c.kind
        started = time.monotonic()
        _, first_text = now_text()
        payload = payload_for(c.record_bytes, first_text)
        while c.count is None or self.produced < c.count:
            size = c.batch_size
            if c.count is not None:
                size = min(size, c.count - self.produced)
            if c.events_per_sec is not None:
                due = started + (self.produced + 1) / c.events_per_sec
                delay = due - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                elapsed = time.monotonic() - started
                size = max(1, min(size, int(elapsed * c.events_per_sec) - self.produced))
            else:
                await asyncio.sleep(0)  # let the rest of the loop run between batches
            now, text = now_text()
            first = self.produced
            raws = [_TEMPLATE % (seq, text, payload) for seq in range(first, first + size)]
            records = list(map(Record, raws, repeat(kind, size), repeat(now, size)))
            self.produced += size
            yield SourceBatch(records, nbytes=sum(map(len, raws)))

    async def close(self) -> None:
        if self._log is not None:
            self._log.info("generator.stopped", produced=self.produced)

    async def start(self, ctx: ComponentContext) -> None:
        self._log = ctx.log
