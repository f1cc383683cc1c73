"""Fixtures for integration tests: one real ClickHouse server for the whole session (with the
shipped read-only `grafana` and `sluice_reader` users), chDB directories per test, the Coinbase simulator on a free
port, and fresh table names."""

from __future__ import annotations

import asyncio
import shutil
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from sluice.simulator import CoinbaseSimulator
from sluice.sinks.clickhouse.testing import SERVER_BINARY, ClickHouseStore, LocalChdb, LocalServer
from sluice.testing.clickhouse import LocalCluster
from tests.integration.support import Listener, grafana_users_d, reader_users_d


@pytest.fixture(scope="session")
def clickhouse_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """``clickhouse-server`` (Debian's 18.16 here) on free ports with a temporary data dir."""
    if shutil.which(SERVER_BINARY) is None:
        pytest.fail(
            f"{SERVER_BINARY} is missing: install Debian's clickhouse-server (.ci/run does)"
        )
    server = LocalServer(
        tmp_path_factory.mktemp("clickhouse-server"),
        users_d={"grafana.xml": grafana_users_d(), "sluice_reader.xml": reader_users_d()},
    )
    server.start()
    yield server
    server.kill()


@pytest.fixture
def clickhouse_server(
    clickhouse_server_session: LocalServer, request: pytest.FixtureRequest
) -> LocalServer:
    """The session's server, running (a test that killed it and failed is made good here)."""
    if request.node.get_closest_marker("clickhouse_server") is None:
        pytest.fail(
            "a test that uses the ClickHouse server must be marked clickhouse_server at "
            "collection: pytest.param(..., marks=SERVER) where it asks for the server at run time"
        )
    if clickhouse_server_session.process is None:
        clickhouse_server_session.start()
    return clickhouse_server_session


@pytest.fixture(scope="session")
def clickhouse_cluster_session(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[LocalCluster]:
    """Three ``clickhouse-server`` processes and a ZooKeeper (Debian's packages), all on loopback
    and free ports: cluster ``sluice`` with shard 1 = servers 0 and 1 (replicas) and shard 2 =
    server 2, ``{shard}``/``{replica}`` macros set on each."""
    if shutil.which(SERVER_BINARY) is None or shutil.which("java") is None:
        pytest.fail("clickhouse-server and java (zookeeper) are needed: see scripts/system-deps.sh")
    cluster = LocalCluster(tmp_path_factory.mktemp("clickhouse-cluster"), shards=[2, 1])
    cluster.start()
    yield cluster
    cluster.kill()


@pytest.fixture
def clickhouse_cluster(clickhouse_cluster_session: LocalCluster) -> Iterator[LocalCluster]:
    """The session's cluster with every server running (a test that killed one and failed is
    made good here)."""
    for server in clickhouse_cluster_session.servers:
        if server.process is None:
            server.start()
    yield clickhouse_cluster_session
    for server in clickhouse_cluster_session.servers:
        if server.process is None:
            server.start()


@pytest.fixture
def chdb(tmp_path: Path) -> Iterator[LocalChdb]:
    """chDB in this process, in a fresh directory (a clickhouse sink's ``path``)."""
    store = LocalChdb(tmp_path / "chdb")
    yield store
    store.close()


SERVER = pytest.mark.clickhouse_server


@pytest.fixture(params=["chdb", pytest.param("server", marks=SERVER)])
def store(request: pytest.FixtureRequest) -> ClickHouseStore:
    """Each test runs on chDB (a current engine) and on the session's server (18.16)."""
    if request.param == "server":
        server: LocalServer = request.getfixturevalue("clickhouse_server")
        return server
    chdb: LocalChdb = request.getfixturevalue("chdb")
    return chdb


@pytest.fixture
async def simulator(request: pytest.FixtureRequest) -> AsyncIterator[CoinbaseSimulator]:
    """The Coinbase simulator on a free port, with the test's SimulatorOptions (indirect)."""
    sim = CoinbaseSimulator(request.param)
    await sim.start("127.0.0.1", 0)
    yield sim
    await sim.close()


@pytest.fixture
def table() -> str:
    """A fresh table name per test."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
async def listener() -> AsyncIterator[Listener]:
    """A loopback listener that must get no connection (the far side of url(), remote())."""
    found = Listener(None, 0)  # type: ignore[arg-type]

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        found.connections += 1
        writer.close()

    found.server = await asyncio.start_server(handle, "127.0.0.1", 0)
    found.port = found.server.sockets[0].getsockname()[1]
    yield found
    found.server.close()
    await found.server.wait_closed()
