"""The ``coinbase`` source: the Coinbase Exchange websocket feed, validated, de-duplicated and with
its gaps reported.

Delivery: at-most-once with gap reporting. A websocket feed cannot be replayed: what arrives while
the connection is down is lost, and a crash loses what was received but not yet written (use a
sink's disk buffer to narrow that). What is lost is not silent: each product's trade ids are
followed, and every run of missed trade ids is counted (``sluice_source_gaps``,
``sluice_source_missed_events``), logged and emitted as a ``gap`` record.

On reconnect: the runner calls :meth:`CoinbaseSource.batches` again after a backoff with full
jitter (``reconnect``); the source opens a new connection, subscribes again and checks the reply.
Coinbase then sends each product's latest ticker (``ticker``) or ``last_match`` (``matches``): the
first is a duplicate when nothing was missed and is dropped, else it reveals the gap.

Records: each accepted frame is one record whose ``raw`` is the frame's exact JSON text, of kind
``ticker``, ``heartbeat``, ``match`` (``match`` and ``last_match`` frames; the ``type`` field tells
them apart), ``status`` or ``gap``, with the frame's ``time`` as event time. Every frame received is
exactly one of: a record; a dead letter with its reason (not JSON, not UTF-8, nested too deeply,
failing its spec, an id out of range, a non-finite decimal, longer than ``max_frame_bytes``); or
skipped and counted as dropped (an unknown ``type``, as Coinbase asks of clients; a duplicate or
out-of-order trade); ``subscriptions`` and ``error`` frames are control messages, logged. No frame can
stop the source.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from sluice.config.models import RetryPolicy
from sluice.errors import SluiceError
from sluice.plugin import ComponentContext, Readiness, Source
from sluice.records import Record, Rejected, SourceBatch
from sluice.sources.coinbase.client import Connection, FeedUnavailable, Oversize, open_connection
from sluice.sources.coinbase.config import CoinbaseSourceConfig
from sluice.sources.coinbase.gaps import ACCEPT, DUPLICATE, OUT_OF_ORDER, Gap, TradeIds
from sluice.sources.coinbase.protocol import (
    MAX_DEPTH,
    PLAIN_MAX_N,
    Error,
    Heartbeat,
    Match,
    Status,
    Subscriptions,
    Ticker,
    classify,
    crowded,
    decode,
    may_be_non_finite,
    measure,
    one_line,
    plain_batch,
    screen,
    subscribe_request,
)

__all__ = ["CoinbaseSource", "SubscriptionRefused"]


class SubscriptionRefused(SluiceError):
    """Coinbase answered the subscribe request with an error: retrying the same request cannot
    help (an unknown product or channel, or a channel that needs authentication)."""


class CoinbaseSource(Source[CoinbaseSourceConfig]):
    """Coinbase Exchange websocket feed (at-most-once; gaps in trade ids reported as records)."""

    config_model = CoinbaseSourceConfig
    delivery = "at-most-once"
    delivery_note = (
        "A live feed with no replay: what arrives while the connection is down is not sent again."
    )
    counts_received = True  # every frame, including those skipped (unknown types, duplicates)
    description = (
        "Coinbase Exchange websocket feed (ticker, matches, heartbeat, status) with reconnects, "
        "a stale-feed watchdog and trade-id gap records."
    )

    def restart_policy(self) -> RetryPolicy:
        return self.config.reconnect

    def __init__(self, component_id: str, config: CoinbaseSourceConfig) -> None:
        super().__init__(component_id, config)
        self._subscription = config.subscription()
        self._request = subscribe_request(self._subscription)
        ticker_gaps, match_gaps = _gap_products(config, self._subscription)
        limits = {"rebaseline_after": config.rebaseline_after, "max_jump": config.max_trade_id_jump}
        self._tickers = TradeIds(ticker_gaps, **limits)
        self._matches = TradeIds(match_gaps, **limits)
        self._url = config.url
        self._conn: Connection | None = None
        self._subscribed = False
        self._simulator: Any = None
        self._ctx: ComponentContext | None = None
        self._log: Any = None
        self._gap_records = 0
        """Gap records made so far (a batch that made none may know its size without a pass)."""

    async def start(self, ctx: ComponentContext) -> None:
        self._ctx = ctx
        self._log = ctx.log
        if self.config.simulator is not None:
            from sluice.simulator import CoinbaseSimulator, SimulatorOptions

            sim = self.config.simulator
            self._simulator = CoinbaseSimulator(
                SimulatorOptions(
                    mode=sim.mode,
                    speed=sim.speed,
                    retime=sim.retime,
                    trades_per_sec=sim.trades_per_sec,
                    products=tuple(self.config.products) if sim.mode == "synthetic" else None,
                )
            )
            await self._simulator.start("127.0.0.1", 0)
            self._url = self._simulator.url
            self._log.info("coinbase.simulator_started", url=self._url, mode=sim.mode)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._simulator is not None:
            await self._simulator.close()
            self._simulator = None

    async def readiness(self) -> Readiness:
        conn = self._conn
        if conn is None or conn.closed is not None or not self._subscribed:
            return Readiness(False, "not connected")
        stale = self.config.stale_after_secs
        idle = time.monotonic() - conn.received_at
        if stale is not None and idle > stale and not conn.listener.frames:
            return Readiness(False, f"no frame for {idle:.0f} s")
        return Readiness(True)

    # -- the feed ------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[SourceBatch]:
        c = self.config
        ctx = self._ctx
        assert ctx is not None, "start() was not called"
        conn = await open_connection(
            self._url,
            compression=c.compression,
            connect_timeout_secs=c.connect_timeout_secs,
            ping_interval_secs=c.ping_interval_secs,
            ping_timeout_secs=c.ping_timeout_secs,
            receive_buffer_bytes=c.receive_buffer_bytes,
            max_pending_bytes=c.max_pending_bytes,
            max_frame_bytes=c.max_frame_bytes,
        )
        self._conn = conn
        # ids may have moved on another server, or back: each product's first may re-baseline
        self._tickers.reconnected()
        self._matches.reconnected()
        try:
            early = await self._subscribe(conn)
            self._subscribed = True
            ctx.metrics.connected.set(1)
            if early:
                batch = self._parse(early)
                if batch.records or batch.rejected:
                    yield batch
            stale = c.stale_after_secs
            max_events = c.max_batch_events
            parse = self._parse
            while True:
                frames = await self._take(conn, max_events, stale)
                batch = parse(frames)
                if batch.records or batch.rejected:
                    yield batch
        finally:
            self._subscribed = False
            ctx.metrics.connected.set(0)
            conn.close()
            self._conn = None

    async def _take(self, conn: Connection, max_events: int, stale: float | None) -> list[bytes]:
        if stale is None:
            return await conn.take(max_events, None)
        try:
            return await conn.take(max_events, conn.received_at + stale - time.monotonic())
        except TimeoutError:
            raise FeedUnavailable(
                f"{conn.host}: no frame for {stale:g} s (stale feed), reconnecting"
            ) from None

    async def _subscribe(self, conn: Connection) -> list[bytes]:
        """Send the subscribe request and wait for the reply; returns other frames received
        meanwhile. Raises SubscriptionRefused on an ``error`` reply."""
        c = self.config
        conn.send(self._request)
        deadline = time.monotonic() + c.subscribe_timeout_secs
        early: list[bytes] = []
        while True:
            try:
                frames = await conn.take(c.max_batch_events, deadline - time.monotonic())
            except TimeoutError:
                raise FeedUnavailable(
                    f"{conn.host}: no reply to the subscribe request within "
                    f"{c.subscribe_timeout_secs:g} s"
                ) from None
            for index, raw in enumerate(frames):
                try:
                    message = decode(raw)
                except Exception:  # any frame but the reply is parsed (and judged) later
                    early.append(raw)
                    continue
                if isinstance(message, Error):
                    self._refused(message)
                if isinstance(message, Subscriptions):
                    self._check_reply(message, conn)
                    return early + frames[index + 1 :]
                early.append(raw)

    def _refused(self, error: Error) -> None:
        assert self._ctx is not None
        self._ctx.metrics.error("coinbase_error")
        self._log.error("coinbase.subscribe_refused", message=error.message, reason=error.reason)
        detail = f"{error.message}: {error.reason}" if error.reason else error.message
        if "authentication" in (error.reason or error.message).lower():
            raise SubscriptionRefused(
                f"Coinbase refused the subscription because a channel requires authentication, "
                f"which the coinbase source does not support ({detail})"
            )
        raise SubscriptionRefused(f"Coinbase refused the subscription ({detail})")

    def _check_reply(self, reply: Subscriptions, conn: Connection) -> None:
        assert self._ctx is not None
        granted = {ch.name: set(ch.product_ids) for ch in reply.channels}
        missing: list[str] = []
        for name, products in self._subscription.items():
            if name not in granted:
                missing.append(name)
                continue
            missing += [f"{name}:{p}" for p in products if p not in granted[name]]
        if missing:
            self._ctx.metrics.error("subscription_mismatch")
            self._log.warning(
                "coinbase.subscription_incomplete",
                missing=missing,
                detail="Coinbase did not confirm every channel and product asked for",
            )
        self._log.info(
            "coinbase.subscribed",
            url=self._url,
            channels=sorted(granted),
            compressed=conn.compressed,
        )

    # -- frames to records ---------------------------------------------------------------------

    def _parse(self, frames: list[bytes]) -> SourceBatch:
        """Turn received frames into records; runs on the loop, at most max_batch_events each."""
        ctx = self._ctx
        assert ctx is not None
        records: list[Record] = []
        rejected: list[Rejected] = []
        unknown = 0
        oversize_bytes = 0  # an Oversize stands empty in the frames for a message of its size
        late = [0, 0, 0]  # trade frames by verdict: (accepted), DUPLICATE, OUT_OF_ORDER
        tickers, matches = self._tickers, self._matches
        ticker_ids = tickers.last_ids
        append = records.append
        # what the spec's types let through (protocol.screen) is looked for over the whole batch
        # first: only a frame that may hold it is screened, one by one
        max_n = PLAIN_MAX_N
        crowded_ = True  # whether a frame may have more than max_n lowercase n
        if len(frames) >= _VECTOR_FRAMES:
            ends, size, longest = measure(frames)
            if size <= _BLOB_BYTES:
                blob = b"".join(frames)
                plain, lettered = plain_batch(blob, longest)
                if plain and not lettered:
                    crowded_ = crowded(blob, ends, max_n)
                del blob
            else:
                plain, lettered = False, True
        else:
            size = sum(map(len, frames))
            if size <= _BLOB_BYTES:
                plain, lettered = plain_batch(b"".join(frames), max(map(len, frames), default=0))
            else:
                plain, lettered = False, True
        gap_records = self._gap_records
        for raw in frames:
            try:
                message = decode(raw)
            except Exception as exc:  # whatever the bytes, a frame never stops the source
                if type(raw) is Oversize:
                    rejected.append(Rejected(raw.head, raw.reason))
                    oversize_bytes += raw.size
                    continue
                reason = classify(raw, exc)
                if reason is None:
                    unknown += 1
                else:
                    rejected.append(Rejected(raw, reason))
                continue
            if not plain and (
                not raw.isascii()
                or 92 in raw  # a backslash
                or 10 in raw
                or 13 in raw
                or len(raw) > _LONG
            ):
                # line breaks between tokens are folded, so that a record stays one line
                reason = screen(raw, message)
                if reason is not None:
                    rejected.append(Rejected(raw, reason))
                    continue
                raw = one_line(raw)
            elif (lettered or (crowded_ and raw.count(110) > max_n)) and may_be_non_finite(message):
                # a plain frame: only a decimal field spelled with n or N may be refused
                reason = screen(raw, message)
                if reason is not None:
                    rejected.append(Rejected(raw, reason))
                    continue
            if type(message) is Ticker:  # no subclass; cheaper than isinstance
                # the common case inline: the next trade id of a product already seen
                product, trade_id = message.product_id, message.trade_id
                last = ticker_ids.get(product)
                if last is not None and trade_id == last + 1:
                    ticker_ids[product] = trade_id
                    append(Record(raw, "ticker", message.time.timestamp()))
                    continue
                late[self._trade(tickers, "ticker", "ticker", message, raw, records)] += 1
            elif isinstance(message, Heartbeat):
                timestamp = message.time.timestamp()
                tracker = matches if message.product_id in matches.gap_products else tickers
                tracker.heartbeat(message.product_id, message.last_trade_id)
                if tracker.gaps:
                    self._emit_gaps(tracker, _stream_name(tracker, matches), timestamp, records)
                append(Record(raw, "heartbeat", timestamp))
            elif isinstance(message, Match):  # and LastMatch
                late[self._trade(matches, "matches", "match", message, raw, records)] += 1
            elif isinstance(message, Status):
                append(Record(raw, "status", None))
            elif isinstance(message, Error):
                ctx.metrics.error("coinbase_error")
                self._log.warning("coinbase.error", message=message.message, reason=message.reason)
            elif isinstance(message, Subscriptions):
                self._log.info("coinbase.subscriptions_changed")
        # received counts every frame read (this source sets counts_received); sent is counted by
        # the runner from the batch's records
        metrics = ctx.metrics
        metrics.received_events.inc(len(frames))
        metrics.received_bytes.inc(size + oversize_bytes)
        if unknown:
            metrics.drop("unknown_type", unknown)
        if late[DUPLICATE]:
            metrics.drop("duplicate", late[DUPLICATE])
        if late[OUT_OF_ORDER]:
            metrics.drop("out_of_order", late[OUT_OF_ORDER])
        # each frame made at most one record of its own length (one_line keeps it), so when
        # every frame made one and no gap record was added, the records' size is the frames'
        exact = len(records) == len(frames) and gap_records == self._gap_records
        return SourceBatch(records, rejected, nbytes=size if exact else None)

    def _trade(
        self,
        tracker: TradeIds,
        stream: str,
        kind: str,
        message: Ticker | Match,
        raw: bytes,
        records: list[Record],
    ) -> int:
        """A trade frame off the common path: follow its trade id and, unless it repeats or
        comes late, record it after the gap it reveals, if any. Returns the verdict."""
        verdict = tracker.observe(message.product_id, message.trade_id)
        if tracker.rebaselines:
            self._emit_rebaselines(tracker, stream)
        if verdict == ACCEPT:
            timestamp = message.time.timestamp()
            if tracker.gaps:
                self._emit_gaps(tracker, stream, timestamp, records)
            records.append(Record(raw, kind, timestamp))
        return verdict

    def _emit_gaps(
        self, tracker: TradeIds, stream: str, timestamp: float, records: list[Record]
    ) -> None:
        assert self._ctx is not None
        metrics = self._ctx.metrics
        detected_at = _rfc3339(time.time())
        for gap in tracker.take_gaps():
            metrics.gaps.inc()
            metrics.missed.inc(gap.missed)
            self._log.warning(
                "coinbase.gap",
                product_id=gap.product_id,
                stream=stream,
                first_missing_trade_id=gap.first,
                last_missing_trade_id=gap.last,
                missed=gap.missed,
            )
            records.append(Record(gap_json(gap, stream, detected_at), "gap", timestamp))
            self._gap_records += 1

    def _emit_rebaselines(self, tracker: TradeIds, stream: str) -> None:
        assert self._ctx is not None
        for moved in tracker.take_rebaselines():
            self._ctx.metrics.rebaselines.inc()
            self._log.warning(
                "coinbase.trade_ids_rebaselined",
                product_id=moved.product_id,
                stream=stream,
                old_baseline=moved.old,
                new_baseline=moved.new,
                reason=_REBASELINE_REASONS[moved.reason],
                dropped_out_of_order=moved.dropped,
            )


_LONG = 2 * MAX_DEPTH
"""Frames longer than this may nest too deeply and are screened (tickers are ~400 bytes)."""
_VECTOR_FRAMES = 64
"""From this many frames a batch's lowercase ``n`` are counted per frame in one vectorised pass
(:func:`protocol.crowded`); below it numpy's fixed cost per call is more than the byte loops'."""
_BLOB_BYTES = 16 * 1024 * 1024
"""A batch up to this size is joined to be looked at in one go (a transient copy; a few MiB for a
batch of tickers); a larger one is looked at frame by frame."""

_REBASELINE_REASONS = {
    "reconnect": "the first trade id after a reconnect is below the last one seen",
    "below": "consecutive trade ids below the last one seen",
    "jump": "a trade id too far above the last one seen to be trades missed (max_trade_id_jump)",
}


def gap_json(gap: Gap, stream: str, detected_at: str) -> bytes:
    """The JSON of a ``gap`` record."""
    return msgspec.json.encode(
        {
            "type": "gap",
            "product_id": gap.product_id,
            "stream": stream,
            "first_missing_trade_id": gap.first,
            "last_missing_trade_id": gap.last,
            "missed": gap.missed,
            "detected_at": detected_at,
        }
    )


def _rfc3339(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _stream_name(tracker: TradeIds, matches: TradeIds) -> str:
    return "matches" if tracker is matches else "ticker"


def _gap_products(
    config: CoinbaseSourceConfig, subscription: dict[str, list[str]]
) -> tuple[frozenset[str], frozenset[str]]:
    """Products whose gaps the ticker and the match streams report."""
    mode = config.gap_detection
    on_matches = set(subscription.get("matches", ()))
    on_ticker = set(subscription.get("ticker", ()))
    if mode == "off":
        return frozenset(), frozenset()
    if mode == "matches":
        return frozenset(), frozenset(on_matches)
    if mode == "ticker":
        return frozenset(on_ticker), frozenset()
    return frozenset(on_ticker - on_matches), frozenset(on_matches)
