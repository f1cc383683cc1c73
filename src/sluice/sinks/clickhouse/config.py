"""Config of the ``clickhouse`` sink: a server (``url``), several endpoints of one cluster
(``urls``) or the embedded engine (``path``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    Field,
    SecretStr,
    StringConstraints,
    ValidationInfo,
    field_validator,
    model_validator,
)

from sluice.config.models import BatchPolicy, BufferPolicy, MiB, SinkConfig

__all__ = ["MAX_BATCH_ROWS", "ClickHouseSinkConfig", "Identifier"]

MAX_BATCH_ROWS = 1_000_000
"""Below ClickHouse's max_insert_block_size (1,048,576): one batch, one block, one atomic part."""

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
"""A database or table name: letters, digits and underscores, not starting with a digit."""


def _checked_url(value: str) -> str:
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError("expected http://host:port or https://host:port")
    if parts.query or parts.fragment:
        raise ValueError("the URL takes no query string; settings are chosen by the sink")
    return value.rstrip("/")


ServerUrl = Annotated[str, AfterValidator(_checked_url)]
"""A server's HTTP(S) URL without query string, trailing ``/`` removed."""


class ClickHouseSinkConfig(SinkConfig):
    """Insert records into a ClickHouse table: a server over HTTP(S), or ClickHouse embedded in
    the process (chDB) with its data in a directory."""

    type: Literal["clickhouse"] = "clickhouse"
    url: str | None = Field(
        None,
        description=(
            "A ClickHouse server's HTTP interface, `http://host:8123` or `https://host:8443`. "
            "Give one of `url`, `urls` or `path`. Credentials go in `user`/`password` (a `user:password@` "
            "in the URL is moved there)."
        ),
        examples=["${CLICKHOUSE_URL:-http://localhost:8123}"],
    )
    urls: list[ServerUrl] | None = Field(
        None,
        description=(
            "Several HTTP endpoints of one ClickHouse cluster (or the replicas of one shard), "
            "instead of `url`: each batch goes to the first healthy one in this order; on a "
            "connection error or a 5xx the same batch (same deduplication token) goes to the "
            "next, and an endpoint that failed is tried again after a backoff (`retry`) and "
            "used again once it answers. See docs/clickhouse.md."
        ),
        examples=[["http://ch1:8123", "http://ch2:8123"]],
    )
    path: Path | None = Field(
        None,
        description=(
            "Directory of an embedded ClickHouse (chDB): no server needed. One process can open "
            "one such directory, and one process at a time (`sluice sql` asks the running "
            "pipeline through its admin port)."
        ),
        examples=["data/clickhouse"],
    )
    user: str = Field("default", description="Server user (ignored for `path`).")
    password: SecretStr | None = Field(
        None,
        description="Server password; take it from the environment: `${CLICKHOUSE_PASSWORD}`.",
        examples=["${CLICKHOUSE_PASSWORD:-}"],
    )
    query_user: str | None = Field(
        None,
        description=(
            "Server user for queries from outside (`sluice sql`, `sluice monitor`, the admin "
            "port's /api/query): a read-only user whose settings profile has `readonly = 1` "
            "(see docs/clickhouse.md). Unset: those queries use `user` with `readonly=1` set on "
            "each request. Ignored for `path`."
        ),
        examples=["sluice_reader"],
    )
    query_password: SecretStr | None = Field(
        None,
        description="Password of `query_user`; from the environment.",
        examples=["${CLICKHOUSE_READER_PASSWORD}"],
    )
    database: Identifier = Field("default", description="Database of the table.")
    table: Identifier = Field(description="Table to insert into.", examples=["coinbase_ticker"])
    create: bool = Field(
        True,
        description=(
            "Create the database and table when missing, from `ddl` (statements ending with `;`, "
            "`{database}` and `{table}` replaced by the values above)."
        ),
    )
    cluster: Identifier | None = Field(
        None,
        description=(
            "Name of the cluster (the server's `remote_servers`) the table lives on. With "
            "`create`, the shipped DDL makes the replicated local table on every node "
            "(`ON CLUSTER`, the `{shard}`/`{replica}` macros, ZooKeeper) and `table` as a "
            "`Distributed` table over it, sharded by a hash of `product_id`."
        ),
        examples=["sluice"],
    )
    local_table: Identifier | None = Field(
        None,
        description="With `cluster`: the local replicated table's name (default `<table>_local`).",
    )
    insert_into: Literal["distributed", "local"] = Field(
        "distributed",
        description=(
            "With `cluster`: insert into the `Distributed` table `table` (it shards the rows), "
            "or into the local table of the endpoint written to (`urls` then lists the "
            "replicas of one shard; sharding is yours). See docs/clickhouse.md."
        ),
    )
    ddl: Path | None = Field(
        None,
        description=("DDL file for `create`; default: the shipped DDL that `shipped_ddl` names."),
    )
    shipped_ddl: Literal["coinbase_ticker", "coinbase_trades"] = Field(
        "coinbase_ticker",
        description=(
            "Which shipped table `create` makes when `ddl` is unset: `coinbase_ticker` "
            "(`sql/coinbase_ticker.sql`, tickers with 1-minute candles) or `coinbase_trades` "
            "(`sql/coinbase_trades.sql`, one row per trade of the `matches` channel, "
            "deduplicated on `(product_id, trade_id)`, with a `backfilled` flag); servers older "
            "than 20.1 get the `.legacy.sql` file of the same name."
        ),
    )
    compression: Literal["auto", "gzip", "none"] = Field(
        "auto",
        description=(
            "Request body compression for a server: `auto` is gzip unless the server is on "
            "this machine (loopback), where compressing costs more CPU than it saves."
        ),
    )
    timeout_secs: float = Field(
        60.0, gt=0, description="Longest wait for one insert or query before it is retried."
    )
    connect_timeout_secs: float = Field(10.0, gt=0, description="Longest wait to connect.")
    tls_verify: bool = Field(True, description="Verify the server's TLS certificate (https).")
    tls_ca_file: Path | None = Field(
        None, description="CA bundle to verify the server with, instead of the system's."
    )
    batch: BatchPolicy = Field(
        default_factory=lambda: BatchPolicy(
            max_events=50_000, max_bytes=32 * MiB, max_age_secs=1.0
        ),
        description=(
            "ClickHouse prefers few large inserts (each insert makes a part): about one a second."
        ),
    )
    buffer: BufferPolicy = Field(
        default_factory=lambda: BufferPolicy(max_events=150_000, max_bytes=64 * MiB),
        description="Room for about three batches while one is being written.",
    )

    @model_validator(mode="before")
    @classmethod
    def _credentials_out_of_url(cls, data: Any) -> Any:
        """Move ``user:password@`` out of ``url`` (or ``urls``), so URLs can be logged."""
        if not isinstance(data, dict):
            return data
        urls = data.get("urls")
        found: list[tuple[str | None, str | None]] = []
        if isinstance(data.get("url"), str) and "@" in data["url"]:
            data = dict(data)
            data["url"], user, password = _split_credentials(data["url"], "url")
            found.append((user, password))
        if isinstance(urls, list) and any(isinstance(u, str) and "@" in u for u in urls):
            data = dict(data)
            cleaned = []
            for url in urls:
                if isinstance(url, str) and "@" in url:
                    url, user, password = _split_credentials(url, "urls")
                    found.append((user, password))
                cleaned.append(url)
            data["urls"] = cleaned
        if not found:
            return data
        if len(set(found)) > 1:
            raise ValueError("the URLs carry different credentials; set `user` and `password`")
        user, password = found[0]
        if data.get("password") or ("user" in data and user):
            raise ValueError(
                "credentials are given twice: in the URL and in `user`/`password`; keep one"
            )
        if user:
            data["user"] = user
        if password is not None:
            data["password"] = password
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        return None if value is None else _checked_url(value)

    @field_validator("urls")
    @classmethod
    def _http_urls(cls, value: list[str] | None, info: ValidationInfo) -> list[str] | None:
        if value is None:
            return None
        if info.data.get("url") is not None:
            raise ValueError("give either `url` (one server) or `urls` (several), not both")
        if not value:
            raise ValueError("list at least one server URL")
        if len(set(value)) != len(value):
            raise ValueError("a URL is listed twice")
        return value

    @model_validator(mode="after")
    def _one_target(self) -> ClickHouseSinkConfig:
        if (self.url is None and self.urls is None) == (self.path is None):
            raise ValueError(
                "give exactly one of `url` (a server), `urls` (several servers of one cluster) "
                "or `path` (embedded, chDB)"
            )
        if self.path is not None and self.cluster is not None:
            raise ValueError("`cluster` is for servers (`url`/`urls`), not for `path` (chDB)")
        if self.insert_into == "local" and self.cluster is None:
            raise ValueError(
                "`insert_into: local` needs `cluster` (the local table is the cluster's)"
            )
        if self.cluster is not None and self.ddl is None and self.shipped_ddl != "coinbase_ticker":
            raise ValueError(
                f"`cluster` ships the cluster DDL of coinbase_ticker only: for "
                f"`shipped_ddl: {self.shipped_ddl}` on a cluster give your own `ddl`"
            )
        if self.batch.max_events > MAX_BATCH_ROWS:
            # above max_insert_block_size the server cuts an insert into several parts, and a
            # failure between them leaves half a batch stored
            raise ValueError(f"batch.max_events must be at most {MAX_BATCH_ROWS:,} for clickhouse")
        return self

    @property
    def endpoints(self) -> list[str]:
        """The server URLs (``url`` or ``urls``), without credentials; empty for ``path``."""
        if self.urls is not None:
            return list(self.urls)
        return [self.url] if self.url is not None else []

    @property
    def local_table_name(self) -> str:
        """The cluster's local (replicated) table: ``local_table`` or ``<table>_local``."""
        return self.local_table or f"{self.table}_local"

    @property
    def insert_table(self) -> str:
        """The quoted table inserts go to: the Distributed ``table``, or with ``cluster`` and
        ``insert_into: local`` the local table of the endpoint written to."""
        if self.cluster is not None and self.insert_into == "local":
            return f"`{self.database}`.`{self.local_table_name}`"
        return self.qualified_table

    @property
    def qualified_table(self) -> str:
        return f"`{self.database}`.`{self.table}`"

    @property
    def target(self) -> str:
        """Where the data goes, safe to log."""
        if self.urls is not None:
            return ",".join(self.urls)
        return self.url if self.url is not None else f"chdb:{self.path}"

    def use_gzip(self, url: str | None = None) -> bool:
        """Whether to gzip request bodies to ``url`` (default: ``url`` of the config)."""
        url = url if url is not None else self.url
        if url is None or self.compression == "none":
            return False
        if self.compression == "gzip":
            return True
        host = urlsplit(url).hostname or ""
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True


def _split_credentials(raw: str, key: str) -> tuple[str, str | None, str | None]:
    """``raw`` without ``user:password@``, the user and the password (both unquoted)."""
    parts = urlsplit(raw)
    if (parts.username is None and parts.password is None) or "@" in (
        parts.path + parts.query + parts.fragment
    ):
        # e.g. a password with '/', '?' or '#' that split the URL in the wrong place; the URL
        # is not echoed, as it holds the password
        raise ValueError(
            f"cannot read the credentials in `{key}`: percent-encode special characters in them, "
            "or better, set `user` and `password` (from the environment) and leave them out "
            "of the URL"
        )
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    return url, user, password
