"""How ``sluice sql`` and ``sluice monitor`` reach a sink's store, read-only.

While the pipeline runs, queries go through its admin server (``POST /api/query``), because the
running process holds the store (chDB allows one process per data directory). When nothing answers
there, the sink's store is opened here, read-only (``query_stopped``): the sink is not started, so
nothing is created or written (a missing table is an error, not a new empty table). Both ways run
the same query on the same engine, so they give the same answer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import aiohttp
import orjson

from sluice.config import LoadedConfig
from sluice.errors import QueryRefused
from sluice.observability.auth import TOKEN_FILE, bearer, read_token_file
from sluice.observability.server import parse_listen
from sluice.plugin import QueryResult
from sluice.registry import Registry

__all__ = [
    "NotQueryable",
    "QueryFailed",
    "QueryNotAllowed",
    "SinkQuery",
    "choose_sink",
    "connect",
]

Via = Literal["auto", "admin", "direct"]


class QueryFailed(Exception):
    """The store could not be reached or the query failed; the message says why (exit 1)."""


class QueryNotAllowed(QueryFailed):
    """The store's engine refused the query as not read-only (exit 2)."""


class NotQueryable(Exception):
    """The config or the options name no sink whose store can be queried (exit 2)."""


def choose_sink(loaded: LoadedConfig, registry: Registry, wanted: str | None) -> str:
    """``wanted``, or the first sink (in config order) whose store can be queried."""
    queryable = [
        sink_id for sink_id, config in loaded.sinks.items() if registry.sinks[config.type].queryable
    ]
    if wanted is not None:
        if wanted not in loaded.sinks:
            raise NotQueryable(f"no sink named '{wanted}' in {loaded.source}")
        if wanted not in queryable:
            raise NotQueryable(f"sink '{wanted}' ({loaded.sinks[wanted].type}) cannot be queried")
        return wanted
    if not queryable:
        raise NotQueryable(
            f"no sink in {loaded.source} can be queried (a ClickHouse sink's table can)"
        )
    return queryable[0]


@dataclass
class SinkQuery:
    """Read-only queries for one sink's store, and how they get there (for people)."""

    query: Callable[[str], Awaitable[QueryResult]]
    via: str


def admin_url(listen: str) -> str | None:
    """The base URL of the admin server at ``listen``; None for a port the OS picks."""
    host, port = parse_listen(listen)
    if port == 0:
        return None
    if host in ("0.0.0.0", "::", ""):  # noqa: S104 - a wildcard listen is reached on loopback
        host = "127.0.0.1"
    return f"http://[{host}]:{port}/" if ":" in host else f"http://{host}:{port}/"


async def connect(
    loaded: LoadedConfig,
    registry: Registry,
    sink_id: str,
    session: aiohttp.ClientSession,
    via: Via = "auto",
) -> SinkQuery:
    """Queries through the running pipeline when it answers (``auto``, ``admin``), else opened
    here read-only (``auto``, ``direct``). Raises QueryFailed."""
    admin = loaded.model.admin
    url = admin_url(admin.listen) if admin.enabled and via != "direct" else None
    if url is not None and await _answers(session, url):
        token = (
            admin.token.get_secret_value()
            if admin.token is not None
            else read_token_file(Path(loaded.model.data_dir) / TOKEN_FILE)
        )
        query = _admin_query(session, url, sink_id, token)
        return SinkQuery(query, f"{url} (sink {sink_id})")
    if via == "admin":
        raise QueryFailed(f"the admin server at {admin.listen} does not answer")
    config = loaded.sinks[sink_id]
    sink = registry.sinks[config.type](sink_id, config)
    if not sink.queryable_stopped:
        raise QueryFailed(f"sink '{sink_id}' can be queried only while its pipeline runs")

    async def direct(sql: str) -> QueryResult:
        try:
            result: QueryResult = await sink.query_stopped(sql)
        except QueryRefused as exc:
            raise QueryNotAllowed(str(exc)) from exc
        except Exception as exc:
            raise QueryFailed(str(exc)) from exc
        return result

    return SinkQuery(direct, f"sink {sink_id} (its store opened read-only)")


async def _answers(session: aiohttp.ClientSession, url: str) -> bool:
    try:
        async with session.get(url + "healthz", timeout=aiohttp.ClientTimeout(total=2)) as r:
            await r.read()
    except (aiohttp.ClientError, TimeoutError, OSError):
        return False
    return True


def _admin_query(
    session: aiohttp.ClientSession, url: str, sink_id: str, token: str | None
) -> Callable[[str], Awaitable[QueryResult]]:
    headers = bearer(token) if token is not None else {}

    async def query(sql: str) -> QueryResult:
        timeout = aiohttp.ClientTimeout(total=300, connect=2)
        try:
            async with session.post(
                url + "api/query",
                json={"sql": sql, "sink": sink_id},
                timeout=timeout,
                headers=headers,
            ) as response:
                body = await response.read()
                status = response.status
        except (aiohttp.ClientError, TimeoutError) as exc:
            raise QueryFailed(f"the admin server at {url} stopped answering: {exc}") from exc
        try:
            document: Any = orjson.loads(body)
        except orjson.JSONDecodeError:
            raise QueryFailed(f"{url} is not a sluice admin server") from None
        if status == 401:
            raise QueryFailed(
                f"the admin server at {url} refused the token: set admin.token (the same value "
                f"as the running pipeline's) or run as the user who can read "
                f"<data_dir>/{TOKEN_FILE}"
            )
        if status != 200:
            error = str(document.get("error", f"HTTP {status}"))
            if document.get("refused") is True:
                raise QueryNotAllowed(error)
            raise QueryFailed(error)
        return QueryResult(
            columns=list(document["columns"]),
            rows=[list(row) for row in document["rows"]],
            types=list(document.get("types", [])),
        )

    return query
