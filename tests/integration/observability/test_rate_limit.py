"""rate_limit on a real generator -> file pipeline: the observed rate follows the limit and the
waits are counted on /metrics."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from obs_support import metric, run_in_process
from tests.conftest import wait_until


def lines(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


@pytest.mark.parametrize(
    ("where", "limit"),
    [("source", 2000), ("sink", 1500)],
)
async def test_rate_limit_holds_the_rate_and_counts_waits(
    tmp_path: Path, where: str, limit: int
) -> None:
    rate_limit = f"rate_limit: {{events_per_sec: {limit}, burst: 100}}"
    source_limit = rate_limit if where == "source" else ""
    sink_limit = rate_limit if where == "sink" else ""
    out = tmp_path / "out.jsonl"
    config = f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  feed: {{type: generator, batch_size: 50, {source_limit}}}
sinks:
  out:
    type: file
    path: {out}
    inputs: [feed]
    batch: {{max_events: 50, max_age_secs: 0.05}}
    buffer: {{max_events: 500}}
    {sink_limit}
"""
    async with run_in_process(config) as running:
        await wait_until(lambda: lines(out) > limit // 2)  # past the burst and the start
        first_count, first_time = lines(out), time.monotonic()
        await wait_until(lambda: time.monotonic() - first_time >= 3.0, timeout=10)
        second_count, second_time = lines(out), time.monotonic()
        samples = await running.metrics()
    rate = (second_count - first_count) / (second_time - first_time)
    assert 0.8 * limit <= rate <= 1.15 * limit, f"observed {rate:.0f}/s for a limit of {limit}/s"
    labels = (
        {"component_id": "feed", "component_kind": "source"}
        if where == "source"
        else {"component_id": "out", "component_kind": "sink"}
    )
    waits = metric(samples, "sluice_component_rate_limit_waits_total", **labels)
    waited = metric(samples, "sluice_component_rate_limit_wait_seconds_total", **labels)
    assert waits >= 10
    assert waited > 1.0  # most of the run was spent waiting for tokens
    other = (
        {"component_id": "out", "component_kind": "sink"}
        if where == "source"
        else {"component_id": "feed", "component_kind": "source"}
    )
    assert metric(samples, "sluice_component_rate_limit_waits_total", **other) == 0
