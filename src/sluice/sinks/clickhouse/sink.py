"""The ``clickhouse`` sink: batches of records into a table of a server or of embedded chDB.

Delivery: at-least-once, and exactly-once for retries where the server deduplicates inserts.
Each batch is one INSERT (JSONEachRow), atomic on the server (one block, one part, as long as a batch
stays under ``max_insert_block_size``, a million rows). It carries an
``insert_deduplication_token`` that stays the same while the runner retries that batch, so an insert
that the server stored but could not acknowledge (connection cut, server killed after the commit) is
not stored again: on chDB and on servers from 22.2 (a non-replicated table needs
``non_replicated_deduplication_window``, which the shipped DDL sets). Servers before 22.2 have no
token: such a retry stores the batch twice; the shipped DDL's ReplacingMergeTree collapses the copy
at the next merge and ``FINAL`` reads exactly. Parts of a batch already stored while isolating bad
rows are remembered and never sent again, on any server. A batch read from a replayable log (every
record has an :class:`~sluice.records.Origin`, e.g. from the ``kafka`` source) takes its token from
the records' topic, partition and offsets (``BatchInfo.origin``), so a loader that dies between
the insert and its source's commit and reads the same batch again is deduplicated too.

Bad records: a record that does not fit the table's columns (missing a field for a column without
default, a value that cannot be converted) goes to the dead letters with the reason, before the
insert. A row that the server refuses (a data error code) is found by splitting the batch in halves;
it goes to the dead letters with the server's reason, and every other row is stored.

On a lost connection or a server down, inserts are retried by the runner with backoff; a start
against a server that is down is retried the same way. With ``urls`` (several endpoints of one
cluster) a batch that fails on one endpoint with a connection error or a 5xx goes at once to the
next, with the same body and token (:mod:`.endpoints`), and the failed one is tried again after a
backoff. With ``cluster`` and a ``Distributed`` table, inserts wait for every shard
(``insert_distributed_sync``). If the table or a column disappears, the
sink reads the table again (recreating it with ``create``; :mod:`.table`) before the next attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

from sluice.errors import RejectedRecords, RetriableError
from sluice.plugin import BatchInfo, ComponentContext, QueryResult, Readiness, Sink
from sluice.records import Record
from sluice.sinks.clickhouse.client import Client
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.endpoints import EndpointPool
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.schema import Converter, Prepared, ServerInfo
from sluice.sinks.clickhouse.table import load_table

__all__ = ["ClickHouseSink"]


class _Quiet:
    """The logger of a client made outside a run (``sluice sql``/``monitor`` on a stopped
    pipeline): their output is the answer, and a query that fails on every endpoint says why."""

    def _drop(self, event: str, **fields: Any) -> None:
        pass

    debug = info = warning = error = _drop


def _quiet() -> Any:
    return _Quiet()


_PREPARE_CHUNK = 4096
"""Records checked per chunk of a streamed insert (about 1.7 MB of tickers)."""


class ClickHouseSink(Sink[ClickHouseSinkConfig]):
    """ClickHouse table (at-least-once; retries deduplicated by token on chDB and servers >= 22.2)."""

    config_model = ClickHouseSinkConfig
    delivery = "effectively-once"
    delivery_note = (
        "A retried batch carries the same insert_deduplication_token (chDB, servers from 22.2 with "
        "non_replicated_deduplication_window); at-least-once on older servers."
    )
    queryable = True
    queryable_stopped = True
    takes_batch_info = True
    description = "Insert into a ClickHouse table: a server over HTTP(S), or embedded (chDB)."

    def __init__(self, component_id: str, config: ClickHouseSinkConfig) -> None:
        super().__init__(component_id, config)
        self._client: Client | None = None
        self._server: ServerInfo | None = None
        self._converter: Converter | None = None
        self._log: Any = None
        self._token_prefix = ""
        self._serial = 0
        self._last_batch: object = None
        """The batch being written: its ``batch_id``, or the records object itself."""
        self._token = ""
        self._stored: set[tuple[int, int]] = set()
        """Row ranges of the current batch already stored (while isolating bad rows)."""
        self._schema_stale = False
        self._distributed = False
        self._gauges = False
        self.dedup = "none"
        """How retries are kept from storing twice: ``token`` or ``none`` (for logs and tests)."""

    # -- lifecycle ---------------------------------------------------------------------------------

    def make_client(self, *, read_only: bool = False) -> Client:
        """A client for this sink's target (not yet open)."""
        if self.config.urls is not None:
            return EndpointPool(self.config, self._log if self._log is not None else _quiet())
        if self.config.url is not None:
            from sluice.sinks.clickhouse.http_client import HttpClient

            return HttpClient(self.config)
        from sluice.sinks.clickhouse.embedded import EmbeddedClient

        assert self.config.path is not None
        return EmbeddedClient(self.config.path, read_only=read_only)

    async def start(self, ctx: ComponentContext) -> None:
        self._log = ctx.log
        self._register_endpoint_gauges(ctx)
        self._token_prefix = f"{self.component_id}-{uuid.uuid4().hex[:16]}"
        client = self.make_client()
        try:
            try:
                self._server = await client.open()
            except ClickHouseError as exc:
                if exc.is_transient:  # down or overloaded: the runner retries the start
                    raise
                # a wrong password or a missing grant will not pass by waiting
                raise RuntimeError(f"{self.config.target}: {exc}") from exc
            self._client = client
            await self._load_table()
        except BaseException:
            self._client = None
            await client.close()
            raise
        assert self._converter is not None
        self._log.info(
            "clickhouse.ready",
            target=self.config.target,
            table=f"{self.config.database}.{self.config.table}",
            version=self._server.version_text,
            columns=len(self._converter.columns),
            send="records as received" if self._converter.passthrough else "re-encoded rows",
            dedup=self.dedup,
        )

    def _register_endpoint_gauges(self, ctx: ComponentContext) -> None:
        """``sluice_clickhouse_endpoint_up{endpoint}`` per URL of ``urls``, read at scrape time
        (once per sink: a start retried registers nothing again)."""
        if self.config.urls is None or self._gauges:
            return
        self._gauges = True
        for url in self.config.urls:

            def read(url: str = url) -> float:
                pool = self._client
                if not isinstance(pool, EndpointPool):
                    return 0.0
                return 1.0 if pool.state().get(url) else 0.0

            ctx.metrics.gauge(
                "sluice_clickhouse_endpoint_up",
                "1 while the ClickHouse endpoint answers (the sink may send to it), 0 while it "
                "is marked down.",
                read,
                extra_labels={"endpoint": url},
            )

    async def _load_table(self) -> None:
        """Create the table if asked and read it (see :func:`.table.load_table`)."""
        assert self._client is not None
        assert self._server is not None
        table = await load_table(self._client, self._server, self.config, self._log)
        self._converter, self.dedup = table.converter, table.dedup
        self._distributed = table.distributed
        self._schema_stale = False

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.close()

    async def readiness(self) -> Readiness:
        client = self._client
        if client is None:
            return Readiness(False, "not connected")
        try:
            await client.select("SELECT 1")
        except ClickHouseError as exc:
            detail = f" ({client.describe()})" if isinstance(client, EndpointPool) else ""
            return Readiness(False, f"SELECT 1 failed: {exc}{detail}")
        if isinstance(client, EndpointPool):
            # ready while one endpoint answers; the others' state is the detail
            return Readiness(True, "" if all(client.state().values()) else client.describe())
        return Readiness(True)

    # -- writing -----------------------------------------------------------------------------------

    def _token_for(self, records: Sequence[Record], batch: BatchInfo | None) -> str:
        """Same token while the runner retries the same batch (its ``batch_id``); a new one for the
        next batch. A batch whose records all came from a replayable log (``batch.origin``) gets a
        token from their origins instead, the same in every process that reads them. Called without a :class:`BatchInfo` (directly, not by the runner), the same
        ``records`` object stands for the same batch."""
        if batch is not None:
            key: object = batch.batch_id
            same = key == self._last_batch
        else:
            key = records
            same = records is self._last_batch
        if not same:
            self._last_batch = key
            self._serial += 1
            self._token = f"{self._token_prefix}-{self._serial}"
            if batch is not None and batch.origin is not None:
                # records from a replayable log: the same records read again by any process (a
                # loader that died before its source committed) carry the same token
                self._token = f"origin:{batch.origin}"
            self._stored.clear()
        return self._token

    async def write_batch(self, records: Sequence[Record], batch: BatchInfo | None = None) -> None:
        """Insert ``records``; raise RejectedRecords naming those that cannot be stored.

        The batch is checked in chunks that are sent as they are made (one streamed INSERT), so
        ClickHouse parses one chunk while the next is checked. If that insert fails, it is tried
        once more as one body, which tells a data error (then isolated) from a lost connection.
        """
        if self._client is None:
            raise RetriableError("not connected")
        if self._schema_stale:
            await self._reload_table()
        converter = self._converter
        assert converter is not None
        token = self._token_for(records, batch)
        prepared = Prepared([], [])
        done = 0  # records checked so far

        def next_chunk() -> bytes | None:
            nonlocal done
            while done < len(records):
                first_row = len(prepared.rows)
                stop = min(done + _PREPARE_CHUNK, len(records))
                converter.prepare(records, done, stop, prepared)
                done = stop
                if len(prepared.rows) > first_row:
                    return b"\n".join(prepared.rows[first_row:]) + b"\n"
            return None

        async def chunks(first: bytes) -> AsyncIterator[bytes]:
            yield first
            while (chunk := next_chunk()) is not None:
                yield chunk

        refused: dict[int, str] = {}
        first = next_chunk()
        if first is not None:
            try:
                await self._client.insert_stream(
                    self.config.insert_table, chunks(first), self._settings(token)
                )
            except ClickHouseError as exc:
                if exc.is_schema_changed:
                    self._schema_stale = True
                    raise
                converter.prepare(records, done, len(records), prepared)
                refused = await self._insert(prepared.rows, 0, len(prepared.rows), token)
        rejected = dict(prepared.rejected)
        for row, reason in refused.items():
            rejected[prepared.indexes[row]] = reason
        if refused:
            self._log.warning(
                "clickhouse.rows_refused", rows=len(refused), reason=next(iter(refused.values()))
            )
        self._last_batch = None  # written: it will not be retried, so let its memory go
        if rejected:
            raise RejectedRecords(rejected)

    def _settings(self, token: str) -> dict[str, str]:
        assert self._server is not None
        settings = {
            "date_time_input_format": "best_effort",
            "input_format_skip_unknown_fields": "1",
        }
        if self._server.has_dedup_token:
            settings["insert_deduplication_token"] = token
        if self._distributed:
            # the insert returns once every shard stored its rows: an acknowledged batch is on
            # the shards, not in one node's send queue, and a failure is retried as a whole
            # (identical blocks are dropped by the replicated tables)
            settings["insert_distributed_sync"] = "1"
        return settings

    async def _insert(self, rows: list[bytes], low: int, high: int, token: str) -> dict[int, str]:
        """Insert ``rows[low:high]``; on a data error split it to find the rows the server refuses.

        Returns the refused rows (position -> the server's reason); raises ClickHouseError for
        anything else (retried by the runner with the same token).
        """
        if (low, high) in self._stored:
            return {}
        client = self._client
        assert client is not None
        whole = low == 0 and high == len(rows)
        settings = self._settings(token if whole else f"{token}:{low}-{high}")
        body = b"\n".join(rows[low:high]) + b"\n"
        try:
            await client.insert(self.config.insert_table, body, settings)
        except ClickHouseError as exc:
            if exc.is_schema_changed:
                self._schema_stale = True
                raise
            if not exc.is_data_error:
                raise
            if high - low == 1:
                return {low: f"ClickHouse refused the row: {exc}"}
            middle = (low + high) // 2
            refused = await self._insert(rows, low, middle, token)
            refused.update(await self._insert(rows, middle, high, token))
            return refused
        self._stored.add((low, high))
        return {}

    async def _reload_table(self) -> None:
        self._log.info("clickhouse.reloading_table", table=self.config.table)
        try:
            await self._load_table()
        except RuntimeError as exc:
            # e.g. the table was dropped and `create` is off: keep retrying, loudly
            raise RetriableError(str(exc)) from exc

    # -- queries -----------------------------------------------------------------------------------

    async def query(self, sql: str) -> QueryResult:
        """One read-only SELECT through this running sink's connection (``sluice sql``, the admin
        port), judged by ClickHouse's parser first: QueryRefused (see ``query_guard``)."""
        if self._client is None:
            raise RetriableError("not connected")
        return await self._client.select_from_outside(sql)

    async def query_stopped(self, sql: str) -> QueryResult:
        """A read-only query with no pipeline running: opens the store itself, read-only."""
        client = self.make_client(read_only=True)
        try:
            await client.open()
            return await client.select_from_outside(sql)
        finally:
            await client.close()
