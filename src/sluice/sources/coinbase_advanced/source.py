"""The ``coinbase_advanced`` source: the Coinbase Advanced Trade websocket feed, validated, with
missed messages reported.

Delivery: at-most-once with gap reporting, as the ``coinbase`` source. What is lost is not
silent: every message of a connection carries ``sequence_num`` (0, 1, 2... across channels) and
every heartbeat a ``heartbeat_counter``; a number skipped is counted (``sluice_source_gaps``,
``sluice_source_missed_events``), logged and emitted as a ``gap`` record.

On reconnect: the runner calls :meth:`CoinbaseAdvancedSource.batches` again after a backoff with
full jitter (``reconnect``); the source opens a new connection and subscribes again, one subscribe
message per channel (each with a fresh JWT when ``auth`` is set), and the sequence and heartbeat
checks start again with the new connection's numbers. A refused subscribe (``authentication
failure``, an unknown product) fails the run with Coinbase's message: repeating the same request
cannot help, so it is not retried.

Records (one per item of an event, so one message may give several), in the shapes the
``coinbase`` source gives where they mean the same: ``ticker`` (``ticker`` and ``ticker_batch``;
Exchange field names: ``best_bid_size``, ``volume_24h``...; ``sequence`` is the message's
``sequence_num``), ``match`` (``market_trades``: ``trade_id``, ``side`` in lower case, ``price``,
``size``, ``time``), ``book_change`` (``level2``: one price level's new size, ``side`` ``buy`` or
``sell``, ``snapshot`` true for the snapshot's levels), ``candle``, ``heartbeat``, ``status`` and
``gap``. Every frame received is exactly one of: its records; a dead letter with its reason (not
JSON, not UTF-8, failing its spec, a non-finite decimal, longer than ``max_frame_bytes``); or
skipped and counted as discarded (an unknown channel). ``subscriptions`` and ``error`` messages are
control messages, logged. No frame can stop the source.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from sluice.config.models import RetryPolicy
from sluice.plugin import ComponentContext, Readiness, Source
from sluice.records import Record, Rejected, SourceBatch
from sluice.sources.coinbase.client import Connection, FeedUnavailable, Oversize
from sluice.sources.coinbase.feed import connect, readiness, start_simulator, take_fresh
from sluice.sources.coinbase.source import SubscriptionRefused
from sluice.sources.coinbase_advanced.auth import Signer
from sluice.sources.coinbase_advanced.config import CoinbaseAdvancedSourceConfig
from sluice.sources.coinbase_advanced.protocol import (
    Candles,
    Error,
    Heartbeats,
    Level2,
    MarketTrades,
    Status,
    Subscriptions,
    TickerBatch,
    Tickers,
    classify,
    decode,
    decode_error,
    refusal,
    subscribe_request,
)

__all__ = ["CoinbaseAdvancedSource"]

_encode = msgspec.json.encode
_SIDES = {"bid": "buy", "offer": "sell", "BUY": "buy", "SELL": "sell"}


class CoinbaseAdvancedSource(Source[CoinbaseAdvancedSourceConfig]):
    """Coinbase Advanced Trade websocket feed (at-most-once; missed messages reported)."""

    config_model = CoinbaseAdvancedSourceConfig
    delivery = "at-most-once"
    delivery_note = (
        "A live feed with no replay: what arrives while the connection is down is not sent again."
    )
    description = (
        "Coinbase Advanced Trade websocket feed (ticker, market_trades, level2, candles, "
        "heartbeats, status) with reconnects, a stale-feed watchdog, sequence_num and heartbeat "
        "counter gap records and optional CDP key (JWT) authentication."
    )

    def restart_policy(self) -> RetryPolicy:
        return self.config.reconnect

    def __init__(self, component_id: str, config: CoinbaseAdvancedSourceConfig) -> None:
        super().__init__(component_id, config)
        self._url = config.url
        self._conn: Connection | None = None
        self._subscribed = False
        self._simulator: Any = None
        self._signer: Signer | None = None
        self._ctx: ComponentContext | None = None
        self._log: Any = None
        self._sequence: int | None = None
        """The highest ``sequence_num`` seen on this connection."""
        self._heartbeat: int | None = None
        """The last ``heartbeat_counter`` seen on this connection."""

    async def start(self, ctx: ComponentContext) -> None:
        self._ctx = ctx
        self._log = ctx.log
        auth = self.config.auth
        if auth is not None:
            self._signer = Signer(auth.name.get_secret_value(), auth.private_key.get_secret_value())
        if self.config.simulator is not None:
            from sluice.simulator.advanced.options import AdvancedOptions

            self._simulator = await start_simulator(
                self.config.simulator,
                self.config.products,
                self._log,
                "coinbase_advanced.simulator_started",
                advanced=AdvancedOptions(),
            )
            self._url = self._simulator.url

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._simulator is not None:
            await self._simulator.close()
            self._simulator = None

    async def readiness(self) -> Readiness:
        return readiness(self._conn, self._subscribed, self.config.stale_after_secs)

    def connected(self) -> bool:
        """Up from the subscriptions' replies until the connection ends."""
        return self._subscribed

    # -- the feed ------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[SourceBatch]:
        c = self.config
        ctx = self._ctx
        assert ctx is not None, "start() was not called"
        conn = await connect(self._url, c)
        self._conn = conn
        self._sequence = None  # both counters are the connection's own
        self._heartbeat = None
        try:
            early = await self._subscribe(conn)
            self._subscribed = True
            if early:
                yield self._parse(early)
            stale = c.stale_after_secs
            while True:
                frames = await take_fresh(conn, c.max_batch_events, stale)
                yield self._parse(frames)  # also one of discards only: the runner counts reads
        finally:
            self._subscribed = False
            conn.close()
            self._conn = None

    async def _subscribe(self, conn: Connection) -> list[bytes]:
        """Send one subscribe message per channel and wait until the ``subscriptions`` replies
        name every channel; returns every frame received meanwhile (the replies included, for
        the sequence check). Raises SubscriptionRefused on an ``error`` reply."""
        c = self.config
        products = list(c.products)
        for channel in c.channels:
            token = self._signer.token() if self._signer is not None else None
            conn.send(subscribe_request(channel, products, token))
        wanted = set(c.channels)
        granted: set[str] = set()
        deadline = time.monotonic() + c.subscribe_timeout_secs
        received: list[bytes] = []
        while not wanted <= granted:
            try:
                frames = await conn.take(c.max_batch_events, deadline - time.monotonic())
            except TimeoutError:
                if not granted:
                    raise FeedUnavailable(
                        f"{conn.host}: no reply to the subscribe requests within "
                        f"{c.subscribe_timeout_secs:g} s"
                    ) from None
                # Coinbase answered, without naming every channel: read what it sends
                assert self._ctx is not None
                self._ctx.metrics.error("subscription_mismatch")
                self._log.warning(
                    "coinbase_advanced.subscription_incomplete",
                    missing=sorted(wanted - granted),
                    detail="Coinbase did not confirm every channel asked for",
                )
                break
            for raw in frames:
                received.append(raw)
                error = _error_of(raw)
                if error is not None:
                    self._refused(error)
                granted |= _granted_by(raw)
        self._log.info(
            "coinbase_advanced.subscribed",
            url=self._url,
            channels=sorted(granted),
            authenticated=self._signer is not None,
            compressed=conn.compressed,
        )
        return received

    def _refused(self, error: Error) -> None:
        assert self._ctx is not None
        self._ctx.metrics.error("coinbase_error")
        self._log.error(
            "coinbase_advanced.subscribe_refused", message=error.message, reason=error.reason
        )
        detail = f"{error.message}: {error.reason}" if error.reason else error.message
        if "authentication" in detail.lower():
            hint = (
                "check auth.name and auth.private_key (a CDP API key with its EC private key)"
                if self._signer is not None
                else "a channel requires authentication: set auth to a CDP API key"
            )
            raise SubscriptionRefused(
                f"Coinbase Advanced Trade refused the subscription ({detail}); {hint}"
            )
        raise SubscriptionRefused(f"Coinbase Advanced Trade refused the subscription ({detail})")

    # -- frames to records ---------------------------------------------------------------------

    def _parse(self, frames: list[bytes]) -> SourceBatch:
        """Turn received frames into records; runs on the loop, at most max_batch_events each."""
        ctx = self._ctx
        assert ctx is not None
        records: list[Record] = []
        rejected: list[Rejected] = []
        unknown = 0
        oversize_bytes = 0
        for raw in frames:
            try:
                message = decode(raw)
            except Exception as exc:  # whatever the bytes, a frame never stops the source
                if type(raw) is Oversize:
                    rejected.append(Rejected(raw.head, raw.reason))
                    oversize_bytes += raw.size
                    continue
                try:
                    error = decode_error(raw)
                except Exception:
                    reason = classify(raw, exc)
                    if reason is None:
                        unknown += 1
                    else:
                        rejected.append(Rejected(raw, reason))
                    continue
                ctx.metrics.error("coinbase_error")
                self._log.warning(
                    "coinbase_advanced.error", message=error.message, reason=error.reason
                )
                continue
            reason = refusal(message)
            if reason is not None:
                rejected.append(Rejected(raw, reason))
                continue
            timestamp = message.timestamp.timestamp()
            made: list[Record] = []
            try:
                _RECORDS[type(message)](self, message, timestamp, made)
            except (ValueError, OverflowError) as exc:  # a time past what a datetime holds
                rejected.append(Rejected(raw, f"cannot be turned into records: {exc}"))
                continue
            self._check_sequence(message.sequence_num, timestamp, records)
            records += made
        # the runner counts every frame read and what was discarded, from the batch
        return SourceBatch(
            records,
            rejected,
            read_events=len(frames),
            read_bytes=sum(map(len, frames)) + oversize_bytes,
            discarded={"unknown_type": unknown} if unknown else None,
        )

    def _check_sequence(self, number: int, timestamp: float, records: list[Record]) -> None:
        last = self._sequence
        if last is None:
            self._sequence = number
            if number > 0:  # a connection's first message is number 0
                self._gap("sequence_num", 0, number - 1, timestamp, records)
            return
        if number == last + 1:
            self._sequence = number
        elif number > last:
            self._sequence = number
            self._gap("sequence_num", last + 1, number - 1, timestamp, records)
        else:
            assert self._ctx is not None
            self._ctx.metrics.error("sequence_num_out_of_order")
            self._log.warning(
                "coinbase_advanced.sequence_num_out_of_order", sequence_num=number, highest=last
            )

    def _gap(
        self, stream: str, first: int, last: int, timestamp: float, records: list[Record]
    ) -> None:
        assert self._ctx is not None
        missed = last - first + 1
        metrics = self._ctx.metrics
        metrics.gaps.inc()
        metrics.missed.inc(missed)
        self._log.warning(
            "coinbase_advanced.gap",
            stream=stream,
            first_missing=first,
            last_missing=last,
            missed=missed,
        )
        records.append(
            Record(gap_json(stream, first, last, _rfc3339(time.time())), "gap", timestamp)
        )

    # one per message spec: the message's records, appended to ``records``

    def _tickers(
        self, message: Tickers | TickerBatch, timestamp: float, records: list[Record]
    ) -> None:
        time_text = _text(message.timestamp)
        number = message.sequence_num
        channel = str(message.__struct_config__.tag)
        for event in message.events:
            for t in event.tickers:
                record = _TickerRecord(
                    "ticker",
                    time_text,
                    number,
                    t.product_id,
                    t.price,
                    channel,
                    event.type,
                    t.best_bid,
                    t.best_bid_quantity,
                    t.best_ask,
                    t.best_ask_quantity,
                    t.volume_24_h,
                    t.low_24_h,
                    t.high_24_h,
                    t.low_52_w,
                    t.high_52_w,
                    t.price_percent_chg_24_h,
                )
                records.append(Record(_encode(record), "ticker", timestamp))

    def _trades(self, message: MarketTrades, timestamp: float, records: list[Record]) -> None:
        for event in message.events:
            for t in event.trades:
                trade_id: int | str = t.trade_id
                if t.trade_id.isascii() and t.trade_id.isdigit() and len(t.trade_id) < 19:
                    trade_id = int(t.trade_id)
                fields = {
                    "type": "match",
                    "product_id": t.product_id,
                    "trade_id": trade_id,
                    "side": _SIDES[t.side],
                    "price": t.price,
                    "size": t.size,
                    "time": _text(t.time),
                    "sequence": message.sequence_num,
                    "event": event.type,
                }
                records.append(Record(_encode(fields), "match", t.time.timestamp()))

    def _level2(self, message: Level2, timestamp: float, records: list[Record]) -> None:
        received = _text(message.timestamp)
        for event in message.events:
            snapshot = event.type == "snapshot"
            for u in event.updates:
                # a snapshot's levels carry the epoch as their time: the message's time is kept
                when = u.event_time.timestamp()
                fields = {
                    "type": "book_change",
                    "product_id": event.product_id,
                    "side": _SIDES[u.side],
                    "price": u.price_level,
                    "size": u.new_quantity,
                    "time": _text(u.event_time) if when > 0 else received,
                    "sequence": message.sequence_num,
                    "snapshot": snapshot,
                }
                records.append(
                    Record(_encode(fields), "book_change", when if when > 0 else timestamp)
                )

    def _candles(self, message: Candles, timestamp: float, records: list[Record]) -> None:
        time_text = _text(message.timestamp)
        for event in message.events:
            for c in event.candles:
                fields = {
                    "type": "candle",
                    "product_id": c.product_id,
                    "start": _rfc3339(int(c.start)),
                    "open": c.open,
                    "high": c.high,
                    "low": c.low,
                    "close": c.close,
                    "volume": c.volume,
                    "time": time_text,
                    "sequence": message.sequence_num,
                }
                records.append(Record(_encode(fields), "candle", timestamp))

    def _heartbeats(self, message: Heartbeats, timestamp: float, records: list[Record]) -> None:
        for event in message.events:
            counter = event.counter
            last = self._heartbeat
            self._heartbeat = counter
            if last is not None and counter > last + 1:
                self._gap("heartbeat_counter", last + 1, counter - 1, timestamp, records)
            fields = {
                "type": "heartbeat",
                "heartbeat_counter": counter,
                "current_time": event.current_time,
                "time": _text(message.timestamp),
                "sequence": message.sequence_num,
            }
            records.append(Record(_encode(fields), "heartbeat", timestamp))

    def _status(self, message: Status, timestamp: float, records: list[Record]) -> None:
        for event in message.events:
            fields = {
                "type": "status",
                "products": event.products,
                "time": _text(message.timestamp),
                "sequence": message.sequence_num,
            }
            records.append(Record(_encode(fields), "status", timestamp))

    def _subscriptions(
        self, message: Subscriptions, timestamp: float, records: list[Record]
    ) -> None:
        self._log.debug("coinbase_advanced.subscriptions", sequence_num=message.sequence_num)


