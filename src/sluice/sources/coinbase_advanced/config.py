"""The ``coinbase_advanced`` source's config model.

The connection options (timeouts, pings, compression, frame and buffer limits, the reconnect
policy, the embedded simulator) are the ``coinbase`` source's own fields, taken from its model so
the two cannot drift; what differs is the URL, the channels and the JWT authentication.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import Field, SecretStr, field_validator

from sluice.config.models import RetryPolicy, SourceConfig, StrictModel
from sluice.sources.coinbase.config import CoinbaseSourceConfig, EmbeddedSimulator

__all__ = [
    "ADVANCED_URL",
    "CHANNELS",
    "CdpKey",
    "CoinbaseAdvancedSourceConfig",
]

ADVANCED_URL = "wss://advanced-trade-ws.coinbase.com"

Channel = Literal[
    "heartbeats", "ticker", "ticker_batch", "market_trades", "level2", "candles", "status"
]
CHANNELS: tuple[str, ...] = Channel.__args__  # type: ignore[attr-defined]


def _same(name: str) -> Any:
    """The ``coinbase`` source's field ``name`` (type, default, description), for this model."""
    return copy.copy(CoinbaseSourceConfig.model_fields[name])


class CdpKey(StrictModel):
    """A Coinbase Developer Platform (CDP) API key, for JWT (ES256) authenticated subscribes."""

    name: SecretStr = Field(
        description=(
            "The key's name (`organizations/{org_id}/apiKeys/{key_id}`), from the environment."
        ),
        examples=["${COINBASE_CDP_KEY_NAME}"],
    )
    private_key: SecretStr = Field(
        description=(
            "The key's EC private key in PEM (`-----BEGIN EC PRIVATE KEY-----...`), from the "
            "environment; `\\n` written as two characters is read as a line break."
        ),
        examples=["${COINBASE_CDP_PRIVATE_KEY}"],
    )

    @field_validator("private_key")
    @classmethod
    def _pem(cls, value: SecretStr) -> SecretStr:
        text = value.get_secret_value().replace("\\n", "\n").strip()
        if "-----BEGIN" not in text or "PRIVATE KEY-----" not in text:
            # never echo the value: say what it should look like
            raise ValueError("expected a PEM private key (-----BEGIN EC PRIVATE KEY----- ...)")
        return SecretStr(text + "\n")


class CoinbaseAdvancedSourceConfig(SourceConfig):
    """Read the Coinbase Advanced Trade websocket feed (tickers, market trades, level2, candles,
    heartbeats, status)."""

    type: Literal["coinbase_advanced"] = "coinbase_advanced"
    url: str = Field(
        ADVANCED_URL,
        description="Websocket URL: Advanced Trade's market data feed or a local simulator.",
        examples=["ws://127.0.0.1:8765"],
    )
    products: list[str] = Field(
        description="Products to subscribe to.", min_length=1, examples=[["BTC-USD", "ETH-USD"]]
    )
    channels: list[Channel] = Field(
        default=["heartbeats", "ticker"],
        description=(
            "Channels, one subscribe message each: `heartbeats`, `ticker`, `ticker_batch`, "
            "`market_trades`, `level2`, `candles`, `status`. Subscribe to `heartbeats` to keep "
            "the connection open when markets are quiet and to check its counter."
        ),
        min_length=1,
    )
    auth: CdpKey | None = Field(
        None,
        description=(
            "Sign every subscribe with a JWT (ES256) made from this CDP API key (needs the "
            "`auth` extra: `pip install 'sluice[auth]'`). Unset: unauthenticated subscribes, "
            "which the market data channels accept."
        ),
    )
    stale_after_secs: float | None = _same("stale_after_secs")
    subscribe_timeout_secs: float = Field(
        5.0, gt=0, description="Longest wait for the `subscriptions` reply to each subscribe."
    )
    connect_timeout_secs: float = _same("connect_timeout_secs")
    ping_interval_secs: float = _same("ping_interval_secs")
    ping_timeout_secs: float = _same("ping_timeout_secs")
    compression: bool = _same("compression")
    receive_buffer_bytes: int | None = _same("receive_buffer_bytes")
    max_batch_events: int = _same("max_batch_events")
    max_pending_bytes: int = _same("max_pending_bytes")
    max_frame_bytes: int = _same("max_frame_bytes")
    reconnect: RetryPolicy = _same("reconnect")
    simulator: EmbeddedSimulator | None = Field(
        None,
        description=(
            "Run a local simulator speaking Advanced Trade in this process and connect to it "
            "instead of `url` (`sluice simulate coinbase --api advanced_trade` serves the same "
            "feed standalone)."
        ),
    )

    @field_validator("url")
    @classmethod
    def _websocket_url(cls, value: str) -> str:
        return CoinbaseSourceConfig._websocket_url(value)  # the same rule as the coinbase source

    @field_validator("products")
    @classmethod
    def _product_ids(cls, value: list[str]) -> list[str]:
        return CoinbaseSourceConfig._product_ids(value)

    @field_validator("channels")
    @classmethod
    def _once_each(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError("channels are listed more than once")
        return value
