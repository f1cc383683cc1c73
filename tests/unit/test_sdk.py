"""The plugin SDK surface: one import, capabilities declared on the class and checked when a
plugin is registered, and the batch id and attempt number the runner passes to a sink that asks."""

from __future__ import annotations

import subprocess
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

import pytest

import sluice.sdk
from sluice.config import load_config_text
from sluice.registry import PluginLoadError, Registry
from sluice.runtime.pipeline import Pipeline
from sluice.sdk import (
    BatchInfo,
    Delivery,
    QueryResult,
    Record,
    RetriableError,
    Sink,
    SinkConfig,
)
from sluice.testing import registry_with_doubles
from tests.conftest import SLUICE


def test_the_sdk_exports_every_name_it_lists() -> None:
    missing = [name for name in sluice.sdk.__all__ if not hasattr(sluice.sdk, name)]
    assert missing == []
    for name in ("Source", "Sink", "SourceConfig", "SinkConfig", "Record", "SourceBatch",
                 "Rejected", "ComponentContext", "Readiness", "QueryResult", "BatchInfo",
                 "Delivery", "RetryPolicy", "RetriableError", "PermanentError", "BrokenError",
                 "RejectedRecords"):  # fmt: skip
        assert name in sluice.sdk.__all__


class RecordingConfig(SinkConfig):
    type: Literal["recording"] = "recording"


class RecordingSink(Sink[RecordingConfig]):
    """Fails the first two attempts of its first batch; records every call's BatchInfo."""

    config_model = RecordingConfig
    takes_batch_info = True
    calls: ClassVar[list[tuple[int, int, int]]] = []

    async def write_batch(self, records: Sequence[Record], batch: BatchInfo | None = None) -> None:
        assert batch is not None
        self.calls.append((batch.batch_id, batch.attempt, len(records)))
        if batch.batch_id == 1 and batch.attempt < 3:
            raise RetriableError("injected")


async def test_a_sink_that_takes_batch_info_gets_one_id_per_batch_and_the_attempt(
    workdir: Path,
) -> None:
    registry = registry_with_doubles()
    registry.register("sink", "recording", RecordingSink)
    RecordingSink.calls.clear()
    pipeline = Pipeline.build(
        load_config_text(
            "sources:\n  src: {type: generator, count: 30, batch_size: 10}\n"
            "sinks:\n  out: {type: recording, inputs: [src], batch: {max_events: 10},\n"
            "    retry: {initial_backoff_secs: 0.001, max_backoff_secs: 0.002}}\n"
            "admin: {enabled: false}\n",
            registry,
        ),
        registry,
    )
    assert (await pipeline.run()).ok
    calls = RecordingSink.calls
    assert [(i, a) for i, a, _ in calls[:3]] == [(1, 1), (1, 2), (1, 3)]
    assert [i for i, a, _ in calls[3:]] == list(range(2, 2 + len(calls) - 3))
    assert {a for _, a, _ in calls[3:]} == {1}
    assert sum(n for i, a, n in calls if i > 1 or a == 3) == 30


def test_a_sink_declared_queryable_must_answer_queries() -> None:
    class Pretender(Sink[RecordingConfig]):
        config_model = RecordingConfig
        queryable = True

        async def write_batch(self, records: Sequence[Record]) -> None:
            pass

    with pytest.raises(PluginLoadError, match="queryable is set but query"):
        Registry().register("sink", "recording", Pretender)

    class Answers(Pretender):
        async def query(self, sql: str) -> QueryResult:
            return QueryResult(["x"], [[1]])

    Registry().register("sink", "recording", Answers)


def test_a_delivery_outside_the_vocabulary_is_refused() -> None:
    class Vague(Sink[RecordingConfig]):
        config_model = RecordingConfig
        delivery: ClassVar[Delivery] = "exactly-once"  # type: ignore[assignment]

        async def write_batch(self, records: Sequence[Record]) -> None:
            pass

    with pytest.raises(PluginLoadError, match="delivery must be one of"):
        Registry().register("sink", "recording", Vague)


def test_builtin_plugins_declare_their_capabilities() -> None:
    registry = Registry.from_entry_points()
    clickhouse: Any = registry.sinks["clickhouse"]
    assert (clickhouse.queryable, clickhouse.queryable_stopped) == (True, True)
    assert clickhouse.delivery == "effectively-once"
    assert not registry.sinks["file"].queryable
    assert registry.sources["coinbase"].delivery == "at-most-once"
    assert registry.sources["file"].delivery == "at-least-once"


def test_sluice_plugins_shows_each_plugins_delivery() -> None:
    listed = subprocess.run([*SLUICE, "plugins"], capture_output=True, text=True, timeout=60)
    assert listed.returncode == 0, listed.stderr
    rows = {tuple(line.split()[:3]) for line in listed.stdout.splitlines()}
    assert ("sink", "clickhouse", "effectively-once") in rows
    assert ("source", "coinbase", "at-most-once") in rows
    assert ("sink", "file", "at-least-once") in rows
