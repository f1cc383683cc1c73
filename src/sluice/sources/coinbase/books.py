"""Order books from the Exchange feed: each product's level-2 book, checked after every update,
and the ``full`` channel's sequence numbers.

- ``level2`` / ``level2_batch``: a ``snapshot`` sets a product's book, each ``l2update`` changes
  levels (size ``0`` removes one). Every level that arrives becomes one ``level2`` record (a row of
  the shipped ``coinbase_level2`` table: product, time, side, price, size, and ``snapshot`` 1 for
  the rows of a snapshot). After each update the book is checked: it must not be crossed (best bid
  below best ask) and no size may be negative; an update before the product's snapshot, or one that
  cannot be read, also leaves the book unknown.
- ``full``: every message of a product carries the product's next ``sequence``; a number skipped
  is a gap (the messages in between were missed), a number not above the last is dropped.

Either way the product is **resynchronised**: the source unsubscribes and subscribes it again on
that channel (a fresh snapshot follows on ``level2``), emits a ``gap`` record saying why, and
counts it (``sluice_source_gaps``; missed sequence numbers in ``sluice_source_missed_events``).
Until the fresh snapshot arrives, the product's ``l2update`` frames are discarded (counted as
``resyncing``): the snapshot supersedes them.
"""

from __future__ import annotations

import heapq
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import msgspec
from pydantic import Field

from sluice.config.models import StrictModel
from sluice.records import Record
from sluice.sources.coinbase.book_protocol import L2Snapshot, L2Update

__all__ = [
    "BOOK_CHANNELS",
    "Book",
    "BookFeed",
    "BookSnapshots",
    "Resync",
    "Sequences",
]

BOOK_CHANNELS = ("level2", "level2_batch")
SEQUENCED_CHANNEL = "full"

_encode = msgspec.json.encode


class BookSnapshots(StrictModel):
    """Periodic top-of-book records."""

    every_secs: float = Field(gt=0, description="Seconds between two snapshots of each book.")
    depth: int = Field(10, ge=1, le=1000, description="Levels per side in each snapshot.")


def _plain(text: str) -> bool:
    """A plain non-negative decimal (``123``, ``0.5``): what the Exchange sends; no sign, no
    exponent, no ``NaN``; safe to put in JSON text as it is."""
    return text.isascii() and text.replace(".", "", 1).isdigit()


class Book:
    """One product's level-2 book: price -> size text per side, with lazily cleaned heaps for the
    best bid and ask (a removed level leaves its heap entry until it reaches the top)."""

    __slots__ = ("_ask_heap", "_bid_heap", "asks", "bids")

    def __init__(self) -> None:
        self.bids: dict[float, str] = {}
        self.asks: dict[float, str] = {}
        self._bid_heap: list[float] = []  # negated prices
        self._ask_heap: list[float] = []

    def set(self, buy: bool, price: float, size: str, zero: bool) -> None:
        """Set a level (``zero``: remove it)."""
        levels = self.bids if buy else self.asks
        if zero:
            levels.pop(price, None)
            return
        if price not in levels:
            heap = self._bid_heap if buy else self._ask_heap
            heapq.heappush(heap, -price if buy else price)
            if len(heap) > 2 * len(levels) + 1024:  # mostly removed levels: rebuild
                heap[:] = [-p for p in levels] if buy else list(levels)
                heap.append(-price if buy else price)
                heapq.heapify(heap)
        levels[price] = size

    def best_bid(self) -> float | None:
        heap, levels = self._bid_heap, self.bids
        while heap and -heap[0] not in levels:
            heapq.heappop(heap)
        return -heap[0] if heap else None

    def best_ask(self) -> float | None:
        heap, levels = self._ask_heap, self.asks
        while heap and heap[0] not in levels:
            heapq.heappop(heap)
        return heap[0] if heap else None

    def tops(self) -> tuple[float, float] | None:
        """(best bid, best ask), None while a side is empty."""
        bids, asks = self._bid_heap, self._ask_heap
        if bids and asks and -bids[0] in self.bids and asks[0] in self.asks:
            return -bids[0], asks[0]  # the common case: both heap tops are current levels
        bid, ask = self.best_bid(), self.best_ask()
        return None if bid is None or ask is None else (bid, ask)

    def crossed(self) -> tuple[float, float] | None:
        """(best bid, best ask) when the bid is not below the ask, else None."""
        bid, ask = self.best_bid(), self.best_ask()
        if bid is not None and ask is not None and bid >= ask:
            return bid, ask
        return None

    def top(self, depth: int) -> tuple[list[list[str]], list[list[str]]]:
        """The best ``depth`` levels of each side, best first, as ``[price, size]`` text."""
        bids = heapq.nlargest(depth, self.bids)
        asks = heapq.nsmallest(depth, self.asks)
        return (
            [[_text(p), self.bids[p]] for p in bids],
            [[_text(p), self.asks[p]] for p in asks],
        )


