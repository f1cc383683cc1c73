"""The ``coinbase`` source's config model."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, ValidationInfo, field_validator, model_validator

from sluice.config.models import RetryPolicy, SourceConfig, StrictModel
from sluice.sources.coinbase.auth import ExchangeCredentials
from sluice.sources.coinbase.backfill import BackfillConfig
from sluice.sources.coinbase.books import BookSnapshots
from sluice.tape import RecordConfig

__all__ = [
    "AUTH_CHANNELS",
    "DEFAULT_URL",
    "ChannelSpec",
    "CoinbaseSourceConfig",
    "EmbeddedSimulator",
]

DEFAULT_URL = "wss://ws-feed.exchange.coinbase.com"

AUTH_CHANNELS = frozenset({"full", "level2", "level3", "user"})
"""Channels Coinbase serves only to signed subscriptions (``auth``)."""
UNSUPPORTED_CHANNELS = frozenset({"level3"})
"""Channels this source does not read, signed or not."""

_PRODUCT_PATTERN = r"^[A-Za-z0-9]+-[A-Za-z0-9]+$"


class ChannelSpec(StrictModel):
    """A channel with its own products (Coinbase's `{name, product_ids}` form)."""

    name: str = Field(description="Channel name, e.g. `ticker`.", min_length=1)
    product_ids: list[str] | None = Field(
        None,
        description="Products for this channel only; unset uses the source's `products`.",
    )


class EmbeddedSimulator(StrictModel):
    """Start a local Coinbase simulator inside this process and read from it (offline demos)."""

    mode: Literal["replay", "synthetic"] = Field(
        "replay",
        description=(
            "`replay`: frames recorded from the real feed (10 products, 2021-04-17), looped; "
            "`synthetic`: an endless generated feed."
        ),
    )
    speed: float = Field(1.0, gt=0, description="Replay speed (1 = the recorded timing).")
    retime: bool = Field(
        True,
        description=(
            "Replay: move the frames' times to the present (order and spacing kept) so the "
            "replay looks live; `false` sends the recorded frames exactly."
        ),
    )
    trades_per_sec: float = Field(
        20.0, gt=0, description="Synthetic mode: trades per second, all products together."
    )


class CoinbaseSourceConfig(SourceConfig):
    """Read the Coinbase Exchange websocket feed (tickers, matches, heartbeats, status)."""

    type: Literal["coinbase"] = "coinbase"
    url: str = Field(
        DEFAULT_URL,
        description="Websocket URL: the exchange, its sandbox, or a local simulator.",
        examples=["ws://127.0.0.1:8765"],
    )
    auth: ExchangeCredentials | None = Field(
        None,
        description=(
            "An Exchange API key to sign the subscribe request with (`key`, `secret`, "
            "`passphrase`, each from the environment: `${COINBASE_KEY}`...); needed for "
            "`level2`, `full` and `user`."
        ),
    )
    products: list[str] = Field(
        description="Products to subscribe to.",
        min_length=1,
        examples=[["BTC-USD", "ETH-USD"]],
    )
    channels: list[str | ChannelSpec] = Field(
        default=["ticker", "heartbeat"],
        description=(
            "Channels: names (`ticker`, `heartbeat`, `matches`, `ticker_batch`, `status`, "
            "`level2_batch`; with `auth`: `level2`, `full`, `user`) or `{name, product_ids}` "
            "objects. Subscribe to `heartbeat` for liveness and gap checks."
        ),
        min_length=1,
    )
    gap_detection: Literal["auto", "matches", "ticker", "off"] = Field(
        "auto",
        description=(
            "Which trade ids reveal missed trades: `matches` (every trade, exact), `ticker` "
            "(Coinbase may fold cascading matches into one ticker, so a gap can also mean trades "
            "without a ticker of their own), `auto` (`matches` where subscribed, else `ticker`) "
            "or `off`. Duplicates are dropped in every mode."
        ),
    )
    stale_after_secs: float | None = Field(
        10.0,
        gt=0,
        description=(
            "Reconnect when no frame arrives for this long (heartbeats come every second per "
            "product). Unset disables the watchdog."
        ),
    )
    subscribe_timeout_secs: float = Field(
        5.0, gt=0, description="Longest wait for the `subscriptions` reply."
    )
    connect_timeout_secs: float = Field(
        10.0, gt=0, description="Longest wait for the TCP, TLS and websocket handshakes."
    )
    ping_interval_secs: float = Field(
        10.0, gt=0, description="Send a websocket ping after this long without incoming data."
    )
    ping_timeout_secs: float = Field(
        10.0, gt=0, description="Drop the connection when a ping gets no pong within this."
    )
    compression: bool = Field(
        True, description="Offer permessage-deflate (Coinbase recommends it; ~7x less traffic)."
    )
    receive_buffer_bytes: int | None = Field(
        None,
        ge=65536,
        description=(
            "Socket receive buffer (SO_RCVBUF). Unset keeps the kernel's autotuning, which on "
            "Linux grows to `net.ipv4.tcp_rmem` (6 MiB by default); a set size is fixed and "
            "capped by `net.core.rmem_max`."
        ),
    )
    max_batch_events: int = Field(
        5000, gt=0, description="Frames handled per batch at most (bounds each loop step)."
    )
    max_pending_bytes: int = Field(
        32 * 1024 * 1024,
        gt=0,
        description=(
            "Received bytes held before reading pauses (backpressure: Coinbase then disconnects "
            "with ErrSlowConsume and the lost trades show up as a gap)."
        ),
    )
    max_frame_bytes: int = Field(
        4 * 1024 * 1024,
        ge=4096,
        description=(
            "Longest message accepted (after permessage-deflate is undone). A longer one goes to "
            "the dead letters with its size and first 4 KiB, and the connection goes on; one "
            "longer than 4 times this (which the client will not buffer) ends the connection "
            "with code 1009 and a log line saying so. Coinbase's largest messages (`status`) "
            "are well under 1 MiB."
        ),
    )
    rebaseline_after: int = Field(
        3,
        ge=1,
        description=(
            "Trade ids: after this many consecutive, increasing ids below a product's highest "
            "id, the product is re-baselined to them (logged and counted) instead of dropping "
            "its trades as out of order for ever."
        ),
    )
    max_trade_id_jump: int = Field(
        1_000_000_000,
        ge=1,
        description=(
            "Trade ids: a jump above a product's highest id by more than this is not reported "
            "as a gap of that many trades; the product is re-baselined to the new id instead "
            "(logged and counted)."
        ),
    )
    reconnect: RetryPolicy = Field(
        default_factory=lambda: RetryPolicy(
            initial_backoff_secs=1.0, max_backoff_secs=60.0, multiplier=2.0, jitter="full"
        ),
        description=(
            "Delays between reconnects: exponential with full jitter, at least "
            "`initial_backoff_secs` (keeps under Coinbase's connection rate limit)."
        ),
    )
    book_snapshots: BookSnapshots | None = Field(
        None,
        description=(
            "Order books (`level2`, `level2_batch`): emit each product's top `depth` levels as a "
            "`book_snapshot` record every `every_secs`. Unset: none."
        ),
    )
    backfill: BackfillConfig = Field(
        default_factory=BackfillConfig,
        description=(
            "Heal gaps of the `matches` channel: fetch the missing trades over Coinbase's REST "
            "API and emit them as `match` records with `backfilled: true` (see docs/coinbase.md)."
        ),
    )
    record: RecordConfig | None = Field(
        None,
        description=(
            "Record every frame received (exact bytes, arrival time) to compressed tape files, "
            "for `sluice simulate coinbase --replay`."
        ),
    )
    simulator: EmbeddedSimulator | None = Field(
        None,
        description=(
            "Run a local simulator in this process and connect to it instead of `url` "
            "(offline demos; `sluice simulate coinbase` serves the same feed standalone)."
        ),
    )

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        if not value.startswith(("ws://", "wss://")):
            raise ValueError("expected a ws:// or wss:// URL")
        return value

    @field_validator("products")
    @classmethod
    def _product_ids(cls, value: list[str]) -> list[str]:
        import re

        for product in value:
            if not re.match(_PRODUCT_PATTERN, product):
                raise ValueError(f"'{product}' is not a product id like BTC-USD")
        if len(set(value)) != len(value):
            raise ValueError("products are listed more than once")
        return value

    @field_validator("channels")
    @classmethod
    def _signed_channels(
        cls, value: list[str | ChannelSpec], info: ValidationInfo
    ) -> list[str | ChannelSpec]:
        if "auth" not in info.data:
            return value  # `auth` was given but is invalid: its own error says why
        signed = info.data["auth"] is not None
        for channel in value:
            name = channel if isinstance(channel, str) else channel.name
            if name in UNSUPPORTED_CHANNELS:
                raise ValueError(
                    f"channel '{name}' is not read by the coinbase source; use level2 or full"
                )
            if name in AUTH_CHANNELS and not signed:
                raise ValueError(
                    f"channel '{name}' requires an authenticated (signed) subscription: set "
                    "`auth` (key, secret, passphrase, each from the environment, e.g. "
                    "`${COINBASE_KEY}`), or use ticker, matches, heartbeat, ticker_batch, "
                    "level2_batch or status"
                )
        return value

    @model_validator(mode="after")
    def _backfill_needs_matches(self) -> CoinbaseSourceConfig:
        if self.backfill.enabled:
            if "matches" not in self.channel_names():
                raise ValueError(
                    "backfill heals gaps of the `matches` channel (REST gives trades, not "
                    "tickers): add `matches` to `channels`"
                )
            if self.gap_detection not in ("auto", "matches"):
                raise ValueError(
                    "backfill needs the gaps of the `matches` channel: set gap_detection to "
                    "`matches` or `auto`"
                )
        return self

    def channel_names(self) -> list[str]:
        return [c if isinstance(c, str) else c.name for c in self.channels]

    def subscription(self) -> dict[str, list[str]]:
        """What is asked for: channel name -> products (empty for product-less channels)."""
        wanted: dict[str, list[str]] = {}
        for channel in self.channels:
            if isinstance(channel, str):
                name, products = channel, list(self.products)
            else:
                name = channel.name
                products = list(channel.product_ids or self.products)
            if name == "status":
                products = []
            merged = wanted.setdefault(name, [])
            merged += [p for p in products if p not in merged]
        return wanted