class _TickerRecord(msgspec.Struct, omit_defaults=True, array_like=False):
    """A ``ticker`` record: the Exchange ticker's field names where they mean the same; a field
    Coinbase left out is left out."""

    type: str
    time: str
    sequence: int
    product_id: str
    price: str
    channel: str
    event: str
    best_bid: str | None = None
    best_bid_size: str | None = None
    best_ask: str | None = None
    best_ask_size: str | None = None
    volume_24h: str | None = None
    low_24h: str | None = None
    high_24h: str | None = None
    low_52w: str | None = None
    high_52w: str | None = None
    price_percent_chg_24h: str | None = None


_RECORDS: dict[type, Any] = {
    Tickers: CoinbaseAdvancedSource._tickers,
    TickerBatch: CoinbaseAdvancedSource._tickers,
    MarketTrades: CoinbaseAdvancedSource._trades,
    Level2: CoinbaseAdvancedSource._level2,
    Candles: CoinbaseAdvancedSource._candles,
    Heartbeats: CoinbaseAdvancedSource._heartbeats,
    Status: CoinbaseAdvancedSource._status,
    Subscriptions: CoinbaseAdvancedSource._subscriptions,
}


def _error_of(frame: bytes) -> Error | None:
    """The ``error`` message ``frame`` is, if it is one."""
    if b'"error"' not in frame:
        return None
    try:
        return decode_error(frame)
    except (msgspec.ValidationError, msgspec.DecodeError):
        return None


