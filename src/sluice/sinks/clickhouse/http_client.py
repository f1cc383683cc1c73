"""A ClickHouse server over its HTTP interface, with aiohttp.

Inserts are ``POST /?query=INSERT INTO t FORMAT JSONEachRow`` with the rows as the body (gzip when
asked; every server version reads ``Content-Encoding: gzip``), settings as URL parameters and the
credentials as HTTP Basic auth, never in the URL. Queries run with ``readonly`` set when asked and
``wait_end_of_query=1``, so an error is always an HTTP error status and never half a result.
"""

from __future__ import annotations

import asyncio
import base64
import ssl
import zlib
from collections.abc import AsyncIterator, Mapping

import aiohttp
from pydantic import SecretStr

from sluice.plugin import QueryResult
from sluice.sinks.clickhouse.client import Client, parse_json_compact
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.embedded import QUERY_TIME_LIMIT_SECS, parse_in_process
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.query_guard import ParsedQuery
from sluice.sinks.clickhouse.schema import ServerInfo, parse_version

__all__ = ["HttpClient"]

_CODE_HEADER = "X-ClickHouse-Exception-Code"


class HttpClient(Client):
    """One aiohttp session to one server."""

    def __init__(self, config: ClickHouseSinkConfig, url: str | None = None) -> None:
        """``url``: one of ``config.urls`` (default: ``config.url``)."""
        target = url if url is not None else config.url
        assert target is not None
        self._config = config
        self._target = target
        self._url = target + "/"
        self._gzip = config.use_gzip(target)
        self._headers = {"Authorization": _basic(config.user, config.password)}
        reader = config.query_user
        self._reader_headers = (
            {"Authorization": _basic(reader, config.query_password)} if reader is not None else {}
        )
        self._session: aiohttp.ClientSession | None = None

    def _ssl(self) -> ssl.SSLContext | bool:
        if not self._url.startswith("https:") or not self._config.tls_verify:
            return False
        if self._config.tls_ca_file is not None:
            return ssl.create_default_context(cafile=str(self._config.tls_ca_file))
        return True

    def _get_session(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            timeout = aiohttp.ClientTimeout(
                total=self._config.timeout_secs, connect=self._config.connect_timeout_secs
            )
            connector = aiohttp.TCPConnector(limit=4, ssl=self._ssl(), enable_cleanup_closed=True)
            self._session = aiohttp.ClientSession(
                timeout=timeout, connector=connector, headers=self._headers, raise_for_status=False
            )
        return self._session

    async def _post(
        self,
        params: Mapping[str, str],
        body: bytes | AsyncIterator[bytes],
        headers: Mapping[str, str] | None = None,
    ) -> bytes:
        """POST to the server; ``headers`` are added to (or replace) the session's own."""
        session = self._get_session()
        try:
            async with session.post(
                self._url, params=params, data=body, headers=headers or {}
            ) as response:
                payload = await response.read()
                if response.status == 200:
                    return payload
                code_text = response.headers.get(_CODE_HEADER, "")
                code = int(code_text) if code_text.isdigit() else None
                text = payload.decode("utf-8", "replace")
                raise ClickHouseError.from_text(text, status=response.status, code=code)
        except ClickHouseError:
            raise
        except (aiohttp.ClientError, OSError) as exc:
            raise ClickHouseError(f"{self._target}: {type(exc).__name__}: {exc}") from exc
        except TimeoutError as exc:
            raise ClickHouseError(
                f"{self._target}: no answer within {self._config.timeout_secs}s"
            ) from exc

    async def open(self) -> ServerInfo:
        result = await self.select("SELECT version()")
        return ServerInfo(parse_version(str(result.rows[0][0])), embedded=False)

    async def execute(self, sql: str) -> None:
        await self._post({}, sql.encode())

    async def select(self, sql: str, *, read_only: bool = True) -> QueryResult:
        return await self._select(sql, read_only=read_only)

    async def _select(
        self, sql: str, *, read_only: bool, headers: Mapping[str, str] | None = None
    ) -> QueryResult:
        # readonly first: the server applies the request's settings in order, and a read-only
        # user's profile (query_user) has the same values, which a server accepts again
        params = {"readonly": "1"} if read_only else {}
        params |= {
            "default_format": "JSONCompact",
            "output_format_json_quote_64bit_integers": "0",
            "wait_end_of_query": "1",
        }
        if read_only:
            params["max_execution_time"] = str(QUERY_TIME_LIMIT_SECS)
        payload = await self._post(params, sql.encode(), headers)
        return parse_json_compact(payload)

    async def parse(self, sql: str) -> ParsedQuery:
        # a server before 20.6 has no EXPLAIN: chDB, a current engine of the same grammar, parses
        # in this process (see query_guard); the server's readonly=1 is the second wall
        return await parse_in_process(sql)

    def outside_statement(self, sql: str, parsed: ParsedQuery) -> str:
        # the text as given: the server may be older than the engine that judged it and read
        # the canonical form differently; it refuses more than one statement itself
        return sql

    async def _select_outside(self, statement: str) -> QueryResult:
        return await self._select(statement, read_only=True, headers=self._reader_headers)

    async def insert(self, table: str, body: bytes, settings: Mapping[str, str]) -> None:
        params = {"query": f"INSERT INTO {table} FORMAT JSONEachRow", **settings}
        headers: dict[str, str] = {}
        if self._gzip:
            # level 1: most of the saving for a fraction of the CPU; in a thread, as zlib lets go
            # of the GIL while it compresses
            body = await asyncio.to_thread(_gzip, body)
            headers["Content-Encoding"] = "gzip"
        await self._post(params, body, headers)

    async def insert_stream(
        self, table: str, chunks: AsyncIterator[bytes], settings: Mapping[str, str]
    ) -> None:
        params = {"query": f"INSERT INTO {table} FORMAT JSONEachRow", **settings}
        headers: dict[str, str] = {}
        if self._gzip:
            chunks = _gzip_stream(chunks)
            headers["Content-Encoding"] = "gzip"
        await self._post(params, chunks, headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _basic(user: str, password: SecretStr | None) -> str:
    secret = password.get_secret_value() if password is not None else ""
    return "Basic " + base64.b64encode(f"{user}:{secret}".encode()).decode()


async def _gzip_stream(chunks: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    async for chunk in chunks:
        packed = compressor.compress(chunk)
        if packed:
            yield packed
    yield compressor.flush()


def _gzip(body: bytes) -> bytes:
    compressor = zlib.compressobj(1, zlib.DEFLATED, 31)
    return compressor.compress(body) + compressor.flush()
