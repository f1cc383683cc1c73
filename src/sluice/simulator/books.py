"""The simulated order books: ``level2`` (and ``level2_batch``) snapshots and updates, and the
``full`` channel's order messages with contiguous per-product ``sequence`` numbers.

:class:`BookMarket` (one per simulator) keeps each product's level-2 book around a fixed mid price
(bids below it, asks above, so an honest update never crosses the book) and generates, at
``book_updates_per_sec``, one ``l2update`` and one ``full`` message at a time, round-robin over
the products. The ``full`` messages cycle through ``received``, ``open``, ``change``, ``match``
and ``done`` and number their own sequences (contiguous per product, separate from the ticker's).

:class:`BookStream` (one per connection) sends a product's snapshot when it is subscribed on a
level-2 channel, then its updates and ``full`` messages, through the connection's book faults:
``skip_sequence_every`` leaves out every Nth ``full`` message (a sequence gap) and
``cross_book_every`` turns every Nth ``l2update`` into one that crosses the book (a bid at the
best ask).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from sluice.simulator.markets import rfc3339
from sluice.simulator.options import Faults

__all__ = ["BookEvent", "BookMarket", "BookStream"]

LEVEL2 = ("level2", "level2_batch")
_FULL_CYCLE = ("received", "open", "change", "match", "done")


@dataclass(slots=True)
class BookEvent:
    product_id: str
    channel: str
    """``level2`` or ``full``."""
    frame: bytes
    sequence: int = 0
    changes: int = 0
    """``level2``: the levels the update changes."""


@dataclass
class _Book:
    mid: float
    tick: float
    bids: dict[str, str] = field(default_factory=dict)
    asks: dict[str, str] = field(default_factory=dict)


class BookMarket:
    """Every product's level-2 book and ``full`` sequence, shared by all connections."""

    def __init__(
        self, products: tuple[str, ...], updates_per_sec: float, levels: int = 20, seed: int = 7
    ) -> None:
        self.products = products
        self.updates_per_sec = updates_per_sec
        self.levels = levels
        self.random = random.Random(seed)
        self.books: dict[str, _Book] = {}
        self.sequence: dict[str, int] = {}
        self.trade_id: dict[str, int] = {}
        self._step = 0
        self._last_us = 0
        self.paused = False
        """Generate nothing while set (tests: let the client catch up, then compare counts)."""
        for index, product in enumerate(products):
            book = _Book(mid=1000.0 * (index + 1), tick=0.01 * (index + 1))
            for k in range(1, levels + 1):
                book.bids[self.price(book, -k)] = self.size()
                book.asks[self.price(book, k)] = self.size()
            self.books[product] = book
            self.sequence[product] = 1000 * (index + 1)
            self.trade_id[product] = 0

    @staticmethod
    def price(book: _Book, k: int) -> str:
        return f"{book.mid + k * book.tick:.2f}"

    def size(self) -> str:
        return f"{self.random.uniform(0.001, 5.0):.8f}"

    def snapshot_frame(self, product: str, now: float) -> bytes:
        book = self.books[product]
        bids = sorted(book.bids.items(), key=lambda kv: -float(kv[0]))
        asks = sorted(book.asks.items(), key=lambda kv: float(kv[0]))
        return orjson.dumps(
            {
                "type": "snapshot",
                "product_id": product,
                "bids": [list(kv) for kv in bids],
                "asks": [list(kv) for kv in asks],
                "time": rfc3339(now),
            }
        )

    def crossing_frame(self, product: str, now: float) -> bytes:
        """An ``l2update`` that crosses the book: a bid at the best ask (the crossed-book
        fault; the market's own book is left as it is)."""
        book = self.books[product]
        best_ask = min(book.asks, key=float) if book.asks else self.price(book, 1)
        return _l2update(product, rfc3339(now), [["buy", best_ask, "1.00000000"]])

    def step(self, now: float) -> list[BookEvent]:
        """The next product's ``l2update`` and ``full`` message, each step a microsecond after
        the last at least (so no two updates share a time)."""
        us = self._last_us = max(int(now * 1_000_000), self._last_us + 1)
        stamp = _micros(us)
        product = self.products[self._step % len(self.products)]
        n = self._step // len(self.products)
        self._step += 1
        book = self.books[product]
        rnd = self.random
        buy = rnd.random() < 0.5
        levels = book.bids if buy else book.asks
        k = rnd.randint(1, self.levels)
        price = self.price(book, -k if buy else k)
        if price in levels and rnd.random() < 0.3:
            del levels[price]
            size = "0"
        else:
            size = levels[price] = self.size()
        changes = [["buy" if buy else "sell", price, size]]
        self.sequence[product] += 1
        return [
            BookEvent(product, "level2", _l2update(product, stamp, changes), changes=len(changes)),
            BookEvent(
                product,
                "full",
                self._full(product, _FULL_CYCLE[n % len(_FULL_CYCLE)], n, price, stamp),
                self.sequence[product],
            ),
        ]

    def _full(self, product: str, kind: str, n: int, price: str, stamp: str) -> bytes:
        order = f"{self.products.index(product):08d}-0000-4000-8000-{n // 5:012d}"
        side = "buy" if n % 2 else "sell"
        body: dict[str, Any] = {
            "type": kind,
            "product_id": product,
            "sequence": self.sequence[product],
            "time": stamp,
            "side": side,
        }
        if kind == "match":
            self.trade_id[product] += 1
            body.update(
                trade_id=self.trade_id[product],
                maker_order_id=order,
                taker_order_id=order[:-12] + f"{n:012d}",
                size="0.10000000",
                price=price,
            )
        else:
            body["order_id"] = order
            body["price"] = price
            if kind == "received":
                body.update(order_type="limit", size="0.10000000")
            elif kind == "open":
                body["remaining_size"] = "0.10000000"
            elif kind == "change":
                body.update(old_size="0.10000000", new_size="0.05000000")
            else:
                body.update(reason="filled", remaining_size="0")
        return orjson.dumps(body)

    async def run(
        self, publish: Callable[[list[BookEvent]], None], clock: Callable[[], float]
    ) -> None:
        """Generate updates at ``updates_per_sec`` (a few per wake-up when that is fast)."""
        if self.updates_per_sec <= 0:
            return
        interval = 1.0 / self.updates_per_sec
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            now = loop.time()
            events: list[BookEvent] = []
            if self.paused:
                due = now + interval
            while due <= now and len(events) < 2000:
                events += self.step(clock())
                due += interval
            if events:
                publish(events)
            await asyncio.sleep(max(0.0, min(due - loop.time(), 0.05)))


