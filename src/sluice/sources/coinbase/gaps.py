"""Following trade ids per product: duplicates, out-of-order frames and gaps.

Coinbase numbers the trades of each product with consecutive ``trade_id``s. A ``match`` carries
one trade; a ``ticker`` the latest trade (Coinbase may fold a cascade of matches into one ticker);
a ``heartbeat`` the latest trade id on the exchange, once a second.

For each product, a :class:`TradeIds` keeps the highest id seen. A frame with an id not above it is
a duplicate (equal) or out of order (smaller) and is dropped. On a product whose gaps are tracked,
an id more than one above it is a gap: the ids in between were missed. A heartbeat whose
``last_trade_id`` is above it says trades happened that did not arrive; because a heartbeat can
overtake frames of another channel, such a gap is reported only if the next heartbeat of that
product still finds those trades missing. The state outlives a connection, so trades lost during a
reconnect show up as a gap once the new connection delivers its first trade or heartbeats.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCEPT", "DUPLICATE", "OUT_OF_ORDER", "Gap", "TradeIds"]

ACCEPT = 0
DUPLICATE = 1
OUT_OF_ORDER = 2


@dataclass(frozen=True, slots=True)
class Gap:
    """Trade ids ``first``..``last`` (inclusive) of ``product_id`` were missed."""

    product_id: str
    first: int
    last: int

    @property
    def missed(self) -> int:
        return self.last - self.first + 1


class TradeIds:
    """The trade ids seen on one stream (tickers or matches), per product."""

    __slots__ = ("_pending", "gap_products", "gaps", "last_ids")

    def __init__(self, gap_products: frozenset[str] = frozenset()) -> None:
        self.gap_products = gap_products
        """Products whose gaps this stream reports (others are only de-duplicated)."""
        self.last_ids: dict[str, int] = {}
        """The highest trade id seen, per product (read and advanced inline by the source's hot
        path for the common case of the next id)."""
        self._pending: dict[str, int] = {}
        self.gaps: list[Gap] = []
        """Gaps found and not yet taken by the caller (see :meth:`take_gaps`)."""

    def last(self, product_id: str) -> int | None:
        """The highest trade id seen for ``product_id``."""
        return self.last_ids.get(product_id)

    def observe(self, product_id: str, trade_id: int) -> int:
        """Account for a frame carrying ``trade_id``: ACCEPT, DUPLICATE or OUT_OF_ORDER."""
        last = self.last_ids.get(product_id)
        if last is None or trade_id == last + 1:
            self.last_ids[product_id] = trade_id
            return ACCEPT
        if trade_id > last:
            self.last_ids[product_id] = trade_id
            if product_id in self.gap_products:
                self.gaps.append(Gap(product_id, last + 1, trade_id - 1))
            return ACCEPT
        return DUPLICATE if trade_id == last else OUT_OF_ORDER

    def heartbeat(self, product_id: str, last_trade_id: int) -> None:
        """Account for a heartbeat: the exchange's latest trade id of ``product_id``."""
        if product_id not in self.gap_products:
            return
        last = self.last_ids.get(product_id)
        if last is None:
            return  # nothing seen yet: the first trade sets the baseline
        pending = self._pending.pop(product_id, None)
        if pending is not None and pending > last:
            self.gaps.append(Gap(product_id, last + 1, pending))
            self.last_ids[product_id] = last = pending
        if last_trade_id > last:
            self._pending[product_id] = last_trade_id

    def take_gaps(self) -> list[Gap]:
        gaps, self.gaps = self.gaps, []
        return gaps
