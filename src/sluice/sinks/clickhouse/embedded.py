"""ClickHouse embedded in the process (chDB), with its data in a directory.

chDB runs one engine per process, bound to one data directory, and locks that directory against
other processes (the ``status`` file, as a server does). So: every sink of a process must use the
same ``path`` (a second one is refused at start), and ``sluice sql`` asks a running pipeline through
its admin port instead of opening the directory itself.

chDB calls block; each connection has its own single worker thread, so inserts never stall the
event loop and never run two at a time on one connection. chDB is imported on first use (it is
large, and its import changes the working directory for a moment, so it is done on the loop's
thread, never while other threads may resolve relative paths).
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import threading
from collections.abc import AsyncIterator, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import orjson

from sluice.plugin import QueryResult
from sluice.sinks.clickhouse.client import Client, parse_json_compact
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.query_guard import (
    FORMAT_QUERY,
    TABLE_FUNCTIONS_QUERY,
    ParsedQuery,
    QueryRefused,
    escape_parameter,
)
from sluice.sinks.clickhouse.schema import ServerInfo, parse_version

QUERY_TIME_LIMIT_SECS = 60
"""Longest a query through `sluice sql`/`sluice monitor`/the admin port may run."""

__all__ = ["DirectoryInUse", "EmbeddedClient", "parse_in_process"]

T = TypeVar("T")

_engine_lock = threading.Lock()
_engine_path: Path | None = None
_engine_users = 0


class DirectoryInUse(RuntimeError):
    """Another process holds the chDB data directory (usually a running pipeline)."""


def _chdb_state() -> Any:
    try:
        from chdb import state
    except ImportError as exc:  # pragma: no cover - chdb is a dependency of sluice
        raise ImportError("the clickhouse sink's `path` needs chDB: pip install 'chdb>=4'") from exc
    return state


def check_not_locked(path: Path) -> None:
    """Raise DirectoryInUse when another process holds ``path`` (a data directory of chDB)."""
    status = path / "status"
    if not status.exists():
        return
    try:
        fd = os.open(status, os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise DirectoryInUse(
            f"{path} is in use by another process (a running pipeline?); "
            "with the admin port enabled, `sluice sql` asks that process instead"
        ) from None
    finally:
        os.close(fd)  # closing releases our lock before chDB takes its own


_MEMORY = Path(":memory:")
"""The engine this process opens to parse queries for a server sink when no store is open."""


def claim_engine(path: Path) -> None:
    """Count a user of this process's chDB engine at ``path``; RuntimeError if it runs elsewhere."""
    global _engine_path, _engine_users
    with _engine_lock:
        if _engine_path is not None and _engine_users > 0 and _engine_path != path:
            if _MEMORY in (_engine_path, path):
                # a query for a server sink is being parsed in memory (or waits for a store to
                # close): a moment's wait, so retriable
                raise ClickHouseError(
                    f"chDB is busy parsing a query from outside; {path} opens when it is done"
                )
            raise RuntimeError(
                f"chDB runs one engine per process: {path} cannot be opened while "
                f"{_engine_path} is open; give every clickhouse sink of this process the same `path`"
            )
        _engine_path = path
        _engine_users += 1


def _engine_open_at(path: Path) -> bool:
    with _engine_lock:
        return _engine_users > 0 and _engine_path == path


def release_engine() -> None:
    global _engine_users, _engine_path
    with _engine_lock:
        _engine_users = max(0, _engine_users - 1)
        if _engine_users == 0:
            _engine_path = None


def _parse_on(connection: Any, sql: str) -> ParsedQuery:
    """Parse ``sql`` with the engine behind ``connection`` (blocking): one statement, its
    canonical text and its syntax tree. QueryRefused with the engine's reason otherwise."""
    try:
        answer = connection.query(
            FORMAT_QUERY, "JSONCompact", params={"sql": escape_parameter(sql)}
        ).bytes()
        received, canonical = orjson.loads(answer)["data"][0]
    except Exception as exc:
        raise QueryRefused(f"ClickHouse's parser refuses it: {_reason(exc)}") from None
    if received != sql:  # the parameter's encoding must give the engine the very text to judge
        raise QueryRefused("the query text did not reach the parser intact")
    try:
        # the canonical text is one statement as the engine itself wrote it: nothing can follow it
        ast = connection.query(f"EXPLAIN AST {canonical}", "TabSeparatedRaw").bytes().decode()
    except Exception as exc:
        raise QueryRefused(f"ClickHouse refuses it: {_reason(exc)}") from None
    names = connection.query(TABLE_FUNCTIONS_QUERY, "TabSeparatedRaw").bytes().decode().split()
    return ParsedQuery(str(canonical), ast, frozenset(names))


def _reason(exc: Exception) -> str:
    error = ClickHouseError.from_text(str(exc))
    return str(error)


def _parse_once(state: Any, path: Path, sql: str) -> ParsedQuery:
    connection = state.connect(f"{path}?readonly=1")
    try:
        return _parse_on(connection, sql)
    finally:
        connection.close()


async def parse_in_process(sql: str) -> ParsedQuery:
    """Parse ``sql`` with this process's chDB engine: the data directory a sink of this process
    has open, else an engine in memory opened for this parse and closed after it (a server sink,
    or ``sluice sql`` before it opens anything)."""
    state = _chdb_state()  # imported on the loop's thread (see the module's docstring)
    with _engine_lock:
        path = _engine_path if _engine_users > 0 and _engine_path is not None else _MEMORY
    try:
        claim_engine(path)
    except RuntimeError as exc:
        raise ClickHouseError(str(exc)) from exc
    try:
        return await asyncio.to_thread(_parse_once, state, path, sql)
    finally:
        release_engine()


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