def _granted_by(frame: bytes) -> set[str]:
    """The channels a ``subscriptions`` message names (nothing for any other frame; a bad one is
    judged with the other frames by ``_parse``)."""
    if b'"subscriptions"' not in frame:
        return set()
    try:
        message = decode(frame)
    except (msgspec.ValidationError, msgspec.DecodeError, RecursionError):
        return set()
    if not isinstance(message, Subscriptions):
        return set()
    # a channel may be named as its messages name it (level2's are l2_data)
    names = {name for event in message.events for name in event.subscriptions}
    return names | {"level2"} if "l2_data" in names else names


def gap_json(stream: str, first: int, last: int, detected_at: str) -> bytes:
    """The JSON of a ``gap`` record of this source (``stream``: ``sequence_num`` or
    ``heartbeat_counter``; no product: both numbers are the connection's)."""
    return _encode(
        {
            "type": "gap",
            "product_id": None,
            "stream": stream,
            "first_missing": first,
            "last_missing": last,
            "missed": last - first + 1,
            "detected_at": detected_at,
        }
    )


def _text(when: datetime) -> str:
    """RFC 3339 in UTC with microseconds (``2023-02-09T20:30:37.167360Z``), as the Exchange's."""
    if when.utcoffset():
        when = when.astimezone(UTC)
    return when.replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
