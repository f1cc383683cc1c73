"""The clickhouse sink passes the sink conformance check, on chDB and on the server."""

from __future__ import annotations

import asyncio
from pathlib import Path

import orjson
import pytest

from sluice.records import Record
from sluice.sinks.clickhouse import ClickHouseSink
from sluice.sinks.clickhouse.embedded import EmbeddedClient
from sluice.sinks.clickhouse.testing import LocalServer
from tests.integration.sink_conformance import ConformanceCase, check_sink_conformance

DDL = """CREATE DATABASE IF NOT EXISTS {database};
CREATE TABLE IF NOT EXISTS {database}.{table} (n UInt32, text String) ENGINE = MergeTree ORDER BY n;
"""
BAD = Record(orjson.dumps({"n": "not a number", "text": "bad"}))


@pytest.mark.timeout(180)
async def test_clickhouse_sink_conformance_on_chdb(
    tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ddl.sql").write_text(DDL)
    path = tmp_path / "chdb"

    def stored() -> list[int]:
        async def read() -> list[int]:
            client = EmbeddedClient(path, read_only=True)
            await client.open()
            try:
                return [row[0] for row in (await client.select(f"SELECT n FROM c.{table}")).rows]
            finally:
                await client.close()

        return asyncio.run(read())  # called between pipeline runs, from a worker thread below

    case = ConformanceCase(
        ClickHouseSink,
        lambda: (
            f"  out: {{type: clickhouse, inputs: [src], path: {path}, database: c, table: {table}, ddl: {tmp_path / 'ddl.sql'}}}"
        ),
        lambda: _in_thread(stored),
        BAD,
    )
    await check_sink_conformance(case, tmp_path, monkeypatch)


@pytest.mark.clickhouse_server
@pytest.mark.timeout(180)
async def test_clickhouse_sink_conformance_on_the_server(
    clickhouse_server: LocalServer, tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "ddl.sql").write_text(DDL)
    case = ConformanceCase(
        ClickHouseSink,
        lambda: (
            f"  out: {{type: clickhouse, inputs: [src], url: '{clickhouse_server.url}', database: c, table: {table}, ddl: {tmp_path / 'ddl.sql'}}}"
        ),
        lambda: [row[0] for row in clickhouse_server.rows(f"SELECT n FROM c.{table}")],
        BAD,
    )
    await check_sink_conformance(case, tmp_path, monkeypatch)


def _in_thread(read: object) -> list[int]:
    import concurrent.futures

    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        result: list[int] = pool.submit(read).result()  # type: ignore[arg-type]
        return result
