"""``sluice sql CONFIG "SELECT ..."``: a read-only query against a sink's store.

While the pipeline runs, the query goes through its admin port (``POST /api/query``), because the
running process holds the store (chDB allows one process per data directory). When nothing answers
there, the sink's store is opened directly, read-only. Both ways run the same query on the same
engine, so they give the same answer.
"""

from __future__ import annotations

import asyncio
import csv
import sys
from pathlib import Path
from typing import Annotated, Any

import aiohttp
import orjson
import typer
from rich.console import Console
from rich.table import Table

from sluice.cli.common import EXIT_FAILURE, EXIT_USAGE, load_or_exit, load_registry
from sluice.config import LoadedConfig
from sluice.plugin import QueryResult, Sink
from sluice.registry import Registry
from sluice.sinks.clickhouse.client import check_read_only

FORMATS = ("table", "csv", "json")


class QueryFailed(Exception):
    """The query could not be answered; the message says why."""


def register(app: typer.Typer) -> None:
    app.command("sql")(sql)


def sql(
    config: Annotated[Path, typer.Argument(help="The pipeline's YAML file.")],
    statement: Annotated[str, typer.Argument(help="A read-only statement: SELECT, SHOW, ...")],
    sink: Annotated[
        str | None, typer.Option("--sink", help="Which sink's store (default: the first one).")
    ] = None,
    format: Annotated[str, typer.Option("--format", help="table, csv or json")] = "table",
) -> None:
    """Run a read-only query against a sink's store (e.g. the ClickHouse table) and print it."""
    if format not in FORMATS:
        print("error: --format must be table, csv or json", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)
    try:
        check_read_only(statement)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE) from exc
    registry = load_registry()
    loaded = load_or_exit(config, registry)
    sink_id = _choose_sink(loaded, registry, sink)
    try:
        result = asyncio.run(_query(loaded, registry, sink_id, statement))
    except QueryFailed as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(EXIT_FAILURE) from exc
    _print(result, format)


def _queryable(plugin: type[Sink]) -> bool:  # type: ignore[type-arg]
    return plugin.query is not Sink.query


def _choose_sink(loaded: LoadedConfig, registry: Registry, wanted: str | None) -> str:
    queryable = [
        sink_id
        for sink_id, sink_config in loaded.sinks.items()
        if _queryable(registry.sinks[sink_config.type])
    ]
    if wanted is not None:
        if wanted not in loaded.sinks:
            print(f"error: no sink named '{wanted}' in {loaded.source}", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE)
        if wanted not in queryable:
            kind = loaded.sinks[wanted].type
            print(f"error: sink '{wanted}' ({kind}) cannot be queried", file=sys.stderr)
            raise typer.Exit(EXIT_USAGE)
        return wanted
    if not queryable:
        print(f"error: no sink in {loaded.source} can be queried", file=sys.stderr)
        raise typer.Exit(EXIT_USAGE)
    return queryable[0]


async def _query(loaded: LoadedConfig, registry: Registry, sink_id: str, sql: str) -> QueryResult:
    admin = loaded.model.admin
    if admin.enabled:
        answer = await _ask_running(admin.listen, sink_id, sql)
        if answer is not None:
            return answer
    sink_config = loaded.sinks[sink_id]
    sink = registry.sinks[sink_config.type](sink_id, sink_config)
    query_stopped = getattr(sink, "query_stopped", None)
    if query_stopped is None:
        raise QueryFailed(f"sink '{sink_id}' can be queried only while its pipeline runs")
    try:
        result: QueryResult = await query_stopped(sql)
    except Exception as exc:
        raise QueryFailed(str(exc)) from exc
    return result


async def _ask_running(listen: str, sink_id: str, sql: str) -> QueryResult | None:
    """The answer of a running pipeline's admin server, or None when no pipeline answers."""
    from sluice.admin.server import parse_listen

    host, port = parse_listen(listen)
    if host in ("0.0.0.0", "::"):  # noqa: S104 - a wildcard listen is reached on loopback
        host = "127.0.0.1"
    url = f"http://{'[' + host + ']' if ':' in host else host}:{port}/api/query"
    timeout = aiohttp.ClientTimeout(total=300, connect=2)
    try:
        async with (
            aiohttp.ClientSession(timeout=timeout) as session,
            session.post(url, json={"sql": sql, "sink": sink_id}) as response,
        ):
            body = await response.read()
            status = response.status
    except (aiohttp.ClientConnectionError, TimeoutError):
        return None
    try:
        document: Any = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None  # something else listens there: not a sluice admin server
    if status != 200:
        raise QueryFailed(str(document.get("error", f"HTTP {status}")))
    return QueryResult(
        columns=list(document["columns"]),
        rows=[list(row) for row in document["rows"]],
        types=list(document.get("types", [])),
    )


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
