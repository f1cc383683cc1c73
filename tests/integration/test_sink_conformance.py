"""One suite every sink passes (after Redpanda Connect's StreamTests), each behaviour a test, in a
real pipeline: it starts and closes with nothing to write; it stores every record of many batches
once; a transient failure of a write is retried with nothing lost and nothing stored twice; a
restart appends to what was stored; a record it can never store goes to the dead letters with a
reason while its batch-mates are stored.

A sink joins with a :class:`SinkUnderTest`: how to configure it for a test and how to read back
what it stored. A behaviour runs only for the sinks it applies to (a sink whose store does not
outlive the process has no restart to survive; a sink that can store anything refuses nothing).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from sluice.errors import RetriableError
from sluice.runtime.pipeline import Pipeline
from sluice.sinks.clickhouse.testing import ClickHouseStore
from sluice.testing import WRITTEN, registry_with_doubles
from tests.integration.support import build_pipeline, read_jsonl, run_pipeline

pytestmark = pytest.mark.timeout(120)

Setup = Callable[[pytest.FixtureRequest, Path], "Configured"]


@dataclass
class Configured:
    config: dict[str, Any]
    """The sink's config, without `inputs` and the batch and retry policies."""
    read_back: Callable[[], list[dict[str, Any]]]
    """The records stored, as mappings: in write order, or by ``n`` where the store has no
    order of its own (a table)."""


@dataclass
class SinkUnderTest:
    name: str
    setup: Setup
    bad_record: dict[str, Any] | None = None
    """A record this sink can never store (it must reach the dead letters), if there is one."""
    persistent: bool = True
    """Whether what it stored outlives the process (so a restart appends)."""
    marks: tuple[pytest.MarkDecorator, ...] = ()


def file_sink(request: pytest.FixtureRequest, workdir: Path) -> Configured:
    path = workdir / "out.jsonl"
    return Configured({"type": "file", "path": str(path)}, lambda: read_jsonl(path))


def list_sink(request: pytest.FixtureRequest, workdir: Path) -> Configured:
    return Configured(
        {"type": "list", "reject_field": "unstorable"},
        lambda: [r.data for r in WRITTEN.get("under_test", [])],
    )


CLICKHOUSE_DDL = """CREATE DATABASE IF NOT EXISTS {database};
CREATE TABLE IF NOT EXISTS {database}.{table} (n UInt32, text String) ENGINE = MergeTree ORDER BY n;
"""


def clickhouse_on(fixture: str) -> Setup:
    def setup(request: pytest.FixtureRequest, workdir: Path) -> Configured:
        store: ClickHouseStore = request.getfixturevalue(fixture)
        table: str = request.getfixturevalue("table")
        ddl = workdir / "conformance.sql"
        ddl.write_text(CLICKHOUSE_DDL)
        config = {"type": "clickhouse", **store.target, "database": "conformance", "table": table}
        return Configured(
            {**config, "ddl": str(ddl)},
            lambda: [
                {"n": n, "text": text}
                for n, text in store.rows(f"SELECT n, text FROM conformance.{table} ORDER BY n")
            ],
        )

    return setup


CLICKHOUSE_BAD = {"n": "not a number", "text": "bad"}
SINKS = [
    SinkUnderTest("file", file_sink),
    SinkUnderTest("list", list_sink, bad_record={"n": -1, "unstorable": True}, persistent=False),
    SinkUnderTest("clickhouse-chdb", clickhouse_on("chdb"), bad_record=CLICKHOUSE_BAD),
    SinkUnderTest(
        "clickhouse-server",
        clickhouse_on("clickhouse_server"),
        bad_record=CLICKHOUSE_BAD,
        marks=(pytest.mark.clickhouse_server,),
    ),
]


