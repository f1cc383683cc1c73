"""Honest counters, as a user sees them: trades the Coinbase source discards on purpose (repeats
from the simulator's `repeat_every` fault) are `discarded`, shown neutrally, never `dropped`; a
replay that keeps its recorded times (`retime: false`) shows no event lag (`n/a (recorded
times)`) where a live feed shows a lag of a moment; `sluice monitor` of such a replay reads the
rows up to the newest one instead of an empty hour before now."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from obs_support import Running, metric, run_in_process
from rich.console import Console
from tests.conftest import wait_until
from tests.integration.support import synthetic

from sluice.cli.monitor_command import render_report, run_monitor, table_event_times
from sluice.config import load_config_text
from sluice.registry import Registry
from sluice.simulator import CoinbaseSimulator

LIVE = {"component_id": "live", "component_kind": "source", "component_type": "coinbase"}
REPLAYED = ("SKL-USD", "DASH-BTC", "SKL-BTC", "BAND-BTC", "NMR-EUR")
"""The recording's busiest products (examples/offline.yaml)."""
A_YEAR = 365 * 24 * 3600


def two_feeds(tmp_path: Path, url: str, admin: str = 'listen: "127.0.0.1:0"') -> str:
    """`live`: the simulator at ``url`` (with repeats); `replay`: the recording replayed in
    process with its recorded times kept, into chDB."""
    return f"""
data_dir: {tmp_path}/data
admin: {{{admin}}}
sources:
  live:
    type: coinbase
    url: {url}
    products: [BTC-USD, ETH-USD]
    channels: [ticker, heartbeat]
  replay:
    type: coinbase
    products: [{", ".join(REPLAYED)}]
    channels: [ticker, heartbeat]
    simulator: {{mode: replay, speed: 20, retime: false}}
sinks:
  ticks: {{type: file, path: {tmp_path}/ticks.jsonl, inputs: [live.ticker], batch: {{max_age_secs: 0.05}}}}
  replayed:
    type: clickhouse
    inputs: [replay.ticker]
    path: {tmp_path}/chdb
    database: replay_demo
    table: coinbase_ticker
    batch: {{max_age_secs: 0.2}}
"""


@contextlib.asynccontextmanager
async def two_feeds_running(tmp_path: Path, simulator: CoinbaseSimulator) -> AsyncIterator[Running]:
    async with run_in_process(two_feeds(tmp_path, simulator.url)) as running:
        yield running


async def settled_status(running: Running) -> dict[str, Any]:
    """The status once the live feed discarded repeats and the replay wrote 50 rows."""
    latest: dict[str, Any] = {}

    async def ready() -> bool:
        code, status = await running.json("/api/status?seconds=30&minutes=5")
        assert code == 200
        latest.update(status)
        sources = {s["id"]: s for s in status["sources"]}
        sinks = {s["id"]: s for s in status["sinks"]}
        return bool(
            sources["live"]["discarded"] >= 5
            and sources["live"]["event_lag_secs"] is not None
            and sinks["replayed"]["records"] >= 50
        )

    await wait_until(ready, 90)
    return latest


