"""``sluice monitor CONFIG``: ingestion per minute (empty minutes as zero rows), freshness and
trade-id gaps, read from the store of the config's queryable sink (the ClickHouse sink).

The queries are those of ``sql/ingestion_monitoring.sql`` (:mod:`sluice.observe.monitoring_sql`),
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
from typing import Annotated, Any, cast

import aiohttp
import orjson
import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from sluice.cli.common import EXIT_FAILURE, EXIT_OK, EXIT_USAGE, load_or_exit, load_registry
from sluice.cli.sink_query import NotQueryable, QueryFailed, Via, choose_sink, connect
from sluice.config import LoadedConfig
from sluice.observe.monitoring_sql import DEFAULT_TABLE, TABLE_NAME, render
from sluice.plugin import QueryResult
from sluice.registry import Registry

__all__ = ["MonitorReport", "collect", "register", "render_report", "run_monitor"]

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
    """``(product_id, after_trade_id, before_trade_id, missed)``."""

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


async def collect(query: Query, table: str, via: str, minutes: int, hours: int) -> MonitorReport:
    """Run the monitoring queries through ``query``."""
    report = MonitorReport(table, via, time.time())
    # render() accepts only a plain database.table, so the SQL below is built from our own text
    per_minute = render("rows_per_minute", table, minutes=minutes)
    result = await query(f"SELECT toUInt32(minute) AS minute, rows FROM ({per_minute})")  # noqa: S608
    report.minutes = [(_int(row[0]), _int(row[1])) for row in result.rows]
    freshness = render("freshness", table, hours=hours)
    result = await query(
        f"SELECT product_id, toUInt32(last_time), age_secs, rows FROM ({freshness})"  # noqa: S608
    )
    report.freshness = [(str(r[0]), *_ints(r, 1, 2, 3)[1:]) for r in result.rows]
    result = await query(render("trade_id_gaps", table, hours=hours))
    report.gaps = [(str(r[0]), *_ints(r, 1, 2, 3)[1:]) for r in result.rows]
    return report


def _clock(ts: int, seconds: bool = False) -> str:
    fmt = "%Y-%m-%d %H:%M:%S" if seconds else "%H:%M"
    return datetime.fromtimestamp(ts, UTC).strftime(fmt)


def render_report(report: MonitorReport, console: Console, stale_after_secs: int = 60) -> None:
    """Print ``report`` for people (times in UTC)."""
    console.print(
        f"[bold]{report.table}[/] via {report.via} at "
        f"{_clock(int(report.generated_at), seconds=True)} UTC"
    )
    peak = max((rows for _, rows in report.minutes), default=0) or 1
    table = Table(title="Rows per minute (UTC; the last minute is still filling)", box=None)
    table.add_column("minute")
    table.add_column("rows", justify="right")
    table.add_column("")
    for index, (minute, rows) in enumerate(report.minutes):
        current = index == len(report.minutes) - 1
        if rows == 0 and not current:
            bar = Text("no rows: gap", style="bold red")
        else:
            bar = Text("█" * max(1 if rows else 0, math.ceil(rows / peak * 40)), style="blue")
        table.add_row(_clock(minute), Text(str(rows), style="red" if not rows else ""), bar)
    console.print(table)
    total = sum(rows for _, rows in report.minutes)
    stops = ", ".join(f"{_clock(s)} for {n} min" for s, n in report.stops) or "none"
    console.print(
        f"{total:,} rows in {len(report.minutes)} minutes; {report.empty_minutes} empty "
        f"minute(s); stops: {stops}"
    )

    fresh = Table(title="Freshness", box=None)
    for column in ("product", "last row (UTC)", "age", "rows"):
        fresh.add_column(column, justify="right" if column in ("age", "rows") else "left")
    for product, last, age, rows in report.freshness:
        style = "bold red" if age > stale_after_secs else "green"
        fresh.add_row(
            product, _clock(last, seconds=True), Text(f"{age}s", style=style), f"{rows:,}"
        )
    if not report.freshness:
        fresh.add_row("(no rows)", "", "", "")
    console.print(fresh)

    gaps = Table(title="Trade-id gaps", box=None)
    for column in ("product", "after trade", "before trade", "missed"):
        gaps.add_column(column, justify="left" if column == "product" else "right")
    for product, after, before, missed in report.gaps:
        gaps.add_row(product, str(after), str(before), Text(str(missed), style="yellow"))
    console.print(gaps if report.gaps else "Trade-id gaps: none")
    if report.gaps:
        console.print(f"{sum(g[3] for g in report.gaps):,} trade(s) missed")


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
        return await collect(store.query, target, store.via, minutes, hours)


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
