"""Helpers for the ClickHouse tests: ticker records, a list source, pipeline runs, a server."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Sequence
from typing import Any, ClassVar, Literal

from pydantic import Field

from sluice.config.loader import load_config_text
from sluice.config.models import SourceConfig
from sluice.plugin import Source
from sluice.records import Record, SourceBatch
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.sinks.clickhouse.testing import ticker_bytes


def ticker_record(n: int, **overrides: Any) -> Record:
    return Record(ticker_bytes(n, **overrides), "ticker")


class ListSourceConfig(SourceConfig):
    """Records handed in by the test (by name), at a rate or at once."""

    type: Literal["test_list"] = "test_list"
    name: str = Field(description="Key in ListSource.records.")
    batch_size: int = Field(1000, gt=0)
    events_per_sec: float | None = Field(None, gt=0)


class ListSource(Source[ListSourceConfig]):
    """Yields the records registered under its name, then ends (or waits, with ``hold``)."""

    config_model = ListSourceConfig
    description = "test records"
    records: ClassVar[dict[str, Sequence[Record]]] = {}
    emitted: ClassVar[dict[str, int]] = {}

    async def batches(self) -> AsyncIterator[SourceBatch]:
        records = self.records[self.config.name]
        size = self.config.batch_size
        started = time.monotonic()
        for first in range(0, len(records), size):
            if self.config.events_per_sec is not None:
                delay = started + first / self.config.events_per_sec - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
            batch = records[first : first + size]
            self.emitted[self.config.name] = first + len(batch)
            yield SourceBatch(batch)


def registry() -> Registry:
    found = Registry.from_entry_points()
    found.register("source", "test_list", ListSource, origin="tests")
    return found


async def run_pipeline(yaml_text: str, until: Callable[[], bool] | None = None) -> RunResult:
    """Run a pipeline from YAML to its end (or until ``until()`` holds, then stop it)."""
    reg = registry()
    pipeline = Pipeline.build(load_config_text(yaml_text, reg), reg)
    if until is None:
        return await pipeline.run()
    task = asyncio.create_task(pipeline.run())
    deadline = time.monotonic() + 120
    while not until() and not task.done():
        assert time.monotonic() < deadline, "condition not reached in 120 s"
        await asyncio.sleep(0.05)
    pipeline.stop()
    return await task
