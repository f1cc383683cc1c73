"""``sluice monitor CONFIG``: ingestion per minute (empty minutes as zero rows), freshness and
trade-id gaps, read from the store of the config's queryable sink (the ClickHouse sink).

The queries are those of ``sql/ingestion_monitoring.sql`` (:mod:`sluice.sinks.clickhouse.monitoring_sql`),
for the sink's ``database.table``. They go through the running pipeline's admin server
(``POST /api/query``) when it answers, since an embedded store (chDB) can be open in one process
only; otherwise the sink's store is opened here read-only, as ``sluice sql`` does
(:mod:`sluice.cli.sink_query`). The sink is never started: monitoring creates no database or table
and writes nothing; a table that does not exist yet is reported as such (exit 1).
"""

from __future__ import annotations

import asyncio
import math
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, Literal, cast

import aiohttp
import orjson
import typer
from rich.console import Console
from rich.text import Text

from sluice.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, load_or_exit, load_registry
from sluice.cli.sink_query import NotQueryable, QueryFailed, Via, choose_sink, connect
from sluice.config import LoadedConfig
from sluice.plugin import EventTimes, QueryResult
from sluice.registry import Registry
from sluice.sinks.clickhouse.monitoring_sql import DEFAULT_TABLE, TABLE_NAME, render

__all__ = [
    "MonitorReport",
    "collect",
    "register",
    "render_report",
    "run_monitor",
    "table_event_times",
]

Query = Callable[[str], Awaitable[QueryResult]]


