"""One client connection to a simulator speaking Coinbase Advanced Trade.

As the real feed: one subscribe message per channel (``channel`` and ``product_ids``, and a
``jwt`` when the simulator holds a key), each answered by a ``subscriptions`` message listing
every channel subscribed and then the channel's snapshot; every message of the connection carries
the next ``sequence_num`` (from 0, across channels); ``heartbeats`` sends one message a second
with a counter; ``ticker``, ``market_trades``, ``level2`` (as ``l2_data``) and ``candles`` follow
the simulated market (level2 is the market's best bid and offer; candles are five-minute candles
of the tickers, sent every second), ``ticker_batch`` every five heartbeat intervals, ``status``
at subscribe and now and then. A refused request is answered with ``{"type": "error",
"message": ...}`` and the connection stays open.

The socket, compression and the Exchange frame faults are :class:`Session`'s.
"""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from sluice.simulator.advanced.options import AdvancedOptions
from sluice.simulator.advanced.protocol import (
    AUTH_FAILURE,
    MESSAGE_CHANNEL,
    check_jwt,
    envelope,
    error_frame,
    l2_updates,
    nanos,
    parse_subscribe,
    status_products,
    ticker_item,
    trade_item,
)
from sluice.simulator.books import BookMarket
from sluice.simulator.fast import SharedStreams
from sluice.simulator.markets import Event, Market, rfc3339
from sluice.simulator.options import Faults, SimulatorOptions
from sluice.simulator.session import Session

__all__ = ["AdvancedSession"]

_STATUS_EVERY = 30
_CANDLE_SECS = 300


