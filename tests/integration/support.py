"""Helpers shared by the integration tests: pipelines run in this process with the test doubles,
ticker records, JSON Lines read back, and the read-only `grafana` user of the session's server."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from sluice.config import load_config_text
from sluice.records import Record
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.simulator import Faults, SimulatorOptions
from sluice.simulator.advanced.options import AdvancedOptions
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


@dataclass
class Listener:
    """A TCP listener on loopback that counts the connections it gets (a URL's far side; the
    ``listener`` fixture)."""

    server: asyncio.Server
    port: int
    connections: int = 0


def forbidden(out: Path, secret: Path, port: int, table: str) -> list[str]:
    """Every form a query from outside must not take: writes, files, URLs, other servers,
    settings. ``out``: a directory where nothing may appear; ``port``: a listener that must get no
    connection."""
    return [
        f"SELECT 1 INTO OUTFILE '{out}/plain.txt'",
        f"SELECT 1 INTO OUTFILE '{out}/truncate.txt' TRUNCATE",
        f"SELECT 1 INTO OUTFILE '{out}/append.txt' APPEND",
        f"WITH x AS (SELECT 1 AS n) SELECT n FROM x INTO OUTFILE '{out}/with.txt'",
        f"SELECT * FROM {table} INTO OUTFILE '{out}/format.csv' FORMAT CSV",
        f"INSERT INTO {table} VALUES (7)",
        f"INSERT INTO {table} SELECT number FROM numbers(3)",
        f"CREATE TABLE {READER_DATABASE}.made (n UInt8) ENGINE = Memory",
        f"DROP TABLE {table}",
        f"ALTER TABLE {table} DELETE WHERE 1",
        f"TRUNCATE TABLE {table}",
        f"SELECT 1; DROP TABLE {table}",
        f"SELECT 1; SELECT 1 INTO OUTFILE '{out}/second.txt'",
        f"SELECT * FROM file('{secret}', 'LineAsString')",
        f"SELECT file('{secret}')",
        f"SELECT * FROM url('http://127.0.0.1:{port}/', 'LineAsString')",
        f"SELECT * FROM URL('http://127.0.0.1:{port}/', CSV, 'a String')",
        f"SELECT * FROM s3('http://127.0.0.1:{port}/b/x.csv', 'CSV', 'a String')",
        f"SELECT * FROM remote('127.0.0.1:{port}', system.one)",
        f"SELECT * FROM remoteSecure('127.0.0.1:{port}', system.one)",
        f"SELECT * FROM {table} AS t JOIN url('http://127.0.0.1:{port}/', CSV, 'n UInt8') AS u "
        "USING n",
        f"SELECT (SELECT count() FROM url('http://127.0.0.1:{port}/', CSV, 'a String'))",
        f"SELECT n FROM {table} WHERE n IN (SELECT * FROM file('{secret}', 'CSV', 'n UInt8'))",
        f"SELECT 1 IN url('http://127.0.0.1:{port}/x.csv')",
        f"SELECT 'x' IN file('{secret}')",
        f"SELECT * FROM mysql('127.0.0.1:{port}', 'd', 't', 'u', 'p')",
        f"SELECT * FROM postgresql('127.0.0.1:{port}', 'd', 't', 'u', 'p')",
        "SELECT * FROM executable('cat', 'CSV', 'a String')",
        "SELECT 1 SETTINGS readonly = 0",
        "SELECT 1 SETTINGS max_execution_time = 0",
        "SELECT * FROM (SELECT 1 SETTINGS max_execution_time = 0)",
        "SHOW TABLES",
        "",
    ]


def ticker_record(n: int, **overrides: Any) -> Record:
    """The ``n``-th Coinbase-like ticker as a record of kind ``ticker``."""
    return Record(ticker_bytes(n, **overrides), "ticker")


def read_jsonl(path: Path) -> list[Any]:
    """The JSON values of a JSON Lines file; none when it does not exist."""
    return [orjson.loads(line) for line in path.read_bytes().splitlines()] if path.exists() else []


def lines_into(tmp_path: Path, lines: Sequence[bytes], sink: dict[str, Any]) -> dict[str, Any]:
    """A config whose ``file`` source reads ``lines`` (written to ``in.jsonl``) into one sink,
    ``log``, with its data (dead letters) under ``tmp_path / "data"`` and no admin port."""
    (tmp_path / "in.jsonl").write_bytes(b"".join(line + b"\n" for line in lines))
    return {
        "data_dir": str(tmp_path / "data"),
        "admin": {"enabled": False},
        "sources": {"file": {"type": "file", "path": str(tmp_path / "in.jsonl")}},
        "sinks": {"log": {**sink, "inputs": ["file"]}},
    }


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


def synthetic_advanced(
    products: tuple[str, ...] = ("BTC-USD", "ETH-USD"), faults: Faults | None = None, **options: Any
) -> SimulatorOptions:
    """A synthetic market at 300 trades/s speaking Coinbase Advanced Trade (``options``: the
    :class:`AdvancedOptions`, e.g. ``skip_sequence_every``), heartbeats every 0.1 s, every message
    sent kept, with the frame ``faults``."""
    return SimulatorOptions(
        mode="synthetic",
        trades_per_sec=300,
        products=products,
        heartbeat_interval_secs=0.1,
        record_sent=True,
        faults=faults or Faults(),
        advanced=AdvancedOptions(**options),
    )
