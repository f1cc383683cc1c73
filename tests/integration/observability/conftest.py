"""Fixtures for the observability tests: a ClickHouse 18.16 server for the session, a chDB
session per test, and the directory where test runs leave artifacts (screenshots)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from obs_support import (
    REPO,
    Chdb,
    ClickHouseServer,
    LogFile,
    clickhouse_available,
    grafana_users_d,
)

from sluice.logs import configure_logging


@pytest.fixture(scope="session")
def clickhouse_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClickHouseServer]:
    """Debian's clickhouse-server (18.16) with the shipped read-only `grafana` user."""
    if not clickhouse_available():
        pytest.fail("clickhouse-server is not installed (the CI installs Debian's package)")
    server = ClickHouseServer(tmp_path_factory.mktemp("clickhouse"))
    server.start(users_d={"grafana.xml": grafana_users_d()})
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def chdb(tmp_path: Path) -> Iterator[Chdb]:
    session = Chdb(tmp_path / "chdb")
    try:
        yield session
    finally:
        session.close()


@pytest.fixture(scope="session")
def artifacts_dir() -> Path:
    path = REPO / "test-artifacts"
    path.mkdir(exist_ok=True)
    return path


@pytest.fixture
def logs(tmp_path: Path) -> Iterator[LogFile]:
    """The process log as JSON lines in a file, for the duration of the test."""
    path = tmp_path / "log.jsonl"
    with path.open("a", buffering=1) as stream:
        configure_logging("info", "json", stream=stream)
        try:
            yield LogFile(path)
        finally:
            structlog.reset_defaults()
