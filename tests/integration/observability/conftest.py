"""Fixtures for the observability tests: the Coinbase ticker table with a deliberate stop (on
chDB and on the session's server), the directory where test runs leave artifacts (screenshots),
and the process log in a file."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import structlog
from obs_support import LogFile, SeededTable, seed_ticker
from tests.conftest import REPO

from sluice.logs import configure_logging
from sluice.sinks.clickhouse.testing import ClickHouseStore, LocalServer


@pytest.fixture
def seeded(store: ClickHouseStore) -> Iterator[SeededTable]:
    """A ticker table of its own database, made from the shipped DDL, with a deliberate stop."""
    database = f"mon_{uuid.uuid4().hex[:10]}"
    yield seed_ticker(store, f"{database}.coinbase_ticker", time.time())
    if isinstance(store, LocalServer):
        store.query(f"DROP DATABASE IF EXISTS {database}")


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
