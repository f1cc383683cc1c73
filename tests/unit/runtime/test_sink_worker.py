"""What a sink worker reports: drops at a bounded cadence, a failing disk buffer as not ready,
and the backlog a disk buffer keeps on disk at a stop."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import structlog

from sluice.config import load_config_text
from sluice.config.models import RetryPolicy
from sluice.runtime.pacing import Backoff
from sluice.runtime.pipeline import Pipeline
from sluice.runtime.sink_worker import DropReporter
from sluice.testing import registry_with_doubles
from tests.conftest import wait_until

REGISTRY = registry_with_doubles()


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Log:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append({"event": event, **fields})


def test_drops_are_logged_at_once_then_at_most_once_per_interval_with_totals() -> None:
    clock, log = Clock(), Log()
    drops = DropReporter(log, interval_secs=10.0, clock=clock)
    drops.dropped(100)  # the first drop: logged at once
    for _ in range(999):  # a flood within the interval: no line
        clock.now += 0.005
        drops.dropped(100)
    assert [line["dropped_total"] for line in log.lines] == [100]
    clock.now = 1010.0
    drops.dropped(7)  # the interval has passed: one line with what came since and the total
    assert log.lines[-1] == {
        "event": "buffer.full.dropping",
        "dropped": 99_907,
        "dropped_total": 100_007,
        "policy": "drop_newest",
    }
    drops.dropped(3)
    drops.flush()  # the end of the run: what the last interval dropped
    assert [(line["dropped"], line["dropped_total"]) for line in log.lines] == [
        (100, 100),
        (99_907, 100_007),
        (3, 100_010),
    ]
    drops.flush()
    assert len(log.lines) == 3


async def test_a_drop_newest_run_logs_few_lines_whose_total_is_every_drop(workdir: Path) -> None:
    pipeline = Pipeline.build(
        load_config_text(
            "sources:\n  gen: {type: generator, count: 20000, batch_size: 100}\n"
            "sinks:\n  out:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
            "    delay_secs: 0.01\n"
            "    buffer: {max_events: 500, when_full: drop_newest}\n    batch: {max_events: 100}\n"
            "admin: {enabled: false}\n",
            REGISTRY,
        ),
        REGISTRY,
    )
    with structlog.testing.capture_logs() as logs:
        assert (await pipeline.run()).ok
    dropped = pipeline.sinks[0].metrics.totals()["dropped"]
    lines = [line for line in logs if line["event"] == "buffer.full.dropping"]
    assert dropped > 1000
    assert 1 <= len(lines) < dropped // 100  # bounded: not a line per dropped batch
    assert lines[-1]["dropped_total"] == dropped
    assert sum(line["dropped"] for line in lines) == dropped


async def test_a_failing_disk_buffer_makes_its_sink_not_ready_naming_the_file(
    workdir: Path,
) -> None:
    pipeline = Pipeline.build(
        load_config_text(
            "sources:\n  gen: {type: generator, count: 1}\n"
            "sinks:\n  out:\n    type: list\n    inputs: [gen]\n    buffer: {type: disk}\n"
            "admin: {enabled: false}\n",
            REGISTRY,
        ),
        REGISTRY,
    )
    worker = pipeline.sinks[0]
    worker.started = True
    assert (await pipeline.readiness())["sink/out"].ready
    worker.buffer.failing = "disk buffer /v/1.log: No space left on device"
    state = (await pipeline.readiness())["sink/out"]
    assert not state.ready
    assert state.reason == "buffer writes failing: disk buffer /v/1.log: No space left on device"


async def test_the_stop_line_says_what_stays_on_disk(workdir: Path) -> None:
    pipeline = Pipeline.build(
        load_config_text(
            "sources:\n  gen: {type: generator, count: 1000, record_bytes: 100}\n"
            "sinks:\n  down:\n    type: flaky\n    inputs: [gen]\n    path: out.jsonl\n"
            "    fail_first_writes: 1000000\n"
            "    retry: {initial_backoff_secs: 0.01, max_backoff_secs: 0.05}\n"
            "    buffer: {type: disk}\n"
            "admin: {enabled: false}\n",
            REGISTRY,
        ),
        REGISTRY,
    )
    worker = pipeline.sinks[0]

    async def stop_once_all_buffered() -> None:
        await wait_until(lambda: worker.metrics.totals()["retries"] > 0)
        await wait_until(lambda: source.produced == 1000 and not worker.unwritten())
        pipeline.stop()

    source: Any = pipeline.sources[0].source
    with structlog.testing.capture_logs() as logs:
        stopper = asyncio.create_task(stop_once_all_buffered())
        assert (await pipeline.run()).ok
        await stopper
    [stopped] = [line for line in logs if line["event"] == "pipeline.stopped"]
    assert stopped["disk_backlog_records"] == 1000
    received_bytes = pipeline.metrics.registry.get_sample_value(
        "sluice_component_received_bytes_total",
        {"component_id": "down", "component_kind": "sink", "component_type": "flaky"},
    )
    assert received_bytes is not None
    assert stopped["disk_backlog_bytes"] == received_bytes > 90_000
    assert stopped["disk_backlog"] == {"down": {"records": 1000, "bytes": received_bytes}}
    [summary] = [
        line
        for line in logs
        if line["event"] == "component.summary" and line["component_id"] == "down"
    ]
    assert (summary["backlog_records"], summary["backlog_bytes"]) == (1000, received_bytes)


def test_a_backoff_keeps_its_cap_after_thousands_of_attempts() -> None:
    backoff = Backoff(RetryPolicy(initial_backoff_secs=0.01, max_backoff_secs=0.05))
    delays = [backoff.next_delay() for _ in range(5000)]  # 2.0 ** 1024 overflows a float
    assert backoff.attempt == 5000
    assert min(delays[-100:]) >= 0.025
    assert max(delays) <= 0.05
