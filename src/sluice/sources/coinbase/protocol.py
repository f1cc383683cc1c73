"""The Coinbase Exchange websocket protocol: typed message specs and the subscribe request.

Every frame is one JSON object with a ``type``. The specs below say what each type must carry; a
frame that does not match its spec is rejected with msgspec's reason (field and path). Coinbase adds
fields over time, so unknown fields are accepted; it may add message types too, which clients are
asked to ignore: :func:`classify` tells an unknown type apart from a malformed frame.

Prices and sizes are decimal strings and stay strings: the record keeps the frame's exact bytes, so
no digit is lost; a sink converts them when its column type asks for it. ``time`` is RFC 3339 UTC
with microseconds and is decoded to an aware ``datetime``.

Whatever its bytes, a frame is either decoded or refused with a reason, never an exception that
could stop the source: :func:`classify` names why decoding failed (not JSON, not UTF-8, nested too
deeply, not the spec), and :func:`screen` refuses what the spec's types let through: bytes that are
not UTF-8 inside fields the spec skips, and decimal fields that are not finite (``NaN``,
``Infinity``); :func:`plain_batch` tells, for a whole batch at once, which frames need it. Trade ids and sequences must fit a signed 64-bit integer (Coinbase's own type), so
that no column and no consumer receives a wrapped value.
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Literal

import msgspec
import orjson

from sluice.records import one_line  # the source's frame step uses it from here
from sluice.sources.coinbase.book_protocol import BOOK_TYPES, BookMessage

__all__ = [
    "DECIMAL_FIELDS",
    "KNOWN_TYPES",
    "MAX_DEPTH",
    "MAX_ID",
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
    "may_be_non_finite",
    "may_hold_decimals",
    "nan_free",
    "non_finite_decimal",
    "one_line",
    "plain_batch",
    "screen",
    "subscribe_request",
]

Side = Literal["buy", "sell"]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
"""RFC 3339 with a zone (Coinbase sends UTC, ``Z``); a time without one is rejected."""
MAX_ID = 2**63 - 1
MAX_DEPTH = 1024
"""Deepest nesting of arrays and objects a frame may have (orjson's limit, which every JSON
reader here after the source must meet)."""
Id = Annotated[int, msgspec.Meta(ge=0, le=MAX_ID)]
"""A trade id or sequence: 0 to 2^63 - 1 (Coinbase's int64); beyond it the frame is refused."""


class Ticker(msgspec.Struct, tag="ticker", tag_field="type"):
    """The ``ticker`` and ``ticker_batch`` channels: the latest trade and the 24 h summary."""

    product_id: str
    sequence: Id
    time: UtcTime
    trade_id: Id
    price: str  # from here on text fields only: see _TEXT_FIELDS
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
    sequence: Id
    last_trade_id: Id
    time: UtcTime


class Match(msgspec.Struct, tag="match", tag_field="type"):
    """The ``matches`` channel: one trade."""

    product_id: str
    trade_id: Id
    sequence: Id
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


Message = Ticker | Heartbeat | Match | LastMatch | Subscriptions | Error | Status | BookMessage

KNOWN_TYPES = (
    frozenset({"ticker", "heartbeat", "match", "last_match", "subscriptions", "error", "status"})
    | BOOK_TYPES
)

_decoder = msgspec.json.Decoder(Message)
decode = _decoder.decode
"""Decode one frame to its spec; raises ``msgspec.ValidationError`` / ``DecodeError``."""


DECIMAL_FIELDS: dict[type, tuple[str, ...]] = {
    Ticker: (
        "price",
        "last_size",
        "open_24h",
        "volume_24h",
        "low_24h",
        "high_24h",
        "volume_30d",
        "best_bid",
        "best_ask",
        "best_bid_size",
        "best_ask_size",
    ),
    Match: ("size", "price"),
    LastMatch: ("size", "price"),
}
"""The fields of each spec that carry decimal numbers as text."""


class _TypeOnly(msgspec.Struct):
    type: str


_type_decoder = msgspec.json.Decoder(_TypeOnly)


def classify(frame: bytes, error: BaseException) -> str | None:
    """Why a frame that failed :func:`decode` failed: ``None`` for a well-formed frame of a type
    this source does not know (to be skipped), else the reason it is malformed.

    Takes any exception :func:`decode` raised (msgspec's errors, ``UnicodeDecodeError`` for a
    string that is not UTF-8, ``RecursionError`` for nesting deeper than the interpreter's stack)
    and never raises itself.
    """
    if isinstance(error, RecursionError):
        return "nested too deeply to decode (JSON arrays or objects inside each other)"
    if isinstance(error, UnicodeDecodeError):
        return f"not valid UTF-8: {error}"
    if isinstance(error, msgspec.ValidationError):
        try:
            type_ = _type_decoder.decode(frame).type
        except (ValueError, RecursionError):  # msgspec's errors and UnicodeDecodeError
            pass
        else:
            if type_ not in KNOWN_TYPES:
                return None
        return f"does not match the Coinbase message spec: {error}"
    if isinstance(error, msgspec.DecodeError):
        return f"not valid JSON: {error}"
    return f"cannot be decoded: {type(error).__name__}: {error}"


def screen(frame: bytes, message: object) -> str | None:
    """Why a frame that :func:`decode` accepted must still be refused, or None.

    msgspec does not look inside the fields a spec skips, so a frame may carry bytes that are not
    UTF-8 there, an escaped lone surrogate (``"\\ud800"``), or nesting deeper than
    ``MAX_DEPTH``, which other JSON readers (orjson, which :attr:`sluice.records.Record.data` and
    the dead letters use; ClickHouse) refuse; and a decimal field is text to the spec, so
    ``"NaN"`` or ``"-Infinity"`` would pass it. The caller may skip it when
    :func:`suspect` is false.
    """
    if (
        not frame.isascii()
        or 92 in frame  # a backslash, as an int: see records.one_line
        or (len(frame) > 2 * MAX_DEPTH and frame.count(b"[") + frame.count(b"{") > MAX_DEPTH)
    ):
        try:
            orjson.loads(frame)
        except orjson.JSONDecodeError as exc:
            return f"not valid JSON text: {exc}"
    for name in DECIMAL_FIELDS.get(type(message), ()):
        value = getattr(message, name)
        if value is not None and (reason := non_finite_decimal(name, value)) is not None:
            return reason
    return None


def non_finite_decimal(name: str, value: str) -> str | None:
    """Why decimal field ``name`` is refused when ``value`` reads as NaN or an infinity, else
    None; text that is not a number at all passes (the sink that converts it judges it)."""
    try:
        number = Decimal(value)
    except (InvalidOperation, ValueError):
        return None
    if number.is_finite():
        return None
    return f"{name} is not a finite number: {value[:40]!r}"


_TEXT_FIELDS: dict[type[msgspec.Struct], slice] = {
    Ticker: slice(Ticker.__struct_fields__.index("price"), None),
    Match: slice(Match.__struct_fields__.index("side"), Match.__struct_fields__.index("time")),
}
_TEXT_FIELDS[LastMatch] = _TEXT_FIELDS[Match]
"""Per spec, the run of fields that holds its decimal fields and otherwise only ``side``."""
for _spec, _part in _TEXT_FIELDS.items():
    assert set(_spec.__struct_fields__[_part]) == {*DECIMAL_FIELDS[_spec], "side"}, _spec

_astuple = msgspec.structs.astuple


def may_be_non_finite(message: object) -> bool:
    """Whether a decimal field of ``message`` may be non-finite: every spelling of NaN and of
    infinity has an ``n`` or an ``N``, which no decimal number and no ``side`` has. About 0.2 us
    for a ticker (a pattern per field would cost 4 us)."""
    part = _TEXT_FIELDS.get(type(message))  # type: ignore[arg-type]
    if part is None:
        return False
    text = "".join(filter(None, _astuple(message)[part]))  # type: ignore[arg-type]
    return "n" in text or "N" in text


def suspect(frame: bytes, message: object) -> bool:
    """Whether :func:`screen` could refuse ``frame`` (decoded to ``message``): a non-ASCII byte,
    an escape (which could spell a letter), a line break, a length that leaves room for too deep
    a nesting, or a decimal field that may not be finite. The source runs these tests over a
    whole batch first (:func:`plain_batch`) and frame by frame only when the batch fails them;
    it looks for ints, not bytes (``92 in frame`` is one memchr, a one-byte bytes needle is
    not)."""
    return (
        not frame.isascii()
        or 92 in frame  # a backslash
        or 10 in frame
        or 13 in frame
        or len(frame) > 2 * MAX_DEPTH
        or may_be_non_finite(message)
    )


def _required_n(spec: type[msgspec.Struct]) -> int:
    """How many lowercase ``n`` the keys of ``spec``'s required fields spell (in a frame
    decoded to it, each such key is there, in plain text when the frame has no escape)."""
    return sum(f.encode_name.count("n") for f in msgspec.structs.fields(spec) if f.required)


PLAIN_MAX_N = 1 + min(_required_n(spec) for spec in DECIMAL_FIELDS)
"""A frame decoded to a spec with decimal fields, with no escape, no ``N``, ``f`` or ``F``, and at
most this many lowercase ``n``, has no non-finite decimal: every spelling ``Decimal`` reads as
one has an ``f`` or ``F`` (infinity), an ``N``, or two lowercase ``n`` (nan, snan, with
underscores anywhere), and the keys of the spec's required fields, which the frame has, already
spell ``PLAIN_MAX_N - 1`` of them (``sequence``): two more would pass the count."""


def plain_batch(blob: bytes, longest: int) -> tuple[bool, bool]:
    """For the frames joined in ``blob`` (the longest ``longest`` bytes): whether every one is
    plain, so that :func:`screen` can only refuse a non-finite decimal (ASCII, no escape, no line
    break, too short to nest too deeply); and whether one has an ``N``, ``f`` or ``F``, a letter
    of a non-finite decimal (when none has, a plain frame needs no closer look than its count of
    ``n``: see ``PLAIN_MAX_N``). A few ``memchr`` over the batch: about 0.1 us a frame, against
    about 0.3 us for the same tests frame by frame."""
    plain = (
        longest <= 2 * MAX_DEPTH
        and blob.isascii()
        and 92 not in blob  # a backslash
        and 10 not in blob
        and 13 not in blob
    )
    return plain, (78 in blob or 102 in blob or 70 in blob)  # N, f, F


def _has_k(spec: type[msgspec.Struct]) -> bool:
    names = [str(spec.__struct_config__.tag)]
    names += [f.encode_name for f in msgspec.structs.fields(spec) if f.required]
    return any("k" in name for name in names)


assert all(_has_k(spec) for spec in _TEXT_FIELDS), "see may_hold_decimals"


def may_hold_decimals(blob: bytes) -> bool:
    """Whether the frames joined in ``blob`` may hold one decoded to a spec with decimal fields
    (those :func:`screen` may refuse as not finite): such a frame, without an escape, has a
    lowercase ``k`` in plain text, in its tag (``ticker``) or a required key (``maker_order_id``).
    When none has, no frame needs its ``n`` counted (an ``l2update``-only batch has no ``k``):
    one ``memchr``, where the count costs a numpy pass or a byte loop."""
    return 107 in blob  # k


def nan_free(blob: bytes) -> bool:
    """Whether no lowercase ``n`` in ``blob`` is followed by ``a`` or ``A``, or by ``_`` and
    then ``a``, ``A`` or ``_``: then the frames joined in it, when :func:`plain_batch` found them
    plain and without ``N``, ``f`` or ``F``, hold no non-finite decimal. Every spelling
    ``Decimal`` reads as infinity has an ``f`` or ``F``, and one of NaN without ``N`` is
    ``nan``/``snan`` with lowercase ``n`` and an ``a`` or ``A`` next after the first ``n`` once
    underscores are dropped (``Decimal`` drops them anywhere; ``open_24h`` is an ``n`` and an
    ``_`` followed by a digit); a plain frame has no escape, so a string's bytes are its text.
    One vectorised pass (numpy, imported on first use), where counting each frame's ``n``
    (``frame.count(110)``) costs about 2,000 CPU instructions a ticker and needs each frame's
    length."""
    import numpy as np

    if 110 in blob[-2:]:  # too near the end to look two bytes on (a frame ends with a brace)
        return False
    codes = np.frombuffer(blob, np.uint8)
    at = np.flatnonzero(codes[:-2] == 110)
    after, then = codes[at + 1] | 32, codes[at + 2] | 32  # A -> a, _ -> DEL (127)
    return not bool(((after == 97) | ((after == 127) & ((then == 97) | (then == 127)))).any())


def subscribe_request(subscription: dict[str, list[str]]) -> bytes:
    """The ``subscribe`` message for channel name -> product ids (empty for ``status``)."""
    channels: list[dict[str, object]] = []
    for name, products in subscription.items():
        channels.append({"name": name, "product_ids": products} if products else {"name": name})
    return msgspec.json.encode({"type": "subscribe", "channels": channels})
