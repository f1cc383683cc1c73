"""What the simulated Advanced Trade feed says and accepts: the channels, the subscribe request's
checks (the JWT among them), the envelope, and the market's Exchange frames turned into Advanced
Trade events.

Pure functions of bytes and values; the connection that sends them is
:class:`sluice.simulator.advanced.session.AdvancedSession`.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Any

import orjson

__all__ = [
    "AUTH_FAILURE",
    "CHANNELS",
    "MESSAGE_CHANNEL",
    "check_jwt",
    "envelope",
    "error_frame",
    "l2_updates",
    "parse_subscribe",
    "status_products",
    "ticker_item",
    "trade_item",
]

CHANNELS = frozenset(
    {"heartbeats", "ticker", "ticker_batch", "market_trades", "level2", "candles", "status"}
)
PRODUCT_CHANNELS = frozenset({"ticker", "ticker_batch", "market_trades", "level2", "candles"})
MESSAGE_CHANNEL = {"level2": "l2_data"}
"""A subscribed channel's name in the messages, where it differs."""
AUTH_FAILURE = "authentication failure"
"""Advanced Trade's error message for a JWT it does not accept."""


def error_frame(message: str) -> bytes:
    return orjson.dumps({"type": "error", "message": message})


def envelope(channel: str, sequence_num: int, timestamp: str, events: list[Any]) -> bytes:
    return orjson.dumps(
        {
            "channel": channel,
            "client_id": "",
            "timestamp": timestamp,
            "sequence_num": sequence_num,
            "events": events,
        }
    )


def nanos(rfc3339: str) -> str:
    """An RFC 3339 time with microseconds written with nanoseconds, as Advanced Trade does."""
    return rfc3339[:-1] + "000Z" if rfc3339.endswith("Z") else rfc3339


def parse_subscribe(request: Any, products: Collection[str]) -> tuple[str, str, list[str]] | str:
    """``(type, channel, products)`` of a (un)subscribe request, or the reason it is refused."""
    if not isinstance(request, dict) or request.get("type") not in ("subscribe", "unsubscribe"):
        return "unknown message type"
    channel = request.get("channel")
    if not isinstance(channel, str):
        return "a subscribe message names one channel (`channel`)"
    if channel not in CHANNELS:
        return f"{channel} is not a valid channel"
    names = request.get("product_ids") or []
    if not isinstance(names, list):
        return "product_ids must be a list"
    if channel in PRODUCT_CHANNELS and not names:
        return f"{channel} needs product_ids"
    for product in names:
        if not isinstance(product, str) or product not in products:
            return f"{product} is not a valid product"
    return request["type"], channel, list(names)


def check_jwt(token: object, public_key_pem: str) -> str | None:
    """Why a subscribe's JWT is not accepted (for the log), or None when it is: ES256 signed by
    the key, ``iss`` ``cdp``, a ``sub``, ``kid`` the same as ``sub``, a ``nonce``, within ``nbf``
    and ``exp``."""
    import jwt

    if not isinstance(token, str) or not token:
        return "no jwt"
    try:
        header = jwt.get_unverified_header(token)
        claims = jwt.decode(
            token,
            public_key_pem,
            algorithms=["ES256"],
            issuer="cdp",
            options={"require": ["exp", "nbf", "iss", "sub"]},
        )
    except jwt.PyJWTError as exc:
        return f"jwt refused: {exc}"
    if header.get("kid") != claims.get("sub"):
        return "jwt refused: kid is not the key named in sub"
    if not header.get("nonce"):
        return "jwt refused: no nonce"
    return None


def ticker_item(ticker: dict[str, Any], price: str | None = None) -> dict[str, Any]:
    """An Exchange ``ticker`` frame's values as an Advanced Trade ticker."""
    item: dict[str, Any] = {
        "type": "ticker",
        "product_id": ticker["product_id"],
        "price": price or ticker["price"],
        "volume_24_h": ticker.get("volume_24h"),
        "low_24_h": ticker.get("low_24h"),
        "high_24_h": ticker.get("high_24h"),
        "low_52_w": ticker.get("low_24h"),
        "high_52_w": ticker.get("high_24h"),
        "price_percent_chg_24_h": _change(ticker),
        "best_bid": ticker.get("best_bid"),
        "best_bid_quantity": ticker.get("best_bid_size"),
        "best_ask": ticker.get("best_ask"),
        "best_ask_quantity": ticker.get("best_ask_size"),
    }
    return {k: v for k, v in item.items() if v is not None}


def _change(ticker: dict[str, Any]) -> str | None:
    try:
        opened, price = float(ticker["open_24h"]), float(ticker["price"])
    except (KeyError, TypeError, ValueError):
        return None
    return f"{(price / opened - 1) * 100:.8f}" if opened else None


def trade_item(match: dict[str, Any]) -> dict[str, Any]:
    """An Exchange ``match`` frame as an Advanced Trade market trade."""
    return {
        "trade_id": str(match["trade_id"]),
        "product_id": match["product_id"],
        "price": match["price"],
        "size": match["size"],
        "side": str(match["side"]).upper(),
        "time": match["time"],
    }


def l2_updates(ticker: dict[str, Any], event_time: str) -> list[dict[str, Any]]:
    """The best bid and offer of an Exchange ticker as level2 updates (the simulated book is its
    top level)."""
    updates = []
    for side, price, size in (
        ("bid", "best_bid", "best_bid_size"),
        ("offer", "best_ask", "best_ask_size"),
    ):
        if ticker.get(price) is not None:
            updates.append(
                {
                    "side": side,
                    "event_time": event_time,
                    "price_level": ticker[price],
                    "new_quantity": ticker.get(size) or "1",
                }
            )
    return updates


def status_products(products: Iterable[str]) -> list[dict[str, Any]]:
    return [
        {
            "product_type": "SPOT",
            "id": p,
            "base_currency": p.split("-")[0],
            "quote_currency": p.split("-")[1],
            "base_increment": "0.00000001",
            "quote_increment": "0.01",
            "display_name": p.replace("-", "/"),
            "status": "online",
            "status_message": "",
            "min_market_funds": "1",
        }
        for p in products
    ]
