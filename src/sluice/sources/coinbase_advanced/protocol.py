"""The Coinbase Advanced Trade websocket protocol: typed message specs and the subscribe request.

Every message is one JSON object: an envelope (``channel``, ``client_id``, ``timestamp``,
``sequence_num``) around ``events``, each event a ``snapshot`` or an ``update``. The channel tags
the envelope (``level2`` arrives as ``l2_data``); an error is ``{"type": "error", "message": ...}``
with no channel. Unknown fields are accepted (Coinbase adds fields over time); an unknown channel
is skipped, as Coinbase asks of clients; anything else that does not match its spec is refused
with msgspec's reason (field and path).

``sequence_num`` counts every message sent on one connection, from 0, across channels: a missing
number is a missed message. ``heartbeat_counter`` counts the heartbeats of a connection (sent as a
string of digits; a number is accepted as well).

Prices and sizes are decimal strings and stay strings; a decimal field that is not a finite number
(``NaN``, ``Infinity``) refuses its message (:func:`non_finite`).
"""

from __future__ import annotations

from datetime import datetime
from operator import attrgetter
from typing import Annotated, Literal

import msgspec

from sluice.sources.coinbase.protocol import non_finite_decimal

__all__ = [
    "KNOWN_CHANNELS",
    "Candles",
    "Error",
    "Heartbeats",
    "Level2",
    "MarketTrades",
    "Message",
    "Status",
    "Subscriptions",
    "TickerBatch",
    "Tickers",
    "classify",
    "decode",
    "decode_error",
    "non_finite",
    "refusal",
    "subscribe_request",
]

UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
MAX_ID = 2**63 - 1
Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
EventType = Literal["snapshot", "update"]


class _Envelope(msgspec.Struct, tag_field="channel", kw_only=True):
    timestamp: UtcTime
    sequence_num: Id
    client_id: str = ""


class TickerItem(msgspec.Struct):
    product_id: str
    price: str
    type: str = "ticker"
    volume_24_h: str | None = None
    low_24_h: str | None = None
    high_24_h: str | None = None
    low_52_w: str | None = None
    high_52_w: str | None = None
    price_percent_chg_24_h: str | None = None
    best_bid: str | None = None
    best_bid_quantity: str | None = None
    best_ask: str | None = None
    best_ask_quantity: str | None = None


class TickerEvent(msgspec.Struct):
    type: EventType
    tickers: list[TickerItem]


class Tickers(_Envelope, tag="ticker"):
    events: list[TickerEvent]


class TickerBatch(_Envelope, tag="ticker_batch"):
    events: list[TickerEvent]


class Trade(msgspec.Struct):
    trade_id: str
    product_id: str
    price: str
    size: str
    side: Literal["BUY", "SELL"]
    time: UtcTime


class TradesEvent(msgspec.Struct):
    type: EventType
    trades: list[Trade]


class MarketTrades(_Envelope, tag="market_trades"):
    events: list[TradesEvent]


class L2Update(msgspec.Struct):
    side: Literal["bid", "offer"]
    event_time: UtcTime
    price_level: str
    new_quantity: str


class L2Event(msgspec.Struct):
    type: EventType
    product_id: str
    updates: list[L2Update]


class Level2(_Envelope, tag="l2_data"):
    events: list[L2Event]


class Candle(msgspec.Struct):
    start: Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,10}$")]
    """Unix seconds, as text (up to 10 digits: until the year 2286)."""
    high: str
    low: str
    open: str
    close: str
    volume: str
    product_id: str


class CandlesEvent(msgspec.Struct):
    type: EventType
    candles: list[Candle]


class Candles(_Envelope, tag="candles"):
    events: list[CandlesEvent]


class HeartbeatEvent(msgspec.Struct):
    current_time: str
    heartbeat_counter: Id | Annotated[str, msgspec.Meta(pattern=r"^[0-9]{1,18}$")]

    @property
    def counter(self) -> int:
        return int(self.heartbeat_counter)


class Heartbeats(_Envelope, tag="heartbeats"):
    events: list[HeartbeatEvent]


class StatusEvent(msgspec.Struct):
    type: EventType
    products: list[dict[str, object]]


class Status(_Envelope, tag="status"):
    events: list[StatusEvent]


