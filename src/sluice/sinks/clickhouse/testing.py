"""Moved to :mod:`sluice.testing.clickhouse`; this name stays for existing imports."""

from __future__ import annotations

from sluice.testing.clickhouse import (
    ClickHouseStore,
    LocalChdb,
    LocalServer,
    QueryError,
    server_binary,
    ticker,
    ticker_bytes,
)

SERVER_BINARY = server_binary() or "clickhouse-server"
"""The server the tests start (found, not fixed: see :func:`server_binary`)."""

__all__ = [
    "SERVER_BINARY",
    "ClickHouseStore",
    "LocalChdb",
    "LocalServer",
    "QueryError",
    "server_binary",
    "ticker",
    "ticker_bytes",
]
