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
        # the window encloses both counts: every line counted was written inside it
        first_time = time.monotonic()
        first_count = lines(out)
        await wait_until(lambda: lines(out) >= first_count + 2 * limit, timeout=60)
        second_count = lines(out)
        second_time = time.monotonic()
        samples = await running.metrics()
    # the limit is a ceiling (a loaded machine only goes slower): in any window at most the burst,
    # plus what passed the limiter before the window and waited in the buffer and the batch being
    # written, plus the rate times the window
    ceiling = limit * (second_time - first_time) + 100 + 500 + 50
    assert second_count - first_count <= ceiling, f"{second_count - first_count} > {ceiling:.0f}"
    labels = (
        {"component_id": "feed", "component_kind": "source"}
        if where == "source"
        else {"component_id": "out", "component_kind": "sink"}
    )
    waits = metric(samples, "sluice_component_rate_limit_waits_total", **labels)
    waited = metric(samples, "sluice_component_rate_limit_wait_seconds_total", **labels)
    # the limiter is what held the pipeline back: it waited again and again
    assert waits >= 10
    assert waited > 0
    other = (
        {"component_id": "out", "component_kind": "sink"}
        if where == "source"
        else {"component_id": "feed", "component_kind": "source"}
    )
    assert metric(samples, "sluice_component_rate_limit_waits_total", **other) == 0
