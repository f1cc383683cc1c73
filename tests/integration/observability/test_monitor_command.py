"""`sluice monitor` against the real clickhouse sink's table (made from the shipped DDL), on chDB
and on the 18.16 server: from the store opened read-only, through a running pipeline's admin server
(POST /api/query), and as a user runs it. Monitoring never creates a table."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson
import pytest
from obs_support import SeededTable, registry_with_doubles, run_in_process
from rich.console import Console
from tests.conftest import SLUICE, wait_until

from sluice.cli.monitor_command import render_report, run_monitor
from sluice.cli.sink_query import NotQueryable, QueryFailed
from sluice.config import load_config_text
from sluice.sinks.clickhouse.testing import ClickHouseStore, LocalChdb, LocalServer


def config_text(
    tmp_path: Path,
    target: dict[str, str],
    table: str,
    admin: str = 'listen: "127.0.0.1:0"',
    source: str = "{type: controlled}",
) -> str:
    """A pipeline whose clickhouse sink writes to ``table`` at ``target`` (``url`` or ``path``)."""
    database, name = table.split(".")
    [(key, value)] = target.items()
    return f"""
data_dir: {tmp_path}/data
admin: {{{admin}}}
sources:
  ticks: {source}
sinks:
  store: {{type: clickhouse, {key}: "{value}", inputs: [ticks], database: {database}, table: {name}}}
  copy: {{type: file, path: {tmp_path}/copy.jsonl, inputs: [ticks]}}
"""


def stopped(store: ClickHouseStore) -> None:
    """As after the pipeline stopped: no process of ours holds a chDB directory."""
    if isinstance(store, LocalChdb):
        store.close()


async def test_monitor_reads_the_sinks_table_directly(tmp_path: Path, seeded: SeededTable) -> None:
    registry = registry_with_doubles()
    store = seeded.store
    loaded = load_config_text(
        config_text(tmp_path, store.target, seeded.table, "enabled: false"), registry
    )
    stopped(store)
    report = await run_monitor(loaded, registry, sink_id=None, table=None, minutes=60, hours=24)
    assert report.table == seeded.table
    assert report.via == "sink store (its store opened read-only)"
    assert len(report.minutes) == 60
    expected = seeded.per_minute()
    assert [rows for _, rows in report.minutes] == [expected.get(m, 0) for m, _ in report.minutes]
    # nothing before the data began 40 minutes ago, the deliberate stop, the feed stopping
    before, stop, end = report.stops
    assert before[0] == report.minutes[0][0]
    assert 9 <= stop[1] <= 11
    assert end[1] >= 5
    assert [f[0] for f in report.freshness] == ["BTC-USD", "ETH-USD"]
    assert all(age >= 300 for _, _, age, _ in report.freshness)
    assert report.gaps == seeded.gaps

    console = Console(record=True, width=100)
    render_report(report, console)
    text = console.export_text()
    assert "no rows: gap" in text
    # only the minutes of the run are listed: from the first with rows, stops inside it shown
    run = report.run_minutes
    assert run[0][1] > 0 and run[-1][0] == report.minutes[-1][0]
    assert len(run) < len(report.minutes)
    assert report.run_stops == report.stops[1:]
    assert f"{sum(1 for _, rows in run[:-1] if rows == 0)} empty minute(s)" in text
    assert text.splitlines()[0].startswith(f"{seeded.table}: ")
    assert "11 trade(s) missed" in text
    assert "BTC-USD" in text


async def test_monitor_goes_through_the_running_pipelines_admin_server(
    tmp_path: Path, seeded: SeededTable
) -> None:
    registry = registry_with_doubles()
    text = config_text(tmp_path, seeded.store.target, seeded.table)
    async with run_in_process(text, registry) as running:
        await wait_until(lambda: running.pipeline.sinks[0].started)
        port = running.observability.admin.port  # type: ignore[union-attr]
        # `sluice monitor` reads the config's admin.listen: point it at the running server
        admin = f'listen: "127.0.0.1:{port}"'
        loaded = load_config_text(
            config_text(tmp_path, seeded.store.target, seeded.table, admin), registry
        )
        report = await run_monitor(
            loaded, registry, sink_id="store", table=None, minutes=30, hours=1, via="admin"
        )
    assert report.via == f"http://127.0.0.1:{port}/ (sink store)"
    assert len(report.minutes) == 30
    assert report.gaps == seeded.gaps


def test_sluice_monitor_prints_the_report_as_json(tmp_path: Path, seeded: SeededTable) -> None:
    config = tmp_path / "pipeline.yaml"
    # the pipeline a user monitors: the coinbase source into the table
    source = "{type: coinbase, products: [BTC-USD, ETH-USD]}"
    config.write_text(
        config_text(tmp_path, seeded.store.target, seeded.table, "enabled: false", source)
    )
    stopped(seeded.store)
    result = subprocess.run(
        [*SLUICE, "monitor", str(config), "--format", "json", "--minutes", "45"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = orjson.loads(result.stdout)
    assert report["table"] == seeded.table
    assert len(report["minutes"]) == 45
    assert [tuple(gap) for gap in report["gaps"]] == seeded.gaps
    expected = seeded.per_minute()
    assert [rows for _, rows in report["minutes"]] == [
        expected.get(m, 0) for m, _ in report["minutes"]
    ]


@pytest.mark.parametrize(
    "where", ["chdb", pytest.param("server", marks=pytest.mark.clickhouse_server)]
)
async def test_monitor_creates_nothing_where_the_table_does_not_exist(
    tmp_path: Path, where: str, request: pytest.FixtureRequest
) -> None:
    """Unlike `sluice run`, monitoring never starts the sink: no database, table or chDB
    directory is made; the missing table is said."""
    registry = registry_with_doubles()
    server: LocalServer | None = None
    if where == "server":
        server = request.getfixturevalue("clickhouse_server")
        target, words = server.target, "doesn't exist"
    else:
        target, words = {"path": str(tmp_path / "never")}, "no chDB data"
    text = config_text(tmp_path, target, "absent_db.coinbase_ticker", "enabled: false")
    loaded = load_config_text(text, registry)
    with pytest.raises(QueryFailed, match=words):
        await run_monitor(loaded, registry, sink_id=None, table=None, minutes=5, hours=1)
    if server is not None:
        assert server.rows("SELECT count() FROM system.databases WHERE name = 'absent_db'") == [[0]]
    else:
        assert not (tmp_path / "never").exists()


async def test_monitor_refuses_a_config_without_a_queryable_sink(tmp_path: Path) -> None:
    registry = registry_with_doubles()
    text = f"""
