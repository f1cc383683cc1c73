"""Session fixtures for integration tests: a real ClickHouse server of the tests' own."""

from __future__ import annotations

import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from sluice.sinks.clickhouse.testing import SERVER_BINARY, LocalServer


@pytest.fixture(scope="session")
def clickhouse_server_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    """``clickhouse-server`` (Debian's 18.16 here) on free ports with a temporary data dir."""
    if shutil.which(SERVER_BINARY) is None:
        pytest.fail(
            f"{SERVER_BINARY} is missing: install Debian's clickhouse-server (.ci/run does)"
        )
    server = LocalServer(tmp_path_factory.mktemp("clickhouse-server"))
    server.start()
    yield server
    server.kill()


@pytest.fixture
def clickhouse_server(clickhouse_server_session: LocalServer) -> LocalServer:
    """The session's server, running (a test that killed it and failed is made good here)."""
    if clickhouse_server_session.process is None:
        clickhouse_server_session.start()
    return clickhouse_server_session


@pytest.fixture
def table() -> str:
    """A fresh table name per test."""
    return f"t_{uuid.uuid4().hex[:12]}"


@pytest.fixture
def chdb_path(tmp_path: Path) -> Path:
    return tmp_path / "chdb"