def _text(price: float) -> str:
    return repr(price)


@dataclass(frozen=True, slots=True)
class Resync:
    """A product to resynchronise on ``channel``, and why (a ``gap`` record)."""

    product_id: str
    channel: str
    reason: str
    first: int | None = None
    last: int | None = None
    """The sequence numbers missed (``full``), when known."""
    resubscribe: bool = True
    """False for a crossed snapshot: reported, and kept (resubscribing would fetch it again)."""

    @property
    def missed(self) -> int | None:
        return None if self.first is None or self.last is None else self.last - self.first + 1


class Sequences:
    """The last ``sequence`` seen per product on the ``full`` channel."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: dict[str, int] = {}

    def observe(self, product_id: str, sequence: int) -> tuple[int, int] | bool:
        """True to accept, False for a number not above the last (drop), or the (first, last)
        sequence numbers missed before this one (accepted: the baseline moves to it)."""
        last = self.last.get(product_id)
        if last is None or sequence == last + 1:
            self.last[product_id] = sequence
            return True
        if sequence <= last:
            return False
        self.last[product_id] = sequence
        return (last + 1, sequence - 1)


@dataclass
class BookFeed:
    """The source's order-book state: books, sequences, what to resynchronise and report."""

    subscription: dict[str, list[str]]
    snapshots: BookSnapshots | None = None
    books: dict[str, Book] = field(default_factory=dict)
    sequences: Sequences = field(default_factory=Sequences)
    resyncing: set[str] = field(default_factory=set)
    """Products on a level-2 channel waiting for their fresh snapshot."""
    pending: list[Resync] = field(default_factory=list)
    """Resyncs found and not yet taken by the source (see :meth:`take`)."""
    awaiting: set[str] = field(default_factory=set)
    """Products resubscribed on ``full`` whose subscribe reply has not come: their sequence
    numbers start again from the first message after it."""
    discarded: dict[str, int] = field(default_factory=dict)
    """Frames discarded on purpose (superseded, repeats), by reason, not yet reported in a
    batch: the source moves them into its ``SourceBatch.discarded`` (see :meth:`take_discarded`)."""
    _next_snapshot: float = 0.0

    def __post_init__(self) -> None:
        self.level2_products = frozenset(
            p for name in BOOK_CHANNELS for p in self.subscription.get(name, ())
        )
        self.full_products = frozenset(self.subscription.get(SEQUENCED_CHANNEL, ()))
        self._channel_of = {
            p: name for name in BOOK_CHANNELS for p in self.subscription.get(name, ())
        }
        if self.snapshots is not None:
            self._next_snapshot = time.monotonic() + self.snapshots.every_secs

    def reconnected(self) -> None:
        """A new connection sends a fresh snapshot of every book; sequences go on from the last
        seen, so messages missed while disconnected show up as a gap."""
        self.books.clear()
        self.resyncing = set(self.level2_products)
        self.awaiting.clear()

    def _discard(self, reason: str) -> None:
        self.discarded[reason] = self.discarded.get(reason, 0) + 1

    def take_discarded(self, into: dict[str, int]) -> None:
        """Add the discards not yet reported to ``into`` and forget them."""
        for reason, count in self.discarded.items():
            into[reason] = into.get(reason, 0) + count
        self.discarded.clear()

    # -- level 2 ---------------------------------------------------------------------------------

    def snapshot(self, message: L2Snapshot, raw: bytes, records: list[Record]) -> str | None:
        """A product's whole book; returns a reason to refuse the frame, or None."""
        product = message.product_id
        if product not in self.level2_products:
            self._discard("not_subscribed")
            return None
        for side in (message.bids, message.asks):
            for price, size in side:
                if not (_plain(price) and _plain(size)):
                    self._inconsistent(product, "a snapshot level is not a plain decimal")
                    return f"price or size is not a plain decimal number: {price!r} {size!r}"
        book = Book()
        when = message.time or datetime.now(UTC)
        head = b'{"type":"level2","product_id":"%s","time":%s,"side":"' % (
            product.encode(),
            _encode(when),
        )
        append = records.append
        for side_name, levels in ((b"buy", message.bids), (b"sell", message.asks)):
            buy = side_name == b"buy"
            for price, size in levels:
                book.set(buy, float(price), size, float(size) == 0.0)
                append(
                    Record(
                        head
                        + b'%s","price":"%s","size":"%s","snapshot":1}'
                        % (side_name, price.encode(), size.encode()),
                        "level2",
                        when,
                    )
                )
        self.books[product] = book
        self.resyncing.discard(product)
        crossed = book.crossed()
        if crossed is not None:  # kept (it is the feed's word) and reported, not resubscribed
            self.pending.append(
                Resync(
                    product,
                    self._channel_of[product],
                    _crossed_reason("snapshot", crossed),
                    resubscribe=False,
                )
            )
        return None

    def update(
        self, message: L2Update, raw: bytes, records: list[Record], ascii_: bool = False
    ) -> str | None:
        """Changed levels; returns a reason to refuse the frame, or None. ``ascii_``: the frame
        is known to be ASCII without escapes (the source's batch screen), so its texts are
        ASCII and only the decimal test is left per price and size."""
        product = message.product_id
        book = self.books.get(product)
        if book is None:
            if product not in self.level2_products:
                self._discard("not_subscribed")
            elif product in self.resyncing:
                self._discard("resyncing")
            else:
                self._inconsistent(product, "an update before the product's snapshot")
                self._discard("resyncing")
            return None
        when = message.time  # the records' event time: in seconds when read (Record.time)
        stamp = _encode(when).decode()
        append = records.append
        first = len(records)
        bids, asks = book.bids, book.asks
        added = False
        for side, price, size in message.changes:
            # _plain() inline: this is the busiest loop of the busiest channel; an ASCII frame
            # without escapes (the batch screen's word) has ASCII texts, only the digits are left
            if not (
                (ascii_ or (price.isascii() and size.isascii()))
                and price.replace(".", "", 1).isdigit()
                and size.replace(".", "", 1).isdigit()
            ):
                del records[first:]  # the book is dropped: none of this update is kept
                return self._bad_change(product, price, size)
            p = float(price)
            buy = side == "buy"
            levels = bids if buy else asks
            if not size.strip("0."):  # zero: the level goes
                levels.pop(p, None)
            elif p in levels:
                levels[p] = size
                added = True
            else:
                book.set(buy, p, size, False)  # a new level: its heap entry too
                added = True
            append(  # one f-string per row: no separate head for the (usual) single change
                Record(
                    f'{{"type":"level2","product_id":"{product}","time":{stamp},"side":"{side}",'
                    f'"price":"{price}","size":"{size}","snapshot":0}}'.encode(),
                    "level2",
                    when,
                )
            )
        if added:  # removing levels cannot cross a book
            bid_heap, ask_heap = book._bid_heap, book._ask_heap
            if (  # Book.tops() inline, for its common case: both tops current, not crossed
                bid_heap
                and ask_heap
                and -bid_heap[0] in bids
                and ask_heap[0] in asks
                and -bid_heap[0] < ask_heap[0]
            ):
                return None
            tops = book.tops()
            if tops is not None and tops[0] >= tops[1]:
                self._inconsistent(product, _crossed_reason("update", tops))
        return None

    def _bad_change(self, product: str, price: str, size: str) -> str:
        if size[:1] == "-" and _plain(size[1:]) and _plain(price):
            self._inconsistent(product, f"negative size {size} at price {price}")
            return f"negative size: {size!r}"
        self._inconsistent(product, "an update could not be applied")
        return f"price or size is not a plain decimal number: {price!r} {size!r}"

    def _inconsistent(self, product: str, reason: str) -> None:
        if product in self.resyncing:
            return
        self.books.pop(product, None)
        self.resyncing.add(product)
        self.pending.append(Resync(product, self._channel_of[product], reason))

    # -- full --------------------------------------------------------------------------------------

    def sequenced(self, product: str, sequence: int) -> bool:
        """A ``full`` message of ``product``; False when it is to be dropped (a repeat or late)."""
        if product not in self.full_products:
            return True
        seen = self.sequences.observe(product, sequence)
        if seen is True:
            return True
        if seen is False:
            self._discard("out_of_order")
            return False
        first, last = seen
        again = product not in self.awaiting  # one resubscribe in flight per product
        self.awaiting.add(product)
        self.pending.append(
            Resync(
                product,
                SEQUENCED_CHANNEL,
                f"sequence numbers {first} to {last} missed",
                first,
                last,
                resubscribe=again,
            )
        )
        return True

    def subscriptions(self, granted: dict[str, list[str]]) -> None:
        """A ``subscriptions`` reply: a product resubscribed on ``full`` and listed again starts
        a new run of sequence numbers (those sent while it was unsubscribed are not a gap)."""
        if not self.awaiting:
            return
        listed = set(granted.get(SEQUENCED_CHANNEL, ()))
        for product in [p for p in self.awaiting if p in listed]:
            self.awaiting.discard(product)
            self.sequences.last.pop(product, None)

    # -- periodic snapshots ----------------------------------------------------------------------

    def top_records(self, records: list[Record]) -> None:
        """Each book's top levels as a ``book_snapshot`` record, when one is due."""
        snapshots = self.snapshots
        if snapshots is None:
            return
        now = time.monotonic()
        if now < self._next_snapshot:
            return
        self._next_snapshot = now + snapshots.every_secs
        wall = time.time()
        stamp = datetime.fromtimestamp(wall, UTC)
        for product in sorted(self.books):
            bids, asks = self.books[product].top(snapshots.depth)
            records.append(
                Record(
                    _encode(
                        {
                            "type": "book_snapshot",
                            "product_id": product,
                            "time": stamp,
                            "bids": bids,
                            "asks": asks,
                        }
                    ),
                    "book_snapshot",
                    wall,
                )
            )

    def take(self) -> list[Resync]:
        pending, self.pending = self.pending, []
        return pending

    def report(
        self,
        metrics: Any,
        log: Any,
        send: Callable[[bytes], None] | None,
        sign: Callable[[dict[str, Any]], bytes],
        records: list[Record],
    ) -> None:
        """After a batch: for each resync found log it, count it, emit its ``gap`` record and
        send the resubscribe requests (``send`` None: no connection, the next one starts with
        fresh snapshots anyway)."""
        resyncs = self.take()
        if resyncs:
            wall = time.time()
            detected_at = datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
            for resync in resyncs:
                metrics.gaps.inc()
                if resync.missed is not None:
                    metrics.missed.inc(resync.missed)
                log.warning(
                    "coinbase.book_gap",
                    product_id=resync.product_id,
                    stream=resync.channel,
                    reason=resync.reason,
                    missed=resync.missed,
                    resubscribe=resync.resubscribe,
                )
                records.append(gap_record(resync, detected_at, wall))
            if send is not None:
                for request in resubscribe_requests(resyncs, sign):
                    send(request)
        self.top_records(records)


