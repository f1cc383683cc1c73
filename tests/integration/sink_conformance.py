"""A conformance check any sink can be put through (after Redpanda Connect's StreamTests).

A sink passes when, in a real pipeline: it starts and closes with nothing to write; it stores every
record of many batches once; a retriable failure of a write is retried and nothing is lost or stored
twice; a second run (a restart) adds its records to the first run's; a record it can never write goes
to the dead letters with a reason, and the rest of its batch is stored.

A sink takes part through a :class:`ConformanceCase`: the YAML of the sink under test, a way to count
what it stored, and one record it must refuse.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.errors import RetriableError
from sluice.records import Record
from tests.integration.clickhouse_support import ListSource, run_pipeline


@dataclass
class ConformanceCase:
    sink_type: type
    """The sink's class (its ``write_batch`` gets a failure injected)."""
    sink_yaml: Callable[[], str]
    """The ``sinks:`` entry of the sink under test (id ``out``, inputs ``[src]``), indented 2."""
    stored: Callable[[], list[int]]
    """The ``n`` of every stored record (with repeats, if any)."""
    bad_record: Record
    """A record the sink must refuse with a reason."""


def _records(first: int, count: int) -> list[Record]:
    return [
        Record(orjson.dumps({"n": n, "text": f"record {n}"})) for n in range(first, first + count)
    ]


async def check_sink_conformance(
    case: ConformanceCase, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def yaml(name: str) -> str:
        return f"""
admin: {{enabled: false}}
data_dir: {tmp_path / "data"}
sources:
  src: {{type: test_list, name: {name}, batch_size: 250}}
sinks:
{case.sink_yaml()}
"""

    # start and close with nothing to write
    ListSource.records["conf-empty"] = []
    result = await run_pipeline(yaml("conf-empty"))
    assert result.ok, result.error

    # many batches, each record stored once
    ListSource.records["conf-1"] = _records(0, 3000)
    result = await run_pipeline(yaml("conf-1"))
    assert result.ok, result.error
    assert sorted(case.stored()) == list(range(3000))

    # a retriable failure is retried; nothing lost, nothing twice
    original = case.sink_type.write_batch
    failures = 0

    async def flaky(self: Any, records: Any) -> None:
        nonlocal failures
        if failures < 2:
            failures += 1
            raise RetriableError("injected transient failure")
        await original(self, records)

    monkeypatch.setattr(case.sink_type, "write_batch", flaky)
    ListSource.records["conf-2"] = _records(3000, 1000)
    result = await run_pipeline(yaml("conf-2"))
    monkeypatch.setattr(case.sink_type, "write_batch", original)
    assert result.ok, result.error
    assert failures == 2
    # a restart (a new pipeline on the same store) adds to what was there
    assert sorted(case.stored()) == list(range(4000))

    # a record that can never be written goes to the dead letters; its batch-mates are stored
    ListSource.records["conf-3"] = [*_records(4000, 10), case.bad_record, *_records(4010, 10)]
    result = await run_pipeline(yaml("conf-3"))
    assert result.ok, result.error
    assert sorted(case.stored()) == list(range(4020))
    letters = [
        orjson.loads(line)
        for line in (tmp_path / "data" / "dead_letters.jsonl").read_bytes().splitlines()
    ]
    assert [letter["record"] for letter in letters] == [orjson.loads(case.bad_record.raw)]
    assert letters[0]["reason"]
    assert letters[0]["component_id"] == "out"