def _l2update(product: str, stamp: str, changes: list[list[str]]) -> bytes:
    return orjson.dumps(
        {"type": "l2update", "product_id": product, "changes": changes, "time": stamp}
    )


def _micros(us: int) -> str:
    """RFC 3339 of a time in integer microseconds (exact, unlike a float's)."""
    seconds, fraction = divmod(us, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:06d}Z"


class BookStream:
    """One connection's book frames, through its book faults; counts what it sent."""

    def __init__(self, faults: Faults, record: bool) -> None:
        self.faults = faults
        self.updates = 0
        """``l2update`` frames offered (sent or turned into a crossing one)."""
        self.full = 0
        """``full`` messages offered (sent or skipped)."""
        self.snapshots = 0
        self.changes_sent = 0
        """Levels sent: in snapshots and in updates (the rows a level-2 table gets)."""
        self.crossed: list[str] = []
        """Products sent a crossing update."""
        self.skipped: list[tuple[str, int]] = []
        """(product, sequence) of each ``full`` message left out."""
        self.record = record

    def subscribed(
        self,
        new: dict[str, list[str]],
        market: BookMarket,
        now: float,
        send: Callable[[bytes], None],
    ) -> None:
        """Snapshots for the products ``new`` adds on a level-2 channel."""
        for name in LEVEL2:
            for product in new.get(name, ()):
                if product in market.books:
                    book = market.books[product]
                    self.snapshots += 1
                    self.changes_sent += len(book.bids) + len(book.asks)
                    send(market.snapshot_frame(product, now))

    def on_events(
        self,
        events: list[BookEvent],
        channels: dict[str, list[str]],
        market: BookMarket,
        now: float,
        send: Callable[[bytes], None],
        live: Callable[[], bool],
    ) -> None:
        level2 = {p for name in LEVEL2 for p in channels.get(name, ())}
        full = set(channels.get("full", ()))
        if not level2 and not full:
            return
        f = self.faults
        for event in events:
            if not live():
                return
            if event.channel == "level2":
                if event.product_id not in level2:
                    continue
                self.updates += 1
                if f.cross_book_every and self.updates % f.cross_book_every == 0:
                    self.crossed.append(event.product_id)
                    self.changes_sent += 1
                    send(market.crossing_frame(event.product_id, now))
                    continue
                self.changes_sent += event.changes
                send(event.frame)
            elif event.product_id in full:
                self.full += 1
                if f.skip_sequence_every and self.full % f.skip_sequence_every == 0:
                    self.skipped.append((event.product_id, event.sequence))
                    continue
                send(event.frame)