@pytest.mark.parametrize(
    "simulator",
    [synthetic(("BTC-USD", "ETH-USD"), trades_per_sec=200, repeat_every=5)],
    indirect=True,
)
async def test_status_counts_repeats_as_discarded_not_dropped_and_hides_a_recorded_lag(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    async with two_feeds_running(tmp_path, simulator) as running:
        status = await settled_status(running)
        samples = await running.metrics()
    sources = {s["id"]: s for s in status["sources"]}
    live, replay = sources["live"], sources["replay"]

    assert live["dropped"] == 0 and live["dropped_by_reason"] == {}
    assert live["discarded_by_reason"]["duplicate"] >= 5
    assert live["discarded"] == sum(live["discarded_by_reason"].values())
    # /metrics was read after the status: the same counter, as far or further
    duplicates = metric(samples, "sluice_source_discarded_total", reason="duplicate", **LIVE)
    assert duplicates >= live["discarded_by_reason"]["duplicate"]
    assert not [key for key in samples if key[0] == "sluice_component_dropped_events_total"]
    assert all(s["dropped"] == 0 for s in status["sinks"])

    assert live["event_times"] == "wall-clock"
    assert -1 < live["event_lag_secs"] < 30
    assert live["connected"] is True

    assert replay["event_times"] == "recorded"
    assert replay["event_lag_secs"] is None
    assert replay["last_event_time"] < time.time() - A_YEAR  # the recording's own times
    assert replay["connected"] is True
    assert replay["dropped"] == 0
    # the sinks' end-to-end lag: observed for the live feed's, not for the recorded times'
    lag = "sluice_sink_end_to_end_lag_seconds_count"
    sink = {"component_kind": "sink", "component_type": "file", "component_id": "ticks"}
    assert metric(samples, lag, **sink) > 0
    sink = {"component_kind": "sink", "component_type": "clickhouse", "component_id": "replayed"}
    assert metric(samples, lag, **sink) == 0


@pytest.mark.browser
@pytest.mark.slow
@pytest.mark.parametrize(
    "simulator",
    [synthetic(("BTC-USD", "ETH-USD"), trades_per_sec=200, repeat_every=5)],
    indirect=True,
)
async def test_the_dashboard_shows_discards_neutrally_and_no_lag_for_recorded_times(
    simulator: CoinbaseSimulator, tmp_path: Path, artifacts_dir: Path
) -> None:
    from test_dashboard_browser import offline_page

    async with two_feeds_running(tmp_path, simulator) as running:
        await settled_status(running)

        def look(url: str) -> dict[str, Any]:
            with offline_page(url) as opened:
                page = opened.page
                page.wait_for_function(
                    "() => +(document.querySelector(\"tr[data-source='live'] td[data-discarded]\")"
                    "?.dataset.discarded || 0) >= 5",
                    timeout=30_000,
                )
                live = page.locator("tr[data-source='live']")
                replay = page.locator("tr[data-source='replay']")
                seen = {
                    "discarded_class": live.locator("td[data-discarded]").get_attribute("class"),
                    "dropped": live.locator("td[data-dropped]").get_attribute("data-dropped"),
                    "dropped_class": live.locator("td[data-dropped]").get_attribute("class"),
                    "live_lag": live.locator("td[data-event-lag]").get_attribute("data-event-lag"),
                    "replay_lag": replay.locator("td[data-event-lag]").inner_text(),
                    "replay_lag_class": replay.locator("td[data-event-lag]").get_attribute("class"),
                    "headers": page.locator("#sources thead th").all_inner_texts(),
                }
                page.screenshot(path=str(artifacts_dir / "dashboard-honest-counters.png"))
            seen["blocked"], seen["errors"] = opened.blocked, opened.errors
            return seen

        # the link scripts/demo.sh prints: the market panel (a chDB sink) queries with the token
        token = (tmp_path / "data" / "admin.token").read_text().strip()
        seen = await asyncio.to_thread(look, f"{running.url}#token={token}")

    assert [h.lower() for h in seen["headers"]].count("discarded") == 1
    classes = set((seen["discarded_class"] or "").split())
    assert "muted" in classes and not classes & {"warn", "bad"}
    assert seen["dropped"] == "0"
    assert not set((seen["dropped_class"] or "").split()) & {"warn", "bad"}
    assert -1 < float(seen["live_lag"]) < 30
    assert seen["replay_lag"] == "n/a (recorded times)"
    assert "muted" in (seen["replay_lag_class"] or "")
    assert seen["blocked"] == [] and seen["errors"] == []


@pytest.mark.parametrize(
    "simulator", [synthetic(("BTC-USD", "ETH-USD"), trades_per_sec=50)], indirect=True
)
async def test_sluice_monitor_of_a_replay_that_keeps_its_times_reads_up_to_the_newest_row(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    registry = Registry.from_entry_points()
    async with two_feeds_running(tmp_path, simulator) as running:
        replayed = next(s for s in running.pipeline.sinks if s.component_id == "replayed")
        await wait_until(lambda: replayed.metrics.totals()["sent"] >= 50, 90)
        port = running.observability.admin.port  # type: ignore[union-attr]
        loaded = load_config_text(
            two_feeds(tmp_path, simulator.url, f'listen: "127.0.0.1:{port}"'), registry
        )
        assert table_event_times(loaded, registry, "replayed") == "recorded"
        report = await run_monitor(
            loaded, registry, sink_id="replayed", table=None, minutes=60, hours=1, via="admin"
        )
    assert report.event_times == "recorded"
    assert report.table == "replay_demo.coinbase_ticker"
    # the window ends at the newest (recorded) row, so the rows are in it
    assert sum(rows for _, rows in report.run_minutes) >= 50
    assert report.run_minutes[-1][1] > 0
    assert {product for product, *_ in report.freshness} <= set(REPLAYED)
    assert report.freshness
    newest = max(last for _, last, _, _ in report.freshness)
    assert newest < time.time() - A_YEAR

    console = Console(record=True, width=80, color_system=None, force_terminal=False)
    render_report(report, console)
    text = console.export_text()
    assert "recorded times" in text.splitlines()[0]
    assert "s ago" not in text
    assert text.count("age n/a (recorded times)") == len(report.freshness)
