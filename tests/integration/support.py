"""Helpers shared by the integration tests: pipelines run in this process with the test doubles,
ticker records, JSON Lines read back, and the read-only `grafana` user of the session's server."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import orjson

from sluice.config import load_config_text
from sluice.records import Record
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.simulator import Faults, SimulatorOptions
from sluice.sinks.clickhouse.testing import ticker_bytes
from sluice.testing import ListSource, registry_with_doubles
from tests.conftest import REPO

GRAFANA_PASSWORD = "grafana-test-password"
READER_PASSWORD = "reader-test-password"
READER_DATABASE = "sec_demo"
"""The database the shipped read-only `sluice_reader` user may also read in the tests."""


def grafana_users_d() -> str:
    """The shipped users.d file for old servers, with the test password's hash filled in."""
    text = (REPO / "observability/grafana/clickhouse/users.d/grafana.xml").read_text()
    digest = hashlib.sha256(GRAFANA_PASSWORD.encode()).hexdigest()
    assert "REPLACE_WITH_SHA256_HEX_OF_THE_PASSWORD" in text
    return text.replace("REPLACE_WITH_SHA256_HEX_OF_THE_PASSWORD", digest)


def reader_users_d() -> str:
    """The shipped users.d file of the `sluice_reader` query user, with the test password's hash
    filled in and :data:`READER_DATABASE` allowed too."""
    text = (REPO / "observability/clickhouse/sluice_reader.xml").read_text()
    digest = hashlib.sha256(READER_PASSWORD.encode()).hexdigest()
    assert "REPLACE_WITH_SHA256_HEX_OF_THE_PASSWORD" in text
    allowed = "<database>coinbase_demo</database>"
    assert allowed in text
    text = text.replace(allowed, f"{allowed}<database>{READER_DATABASE}</database>")
    return text.replace("REPLACE_WITH_SHA256_HEX_OF_THE_PASSWORD", digest)


def ticker_record(n: int, **overrides: Any) -> Record:
    """The ``n``-th Coinbase-like ticker as a record of kind ``ticker``."""
    return Record(ticker_bytes(n, **overrides), "ticker")


def read_jsonl(path: Path) -> list[Any]:
    """The JSON values of a JSON Lines file; none when it does not exist."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def build_pipeline(
    config: str | dict[str, Any],
    records: Sequence[Record] | None = None,
    registry: Registry | None = None,
) -> Pipeline:
    """A pipeline from YAML (or a mapping), with the test doubles of :mod:`sluice.testing`.
    ``records``: what the ``list`` source ``src`` yields instead of its config's records."""
    registry = registry or registry_with_doubles()
    text = config if isinstance(config, str) else orjson.dumps(config).decode()
    pipeline = Pipeline.build(load_config_text(text, registry), registry)
    if records is not None:
        list_source(pipeline).records = records
    return pipeline


def list_source(pipeline: Pipeline, source_id: str = "src") -> ListSource:
    [source] = [w.source for w in pipeline.sources if w.component_id == source_id]
    assert isinstance(source, ListSource)
    return source


async def run_pipeline(
    pipeline: Pipeline | str | dict[str, Any],
    records: Sequence[Record] | None = None,
    until: Callable[[], object] | None = None,
    timeout: float = 120.0,
) -> RunResult:
    """Run a pipeline to its end, or until ``until()`` holds and then stop it as SIGTERM would
    (an end before that fails the test). The pipeline is stopped whatever happens."""
    if not isinstance(pipeline, Pipeline):
        pipeline = build_pipeline(pipeline, records)
    task = asyncio.create_task(pipeline.run())
    deadline = time.monotonic() + timeout
    try:
        while until is None or not until():
            if task.done():
                assert until is None, f"the pipeline ended before the condition: {task.result()}"
                break
            assert time.monotonic() < deadline, f"not done within {timeout} s"
            await asyncio.sleep(0.02)
    finally:
        pipeline.stop("test condition met")
        result = await asyncio.wait_for(task, 60)
    return result


def synthetic(products: tuple[str, ...] | None = None, **faults: Any) -> SimulatorOptions:
    """A synthetic market (400 trades/s unless ``trades_per_sec`` says), heartbeats every 0.2 s,
    every frame sent kept, with ``faults``."""
    return SimulatorOptions(
        mode="synthetic",
        trades_per_sec=faults.pop("trades_per_sec", 400),
        products=products,
        heartbeat_interval_secs=0.2,
        record_sent=True,
        faults=Faults(**faults),
    )
