"""`sluice monitor` against a chDB store behind the Sink.query() interface, directly and through
a running pipeline's admin server (POST /api/query). The real ClickHouse sink replaces the test
double after the merge; the SQL is the same."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from obs_support import Chdb, registry_with_store, run_in_process, seed_ticker, wait_for
from rich.console import Console

from sluice.cli.monitor_command import (
    MonitorUsageError,
    render_report,
    run_monitor,
)
from sluice.config import load_config_text


def config_text(tmp_path: Path, admin: str = 'listen: "127.0.0.1:0"') -> str:
    return f"""
data_dir: {tmp_path}/data
admin: {{{admin}}}
sources:
  ticks: {{type: controlled}}
sinks:
  store: {{type: chdbstore, path: {tmp_path}/chdb, inputs: [ticks], database: mon, table: ticker}}
  copy: {{type: file, path: {tmp_path}/copy.jsonl, inputs: [ticks]}}
"""


@pytest.fixture
def seeded_store(tmp_path: Path):  # type: ignore[no-untyped-def]
    db = Chdb(tmp_path / "chdb")
    try:
        seeded = seed_ticker(db.query, "mon.ticker", "current", time.time())
    finally:
        db.close()
    return seeded


async def test_monitor_reads_the_sinks_table_directly(tmp_path: Path, seeded_store) -> None:  # type: ignore[no-untyped-def]
    registry = registry_with_store()
    loaded = load_config_text(config_text(tmp_path, "enabled: false"), registry)
    report = await run_monitor(loaded, registry, sink_id=None, table=None, minutes=60, hours=24)
    assert report.table == "mon.ticker"
    assert report.via == "sink store"
    assert len(report.minutes) == 60
    expected = seeded_store.per_minute()
    assert [rows for _, rows in report.minutes] == [expected.get(m, 0) for m, _ in report.minutes]
    # nothing before the data began 40 minutes ago, the deliberate stop, the feed stopping
    before, stop, end = report.stops
    assert before[0] == report.minutes[0][0]
    assert 9 <= stop[1] <= 11
    assert end[1] >= 5
    assert [f[0] for f in report.freshness] == ["BTC-USD", "ETH-USD"]
    assert all(age >= 300 for _, _, age, _ in report.freshness)
    assert report.gaps == seeded_store.gaps

    console = Console(record=True, width=100)
    render_report(report, console)
    text = console.export_text()
    assert "no rows: gap" in text
    assert f"{report.empty_minutes} empty minute(s)" in text
    assert "11 trade(s) missed" in text
    assert "BTC-USD" in text


async def test_monitor_goes_through_the_running_pipelines_admin_server(
    tmp_path: Path,
    seeded_store,  # type: ignore[no-untyped-def]
) -> None:
    registry = registry_with_store()
    async with run_in_process(config_text(tmp_path), registry) as running:
        await wait_for(lambda: running.pipeline.sinks[0].started)
        port = running.observability.admin.port  # type: ignore[union-attr]
        # `sluice monitor` reads the config's admin.listen: point it at the running server
        loaded = load_config_text(config_text(tmp_path, f'listen: "127.0.0.1:{port}"'), registry)
        report = await run_monitor(
            loaded, registry, sink_id="store", table=None, minutes=30, hours=1
        )
        store = running.pipeline.sinks[0].sink
        assert len(store.queries) == 3  # type: ignore[attr-defined]
    assert report.via.startswith(f"http://127.0.0.1:{port}/")
    assert len(report.minutes) == 30
    assert report.gaps == seeded_store.gaps


async def test_monitor_refuses_a_config_without_a_queryable_sink(tmp_path: Path) -> None:
    registry = registry_with_store()
    text = config_text(tmp_path).replace(
        f"type: chdbstore, path: {tmp_path}/chdb, inputs: [ticks], database: mon, table: ticker",
        "type: switchable, inputs: [ticks]",
    )
    loaded = load_config_text(text, registry)
    with pytest.raises(MonitorUsageError, match="no sink in this config can be queried"):
        await run_monitor(loaded, registry, sink_id=None, table=None, minutes=5, hours=1)
    with pytest.raises(MonitorUsageError, match="sink 'copy' \\(file\\) cannot be queried"):
        await run_monitor(loaded, registry, sink_id="copy", table=None, minutes=5, hours=1)


async def test_monitor_refuses_a_table_that_is_not_a_plain_name(tmp_path: Path) -> None:
    registry = registry_with_store()
    loaded = load_config_text(config_text(tmp_path, "enabled: false"), registry)
    with pytest.raises(MonitorUsageError, match=r"expected --table database\.table"):
        await run_monitor(
            loaded, registry, sink_id=None, table="x; DROP TABLE y", minutes=5, hours=1
        )


def test_the_cli_says_what_it_needs(tmp_path: Path) -> None:
    import subprocess

    from obs_support import sluice_bin

    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
sources:
  feed: {{type: generator}}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed]}}
"""
    )
    result = subprocess.run(
        [sluice_bin(), "monitor", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert "no sink in this config can be queried" in result.stderr
    help_text = subprocess.run(
        [sluice_bin(), "monitor", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--watch" in help_text
    assert "--minutes" in help_text
