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

A product is never silenced for ever by one bad id: the highest id is **re-baselined** (moved to a
new id, reported as a :class:`Rebaseline` for the caller to log and count) when

- the first id of a product on a new connection (:meth:`TradeIds.reconnected`) is below it (the
  feed's numbering moved back);
- ``rebaseline_after`` consecutive ids, increasing among themselves, are below it (the highest id
  was an outlier, or the numbering restarted);
- an id jumps above it by more than ``max_jump``: no gap of that size is reported, the id becomes
  the new baseline (and if it was an outlier, the ids that follow re-baseline back).

Frames whose ids are below the highest id before a re-baseline are dropped as out of order.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["ACCEPT", "DUPLICATE", "OUT_OF_ORDER", "Gap", "Rebaseline", "TradeIds"]

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


@dataclass(frozen=True, slots=True)
class Rebaseline:
    """``product_id``'s highest trade id moved from ``old`` to ``new`` without a gap: after a
    ``reconnect``, a run of ids ``below`` it, or a ``jump`` too large to be trades missed;
    ``dropped`` frames of the run were dropped as out of order before it."""

    product_id: str
    old: int
    new: int
    reason: str
    dropped: int = 0


class TradeIds:
    """The trade ids seen on one stream (tickers or matches), per product."""

    __slots__ = (
        "_fresh",
        "_pending",
        "_runs",
        "gap_products",
        "gaps",
        "last_ids",
        "max_jump",
        "rebaseline_after",
        "rebaselines",
    )

    def __init__(
        self,
        gap_products: frozenset[str] = frozenset(),
        *,
        rebaseline_after: int = 3,
        max_jump: int = 1_000_000_000,
    ) -> None:
        self.gap_products = gap_products
        """Products whose gaps this stream reports (others are only de-duplicated)."""
        self.rebaseline_after = rebaseline_after
        self.max_jump = max_jump
        self.rebaselines: list[Rebaseline] = []
        """Re-baselines not yet taken by the caller (see :meth:`take_rebaselines`)."""
        self._runs: dict[str, tuple[int, int, int]] = {}
        """Per product, the run of ids below the highest: (highest id when the run began, its
        length, its last id). Stale once the highest id moved (the run was not consecutive)."""
        self._fresh: dict[str, int] = {}
        """Per product, its highest id when the connection was reopened; valid for the first id
        that reaches :meth:`observe` only while the highest id is still that."""
        self.last_ids: dict[str, int] = {}
        """The highest trade id seen, per product (read and advanced inline by the source's hot
        path for the common case of the next id)."""
        self._pending: dict[str, int] = {}
        self.gaps: list[Gap] = []
        """Gaps found and not yet taken by the caller (see :meth:`take_gaps`)."""

    def last(self, product_id: str) -> int | None:
        """The highest trade id seen for ``product_id``."""
        return self.last_ids.get(product_id)

    def reconnected(self) -> None:
        """A new connection: each product's first id may re-baseline it if it is lower."""
        self._fresh = dict(self.last_ids)

    def observe(self, product_id: str, trade_id: int) -> int:
        """Account for a frame carrying ``trade_id``: ACCEPT, DUPLICATE or OUT_OF_ORDER."""
        last = self.last_ids.get(product_id)
        if last is None or trade_id == last + 1:
            self.last_ids[product_id] = trade_id
            return ACCEPT
        first_since_reconnect = self._fresh.pop(product_id, None) == last if self._fresh else False
        if trade_id > last:
            if trade_id - last > self.max_jump:
                self._rebaseline(product_id, last, trade_id, "jump")
                return ACCEPT
            self.last_ids[product_id] = trade_id
            if product_id in self.gap_products:
                self.gaps.append(Gap(product_id, last + 1, trade_id - 1))
            return ACCEPT
        if trade_id == last:
            return DUPLICATE
        if first_since_reconnect:
            self._rebaseline(product_id, last, trade_id, "reconnect")
            return ACCEPT
        run = self._runs.get(product_id)
        length = run[1] + 1 if run is not None and run[0] == last and trade_id > run[2] else 1
        if length >= self.rebaseline_after:
            self._rebaseline(product_id, last, trade_id, "below", dropped=length - 1)
            return ACCEPT
        self._runs[product_id] = (last, length, trade_id)
        return OUT_OF_ORDER

    def _rebaseline(
        self, product_id: str, old: int, new: int, reason: str, dropped: int = 0
    ) -> None:
        self.last_ids[product_id] = new
        self._runs.pop(product_id, None)
        self._pending.pop(product_id, None)
        self.rebaselines.append(Rebaseline(product_id, old, new, reason, dropped))

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
        if last < last_trade_id <= last + self.max_jump:  # a farther id is not trades missed
            self._pending[product_id] = last_trade_id

    def take_gaps(self) -> list[Gap]:
        gaps, self.gaps = self.gaps, []
        return gaps

    def take_rebaselines(self) -> list[Rebaseline]:
        rebaselines, self.rebaselines = self.rebaselines, []
        return rebaselines
