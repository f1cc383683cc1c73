"""The Exchange's order-book messages: ``level2``/``level2_batch`` (``snapshot``, ``l2update``)
and the ``full`` channel (``received``, ``open``, ``done``, ``change``; its trades are ``match``
messages, decoded by :class:`~sluice.sources.coinbase.protocol.Match`). ``activate`` (a stop order
triggered; no sequence) is not read: it is skipped and counted as an unknown type.

Part of the source's one tagged union (:data:`sluice.sources.coinbase.protocol.Message`), so a
frame is decoded once whatever its type. Prices and sizes stay text; the book
(:mod:`.books`) reads them as numbers and refuses what is not a plain decimal.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

import msgspec

__all__ = [
    "BOOK_TYPES",
    "FULL_TYPES",
    "BookMessage",
    "Change",
    "Done",
    "L2Snapshot",
    "L2Update",
    "Open",
    "Received",
]

Side = Literal["buy", "sell"]
UtcTime = Annotated[datetime, msgspec.Meta(tz=True)]
Sequence = Annotated[int, msgspec.Meta(ge=0, le=2**63 - 1)]


class L2Snapshot(msgspec.Struct, tag="snapshot", tag_field="type"):
    """A product's whole level-2 book, sent once after subscribing to ``level2``."""

    product_id: str
    bids: list[tuple[str, str]]
    asks: list[tuple[str, str]]
    time: UtcTime | None = None
    """Sent by the Exchange since 2023; absent before."""


class L2Update(msgspec.Struct, tag="l2update", tag_field="type"):
    """Changed levels: each ``[side, price, new size]``; size ``0`` removes the level."""

    product_id: str
    time: UtcTime
    changes: list[tuple[Side, str, str]]


class Received(msgspec.Struct, tag="received", tag_field="type"):
    """``full``: an order was received by the matching engine."""

    product_id: str
    sequence: Sequence
    time: UtcTime
    order_id: str
    side: Side
    order_type: str | None = None
    size: str | None = None
    price: str | None = None
    funds: str | None = None


class Open(msgspec.Struct, tag="open", tag_field="type"):
    """``full``: the rest of an order is now on the book."""

    product_id: str
    sequence: Sequence
    time: UtcTime
    order_id: str
    side: Side
    price: str | None = None
    remaining_size: str | None = None


class Done(msgspec.Struct, tag="done", tag_field="type"):
    """``full``: an order left the book (filled or canceled)."""

    product_id: str
    sequence: Sequence
    time: UtcTime
    order_id: str
    side: Side
    reason: str | None = None
    price: str | None = None
    remaining_size: str | None = None


class Change(msgspec.Struct, tag="change", tag_field="type"):
    """``full``: an order's size or funds changed (self-trade prevention, a modify)."""

    product_id: str
    sequence: Sequence
    time: UtcTime
    order_id: str
    side: Side
    price: str | None = None
    new_size: str | None = None
    old_size: str | None = None


BookMessage = L2Snapshot | L2Update | Received | Open | Done | Change

FULL_TYPES = (Received, Open, Done, Change)
"""``full`` messages with a ``sequence`` (with :class:`~.protocol.Match`)."""

BOOK_TYPES = frozenset({"snapshot", "l2update", "received", "open", "done", "change"})
