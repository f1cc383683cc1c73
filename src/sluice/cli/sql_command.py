"""``sluice sql CONFIG "SELECT ..."``: a read-only query against a sink's store.

While the pipeline runs, the query goes through its admin port; otherwise the sink's store is
opened directly, read-only (see :mod:`sluice.cli.sink_query`). Both ways run the same query on the
same engine, so they give the same answer.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path
from typing import Annotated

import aiohttp
import orjson
import typer
from rich.console import Console
from rich.table import Table

from sluice.cli.common import EXIT_FAILURE, EXIT_USAGE, load_or_exit, load_registry
from sluice.cli.sink_query import NotQueryable, QueryFailed, QueryNotAllowed, choose_sink, connect
from sluice.config import LoadedConfig
from sluice.errors import QueryRefused
from sluice.plugin import QueryResult
from sluice.registry import Registry
from sluice.sinks.clickhouse.embedded import parse_in_process
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.query_guard import judge

FORMATS = ("table", "csv", "json")


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)


def sql(
    config: Annotated[Path, typer.Argument(help="The pipeline's YAML file.")],
    statement: Annotated[str, typer.Argument(help="One read-only SELECT.")],
    sink: Annotated[
        str | None,
        typer.Option("--sink", help="Which sink's store (default: the first queryable one)."),
    ] = None,
    format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """Run a read-only query against a sink's store (e.g. the ClickHouse table) and print it."""
    if format not in FORMATS:
        print("error: --format must be table, csv or json", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)
    try:
        # judged here too for a usage error (exit 2) before anything is opened; whoever runs the
        # query judges it again
        judge(asyncio.run(parse_in_process(statement)))
    except QueryRefused as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from exc
    except ClickHouseError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from exc
    registry = load_registry()
    loaded = load_or_exit(config, registry, check_paths=False)
    try:
        sink_id = choose_sink(loaded, registry, sink)
        result = asyncio.run(_query(loaded, registry, sink_id, statement))
    except (NotQueryable, QueryNotAllowed) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from exc
    except QueryFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from exc
    _print(result, format)


async def _query(loaded: LoadedConfig, registry: Registry, sink_id: str, sql: str) -> QueryResult:
    async with aiohttp.ClientSession() as session:
        target = await connect(loaded, registry, sink_id, session)
        return await target.query(sql)


def _print(result: QueryResult, fmt: str) -> None:
    if fmt == "csv":
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(result.columns)
        writer.writerows(result.rows)
        return
    if fmt == "json":
        objects = [dict(zip(result.columns, row, strict=False)) for row in result.rows]
        sys.stdout.write(orjson.dumps(objects, option=orjson.OPT_INDENT_2).decode() + "\n")
        return
    table = Table(box=None, pad_edge=False, header_style="bold")
    for column in result.columns:
        table.add_column(column)
    for row in result.rows:
        table.add_row(*("NULL" if v is None else str(v) for v in row))
    Console(width=200).print(table)
    print(f"{len(result.rows)} row(s)", file=sys.stderr)
