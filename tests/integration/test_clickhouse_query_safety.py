"""Queries that reach the embedded store through the admin port or `sluice sql` stay read-only:
no writes, no table functions reading the host's files, no settings changes."""

from __future__ import annotations

from pathlib import Path

import pytest

from sluice.sinks.clickhouse.embedded import EmbeddedClient
from sluice.sinks.clickhouse.errors import ClickHouseError


@pytest.mark.parametrize("read_only", [False, True], ids=["running-sink", "sluice-sql-direct"])
@pytest.mark.parametrize(
    "sql",
    [
        "SELECT * FROM file('/etc/hostname', 'LineAsString')",
        "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
        "SELECT 1 SETTINGS readonly = 0",
    ],
)
async def test_the_query_connection_refuses_more_than_reading(
    tmp_path: Path, read_only: bool, sql: str
) -> None:
    path = tmp_path / "chdb"
    if read_only:  # a store made by an earlier run
        writer = EmbeddedClient(path)
        await writer.open()
        await writer.execute("CREATE DATABASE IF NOT EXISTS d")
        await writer.execute("CREATE TABLE d.t (n UInt8) ENGINE = MergeTree ORDER BY n")
        await writer.close()
    client = EmbeddedClient(path, read_only=read_only)
    await client.open()
    try:
        assert (await client.select("SELECT 1")).rows == [[1]]
        with pytest.raises(ClickHouseError, match=r"READONLY|readonly"):
            await client.select(sql)
    finally:
        await client.close()
