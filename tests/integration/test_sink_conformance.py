"""One suite every sink passes: writes each record, survives a transient failure, appends across a
restart, sends what it cannot store to the dead letters, starts and closes cleanly.

A sink joins the suite with a :class:`SinkUnderTest`: how to configure it in a fresh directory and
how to read back what it stored.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.config import load_config_text
from sluice.errors import RetriableError
from sluice.runtime.pipeline import Pipeline
from sluice.testing import WRITTEN, registry_with_doubles


@dataclass
class SinkUnderTest:
    name: str
    config: Callable[[Path], dict[str, Any]]
    """The sink's config (without `inputs`) for a fresh directory."""
    read_back: Callable[[Path], list[dict[str, Any]]]
    """The records stored, as mappings, in write order."""
    bad_record: dict[str, Any] | None = None
    """A record this sink can never store (it must reach the dead letters), if there is one."""
    persistent: bool = True
    """Whether what it stored outlives the process (so a restart appends)."""


def _jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


SINKS = [
    SinkUnderTest(
        "file",
        lambda d: {"type": "file", "path": str(d / "out.jsonl")},
        lambda d: _jsonl(d / "out.jsonl"),
    ),
    SinkUnderTest(
        "list",
        lambda d: {"type": "list", "reject_field": "unstorable"},
        lambda d: [r.data for r in WRITTEN.get("under_test", [])],
        bad_record={"n": -1, "unstorable": True},
        persistent=False,
    ),
]


def records(start: int, count: int) -> list[dict[str, Any]]:
    return [{"n": i, "text": f"record {i}"} for i in range(start, start + count)]


async def run(sink: SinkUnderTest, workdir: Path, items: list[dict[str, Any]]) -> Pipeline:
    registry = registry_with_doubles()
    config = {
        "sources": {"src": {"type": "list", "records": items, "batch_size": 40}},
        "sinks": {
            "under_test": {
                **sink.config(workdir),
                "inputs": ["src"],
                "batch": {"max_events": 64, "max_age_secs": 0.02},
                "retry": {"initial_backoff_secs": 0.01, "max_backoff_secs": 0.05},
            }
        },
        "admin": {"enabled": False},
        "data_dir": str(workdir / "state"),
    }
    pipeline = Pipeline.build(load_config_text(orjson.dumps(config).decode(), registry), registry)
    result = await pipeline.run()
    assert result.ok, result
    return pipeline


def each(sinks: list[SinkUnderTest]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("sink", sinks, ids=[s.name for s in sinks])


PERSISTENT = [s for s in SINKS if s.persistent]
REJECTING = [s for s in SINKS if s.bad_record is not None]


@each(SINKS)
async def test_writes_every_record_once_in_order(sink: SinkUnderTest, workdir: Path) -> None:
    await run(sink, workdir, records(0, 300))
    assert sink.read_back(workdir) == records(0, 300)


@each(SINKS)
async def test_retries_a_transient_failure_without_loss(
    sink: SinkUnderTest, workdir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plugin = registry_with_doubles().sinks[sink.config(workdir)["type"]]
    real_write = plugin.write_batch
    failures = {"left": 2}

    async def flaky_write(self: Any, batch: Any) -> None:
        if failures["left"]:
            failures["left"] -= 1
            raise RetriableError("injected: connection reset")
        await real_write(self, batch)

    monkeypatch.setattr(plugin, "write_batch", flaky_write)
    pipeline = await run(sink, workdir, records(0, 200))
    assert sink.read_back(workdir) == records(0, 200)
    assert pipeline.sink("under_test").metrics.totals()["retries"] == 2  # type: ignore[union-attr]


@each(PERSISTENT)
async def test_appends_across_a_restart(sink: SinkUnderTest, workdir: Path) -> None:
    await run(sink, workdir, records(0, 100))
    await run(sink, workdir, records(100, 100))
    assert sink.read_back(workdir) == records(0, 200)


@each(REJECTING)
async def test_sends_what_it_cannot_store_to_the_dead_letters(
    sink: SinkUnderTest, workdir: Path
) -> None:
    assert sink.bad_record is not None
    items = [*records(0, 50), sink.bad_record, *records(50, 50)]
    await run(sink, workdir, items)
    assert sink.read_back(workdir) == records(0, 100)
    dead = _jsonl(workdir / "state" / "dead_letters.jsonl")
    assert [d["record"] for d in dead] == [sink.bad_record]
    assert dead[0]["component_id"] == "under_test"
    assert dead[0]["reason"]