admin: {{enabled: false}}
sources: {{ticks: {{type: controlled}}}}
sinks:
  out: {{type: switchable, inputs: [ticks]}}
  copy: {{type: file, path: {tmp_path}/copy.jsonl, inputs: [ticks]}}
"""
    loaded = load_config_text(text, registry)
    with pytest.raises(NotQueryable, match=r"no sink in .* can be queried"):
        await run_monitor(loaded, registry, sink_id=None, table=None, minutes=5, hours=1)
    with pytest.raises(NotQueryable, match="sink 'copy' \\(file\\) cannot be queried"):
        await run_monitor(loaded, registry, sink_id="copy", table=None, minutes=5, hours=1)


async def test_monitor_refuses_a_table_that_is_not_a_plain_name(
    tmp_path: Path, chdb: LocalChdb
) -> None:
    registry = registry_with_doubles()
    loaded = load_config_text(
        config_text(tmp_path, chdb.target, "mon.ticker", "enabled: false"), registry
    )
    with pytest.raises(NotQueryable, match=r"expected --table database\.table"):
        await run_monitor(
            loaded, registry, sink_id=None, table="x; DROP TABLE y", minutes=5, hours=1
        )


def test_the_cli_says_what_it_needs(tmp_path: Path) -> None:
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
        [*SLUICE, "monitor", str(config)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 2
    assert f"no sink in {config} can be queried" in result.stderr
    help_text = subprocess.run(
        [*SLUICE, "monitor", "--help"], capture_output=True, text=True, timeout=60
    ).stdout
    assert "--watch" in help_text
    assert "--minutes" in help_text
