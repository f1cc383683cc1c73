"""The simulated exchange: what happens on the market, whoever is connected.

A market produces trade events (a ``ticker`` and a ``match`` frame per trade) on its own clock,
starting when the first client subscribes, and keeps each product's latest ticker, last match,
trade id and sequence, which a new subscription is sent first and heartbeats report. Clients that
are disconnected miss what happens meanwhile, as on the real feed.

- :class:`ReplayMarket` replays frames recorded from the real feed (package data, with its
  licence notice beside it) in their recorded timing, ``speed`` times faster, and, when looping,
  again with trade ids, sequences and times moved on so the feed stays consistent: each pass
  continues every product's trade ids from the previous pass without a gap. By default
  (``retime``) every frame's ``time`` is moved to the present (the recording's start becomes the
  moment the market starts; order and spacing are kept, spacing divided by ``speed``), so a replay
  looks live; ``retime=False`` sends the recorded bytes exactly on the first pass.
- :class:`SyntheticMarket` generates an endless consistent feed at a set rate: per-product
  consecutive trade ids, increasing sequences and a random-walk price.
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import resources

import orjson

__all__ = [
    "RECORDING",
    "Event",
    "Market",
    "Recording",
    "ReplayMarket",
    "SyntheticMarket",
    "build_recording",
    "fast_template",
    "load_recording",
    "rfc3339",
]

RECORDING = "ws-feed-2021-04-17.tsv"
"""The recorded frames shipped in ``sluice/simulator/data`` (see the README beside them)."""

_CHANNEL_OF_TYPE = {"ticker": "ticker", "match": "matches"}
_TIME = re.compile(rb'"time":"[^"]*"')
_TRADE_ID = re.compile(rb'"trade_id":\d+')
_SEQUENCE = re.compile(rb'"sequence":\d+')


@dataclass(slots=True)
class Event:
    """One frame of a product on a channel; ``trade_id`` for trade frames."""

    product_id: str
    channel: str
    frame: bytes
    trade_id: int
    sequence: int


Publish = Callable[[list[Event]], None]


def rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _parse_time(frame: bytes) -> float:
    """The ``time`` of a recorded frame, as unix seconds."""
    text = orjson.loads(frame)["time"]
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rewrite(frame: bytes, when: float, trade_id: int | None, sequence: int | None) -> bytes:
    """``frame`` with its ``time`` (and ``trade_id``/``sequence`` when given) replaced, every
    other byte kept."""
    frame = _TIME.sub(b'"time":"%s"' % rfc3339(when).encode(), frame, count=1)
    if trade_id is not None:
        frame = _TRADE_ID.sub(b'"trade_id":%d' % trade_id, frame, count=1)
    if sequence is not None:
        frame = _SEQUENCE.sub(b'"sequence":%d' % sequence, frame, count=1)
    return frame


@dataclass
class Market:
    """State shared by every connection of a simulator."""

    products: tuple[str, ...]
    latest_ticker: dict[str, bytes] = field(default_factory=dict)
    last_match: dict[str, bytes] = field(default_factory=dict)
    last_trade_id: dict[str, int] = field(default_factory=dict)
    sequence: dict[str, int] = field(default_factory=dict)
    started: asyncio.Event = field(default_factory=asyncio.Event)
    """Set when the first client subscribes: the market's clock starts then."""
    history: list[Event] | None = None
    """Every trade event, when recording (tests)."""

    def apply(self, events: list[Event]) -> None:
        for event in events:
            if event.channel == "ticker":
                self.latest_ticker[event.product_id] = event.frame
            else:
                self.last_match[event.product_id] = event.frame
            if event.trade_id > self.last_trade_id.get(event.product_id, -1):
                self.last_trade_id[event.product_id] = event.trade_id
            if event.sequence > self.sequence.get(event.product_id, -1):
                self.sequence[event.product_id] = event.sequence
        if self.history is not None:
            self.history.extend(events)

    def clock(self) -> float:
        """The market's time now (unix seconds), for heartbeats."""
        return time.time()

    async def run(self, publish: Publish) -> None:
        raise NotImplementedError

    def last_match_frame(self, product_id: str) -> bytes | None:
        frame = self.last_match.get(product_id)
        if frame is None:
            return None
        return frame.replace(b'"type":"match"', b'"type":"last_match"', 1)


