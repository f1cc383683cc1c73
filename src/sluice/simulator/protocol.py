"""What the simulated feed says and accepts, as the real Coinbase Exchange feed: the channels, the
subscribe request's checks, and the frames that are not market data (errors, status, heartbeats).

Pure functions of bytes and product lists; the connection that sends them is
:class:`sluice.simulator.session.Session`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson

__all__ = [
    "AUTH_CHANNELS",
    "AUTH_REASON",
    "CHANNELS",
    "HEARTBEAT",
    "SIGNED_CHANNELS",
    "error_frame",
    "parse_channels",
    "status_frame",
    "subscriptions_frame",
]

CHANNELS = frozenset({"ticker", "ticker_batch", "heartbeat", "matches", "status", "level2_batch"})
SIGNED_CHANNELS = frozenset({"level2", "full", "user"})
"""Channels served to a correctly signed request (``level3`` is not simulated)."""
AUTH_CHANNELS = frozenset({"full", "level2", "level3", "user"})
AUTH_REASON = (
    "level2, level3, and full channels now require authentication. "
    "https://docs.cloud.coinbase.com/exchange/docs/websocket-auth"
)
HEARTBEAT = b'{"type":"heartbeat","last_trade_id":%d,"product_id":"%s","sequence":%d,"time":"%s"}'
"""``HEARTBEAT % (last trade id, product id, sequence, time)``."""


def error_frame(message: str, reason: str) -> bytes:
    return orjson.dumps({"type": "error", "message": message, "reason": reason})


def parse_channels(
    request: dict[str, Any], products: Collection[str], signed: bool = False
) -> tuple[dict[str, list[str]], str | None]:
    """The channels a (un)subscribe request names, each with its products (``status``: none), or
    the reason the feed refuses it. Channels given as names take the top-level ``product_ids``;
    ``signed``: the request's signature was accepted (:mod:`.auth`)."""
    top = request.get("product_ids") or []
    channels = request.get("channels") or []
    if not isinstance(channels, list) or not channels:
        return {}, "No channels provided"
    wanted: dict[str, list[str]] = {}
    for channel in channels:
        if isinstance(channel, str):
            name, names = channel, top
        elif isinstance(channel, dict) and isinstance(channel.get("name"), str):
            name, names = channel["name"], channel.get("product_ids") or top
        else:
            return {}, "Malformed channel"
        if name in AUTH_CHANNELS and not (signed and name in SIGNED_CHANNELS):
            return {}, AUTH_REASON
        if name not in CHANNELS and name not in AUTH_CHANNELS:
            return {}, f"{name} is not a valid channel"
        if name == "status":
            wanted[name] = []
            continue
        if not isinstance(names, list) or not names:
            return {}, " is not a valid product"
        for product in names:
            if not isinstance(product, str) or product not in products:
                return {}, f"{product} is not a valid product"
        wanted[name] = list(names)
    return wanted, None


def subscriptions_frame(channels: dict[str, list[str]]) -> bytes:
    """The reply to a (un)subscribe request: everything subscribed now."""
    return orjson.dumps(
        {
            "type": "subscriptions",
            "channels": [{"name": n, "product_ids": p} for n, p in channels.items()],
        }
    )


def status_frame(products: Iterable[str]) -> bytes:
    """The ``status`` channel's frame: every product online, and their currencies."""
    products = list(products)
    listed = [
        {
            "id": p,
            "base_currency": p.split("-")[0],
            "quote_currency": p.split("-")[1],
            "base_increment": "0.00000001",
            "quote_increment": "0.01",
            "display_name": p,
            "status": "online",
            "status_message": None,
            "min_market_funds": "1",
            "post_only": False,
            "limit_only": False,
            "cancel_only": False,
            "fx_stablecoin": False,
        }
        for p in products
    ]
    currencies = sorted({c for p in products for c in p.split("-")})
    return orjson.dumps(
        {
            "type": "status",
            "products": listed,
            "currencies": [
                {"id": c, "name": c, "min_size": "0.00000001", "status": "online"}
                for c in currencies
            ],
        }
    )
