"""What the sink asks of ClickHouse, the same for a server and for chDB."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import orjson

from sluice.plugin import QueryResult
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.query_guard import ParsedQuery, judge
from sluice.sinks.clickhouse.schema import Column, ServerInfo

__all__ = ["Client", "columns_from_describe", "parse_json_compact"]


def columns_from_describe(rows: Sequence[Sequence[object]]) -> list[Column]:
    """Columns from ``DESCRIBE TABLE`` rows: name, type, default kind, ... (all versions)."""
    return [Column(str(r[0]), str(r[1]), str(r[2]) if len(r) > 2 else "") for r in rows]


class Client(ABC):
    """A connection to one ClickHouse: a server over HTTP or the embedded engine.

    Every method raises :class:`~sluice.sinks.clickhouse.errors.ClickHouseError` for an error
    answered by ClickHouse and for network failures (classified by code, see that module).
    """

    @abstractmethod
    async def open(self) -> ServerInfo:
        """Connect and learn the version; raises a retriable error when the far side is down."""

    @abstractmethod
    async def execute(self, sql: str) -> None:
        """Run a statement (DDL) that returns nothing."""

    @abstractmethod
    async def select(self, sql: str, *, read_only: bool = True) -> QueryResult:
        """Run a query and return its rows (64-bit integers as numbers)."""

    @abstractmethod
    async def parse(self, sql: str) -> ParsedQuery:
        """What a current engine's parser makes of ``sql``: ClickHouseError when it is not one
        statement (or not SQL at all). Runs nothing."""

    def outside_statement(self, sql: str, parsed: ParsedQuery) -> str:
        """The text to run for a judged query from outside: the engine's canonical form, which
        is exactly what was judged (a server overrides this)."""
        return parsed.canonical

    async def select_from_outside(self, sql: str) -> QueryResult:
        """A query from outside (``sluice sql``, the admin port): judged by the engine's parser
        (:mod:`~sluice.sinks.clickhouse.query_guard`, QueryRefused), then run read-only."""
        parsed = await self.parse(sql)
        judge(parsed)
        return await self._select_outside(self.outside_statement(sql, parsed))

    async def _select_outside(self, statement: str) -> QueryResult:
        return await self.select(statement, read_only=True)

    @abstractmethod
    async def insert(self, table: str, body: bytes, settings: Mapping[str, str]) -> None:
        """Insert JSONEachRow ``body`` (lines ending with a newline) into ``table`` (quoted)."""

    @abstractmethod
    async def insert_stream(
        self, table: str, chunks: AsyncIterator[bytes], settings: Mapping[str, str]
    ) -> None:
        """Insert JSONEachRow ``chunks`` as one INSERT, sending each as soon as it is made, so
        the far side parses while the next chunk is being prepared."""

    @abstractmethod
    async def close(self) -> None:
        """Release connections; idempotent."""

    async def columns(self, table: str) -> list[Column]:
        result = await self.select(f"DESCRIBE TABLE {table}", read_only=False)
        return columns_from_describe(result.rows)


def parse_json_compact(payload: bytes) -> QueryResult:
    """A query's answer in the JSONCompact format."""
    if not payload.strip():
        return QueryResult([], [], [])
    try:
        document: Any = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise ClickHouseError(
            "the answer is not JSON: leave FORMAT out of the query (sluice sql has --format)"
        ) from exc
    meta = document.get("meta", [])
    return QueryResult(
        columns=[str(m["name"]) for m in meta],
        rows=[list(row) for row in document.get("data", [])],
        types=[str(m["type"]) for m in meta],
    )