def _crossed_reason(what: str, crossed: tuple[float, float]) -> str:
    bid, ask = crossed
    return f"crossed book after {what}: best bid {bid!r} >= best ask {ask!r}"


def gap_record(resync: Resync, detected_at: str, timestamp: float | None) -> Record:
    """The ``gap`` record of a resync: the trade-id gap's shape (``type``, ``product_id``,
    ``stream``, ``missed``, ``detected_at``) with the ``reason`` and, on ``full``, the sequence
    numbers missed."""
    data: dict[str, Any] = {
        "type": "gap",
        "product_id": resync.product_id,
        "stream": resync.channel,
        "reason": resync.reason,
    }
    if resync.first is not None:
        data["first_missing_sequence"] = resync.first
        data["last_missing_sequence"] = resync.last
    data["missed"] = resync.missed
    data["detected_at"] = detected_at
    return Record(_encode(data), "gap", timestamp)


def resubscribe_requests(
    resyncs: Iterable[Resync], sign: Callable[[dict[str, Any]], bytes]
) -> list[bytes]:
    """The unsubscribe and subscribe messages that resynchronise ``resyncs``' products (those
    whose book is kept: a crossed snapshot is only reported)."""
    channels: dict[str, list[str]] = {}
    for resync in resyncs:
        if not resync.resubscribe:
            continue
        wanted = channels.setdefault(resync.channel, [])
        if resync.product_id not in wanted:
            wanted.append(resync.product_id)
    if not channels:
        return []
    listed = [{"name": name, "product_ids": products} for name, products in channels.items()]
    return [
        sign({"type": "unsubscribe", "channels": listed}),
        sign({"type": "subscribe", "channels": listed}),
    ]
