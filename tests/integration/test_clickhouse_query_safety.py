"""Queries from outside (the admin port, `sluice sql`, `sluice monitor`) reach a sink's store only as
one read-only SELECT, judged by ClickHouse's own parser, on chDB and on the server: no writes, no
files written or read, no requests to URLs or other servers, no settings changes. And behind that
judgement, the engines' own read-only mode refuses the same forms (the second wall)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.errors import QueryRefused
from sluice.sinks.clickhouse.client import Client
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.embedded import EmbeddedClient
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.http_client import HttpClient
from sluice.sinks.clickhouse.testing import LocalServer
from tests.integration.support import (
    READER_DATABASE,
    READER_PASSWORD,
    Listener,
    forbidden,
)

DATABASE = READER_DATABASE


async def assert_all_refused(
    client: Client, out: Path, secret: Path, listener: Listener, table: str
) -> None:
    let_through = []
    for sql in forbidden(out, secret, listener.port, table):
        try:
            await client.select_from_outside(sql)
        except QueryRefused:
            continue
        except ClickHouseError as exc:  # it reached the engine, which refused it on its own
            let_through.append(f"{sql} -> {exc}")
            continue
        let_through.append(sql)
    assert let_through == []
    assert sorted(p.name for p in out.iterdir()) == []
    assert listener.connections == 0
    assert (await client.select_from_outside(f"SELECT n FROM {table} ORDER BY n")).rows == [
        [1],
        [2],
    ]
    made = await client.select(
        f"SELECT count() FROM system.tables WHERE database = '{DATABASE}' AND name = 'made'"
    )
    assert made.rows == [[0]]


def places(tmp_path: Path) -> tuple[Path, Path]:
    out = tmp_path / "out"
    out.mkdir()
    secret = tmp_path / "secret.txt"
    secret.write_text("not for queries\n")
    return out, secret


async def make_chdb(path: Path) -> None:
    writer = EmbeddedClient(path)
    await writer.open()
    await writer.execute(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    await writer.execute(f"CREATE TABLE {DATABASE}.t (n UInt8) ENGINE = MergeTree ORDER BY n")
    await writer.execute(f"INSERT INTO {DATABASE}.t VALUES (1), (2)")
    await writer.close()


@pytest.mark.parametrize("read_only", [False, True], ids=["running-sink", "sluice-sql-direct"])
async def test_chdb_refuses_every_form_that_writes_or_reaches_out(
    tmp_path: Path, read_only: bool, listener: Listener
) -> None:
    out, secret = places(tmp_path)
    await make_chdb(tmp_path / "chdb")
    client = EmbeddedClient(tmp_path / "chdb", read_only=read_only)
    await client.open()
    try:
        await assert_all_refused(client, out, secret, listener, f"{DATABASE}.t")
    finally:
        await client.close()


@pytest.fixture
def server_table(clickhouse_server: LocalServer, table: str) -> Iterator[str]:
    clickhouse_server.query(f"CREATE DATABASE IF NOT EXISTS {DATABASE}")
    name = f"{DATABASE}.{table}"
    clickhouse_server.query(f"CREATE TABLE {name} (n UInt8) ENGINE = MergeTree ORDER BY n")
    clickhouse_server.query(f"INSERT INTO {name} VALUES (1), (2)")
    yield name
    clickhouse_server.query(f"DROP TABLE IF EXISTS {name}")
    clickhouse_server.query(f"DROP TABLE IF EXISTS {DATABASE}.made")


def server_client(server: LocalServer, table: str, *, reader: bool) -> HttpClient:
    credentials = (
        {"query_user": "sluice_reader", "query_password": READER_PASSWORD} if reader else {}
    )
    config = ClickHouseSinkConfig.model_validate(
        {"url": server.url, "database": DATABASE, "table": table.split(".")[1], **credentials}
    )
    return HttpClient(config)


@pytest.mark.clickhouse_server
@pytest.mark.parametrize("reader", [False, True], ids=["sink-user", "query-user"])
async def test_the_server_client_refuses_every_form_that_writes_or_reaches_out(
    clickhouse_server: LocalServer,
    server_table: str,
    tmp_path: Path,
    reader: bool,
    listener: Listener,
) -> None:
    out, secret = places(tmp_path)
    client = server_client(clickhouse_server, server_table, reader=reader)
    await client.open()
    try:
        await assert_all_refused(client, out, secret, listener, server_table)
        multi_line = await client.select_from_outside(
            f"-- a comment\nSELECT count() AS n,\n  'a\\tb' AS s\nFROM {server_table};"
        )
        assert multi_line.rows == [[2, "a\tb"]]
    finally:
        await client.close()


@pytest.mark.clickhouse_server
@pytest.mark.parametrize("reader", [False, True], ids=["sink-user", "query-user"])
async def test_the_server_itself_refuses_what_the_parser_would_have_refused(
    clickhouse_server: LocalServer,
    server_table: str,
    tmp_path: Path,
    reader: bool,
    listener: Listener,
) -> None:
    """The second wall: sent past the judgement, the server's readonly=1 still refuses."""
    out, _ = places(tmp_path)
    client = server_client(clickhouse_server, server_table, reader=reader)
    await client.open()
    try:
        for sql in (
            f"SELECT * FROM url('http://127.0.0.1:{listener.port}/', CSV, 'a String')",
            f"SELECT * FROM remote('127.0.0.1:{listener.port}', system.one)",
            "SELECT 1 SETTINGS max_execution_time = 0",
            "SELECT 1 SETTINGS readonly = 0",
            f"INSERT INTO {server_table} VALUES (7)",
            f"DROP TABLE {server_table}",
            f"SELECT 1 INTO OUTFILE '{out}/x.txt'",
        ):
            with pytest.raises(ClickHouseError):
                await client._select_outside(sql)
        assert (await client._select_outside(f"SELECT sum(n) FROM {server_table}")).rows == [[3]]
    finally:
        await client.close()
    assert listener.connections == 0
    assert list(out.iterdir()) == []


async def test_the_chdb_query_connection_refuses_more_than_reading(tmp_path: Path) -> None:
    """The second wall on chDB: the query connection's readonly=1."""
    await make_chdb(tmp_path / "chdb")
    client = EmbeddedClient(tmp_path / "chdb", read_only=True)
    await client.open()
    try:
        for sql in (
            "SELECT * FROM file('/etc/hostname', 'LineAsString')",
            "SELECT * FROM url('http://127.0.0.1:1/', 'LineAsString')",
            "SELECT 1 SETTINGS readonly = 0",
        ):
            with pytest.raises(ClickHouseError, match=r"READONLY|readonly"):
                await client.select(sql)
    finally:
        await client.close()


async def test_a_store_opening_while_a_server_query_is_parsed_is_retried_not_failed(
    tmp_path: Path,
) -> None:
    """A server sink's query is parsed by an in-memory chDB engine of this process; a chDB sink
    starting at that moment gets a retriable error (its start is retried), not a failed run."""
    from sluice.errors import is_retriable
    from sluice.sinks.clickhouse import embedded

    embedded.claim_engine(embedded._MEMORY)
    try:
        with pytest.raises(ClickHouseError, match="busy parsing") as busy:
            await EmbeddedClient(tmp_path / "chdb").open()
        assert is_retriable(busy.value)
    finally:
        embedded.release_engine()
    client = EmbeddedClient(tmp_path / "chdb")
    await client.open()
    try:
        parsed = await embedded.parse_in_process("SELECT 1")  # on the open store's engine
        assert parsed.canonical == "SELECT 1"
    finally:
        await client.close()