# -- replay ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Recorded:
    offset: float
    product_id: str
    channel: str
    frame: bytes
    trade_id: int
    sequence: int


@dataclass(frozen=True)
class Recording:
    """The recorded frames this simulator can replay."""

    started_at: float
    """Receive time of the first recorded frame (unix seconds)."""
    duration: float
    products: tuple[str, ...]
    initial_tickers: dict[str, bytes]
    initial_matches: dict[str, bytes]
    events: tuple[_Recorded, ...]


def load_recording() -> Recording:
    """Read the recording shipped with the package: the tickers and matches (the recorded
    ``level2`` frames belong to a channel that now requires authentication)."""
    text = resources.files("sluice.simulator").joinpath("data", RECORDING).read_bytes()
    lines = (line.partition(b"\t") for line in text.splitlines())
    return build_recording((float(received), frame) for received, _, frame in lines)


def build_recording(frames: Iterable[tuple[float, bytes]]) -> Recording:
    """A recording from ``(receive time, frame)`` pairs in order: the tickers and matches
    (``last_match`` and each product's first ticker are what a subscriber is sent first); other
    frames only move the clock. A frame that is not a trade as the feed sends it (not JSON, no
    ``product_id``, ``trade_id`` or ``sequence``) is skipped."""
    started_at: float | None = None
    initial_tickers: dict[str, bytes] = {}
    initial_matches: dict[str, bytes] = {}
    products: list[str] = []
    events: list[_Recorded] = []
    last_offset = 0.0
    for received, frame in frames:
        if started_at is None:
            started_at = received
        offset = received - started_at
        last_offset = offset
        if b'"type":"ticker"' not in frame and b'match"' not in frame:
            continue
        try:
            data = orjson.loads(frame)
            type_, product = data["type"], data["product_id"]
            trade_id, sequence = int(data["trade_id"]), int(data["sequence"])
            _parse_time(frame)
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            continue
        if not isinstance(product, str):
            continue
        if product not in products:
            products.append(product)
        if type_ == "last_match":
            if product in initial_matches:
                continue  # sent again on a reconnect: a trade already replayed
            initial_matches[product] = frame.replace(b'"type":"last_match"', b'"type":"match"', 1)
        elif type_ == "ticker" and product not in initial_tickers:
            initial_tickers[product] = frame  # what Coinbase sends first on subscribe
        elif type_ in _CHANNEL_OF_TYPE:
            events.append(
                _Recorded(offset, product, _CHANNEL_OF_TYPE[type_], frame, trade_id, sequence)
            )
    if started_at is None:
        raise ValueError("empty recording")
    return Recording(
        started_at,
        last_offset + 1.0,
        tuple(products),
        initial_tickers,
        initial_matches,
        tuple(events),
    )