class AdvancedSession(Session):
    """One client connection speaking Advanced Trade."""

    def __init__(
        self,
        market: Market,
        options: SimulatorOptions,
        log: Any,
        number: int,
        faults: Faults,
        deflate: bool,
        fast_streams: SharedStreams,
        book_market: BookMarket | None = None,
    ) -> None:
        # the Exchange's order books are not served here: Advanced Trade's level2 is its own
        super().__init__(market, options, log, number, faults, deflate, fast_streams, None)
        advanced = options.advanced or AdvancedOptions()
        scoped = options.faults.connections
        self.advanced = advanced
        self.faulty = scoped is None or number <= scoped
        self.sequence_num = 0
        """The next message's ``sequence_num``."""
        self.heartbeat_counter = 0
        self.skipped_messages: list[bytes] = []
        """Data messages left out by ``skip_sequence_every`` (their numbers used)."""
        self.skipped_heartbeats = 0
        """Counter values skipped by ``skip_heartbeat_every``."""
        self.refused: list[str] = []
        """Why each refused request was refused (tests)."""
        self._data_messages = 0
        self._tickers_sent = 0
        self._batch: dict[str, dict[str, Any]] = {}
        self._candles: dict[str, list[Any]] = {}

    # -- requests --------------------------------------------------------------------------------

    def _no_subscribe(self) -> None:
        if not self.channels and not self.disconnected:
            self.log.info(
                "simulator.no_subscribe", timeout_secs=self.options.subscribe_timeout_secs
            )
            self._send_control(error_frame("no subscribe message in time"))
            self.close("no subscribe in time")

    def _on_request(self, payload: bytes) -> None:
        try:
            request = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._refuse("malformed JSON", "the message is not valid JSON")
            return
        parsed = parse_subscribe(request, self.market.products)
        if isinstance(parsed, str):
            self._refuse("failure to subscribe", parsed)
            return
        kind, channel, products = parsed
        key = self.advanced.jwt_public_key
        if key is not None:
            why = check_jwt(request.get("jwt"), key)
            if why is not None:
                self._refuse(AUTH_FAILURE, why)
                return
        wanted = {channel: products or [channel]}
        if kind == "unsubscribe":
            self.subscriptions.unsubscribe(wanted)
        else:
            self.subscriptions.subscribe(wanted)
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._control("subscriptions", [{"subscriptions": self.channels}])
        self.log.info("simulator.subscribed", channels=sorted(self.channels))
        self.live = bool(self.channels) and not (self.stalled or self.closing)
        if kind == "subscribe":
            self._snapshot(channel, products)
        if not self._tasks and self.channels:
            self._tasks.append(asyncio.create_task(self._ticks(), name=f"sim-adv-{self.number}"))
        self.market.started.set()

    def _refuse(self, message: str, why: str) -> None:
        self.refused.append(why)
        self.log.info("simulator.subscribe_refused", message=message, reason=why)
        self._send_control(error_frame(message))

    # -- messages --------------------------------------------------------------------------------

    def _now(self) -> str:
        return nanos(rfc3339(self.market.clock()))

    def _control(self, channel: str, events: list[Any]) -> None:
        """A reply (subscriptions): numbered, not subject to faults."""
        number = self.sequence_num
        self.sequence_num += 1
        self._send_control(envelope(channel, number, self._now(), events))

    def _message(self, channel: str, events: list[Any]) -> None:
        """A data message: numbered, through the faults."""
        if self.transport is None or self.disconnected or self.stalled or self.closing:
            return
        number = self.sequence_num
        self.sequence_num += 1
        frame = envelope(MESSAGE_CHANNEL.get(channel, channel), number, self._now(), events)
        self._data_messages += 1
        every = self.advanced.skip_sequence_every
        if every and self.faulty and self._data_messages % every == 0:
            self.skipped_messages.append(frame)
            return
        self._send(frame)

    def _snapshot(self, channel: str, products: list[str]) -> None:
        market = self.market
        if channel in ("ticker", "ticker_batch"):
            items = [
                ticker_item(orjson.loads(market.latest_ticker[p]))
                for p in products
                if p in market.latest_ticker
            ]
            self._message(channel, [{"type": "snapshot", "tickers": items}])
        elif channel == "market_trades":
            trades = [
                trade_item(orjson.loads(market.last_match[p]))
                for p in products
                if p in market.last_match
            ]
            self._message(channel, [{"type": "snapshot", "trades": trades}])
        elif channel == "level2":
            events = [
                {
                    "type": "snapshot",
                    "product_id": p,
                    "updates": l2_updates(
                        orjson.loads(market.latest_ticker[p]), "1970-01-01T00:00:00Z"
                    ),
                }
                for p in products
                if p in market.latest_ticker
            ]
            self._message(channel, events)
        elif channel == "candles":
            for p in products:
                if p in market.latest_ticker:
                    self._candle(orjson.loads(market.latest_ticker[p]))
            self._message(channel, [{"type": "snapshot", "candles": self._candle_list(products)}])
        elif channel == "status":
            self._message(
                channel, [{"type": "snapshot", "products": status_products(market.products)}]
            )

    def on_events(self, events: list[Event]) -> None:
        """Market events, as they happen."""
        channels = self.channels
        tickers = set(channels.get("ticker", ()))
        batch = set(channels.get("ticker_batch", ()))
        books = set(channels.get("level2", ()))
        candles = set(channels.get("candles", ()))
        trades = set(channels.get("market_trades", ()))
        for event in events:
            product = event.product_id
            if event.channel == "ticker":
                if product not in tickers | batch | books | candles:
                    continue
                data = orjson.loads(event.frame)
                if product in tickers:
                    self._ticker(data)
                if product in batch:
                    self._batch[product] = ticker_item(data)
                if product in books:
                    self._message(
                        "level2",
                        [
                            {
                                "type": "update",
                                "product_id": product,
                                "updates": l2_updates(data, data["time"]),
                            }
                        ],
                    )
                if product in candles:
                    self._candle(data)
            elif product in trades:
                item = trade_item(orjson.loads(event.frame))
                self._message("market_trades", [{"type": "update", "trades": [item]}])
            if not self.live:
                return

    def _ticker(self, data: dict[str, Any]) -> None:
        self._tickers_sent += 1
        every = self.advanced.bad_every
        bad = bool(every and self.faulty and self._tickers_sent % every == 0)
        item = ticker_item(data, price="NaN" if bad else None)
        self._message("ticker", [{"type": "update", "tickers": [item]}])

    def _candle(self, ticker: dict[str, Any]) -> None:
        product = ticker["product_id"]
        price = ticker["price"]
        start = int(self.market.clock()) // _CANDLE_SECS * _CANDLE_SECS
        size = float(ticker.get("last_size") or 0)
        candle = self._candles.get(product)
        if candle is None or candle[0] != start:
            self._candles[product] = [start, price, price, price, price, size]
            return
        value = float(price)
        if value > float(candle[2]):
            candle[2] = price
        if value < float(candle[3]):
            candle[3] = price
        candle[4] = price
        candle[5] += size

    def _candle_list(self, products: list[str]) -> list[dict[str, Any]]:
        listed = []
        for p in products:
            candle = self._candles.get(p)
            if candle is None:
                continue
            start, opened, high, low, close, volume = candle
            listed.append(
                {
                    "start": str(start),
                    "high": high,
                    "low": low,
                    "open": opened,
                    "close": close,
                    "volume": f"{volume:.8f}",
                    "product_id": p,
                }
            )
        return listed

    async def _ticks(self) -> None:
        """Heartbeats, candles and ticker batches each interval, status now and then."""
        interval = self.options.heartbeat_interval_secs
        tick = 0
        while True:
            await asyncio.sleep(interval)
            tick += 1
            if self.stalled or self.closing:
                continue
            channels = self.channels
            if "heartbeats" in channels:
                self.heartbeat_counter += 1
                every = self.advanced.skip_heartbeat_every
                if every and self.faulty and self.heartbeat_counter % every == 0:
                    self.heartbeat_counter += 1
                    self.skipped_heartbeats += 1
                event = {
                    "current_time": rfc3339(self.market.clock()),
                    "heartbeat_counter": str(self.heartbeat_counter),
                }
                self._message("heartbeats", [event])
            if "candles" in channels:
                listed = self._candle_list(channels["candles"])
                if listed:
                    self._message("candles", [{"type": "update", "candles": listed}])
            if self._batch and tick % self.advanced.ticker_batch_every == 0:
                items, self._batch = list(self._batch.values()), {}
                self._message("ticker_batch", [{"type": "update", "tickers": items}])
            if "status" in channels and tick % _STATUS_EVERY == 0:
                self._message(
                    "status",
                    [{"type": "update", "products": status_products(self.market.products)}],
                )