@dataclass
class Sink:
    """A sink under test, configured for this test."""

    spec: SinkUnderTest
    configured: Configured
    workdir: Path

    @property
    def type(self) -> str:
        return str(self.configured.config["type"])

    def stored(self) -> list[dict[str, Any]]:
        return self.configured.read_back()

    async def run(self, items: list[dict[str, Any]]) -> Pipeline:
        """One pipeline run: a list source with ``items`` into this sink, to its end."""
        config = {
            "sources": {"src": {"type": "list", "records": items, "batch_size": 40}},
            "sinks": {
                "under_test": {
                    **self.configured.config,
                    "inputs": ["src"],
                    "batch": {"max_events": 64, "max_age_secs": 0.02},
                    "retry": {"initial_backoff_secs": 0.01, "max_backoff_secs": 0.05},
                }
            },
            "admin": {"enabled": False},
            "data_dir": str(self.workdir / "state"),
        }
        pipeline = build_pipeline(config)
        result = await run_pipeline(pipeline)
        assert result.ok, result.error
        return pipeline


@pytest.fixture
def sink(request: pytest.FixtureRequest, workdir: Path) -> Sink:
    spec: SinkUnderTest = request.param
    return Sink(spec, spec.setup(request, workdir), workdir)


def each(sinks: list[SinkUnderTest]) -> pytest.MarkDecorator:
    """Parametrize a behaviour over ``sinks``."""
    return pytest.mark.parametrize(
        "sink", [pytest.param(s, id=s.name, marks=s.marks) for s in sinks], indirect=True
    )


PERSISTENT = [s for s in SINKS if s.persistent]
REJECTING = [s for s in SINKS if s.bad_record is not None]


def records(start: int, count: int) -> list[dict[str, Any]]:
    return [{"n": i, "text": f"record {i}"} for i in range(start, start + count)]


@each(SINKS)
async def test_starts_and_closes_with_nothing_to_write(sink: Sink) -> None:
    pipeline = await sink.run([])
    assert sink.stored() == []
    assert pipeline.sink("under_test").metrics.totals()["sent"] == 0  # type: ignore[union-attr]


@each(SINKS)
async def test_stores_every_record_of_many_batches_once(sink: Sink) -> None:
    pipeline = await sink.run(records(0, 300))
    assert sink.stored() == records(0, 300)
    flushes = pipeline.metrics.registry.get_sample_value(
        "sluice_sink_flush_duration_seconds_count",
        {"component_id": "under_test", "component_kind": "sink", "component_type": sink.type},
    )
    assert flushes is not None and flushes >= 300 / 64


@each(SINKS)
async def test_retries_a_transient_failure_with_nothing_lost_or_stored_twice(
    sink: Sink, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = registry_with_doubles().sinks[sink.type]
    real_write = plugin.write_batch
    failures = {"left": 2}

    async def flaky_write(self: Any, records: Any, *args: Any, **kwargs: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RetriableError("injected: connection reset")
        await real_write(self, records, *args, **kwargs)

    monkeypatch.setattr(plugin, "write_batch", flaky_write)
    pipeline = await sink.run(records(0, 200))
    assert sink.stored() == records(0, 200)
    assert pipeline.sink("under_test").metrics.totals()["retries"] == 2  # type: ignore[union-attr]


@each(PERSISTENT)
async def test_appends_across_a_restart(sink: Sink) -> None:
    await sink.run(records(0, 100))
    await sink.run(records(100, 100))
    assert sink.stored() == records(0, 200)


@each(REJECTING)
async def test_sends_a_record_it_cannot_store_to_the_dead_letters_and_stores_its_batch_mates(
    sink: Sink,
) -> None:
    bad = sink.spec.bad_record
    assert bad is not None
    await sink.run([*records(0, 50), bad, *records(50, 50)])
    assert sink.stored() == records(0, 100)
    dead = read_jsonl(sink.workdir / "state" / "dead_letters.jsonl")
    assert [d["record"] for d in dead] == [bad]
    assert dead[0]["component_id"] == "under_test"
    assert dead[0]["reason"]
