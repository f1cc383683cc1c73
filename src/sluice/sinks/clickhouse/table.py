"""The ClickHouse sink's table: created from the DDL when ``create`` is on, read (its columns,
its engine) at start and again after it changed or disappeared; the write path is in
:mod:`.sink`.

Errors that will not pass by waiting (bad DDL, a missing table without ``create``, columns the sink
cannot fill) are raised as RuntimeError, so the start fails with the reason instead of retrying
forever; transient ones (:attr:`ClickHouseError.is_transient`) are raised as they are.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass
from typing import Any, Literal

from sluice.sinks.clickhouse.client import Client
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.ddl import (
    CLUSTER_DDL,
    CLUSTER_LEGACY_DDL,
    ddl_path,
    render_statements,
    shipped_ddl_file,
    shipped_sql,
)
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.schema import Converter, ServerInfo

__all__ = ["LoadedTable", "ddl_statements", "dedup_mode", "load_table"]

_DEDUP_WINDOW = re.compile(r"non_replicated_deduplication_window\s*=\s*(\d+)")

Dedup = Literal["token", "none"]


@dataclass(frozen=True)
class LoadedTable:
    converter: Converter
    """Records to the table's rows."""
    dedup: Dedup
    """How retries are kept from storing twice: ``token`` or ``none``."""
    distributed: bool = False
    """The table inserts go to is a ``Distributed`` table."""


async def load_table(
    client: Client, server: ServerInfo, config: ClickHouseSinkConfig, log: Any
) -> LoadedTable:
    """Create the table if ``config.create`` (the DDL's statements, each idempotent), read its
    columns and its ``CREATE`` statement, and build the converter."""
    try:
        if config.create and not await _cluster_tables_exist(client, config):
            for statement in await ddl_statements(config, server):
                await client.execute(statement)
        columns = await client.columns(config.insert_table)
        create_query = await client.select(
            f"SHOW CREATE TABLE {config.insert_table}", read_only=False
        )
    except ClickHouseError as exc:
        if exc.is_transient:
            raise
        raise RuntimeError(f"table {config.database}.{config.table}: {exc}") from exc
    try:
        converter = Converter(f"{config.database}.{config.table}", columns, server)
    except ValueError as exc:
        raise RuntimeError(str(exc)) from exc
    statement = str(create_query.rows[0][0]) if create_query.rows else ""
    engine = statement.split("ENGINE", 1)[-1].strip().lstrip("=").strip()
    return LoadedTable(
        converter, dedup_mode(server, statement, log), engine.startswith("Distributed")
    )


async def _cluster_tables_exist(client: Client, config: ClickHouseSinkConfig) -> bool:
    """With ``cluster``: both tables are there already on the node asked. ``ON CLUSTER`` DDL
    waits for every node, so it is run only when something is missing: a start with one node
    down then does not wait for it."""
    if config.cluster is None:
        return False
    for name in (config.table, config.local_table_name):
        result = await client.select(f"EXISTS TABLE `{config.database}`.`{name}`", read_only=False)
        if not result.rows or str(result.rows[0][0]) != "1":
            return False
    return True


async def ddl_statements(config: ClickHouseSinkConfig, server: ServerInfo) -> list[str]:
    """The statements of the sink's DDL file (default: the shipped one for this server)."""
    path = config.ddl
    try:
        if path is None and config.cluster is not None:
            path = shipped_sql(CLUSTER_DDL if server.has_datetime64 else CLUSTER_LEGACY_DDL)
        elif path is None:
            path = shipped_sql(shipped_ddl_file(config.shipped_ddl, server.has_datetime64))
        else:
            path = ddl_path(path)
        text = await asyncio.to_thread(path.read_text, encoding="utf-8")
    except OSError as exc:
        raise RuntimeError(f"cannot read the DDL file: {exc}") from exc
    cluster = config.cluster
    statements = render_statements(
        text,
        config.database,
        config.table,
        cluster=cluster,
        local_table=config.local_table_name if cluster is not None else None,
    )
    if not statements:
        raise RuntimeError(f"{path}: no SQL statement in the DDL file")
    return statements


def dedup_mode(server: ServerInfo, create_statement: str, log: Any) -> Dedup:
    """``token`` when the server drops a retried insert by its deduplication token, else
    ``none`` (logged as a warning with what to do)."""
    if not server.has_dedup_token:
        log.warning(
            "clickhouse.no_insert_deduplication",
            version=server.version_text,
            detail=(
                "server before 22.2: a batch retried after the server stored it but before it "
                "answered is stored twice (a ReplacingMergeTree table collapses it on merge)"
            ),
        )
        return "none"
    engine = create_statement.split("ENGINE", 1)[-1]
    replicated = "Replicated" in engine
    window = _DEDUP_WINDOW.search(create_statement)
    if "MergeTree" in engine and not replicated and (window is None or window.group(1) == "0"):
        log.warning(
            "clickhouse.no_insert_deduplication",
            detail=(
                "the table has no non_replicated_deduplication_window: a retried batch may be "
                "stored twice; ALTER TABLE ... MODIFY SETTING non_replicated_deduplication_window = 1000"
            ),
        )
        return "none"
    return "token"
