"""Config of the ``clickhouse`` sink: a server (``url``) or the embedded engine (``path``)."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import Field, SecretStr, StringConstraints, field_validator, model_validator

from sluice.config.models import BatchPolicy, BufferPolicy, MiB, SinkConfig

__all__ = ["MAX_BATCH_ROWS", "ClickHouseSinkConfig", "Identifier"]

MAX_BATCH_ROWS = 1_000_000
"""Below ClickHouse's max_insert_block_size (1,048,576): one batch, one block, one atomic part."""

Identifier = Annotated[str, StringConstraints(pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")]
"""A database or table name: letters, digits and underscores, not starting with a digit."""


class ClickHouseSinkConfig(SinkConfig):
    """Insert records into a ClickHouse table: a server over HTTP(S), or ClickHouse embedded in
    the process (chDB) with its data in a directory."""

    type: Literal["clickhouse"] = "clickhouse"
    url: str | None = Field(
        None,
        description=(
            "A ClickHouse server's HTTP interface, `http://host:8123` or `https://host:8443`. "
            "Give either `url` or `path`. Credentials go in `user`/`password` (a `user:password@` "
            "in the URL is moved there)."
        ),
        examples=["${CLICKHOUSE_URL:-http://localhost:8123}"],
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
        """Move ``user:password@`` out of the URL, so the URL can be logged."""
        if not isinstance(data, dict) or not isinstance(data.get("url"), str):
            return data
        raw = data["url"]
        if "@" not in raw:
            return data
        parts = urlsplit(raw)
        if (parts.username is None and parts.password is None) or "@" in (
            parts.path + parts.query + parts.fragment
        ):
            # e.g. a password with '/', '?' or '#' that split the URL in the wrong place; the URL
            # is not echoed, as it holds the password
            raise ValueError(
                "cannot read the credentials in `url`: percent-encode special characters in them, "
                "or better, set `user` and `password` (from the environment) and leave them out "
                "of the URL"
            )
        if data.get("password") or ("user" in data and parts.username):
            raise ValueError(
                "credentials are given twice: in `url` and in `user`/`password`; keep one"
            )
        data = dict(data)
        host = parts.hostname or ""
        if ":" in host:
            host = f"[{host}]"
        netloc = host + (f":{parts.port}" if parts.port else "")
        data["url"] = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
        if parts.username:
            data["user"] = unquote(parts.username)
        if parts.password is not None:
            data["password"] = unquote(parts.password)
        return data

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected http://host:port or https://host:port")
        if parts.query or parts.fragment:
            raise ValueError("the URL takes no query string; settings are chosen by the sink")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _one_target(self) -> ClickHouseSinkConfig:
        if (self.url is None) == (self.path is None):
            raise ValueError("give exactly one of `url` (a server) or `path` (embedded, chDB)")
        if self.batch.max_events > MAX_BATCH_ROWS:
            # above max_insert_block_size the server cuts an insert into several parts, and a
            # failure between them leaves half a batch stored
            raise ValueError(f"batch.max_events must be at most {MAX_BATCH_ROWS:,} for clickhouse")
        return self

    @property
    def qualified_table(self) -> str:
        return f"`{self.database}`.`{self.table}`"

    @property
    def target(self) -> str:
        """Where the data goes, safe to log."""
        return self.url if self.url is not None else f"chdb:{self.path}"

    def use_gzip(self) -> bool:
        if self.url is None or self.compression == "none":
            return False
        if self.compression == "gzip":
            return True
        host = urlsplit(self.url).hostname or ""
        if host == "localhost":
            return False
        try:
            return not ipaddress.ip_address(host).is_loopback
        except ValueError:
            return True