@dataclass
class MonitorReport:
    """What ``sluice monitor`` shows."""

    table: str
    via: str
    generated_at: float
    minutes: list[tuple[int, int]] = field(default_factory=list)
    """``(unix minute start, rows)``, oldest first, every minute of the window."""
    freshness: list[tuple[str, int, int, int]] = field(default_factory=list)
    """``(product_id, last row unix time, age in seconds, rows in the last hours)``."""
    gaps: list[tuple[str, int, int, int]] = field(default_factory=list)
    """``(product_id, after_trade_id, before_trade_id, missed)``: gaps still open."""
    healed: list[tuple[str, int, int, int]] = field(default_factory=list)
    """``(product_id, first_trade_id, last_trade_id, trades)``: gaps healed over REST (a trades
    table's runs of backfilled trades; none for other tables)."""
    prices: list[tuple[str, float, float, float, float, float]] = field(default_factory=list)
    """``(product_id, last, first, low, high, spread)`` over the last hour (none when the table
    has no ``price`` columns)."""
    event_times: EventTimes = "wall-clock"
    """``recorded`` when a source feeding the table declares recorded event times (a replay that
    keeps them): the windows then end at the newest row, and ages are not shown."""

    @property
    def run_minutes(self) -> list[tuple[int, int]]:
        """The minutes of the run: from the first minute with rows to now (none without rows)."""
        for index, (_, rows) in enumerate(self.minutes):
            if rows:
                return self.minutes[index:]
        return []

    @property
    def run_stops(self) -> list[tuple[int, int]]:
        """:attr:`stops` inside the run (not the time before its first row)."""
        run = self.run_minutes
        return [s for s in self.stops if run and s[0] >= run[0][0]]

    @property
    def empty_minutes(self) -> int:
        # the current minute is still filling: do not call it empty yet
        return sum(1 for _, rows in self.minutes[:-1] if rows == 0)

    @property
    def stops(self) -> list[tuple[int, int]]:
        """Runs of empty minutes as ``(first minute, minutes)``, the current one excluded."""
        runs: list[tuple[int, int]] = []
        start: int | None = None
        for minute, rows in self.minutes[:-1]:
            if rows == 0 and start is None:
                start = minute
            elif rows and start is not None:
                runs.append((start, (minute - start) // 60))
                start = None
        if start is not None:
            runs.append((start, (self.minutes[-1][0] - start) // 60))
        return runs


def _int(value: Any) -> int:
    """A whole number from a query result (drivers give ints, or numbers as text)."""
    if isinstance(value, int):
        return value
    try:
        return int(value)  # exact, also for trade ids beyond 2**53
    except (TypeError, ValueError):
        return int(float(value))


def _ints(row: Sequence[Any], *indexes: int) -> list[Any]:
    out = list(row)
    for i in indexes:
        out[i] = _int(out[i])
    return out


async def collect(
    query: Query,
    table: str,
    via: str,
    minutes: int,
    hours: int,
    event_times: EventTimes = "wall-clock",
) -> MonitorReport:
    """Run the monitoring queries through ``query`` (windows ending at the newest row for
    ``recorded`` event times)."""
    report = MonitorReport(table, via, time.time(), event_times=event_times)
    until: Literal["now", "newest_row"] = "newest_row" if event_times == "recorded" else "now"
    # render() accepts only a plain database.table, so the SQL below is built from our own text
    per_minute = render("rows_per_minute", table, minutes=minutes, until=until)
    result = await query(f"SELECT toUInt32(minute) AS minute, rows FROM ({per_minute})")  # noqa: S608
    report.minutes = [(_int(row[0]), _int(row[1])) for row in result.rows]
    freshness = render("freshness", table, hours=hours, until=until)
    result = await query(
        f"SELECT product_id, toUInt32(last_time), age_secs, rows FROM ({freshness})"  # noqa: S608
    )
    report.freshness = [(str(r[0]), *_ints(r, 1, 2, 3)[1:]) for r in result.rows]
    result = await query(render("trade_id_gaps", table, hours=hours, until=until))
    report.gaps = [(str(r[0]), *_ints(r, 1, 2, 3)[1:]) for r in result.rows]
    try:
        result = await query(render("healed_gaps", table, hours=hours, until=until))
        report.healed = [(str(r[0]), *_ints(r, 1, 2, 3)[1:]) for r in result.rows]
    except QueryFailed:
        pass  # not a trades table (no `backfilled` column)
    try:
        result = await query(render("prices", table, until=until))
    except QueryFailed:
        return report  # a table of other records: no prices to show
    report.prices = [
        (str(r[0]), float(r[1]), float(r[2]), float(r[3]), float(r[4]), float(r[5]))
        for r in result.rows
    ]
    return report


def _clock(ts: int, seconds: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%H:%M"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def _price(value: float) -> str:
    return f"{value:,.2f}" if abs(value) >= 1 else f"{value:.6g}"


def render_report(report: MonitorReport, console: Console, stale_after_secs: int = 60) -> None:
    """Print ``report`` for people (times in UTC): a summary line first, then prices, the rows
    per minute of the run, freshness and gaps, as plain lines that fit a narrow terminal or a
    pipe."""
    run = report.run_minutes
    total = sum(rows for _, rows in run)
    empty = sum(1 for _, rows in run[:-1] if rows == 0)
    missed = sum(g[3] for g in report.gaps)
    recorded = report.event_times == "recorded"
    newest = min((age for _, _, age, _ in report.freshness), default=None)
    gaps = f"{len(report.gaps)} open gap(s), {missed:,} missed" if report.gaps else "no gaps"
    if report.healed:
        gaps += f", {len(report.healed)} healed"
    fresh = f"newest row {newest}s ago" if newest is not None else "no rows yet"
    if recorded:
        # the rows keep times recorded long ago: an age from now would be nonsense
        newest_at = max((at for _, at, _, _ in report.freshness), default=None)
        fresh = "recorded times" + (
            f", newest row {_clock(newest_at, seconds=True)}" if newest_at else ""
        )
    # the summary first; rich wraps long lines at word boundaries to the terminal's width
    console.print(f"[bold]{report.table}[/]: {total:,} rows in {len(run)} min, {gaps}, {fresh}")
    since = f" since {_clock(run[0][0])} UTC" if run else ""
    console.print(
        f"[dim]{empty} empty minute(s){since}; via {report.via} at "
        f"{_clock(int(report.generated_at), seconds=True)} UTC[/]"
    )
    if report.prices:
        console.print("[bold]Prices[/] (last hour)")
        for product, last, first, low, high, spread in report.prices:
            change = (last - first) / first * 100 if first else 0.0
            style = "green" if change > 0 else "red" if change < 0 else ""
            line = Text(f"  {product:<9} {_price(last):>12} ")
            line.append(f"{change:+.2f}%", style=style)
            line.append(f"  lo {_price(low)} hi {_price(high)} spread {_price(spread)}")
            console.print(line)

    if recorded:
        console.print("[bold]Rows per minute[/] (UTC, recorded times: up to the newest row)")
    else:
        console.print("[bold]Rows per minute[/] (UTC; the last minute is still filling)")
    if not run:
        console.print("  (no rows in the window)")
    peak = max((rows for _, rows in run), default=0) or 1
    width = max(8, min(40, console.width - 16))
    for index, (minute, rows) in enumerate(run):
        current = index == len(run) - 1
        line = Text(f"  {_clock(minute)} {rows:>7,} ", style="red" if not rows else "")
        if rows == 0 and not current:
            line.append("no rows: gap", style="bold red")
        else:
            line.append("█" * max(1 if rows else 0, math.ceil(rows / peak * width)), style="blue")
        console.print(line)
    stops = ", ".join(f"{_clock(s)} for {n} min" for s, n in report.run_stops)
    if stops:
        console.print(f"  stops: {stops}")

    console.print("[bold]Freshness[/]")
    if not report.freshness:
        console.print("  (no rows)")
    for product, last, age, rows in report.freshness:
        style = "bold red" if age > stale_after_secs else "green"
        line = Text(f"  {product:<9} {_clock(last, seconds=True)} ")
        if recorded:
            line.append("age n/a (recorded times)", style="dim")
        else:
            line.append(f"{age}s ago", style=style)
        line.append(f"  {rows:,} rows")
        console.print(line)

    if report.healed:
        console.print("[bold]Healed gaps[/] (product, first trade, last trade, trades backfilled)")
        for product, first, last, count in report.healed:
            console.print(Text(f"  {product:<9} {first} {last} ") + Text(str(count), "green"))
    if not report.gaps:
        console.print("Trade-id gaps: none open")
        return
    console.print("[bold]Open trade-id gaps[/] (product, after trade, before trade, missed)")
    for product, after, before, count in report.gaps:
        line = Text(f"  {product:<9} {after} {before} ")
        line.append(str(count), style="yellow")
        console.print(line)
    console.print(f"{missed:,} trade(s) missed")


# -- where the queries go ------------------------------------------------------------------------


def sink_table(config: Any) -> str:
    """``database.table`` of a sink's config (fields ``database`` and ``table``), else the
    default Coinbase ticker table."""
    database, table = getattr(config, "database", None), getattr(config, "table", None)
    if isinstance(database, str) and isinstance(table, str):
        return f"{database}.{table}"
    return DEFAULT_TABLE


async def run_monitor(
    loaded: LoadedConfig,
    registry: Registry,
    *,
    sink_id: str | None,
    table: str | None,
    minutes: int,
    hours: int,
    via: Via = "auto",
) -> MonitorReport:
    """Collect one report, through the admin server or from the store opened read-only here.
    Raises NotQueryable (a usage error) or QueryFailed."""
    chosen = choose_sink(loaded, registry, sink_id)
    target = table or sink_table(loaded.sinks[chosen])
    if not TABLE_NAME.match(target):
        raise NotQueryable(f"expected --table database.table, got {target!r}")
    async with aiohttp.ClientSession() as session:
        store = await connect(loaded, registry, chosen, session, via)
        times = table_event_times(loaded, registry, chosen)
        return await collect(store.query, target, store.via, minutes, hours, times)


def table_event_times(loaded: LoadedConfig, registry: Registry, sink_id: str) -> EventTimes:
    """``recorded`` when a source feeding sink ``sink_id`` declares recorded event times (asked
    of the source built from its config, never started), else ``wall-clock``."""
    sources = loaded.sources
    for reference in getattr(loaded.sinks[sink_id], "inputs", None) or ():
        source_id = reference.partition(".")[0]
        config = sources.get(source_id)
        if config is None:
            continue
        plugin = registry.sources[config.type](source_id, config)
        if plugin.event_times() == "recorded":
            return "recorded"
    return "wall-clock"


def monitor(
    config: Annotated[Path, typer.Argument(help="The pipeline's YAML file.")],
    sink: Annotated[
        str | None,
        typer.Option("--sink", help="The sink to read (default: the first queryable one)."),
    ] = None,
    table: Annotated[
        str | None, typer.Option("--table", help="database.table (default: the sink's).")
    ] = None,
    minutes: Annotated[
        int, typer.Option("--minutes", min=1, max=10080, help="Minutes of rows per minute to show.")
    ] = 60,
    hours: Annotated[
        int,
        typer.Option(
            "--hours", min=1, max=8760, help="Hours looked back for freshness and trade-id gaps."
        ),
    ] = 24,
    watch: Annotated[
        float | None,
        typer.Option("--watch", min=1, help="Refresh every this many seconds until Ctrl-C."),
    ] = None,
    output: Annotated[str, typer.Option("--format", help="text or json")] = "text",
    via: Annotated[
        str, typer.Option("--via", help="auto, admin (the running pipeline) or direct")
    ] = "auto",
) -> None:
    """Show ingestion per minute (empty minutes as zero rows), freshness and trade-id gaps from
    the table of the config's ClickHouse sink."""
    if output not in ("text", "json") or via not in ("auto", "admin", "direct"):
        print("error: --format is text or json; --via is auto, admin or direct", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)
    registry = load_registry()
    loaded = load_or_exit(config, registry, check_paths=False)
    console = Console()
    while True:
        try:
            report = asyncio.run(
                run_monitor(
                    loaded,
                    registry,
                    sink_id=sink,
                    table=table,
                    minutes=minutes,
                    hours=hours,
                    via=cast("Via", via),
                )
            )
        except NotQueryable as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE) from exc
        except QueryFailed as exc:
            print(f"error: monitoring queries failed: {exc}", file=sys.stderr)
            raise typer.Exit(EXIT_FAILURE) from exc
        if output == "json":
            sys.stdout.write(orjson.dumps(asdict(report)).decode() + "\n")
        else:
            if watch:
                console.clear()
            render_report(report, console)
        if not watch:
            raise typer.Exit(EXIT_OK)
        try:
            time.sleep(watch)
        except KeyboardInterrupt:
            raise typer.Exit(EXIT_OK) from None


def register(app: typer.Typer) -> None:
    app.command()(monitor)
