"""Chaos tests: real processes killed, servers stopped, disks filled, hostile bytes; each bounded
in time, loopback only, with the numbers (produced, stored, duplicated, lost, skipped) asserted.

The ClickHouse server fixtures are the integration tests' own (one server per session for this
directory)."""

from tests.integration.conftest import (  # noqa: F401 - fixtures re-exported for this directory
    clickhouse_server,
    clickhouse_server_session,
    table,
)