class SubscriptionsEvent(msgspec.Struct):
    subscriptions: dict[str, list[str]]


class Subscriptions(_Envelope, tag="subscriptions"):
    events: list[SubscriptionsEvent]


class Error(msgspec.Struct):
    """Coinbase's report of a failure (``authentication failure``, a refused subscribe...)."""

    type: Literal["error"]
    message: str
    reason: str | None = None


Message = (
    Tickers | TickerBatch | MarketTrades | Level2 | Candles | Heartbeats | Status | Subscriptions
)

KNOWN_CHANNELS = frozenset(
    {
        "ticker",
        "ticker_batch",
        "market_trades",
        "l2_data",
        "candles",
        "heartbeats",
        "status",
        "subscriptions",
    }
)

decode = msgspec.json.Decoder(Message).decode
"""Decode one message to its spec; raises ``msgspec.ValidationError`` / ``DecodeError``."""
decode_error = msgspec.json.Decoder(Error).decode


class _Head(msgspec.Struct):
    channel: str | None = None
    type: str | None = None


_head = msgspec.json.Decoder(_Head).decode


def classify(frame: bytes, error: BaseException) -> str | None:
    """Why a frame that failed :func:`decode` failed: None for a well-formed message of a channel
    this source does not know (to be skipped), else the reason. Never raises."""
    if isinstance(error, RecursionError):
        return "nested too deeply to decode (JSON arrays or objects inside each other)"
    if isinstance(error, UnicodeDecodeError):
        return f"not valid UTF-8: {error}"
    if isinstance(error, msgspec.ValidationError):
        try:
            head = _head(frame)
        except (ValueError, RecursionError):
            pass
        else:
            if head.channel is not None and head.channel not in KNOWN_CHANNELS:
                return None
        return f"does not match the Coinbase Advanced Trade message spec: {error}"
    if isinstance(error, msgspec.DecodeError):
        return f"not valid JSON: {error}"
    return f"cannot be decoded: {type(error).__name__}: {error}"


_DECIMALS: dict[type, tuple[str, ...]] = {
    TickerItem: (
        "price",
        "volume_24_h",
        "low_24_h",
        "high_24_h",
        "low_52_w",
        "high_52_w",
        "price_percent_chg_24_h",
        "best_bid",
        "best_bid_quantity",
        "best_ask",
        "best_ask_quantity",
    ),
    Trade: ("price", "size"),
    L2Update: ("price_level", "new_quantity"),
    Candle: ("high", "low", "open", "close", "volume"),
}


_DECIMAL_VALUES = {spec: attrgetter(*names) for spec, names in _DECIMALS.items()}
_ITEMS = {
    Tickers: attrgetter("tickers"),
    TickerBatch: attrgetter("tickers"),
    MarketTrades: attrgetter("trades"),
    Level2: attrgetter("updates"),
    Candles: attrgetter("candles"),
}
"""Per message spec, the list of items of an event that carry decimal fields."""


def non_finite(item: msgspec.Struct) -> str | None:
    """The reason an item's decimal field is refused (not a finite number), or None. Only when
    the item's decimal text has an ``n`` or ``N`` (every spelling of NaN and infinity has one) are
    its fields parsed: one C-level look per item otherwise."""
    values = _DECIMAL_VALUES[type(item)](item)
    text = "".join(filter(None, values))
    if "n" not in text and "N" not in text:
        return None
    for name, value in zip(_DECIMALS[type(item)], values, strict=True):
        if value is None or ("n" not in value and "N" not in value):
            continue
        reason = non_finite_decimal(name, value)
        if reason is not None:
            return reason
    return None


def refusal(message: Message) -> str | None:
    """Why a decoded message must still be refused (a non-finite decimal in an item), or None."""
    items = _ITEMS.get(type(message))
    if items is None:
        return None
    for event in message.events:
        for item in items(event):
            reason = non_finite(item)
            if reason is not None:
                return reason
    return None


def subscribe_request(channel: str, products: list[str], jwt: str | None) -> bytes:
    """The ``subscribe`` message for one channel (Advanced Trade takes one channel a message)."""
    message: dict[str, object] = {"type": "subscribe", "channel": channel}
    if channel != "heartbeats":
        message["product_ids"] = products
    if jwt is not None:
        message["jwt"] = jwt
    return msgspec.json.encode(message)