class EmbeddedClient(Client):
    """A read-write connection for inserts and DDL and a ``readonly`` one for queries."""

    def __init__(self, path: Path, *, read_only: bool = False) -> None:
        self._path = path.resolve()
        self._read_only = read_only
        """Open the directory for queries only (``sluice sql`` with no pipeline running)."""
        self._writer: Any = None
        self._reader: Any = None
        self._write_thread: ThreadPoolExecutor | None = None
        self._read_thread: ThreadPoolExecutor | None = None
        self._claimed = False

    async def _call(self, pool: ThreadPoolExecutor | None, fn: Callable[[], T]) -> T:
        if pool is None:
            raise ClickHouseError(f"chdb:{self._path} is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(pool, fn)
        except QueryRefused:
            raise
        except Exception as exc:  # chDB raises RuntimeError or ChdbError, the code in the text
            raise ClickHouseError.from_text(str(exc)) from exc

    async def open(self) -> ServerInfo:
        state = _chdb_state()
        if self._read_only and not (self._path / "metadata").is_dir():
            raise FileNotFoundError(f"{self._path}: no chDB data here")
        if not _engine_open_at(self._path):  # our own engine holds the lock: no other process
            await asyncio.to_thread(check_not_locked, self._path)
        claim_engine(self._path)
        self._claimed = True
        self._write_thread = ThreadPoolExecutor(1, thread_name_prefix="chdb-write")
        self._read_thread = ThreadPoolExecutor(1, thread_name_prefix="chdb-read")
        if not self._read_only:
            await asyncio.to_thread(self._path.mkdir, parents=True, exist_ok=True)
            self._writer = await self._call(
                self._write_thread, lambda: state.connect(str(self._path))
            )
        # session settings of the query connection: readonly=1 refuses writes, settings changes
        # and table functions (file(), url(): the admin port must not read the host's files);
        # a time limit, so a query cannot hold the reader (and shutdown) for ever; 64-bit integers
        # as numbers
        mode = "mode=ro&" if self._read_only else ""
        options = (
            f"{mode}readonly=1&max_execution_time={QUERY_TIME_LIMIT_SECS}"
            "&output_format_json_quote_64bit_integers=0"
        )
        self._reader = await self._call(
            self._read_thread, lambda: state.connect(f"{self._path}?{options}")
        )
        result = await self.select("SELECT version()")
        return ServerInfo(parse_version(str(result.rows[0][0])), embedded=True)

    async def parse(self, sql: str) -> ParsedQuery:
        reader = self._reader
        return await self._call(self._read_thread, lambda: _parse_on(reader, sql))

    async def execute(self, sql: str) -> None:
        writer = self._writer
        await self._call(self._write_thread, lambda: writer.query(sql, "CSV"))

    async def select(self, sql: str, *, read_only: bool = True) -> QueryResult:
        connection = self._reader if read_only or self._writer is None else self._writer
        pool = self._read_thread if connection is self._reader else self._write_thread

        def run() -> bytes:
            data: bytes = connection.query(sql, "JSONCompact").bytes()
            return data

        return parse_json_compact(await self._call(pool, run))

    async def insert(self, table: str, body: bytes, settings: Mapping[str, str]) -> None:
        clause = ", ".join(f"{k}={_quote(v)}" for k, v in settings.items())
        statement = f"INSERT INTO {table}" + (f" SETTINGS {clause}" if clause else "")
        writer = self._writer

        def run() -> None:
            inserter = writer.send_insert(statement, "JSONEachRow")
            try:
                inserter.append(body)
                inserter.finish()
            except BaseException:
                with contextlib.suppress(Exception):
                    inserter.cancel()
                raise

        await self._call(self._write_thread, run)

    async def insert_stream(
        self, table: str, chunks: AsyncIterator[bytes], settings: Mapping[str, str]
    ) -> None:
        clause = ", ".join(f"{k}={_quote(v)}" for k, v in settings.items())
        statement = f"INSERT INTO {table}" + (f" SETTINGS {clause}" if clause else "")
        writer = self._writer
        pool = self._write_thread
        inserter: Any = await self._call(pool, lambda: writer.send_insert(statement, "JSONEachRow"))
        loop = asyncio.get_running_loop()
        pending: asyncio.Future[None] | None = None
        try:
            async for chunk in chunks:
                # the engine parses the previous chunk (without the GIL) while this one was made
                if pending is not None:
                    await self._wait(pending)
                pending = loop.run_in_executor(pool, inserter.append, chunk)
            if pending is not None:
                await self._wait(pending)
                pending = None
            await self._call(pool, inserter.finish)
        except BaseException:
            if pending is not None:
                with contextlib.suppress(BaseException):
                    await pending
            with contextlib.suppress(Exception):
                await self._call(pool, inserter.cancel)
            raise

    async def _wait(self, future: asyncio.Future[None]) -> None:
        try:
            await future
        except Exception as exc:
            raise ClickHouseError.from_text(str(exc)) from exc

    async def close(self) -> None:
        for name in ("_writer", "_reader"):
            connection = getattr(self, name)
            setattr(self, name, None)
            if connection is not None:
                pool = self._write_thread if name == "_writer" else self._read_thread
                with contextlib.suppress(Exception):
                    await self._call(pool, connection.close)
        for pool in (self._write_thread, self._read_thread):
            if pool is not None:
                pool.shutdown(wait=False)
        self._write_thread = self._read_thread = None
        if self._claimed:
            self._claimed = False
            release_engine()