class ReplayMarket(Market):
    """The recorded feed, in its timing (``speed`` times faster), looping when asked, re-timed to
    the present unless ``retime`` is false."""

    def __init__(
        self,
        speed: float = 1.0,
        loop: bool = True,
        retime: bool = True,
        recording: Recording | None = None,
    ) -> None:
        """``recording``: what to replay (a tape, :mod:`.tape`); default the shipped one."""
        recording = recording if recording is not None else load_recording()
        super().__init__(recording.products)
        self.recording = recording
        self.speed = speed
        self.loop = loop
        self.retime = retime
        self._clock_started = 0.0
        self._anchor = time.time()
        """Wall-clock time the recording's start maps to (re-timing)."""
        self._times = [_parse_time(rec.frame) for rec in recording.events]
        for product, frame in recording.initial_tickers.items():
            data = orjson.loads(frame)
            self.latest_ticker[product] = self._moved(frame, 0)
            self.last_trade_id[product] = int(data["trade_id"])
            self.sequence[product] = int(data["sequence"])
        for product, frame in recording.initial_matches.items():
            data = orjson.loads(frame)
            self.last_match[product] = self._moved(frame, 0)
            self.last_trade_id[product] = max(
                self.last_trade_id.get(product, 0), int(data["trade_id"])
            )
            self.sequence[product] = max(self.sequence.get(product, 0), int(data["sequence"]))
        first = {p: self.last_trade_id[p] for p in self.products if p in self.last_trade_id}
        last = dict(first)
        for event in recording.events:
            last[event.product_id] = max(last.get(event.product_id, 0), event.trade_id)
        # the first trade a subscriber is sent (latest ticker, last match) carries the id before
        # the recorded events, so a pass moves each product's ids on by the number of its trades:
        # the next pass's first trade is then the previous pass's last plus one (no gap)
        self._id_span = {p: last[p] - first.get(p, last[p]) for p in last}
        self._seq_span = {
            p: max([e.sequence for e in recording.events if e.product_id == p] or [0])
            - self.sequence.get(p, 0)
            + 1
            for p in last
        }

    def _moved(self, frame: bytes, number: int) -> bytes:
        """A frame recorded at the recording's start, as it is sent in pass ``number``."""
        if not self.retime:
            return frame
        return rewrite(frame, self._retimed(_parse_time(frame), number), None, None)

    def _retimed(self, recorded: float, number: int) -> float:
        offset = recorded - self.recording.started_at + number * self.recording.duration
        return self._anchor + offset / self.speed

    def clock(self) -> float:
        if self.retime:
            return time.time()
        if not self._clock_started:
            return self.recording.started_at
        return self.recording.started_at + (time.monotonic() - self._clock_started) * self.speed

    def _pass(self, number: int) -> Iterator[tuple[float, Event]]:
        """The recorded events of pass ``number`` (0 is the recording as it is, re-timed unless
        ``retime`` is false)."""
        shift = number * self.recording.duration
        retime = self.retime
        for rec, recorded in zip(self.recording.events, self._times, strict=True):
            if number == 0 and not retime:
                yield (
                    rec.offset,
                    Event(rec.product_id, rec.channel, rec.frame, rec.trade_id, rec.sequence),
                )
                continue
            trade_id = rec.trade_id + number * self._id_span.get(rec.product_id, 0)
            sequence = rec.sequence + number * self._seq_span.get(rec.product_id, 0)
            when = self._retimed(recorded, number) if retime else recorded + shift
            frame = rewrite(
                rec.frame, when, trade_id if number else None, sequence if number else None
            )
            yield shift + rec.offset, Event(rec.product_id, rec.channel, frame, trade_id, sequence)

    async def run(self, publish: Publish) -> None:
        await self.started.wait()
        self._clock_started = started = time.monotonic()
        self._anchor = time.time()
        number = 0
        while True:
            due: list[Event] = []
            for offset, event in self._pass(number):
                wait = started + offset / self.speed - time.monotonic()
                if wait > 0.002:
                    if due:
                        self.apply(due)
                        publish(due)
                        due = []
                    await asyncio.sleep(wait)
                due.append(event)
            if due:
                self.apply(due)
                publish(due)
            if not self.loop:
                return
            number += 1
            wait = started + number * self.recording.duration / self.speed - time.monotonic()
            await asyncio.sleep(max(0.0, wait))


# -- synthetic ---------------------------------------------------------------------------------

TICKER_TEMPLATE = (
    b'{"type":"ticker","sequence":%d,"product_id":"%s","price":"%s","open_24h":"%s",'
    b'"volume_24h":"%s","low_24h":"%s","high_24h":"%s","volume_30d":"%s","best_bid":"%s",'
    b'"best_bid_size":"%s","best_ask":"%s","best_ask_size":"%s","side":"%s","time":"%s",'
    b'"trade_id":%d,"last_size":"%s"}'
)
MATCH_TEMPLATE = (
    b'{"type":"match","trade_id":%d,"maker_order_id":"%s","taker_order_id":"%s","side":"%s",'
    b'"size":"%s","price":"%s","product_id":"%s","sequence":%d,"time":"%s"}'
)

_START_PRICES = {"BTC": 60000.0, "ETH": 3000.0, "SOL": 150.0, "LTC": 80.0, "DOGE": 0.15}


