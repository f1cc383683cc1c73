"""The shipped source conformance suite (:class:`sluice.testing.conformance.SourceConformance`)
against the built-in finite sources and the ``list`` test double: every record once and in order,
commits, a second ``batches()`` on the same instance after a retriable error, a restart."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from sluice.testing.conformance import SourceConformance

pytestmark = pytest.mark.timeout(120)

RECORDS = [{"n": i, "text": f"record {i}"} for i in range(250)]


class TestListSource(SourceConformance):
    def source_config(self) -> dict[str, Any]:
        return {"type": "list", "records": RECORDS, "batch_size": 40}

    def expected(self) -> list[dict[str, Any]]:
        return RECORDS


class TestFileSource(SourceConformance):
    def source_config(self) -> dict[str, Any]:
        path = self.workdir / "in.jsonl"
        if not path.exists():
            path.write_bytes(b"".join(orjson.dumps(r) + b"\n" for r in RECORDS))
        return {"type": "file", "path": str(path), "read_bytes": 4096}

    def expected(self) -> list[dict[str, Any]]:
        return RECORDS


class TestGeneratorSource(SourceConformance):
    def source_config(self) -> dict[str, Any]:
        return {"type": "generator", "count": 300, "batch_size": 50, "record_bytes": 60}

    def expected(self) -> list[dict[str, Any]]:
        return [{"seq": i} for i in range(300)]

    def comparable(self, record: dict[str, Any]) -> Any:
        return record["seq"]  # the records carry the time they were made
