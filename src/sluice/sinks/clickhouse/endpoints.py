"""Several HTTP endpoints of one ClickHouse cluster (``urls``), used as one :class:`Client`.

Order is preference: every request goes to the first endpoint that is up, in the order of
``urls``. A request that fails with a connection error, a 5xx without a code or a passing
condition (:attr:`ClickHouseError.is_transient`: overload, a replica without ZooKeeper...) marks
that endpoint down and goes, unchanged, to the next one: an insert keeps its body and its
settings, so its ``insert_deduplication_token`` is the same on every endpoint it is sent to (and
on a replicated table an identical block is dropped by its hash on servers without tokens).
Any other error (a data error, a missing table, a refused password) is the answer, and is raised
as it is.

A down endpoint waits out a backoff drawn by the runtime's :class:`~sluice.runtime.retry.Retrying`
(the sink's ``retry`` policy: growing with each failure, with jitter); once it is due it is
probed (``SELECT 1``) before the next request, and used again, as the preferred one it was, when
it answers. When every endpoint is down the one due first is tried anyway, so the runner's own
retry of the batch is never refused untried. A streamed insert cannot be replayed: it goes to
one endpoint, and its failure is raised (the sink then sends the batch as one body, which fails
over).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sluice.plugin import QueryResult
from sluice.runtime.retry import Retrying, retrying
from sluice.sinks.clickhouse.client import Client
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.query_guard import ParsedQuery
from sluice.sinks.clickhouse.schema import ServerInfo

if TYPE_CHECKING:
    from sluice.sinks.clickhouse.http_client import HttpClient

__all__ = ["Endpoint", "EndpointPool"]

T = TypeVar("T")


@dataclass(eq=False)
class Endpoint:
    """One server of the pool and what the pool knows of it."""

    url: str
    client: HttpClient
    retry: Retrying
    up: bool = True
    due_at: float = 0.0
    """While down: when to probe it again (monotonic seconds)."""
    error: str = ""
    """Why it is down (the last failure)."""
    down_since: float | None = None
    failures: int = field(default=0)
    """Times it was marked down (since start)."""


class EndpointPool(Client):
    """The ``urls`` of a sink as one client, with failover (see the module)."""

    def __init__(
        self,
        config: ClickHouseSinkConfig,
        log: Any,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        # aiohttp is imported when a server is used, as for one `url` (see the sink)
        from sluice.sinks.clickhouse.http_client import HttpClient

        self._log = log
        self._clock = clock
        self.endpoints = [
            Endpoint(
                url,
                HttpClient(config, url),
                retrying(config.retry, log, "clickhouse.endpoint_down"),
            )
            for url in config.endpoints
        ]
        self.current: Endpoint | None = None
        """The endpoint the last request succeeded on."""
        self.used: list[str] = []
        """The URL of each endpoint in turn that requests went to (a switch adds one)."""

    # -- the state ---------------------------------------------------------------------------------

    def state(self) -> dict[str, bool]:
        """Each endpoint's URL (without credentials) and whether it is up."""
        return {e.url: e.up for e in self.endpoints}

    def describe(self) -> str:
        """One line for /readyz: every endpoint and its state."""
        now = self._clock()
        parts = []
        for e in self.endpoints:
            if e.up:
                parts.append(f"{e.url} up" + (" (in use)" if e is self.current else ""))
            else:
                since = now - (e.down_since or now)
                parts.append(f"{e.url} down for {since:.0f}s: {e.error}")
        return "; ".join(parts)

    def _mark_down(self, endpoint: Endpoint, exc: ClickHouseError) -> None:
        now = self._clock()
        delay = endpoint.retry.failed(exc, endpoint=endpoint.url)
        endpoint.due_at = now + delay
        endpoint.error = str(exc)[:300]
        if endpoint.up:
            endpoint.up = False
            endpoint.down_since = now
            endpoint.failures += 1

    def _mark_up(self, endpoint: Endpoint) -> None:
        if not endpoint.up:
            endpoint.retry.recovered("clickhouse.endpoint_up", endpoint=endpoint.url)
            endpoint.up, endpoint.error, endpoint.down_since = True, "", None
        if self.current is not endpoint:
            self.used.append(endpoint.url)
            if self.current is not None:
                self._log.info(
                    "clickhouse.endpoint_switched", previous=self.current.url, to=endpoint.url
                )
            self.current = endpoint

    async def refresh(self) -> None:
        """Probe every down endpoint whose backoff has passed; mark those that answer up."""
        now = self._clock()
        for endpoint in self.endpoints:
            if not endpoint.up and endpoint.due_at <= now:
                await self._probe(endpoint)

    async def _probe(self, endpoint: Endpoint) -> bool:
        try:
            await endpoint.client.select("SELECT 1")
        except ClickHouseError as exc:
            if not exc.is_transient:
                raise
            self._mark_down(endpoint, exc)
            return False
        endpoint.retry.recovered("clickhouse.endpoint_up", endpoint=endpoint.url)
        endpoint.up, endpoint.error, endpoint.down_since = True, "", None
        return True

    async def _candidates(self) -> list[Endpoint]:
        """The endpoints to try, in order: the up ones (after probing those due), or, when none
        is up, the one due first."""
        await self.refresh()
        up = [e for e in self.endpoints if e.up]
        if up:
            return up
        return [min(self.endpoints, key=lambda e: e.due_at)]

    async def _each(self, call: Callable[[HttpClient], Awaitable[T]]) -> T:
        """``call`` on the first endpoint that answers; transient failures move to the next."""
        last: ClickHouseError | None = None
        for endpoint in await self._candidates():
            try:
                result = await call(endpoint.client)
            except ClickHouseError as exc:
                if not exc.is_transient:
                    raise
                self._mark_down(endpoint, exc)
                last = exc
                continue
            self._mark_up(endpoint)
            return result
        assert last is not None
        raise last

    # -- the Client API ----------------------------------------------------------------------------

    async def open(self) -> ServerInfo:
        """Ask every endpoint (so each one's state is known from the start); the version of the
        first that answers."""
        found: ServerInfo | None = None
        last: ClickHouseError | None = None
        for endpoint in self.endpoints:
            try:
                info = await endpoint.client.open()
            except ClickHouseError as exc:
                if not exc.is_transient:
                    raise
                self._mark_down(endpoint, exc)
                last = exc
                continue
            if found is None:
                found = info
                self._mark_up(endpoint)
            elif not endpoint.up:
                endpoint.retry.recovered("clickhouse.endpoint_up", endpoint=endpoint.url)
                endpoint.up, endpoint.error, endpoint.down_since = True, "", None
        if found is None:
            assert last is not None
            raise last
        return found

    async def execute(self, sql: str) -> None:
        await self._each(lambda c: c.execute(sql))

    async def select(self, sql: str, *, read_only: bool = True) -> QueryResult:
        return await self._each(lambda c: c.select(sql, read_only=read_only))

    async def parse(self, sql: str) -> ParsedQuery:
        return await self.endpoints[0].client.parse(sql)

    def outside_statement(self, sql: str, parsed: ParsedQuery) -> str:
        return self.endpoints[0].client.outside_statement(sql, parsed)

    async def _select_outside(self, statement: str) -> QueryResult:
        return await self._each(lambda c: c._select_outside(statement))

    async def insert(self, table: str, body: bytes, settings: Mapping[str, str]) -> None:
        # the same body and settings (token included) on every endpoint tried
        await self._each(lambda c: c.insert(table, body, settings))

    async def insert_stream(
        self, table: str, chunks: AsyncIterator[bytes], settings: Mapping[str, str]
    ) -> None:
        endpoint = (await self._candidates())[0]
        try:
            await endpoint.client.insert_stream(table, chunks, settings)
        except ClickHouseError as exc:
            if exc.is_transient:
                self._mark_down(endpoint, exc)
            raise
        self._mark_up(endpoint)

    async def close(self) -> None:
        for endpoint in self.endpoints:
            await endpoint.client.close()