@dataclass
class _Product:
    name: bytes
    price: float
    decimals: int
    trade_id: int
    sequence: int
    volume: float = 0.0
    open: float = 0.0
    low: float = 0.0
    high: float = 0.0


class SyntheticMarket(Market):
    """An endless, consistent generated feed at ``trades_per_sec`` (all products together)."""

    def __init__(
        self, products: tuple[str, ...], trades_per_sec: float, seed: int | None = None
    ) -> None:
        super().__init__(products)
        self.trades_per_sec = trades_per_sec
        self._rng = random.Random(seed)
        self._order = 0
        self._state: dict[str, _Product] = {}
        for index, product in enumerate(products):
            base = _START_PRICES.get(product.split("-")[0], 10.0 + 7 * index)
            decimals = 2 if base >= 1 else 5
            state = _Product(
                product.encode(),
                base,
                decimals,
                trade_id=1_000_000 * (index + 1),
                sequence=10_000_000_000 * (index + 1),
            )
            state.open = state.low = state.high = base
            self._state[product] = state
            ticker, match = self._trade(product, rfc3339(time.time()).encode())
            self.apply([ticker, match])

    def _order_id(self) -> bytes:
        self._order += 1
        n = self._order
        return b"%08x-0000-4000-8000-%012x" % (n >> 48, n & 0xFFFFFFFFFFFF)

    def _trade(self, product: str, now: bytes) -> tuple[Event, Event]:
        s = self._state[product]
        rng = self._rng
        s.trade_id += 1
        s.sequence += rng.randint(1, 5)
        s.price = max(10.0**-s.decimals, s.price * (1 + rng.gauss(0, 0.0002)))
        s.low, s.high = min(s.low, s.price), max(s.high, s.price)
        size = round(rng.uniform(0.0001, 2.0), 8)
        s.volume += size
        fmt = b"%%.%df" % s.decimals
        price = fmt % s.price
        spread = 10.0**-s.decimals
        side = b"buy" if rng.random() < 0.5 else b"sell"
        size_text = b"%.8f" % size
        ticker = TICKER_TEMPLATE % (
            s.sequence,
            s.name,
            price,
            fmt % s.open,
            b"%.8f" % s.volume,
            fmt % s.low,
            fmt % s.high,
            b"%.8f" % (s.volume * 30),
            fmt % (s.price - spread),
            b"%.8f" % rng.uniform(0.01, 5),
            fmt % (s.price + spread),
            b"%.8f" % rng.uniform(0.01, 5),
            side,
            now,
            s.trade_id,
            size_text,
        )
        match = MATCH_TEMPLATE % (
            s.trade_id,
            self._order_id(),
            self._order_id(),
            side,
            size_text,
            price,
            s.name,
            s.sequence,
            now,
        )
        return (
            Event(product, "matches", match, s.trade_id, s.sequence),
            Event(product, "ticker", ticker, s.trade_id, s.sequence),
        )

    async def run(self, publish: Publish) -> None:
        await self.started.wait()
        started = time.monotonic()
        produced = 0
        products = self.products
        tick = min(0.05, max(0.002, 1.0 / self.trades_per_sec))
        while True:
            due = int((time.monotonic() - started) * self.trades_per_sec) - produced
            if due > 0:
                now = rfc3339(time.time()).encode()
                events: list[Event] = []
                for _ in range(due):
                    product = products[self._rng.randrange(len(products))]
                    events.extend(self._trade(product, now))
                produced += due
                self.apply(events)
                publish(events)
            await asyncio.sleep(tick)


def fast_template(frame: bytes) -> bytes:
    """A ticker frame as a ``%`` template of its sequence and trade id (in that order), so a new
    ticker costs one format: ``template % (sequence, trade_id)`` (fast mode)."""
    data = orjson.loads(frame)
    template = frame.replace(b"%", b"%%")
    template = template.replace(b'"sequence":%d' % data["sequence"], b'"sequence":%d', 1)
    return template.replace(b'"trade_id":%d' % data["trade_id"], b'"trade_id":%d', 1)
