"""The Coinbase Exchange websocket protocol: typed message specs and the subscribe request.

Every frame is one JSON object with a ``type``. The specs below say what each type must carry; a
frame that does not match its spec is rejected with msgspec's reason (field and path). Coinbase adds
fields over time, so unknown fields are accepted; it may add message types too, which clients are
asked to ignore: :func:`classify` tells an unknown type apart from a malformed frame.

Prices and sizes are decimal strings and stay strings: the record keeps the frame's exact bytes, so
no digit is lost; a sink converts them when its column type asks for it. ``time`` is RFC 3339 UTC
with microseconds and is decoded to an aware ``datetime``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "KNOWN_TYPES",
    "Error",
    "Heartbeat",
    "Match",
    "Message",
    "Status",
    "SubscribedChannel",
    "Subscriptions",
    "Ticker",
    "classify",
    "decode",
    "subscribe_request",
]

Side = Literal["buy", "sell"]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""RFC 3339 with a zone (Coinbase sends UTC, ``Z``); a time without one is rejected."""


class Ticker(msgspec.Struct, tag="ticker", tag_field="type"):
    """The ``ticker`` and ``ticker_batch`` channels: the latest trade and the 24 h summary."""

    product_id: str
    sequence: int
    price: str
    time: UtcTime
    trade_id: int
    side: Side | None = None
    last_size: str | None = None
    open_24h: str | None = None
    volume_24h: str | None = None
    low_24h: str | None = None
    high_24h: str | None = None
    volume_30d: str | None = None
    best_bid: str | None = None
    best_ask: str | None = None
    best_bid_size: str | None = None
    """Absent before late 2022."""
    best_ask_size: str | None = None
    """Absent before late 2022."""


class Heartbeat(msgspec.Struct, tag="heartbeat", tag_field="type"):
    """Once a second per product: the latest trade id, to check that none was missed."""

    product_id: str
    sequence: int
    last_trade_id: int
    time: UtcTime


class Match(msgspec.Struct, tag="match", tag_field="type"):
    """The ``matches`` channel: one trade."""

    product_id: str
    trade_id: int
    sequence: int
    maker_order_id: str
    taker_order_id: str
    side: Side
    size: str
    price: str
    time: UtcTime


class LastMatch(Match, tag="last_match"):
    """The most recent trade, sent once per product after subscribing to ``matches``."""


class SubscribedChannel(msgspec.Struct):
    name: str
    product_ids: list[str] = []


class Subscriptions(msgspec.Struct, tag="subscriptions", tag_field="type"):
    """The reply to a subscribe request: every channel now subscribed."""

    channels: list[SubscribedChannel]


class Error(msgspec.Struct, tag="error", tag_field="type"):
    """Coinbase's report of a failure (a refused subscription, a slow consumer...)."""

    message: str
    reason: str | None = None


class Status(msgspec.Struct, tag="status", tag_field="type"):
    """The ``status`` channel: every product and currency, on an interval."""

    products: list[dict[str, object]]
    currencies: list[dict[str, object]]


Message = Ticker | Heartbeat | Match | LastMatch | Subscriptions | Error | Status

KNOWN_TYPES = frozenset(
    {"ticker", "heartbeat", "match", "last_match", "subscriptions", "error", "status"}
)

_decoder = msgspec.json.Decoder(Message)
decode = _decoder.decode
"""Decode one frame to its spec; raises ``msgspec.ValidationError`` / ``DecodeError``."""


class _TypeOnly(msgspec.Struct):
    type: str


_type_decoder = msgspec.json.Decoder(_TypeOnly)


def classify(frame: bytes, error: msgspec.MsgspecError) -> str | None:
    """Why a frame that failed :func:`decode` failed: ``None`` for a well-formed frame of a type
    this source does not know (to be skipped), else the reason it is malformed."""
    if isinstance(error, msgspec.ValidationError):
        try:
            type_ = _type_decoder.decode(frame).type
        except msgspec.MsgspecError:
            pass
        else:
            if type_ not in KNOWN_TYPES:
                return None
        return f"does not match the Coinbase message spec: {error}"
    return f"not valid JSON: {error}"


def subscribe_request(subscription: dict[str, list[str]]) -> bytes:
    """The ``subscribe`` message for channel name -> product ids (empty for ``status``)."""
    channels: list[dict[str, object]] = []
    for name, products in subscription.items():
        channels.append({"name": name, "product_ids": products} if products else {"name": name})
    return msgspec.json.encode({"type": "subscribe", "channels": channels})
