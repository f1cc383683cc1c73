"""The offline demo (examples/offline.yaml) as its user sees it, through the admin server: honest
counters (heartbeats that no sink takes are `unrouted`, not dropped; no gap; an event lag of a few
seconds at most) and `sluice monitor`'s report of the run (a summary line first, only the minutes
of the run, a price line per product, lines that fit a narrow terminal)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from obs_support import Running, metric, run_in_process
from rich.console import Console
from tests.conftest import REPO, wait_until

from sluice.cli.monitor_command import MonitorReport, render_report, run_monitor
from sluice.config import load_config_text
from sluice.registry import Registry

SOURCE = {"component_id": "coinbase", "component_kind": "source", "component_type": "coinbase"}


def offline_text(admin: str = 'listen: "127.0.0.1:0"', trades_per_sec: int = 40) -> str:
    text = (REPO / "examples/offline.yaml").read_text()
    assert "trades_per_sec: 8}" in text, "the offline example changed: update this test"
    text = text.replace("trades_per_sec: 8}", f"trades_per_sec: {trades_per_sec}}}")
    return text + f"admin: {{{admin}}}\n"


@contextlib.asynccontextmanager
async def offline_demo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> AsyncIterator[Running]:
    monkeypatch.chdir(tmp_path)  # the example's paths are relative
    async with run_in_process(offline_text()) as running:
        yield running


async def status_of(running: Running) -> dict[str, Any]:
    code, status = await running.json("/api/status?seconds=30&minutes=5")
    assert code == 200
    return status  # type: ignore[no-any-return]


async def test_the_offline_demo_counts_heartbeats_as_unrouted_and_reports_no_drop_or_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with offline_demo(tmp_path, monkeypatch) as running:
        latest: dict[str, Any] = {}

        async def ready() -> bool:
            status = await status_of(running)
            latest.update(status)
            [source] = status["sources"]
            sinks = {s["id"]: s for s in status["sinks"]}
            return bool(source["unrouted"] >= 4 and sinks["clickhouse"]["records"] >= 100)

        await wait_until(ready, 60)
        samples = await running.metrics()
    [source] = latest["sources"]
    assert source["dropped"] == 0
    assert source["dropped_by_reason"] == {}
    assert set(source["unrouted_by_kind"]) == {"heartbeat"}
    assert source["gaps"] == 0 and source["missed"] == 0
    assert source["event_lag_secs"] is not None
    assert -1 < source["event_lag_secs"] < 5
    assert all(s["dropped"] == 0 for s in latest["sinks"])
    assert (
        metric(samples, "sluice_component_unrouted_events_total", kind="heartbeat", **SOURCE) >= 4
    )
    assert not [key for key in samples if key[0] == "sluice_component_dropped_events_total"]


async def test_sluice_monitor_shows_the_rows_per_minute_and_prices_of_the_offline_demo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    registry = Registry.from_entry_points()
    async with offline_demo(tmp_path, monkeypatch) as running:
        await wait_until(lambda: running.pipeline.sinks[0].started, 30)

        def written() -> float:
            totals = running.pipeline.sinks[0].metrics.totals()
            return totals["sent"]

        await wait_until(lambda: written() >= 100, 60)
        port = running.observability.admin.port  # type: ignore[union-attr]
        loaded = load_config_text(offline_text(f'listen: "127.0.0.1:{port}"'), registry)
        report: MonitorReport = await run_monitor(
            loaded, registry, sink_id="clickhouse", table=None, minutes=60, hours=1, via="admin"
        )
    assert report.table == "coinbase_demo.coinbase_ticker"
    assert len(report.minutes) == 60
    # only the minutes of the run: it began a few seconds ago, so one or two minutes
    assert 1 <= len(report.run_minutes) <= 2
    assert sum(rows for _, rows in report.run_minutes) >= 100
    assert report.run_stops == []
    assert report.gaps == []
    assert [p[0] for p in report.prices] == ["BTC-USD", "ETH-USD"]
    for _, last, first, low, high, spread in report.prices:
        assert low <= first <= high and low <= last <= high
        assert spread > 0

    # a narrow terminal, and a pipe (no colours, no wrapped titles)
    console = Console(record=True, width=60, color_system=None, force_terminal=False)
    render_report(report, console)
    lines = console.export_text().splitlines()
    assert lines[0].startswith("coinbase_demo.coinbase_ticker: ")
    assert " rows in " in lines[0] and "no gaps" in " ".join(lines[:2])
    assert all(len(line) <= 60 for line in lines), lines
    price_lines = [line for line in lines if line.strip().startswith(("BTC-USD", "ETH-USD"))]
    assert len(price_lines) >= 2  # prices, then freshness
    minute_lines = [line for line in lines if "█" in line]
    assert len(minute_lines) == len(report.run_minutes)
    assert "no rows: gap" not in "\n".join(lines)
