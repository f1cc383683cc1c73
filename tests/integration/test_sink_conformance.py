"""One suite every sink passes, each behaviour a test, in a real pipeline: the shipped
:class:`sluice.testing.conformance.SinkConformance` (which a plugin author runs against their own
sink the same way), here against the built-in sinks and the ``list`` test double.

A sink joins with a subclass: how to configure it for a test and how to read back what it stored.
A behaviour runs only for the sinks it applies to (a sink whose store does not outlive the process
has no restart to survive; a sink that can store anything refuses nothing).
"""

from __future__ import annotations

from typing import Any, ClassVar

import pytest

from sluice.sinks.clickhouse.testing import ClickHouseStore
from sluice.testing import written
from sluice.testing.conformance import UNDER_TEST, SinkConformance, read_jsonl

pytestmark = pytest.mark.timeout(120)


class TestFileSink(SinkConformance):
    def sink_config(self) -> dict[str, Any]:
        return {"type": "file", "path": str(self.workdir / "out.jsonl")}

    def stored(self) -> list[dict[str, Any]]:
        return read_jsonl(self.workdir / "out.jsonl")


class TestListSink(SinkConformance):
    persistent = False
    bad_record: ClassVar[dict[str, Any] | None] = {"n": -1, "unstorable": True}

    def sink_config(self) -> dict[str, Any]:
        return {"type": "list", "reject_field": "unstorable"}

    def stored(self) -> list[dict[str, Any]]:
        assert self.pipeline is not None
        return [r.data for r in written(self.pipeline).get(UNDER_TEST, [])]


CLICKHOUSE_DDL = """CREATE DATABASE IF NOT EXISTS {database};
CREATE TABLE IF NOT EXISTS {database}.{table} (n UInt32, text String) ENGINE = MergeTree ORDER BY n;
"""


class ClickHouseConformance(SinkConformance):
    fixture: ClassVar[str]
    """The fixture giving the store: ``chdb`` or ``clickhouse_server``."""
    bad_record: ClassVar[dict[str, Any] | None] = {"n": "not a number", "text": "bad"}

    @property
    def store(self) -> ClickHouseStore:
        store: ClickHouseStore = self.request.getfixturevalue(self.fixture)
        return store

    @property
    def table(self) -> str:
        return str(self.request.getfixturevalue("table"))

    def sink_config(self) -> dict[str, Any]:
        ddl = self.workdir / "conformance.sql"
        ddl.write_text(CLICKHOUSE_DDL)
        target = self.store.target
        return {
            "type": "clickhouse",
            **target,
            "database": "conformance",
            "table": self.table,
            "ddl": str(ddl),
        }

    def stored(self) -> list[dict[str, Any]]:
        rows = self.store.rows(f"SELECT n, text FROM conformance.{self.table} ORDER BY n")
        return [{"n": n, "text": text} for n, text in rows]


class TestClickHouseChdbSink(ClickHouseConformance):
    fixture = "chdb"


@pytest.mark.clickhouse_server
class TestClickHouseServerSink(ClickHouseConformance):
    fixture = "clickhouse_server"
