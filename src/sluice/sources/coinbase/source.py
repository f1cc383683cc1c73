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
first is a duplicate when nothing was missed and is discarded, else it reveals the gap.

Records: each accepted frame is one record whose ``raw`` is the frame's exact JSON text, of kind
``ticker``, ``heartbeat``, ``match`` (``match`` and ``last_match`` frames; the ``type`` field tells
them apart), ``status``, ``full`` (the ``full`` channel's order messages) or ``gap``, with the
frame's ``time`` as event time; order books (``level2``, ``level2_batch``) become one ``level2``
record per level and optional ``book_snapshot`` records (:mod:`.books`: the book checks, the
``full`` channel's sequence numbers, and the resubscribe that follows a gap). Every frame received is
exactly one of: a record; a dead letter with its reason (not JSON, not UTF-8, nested too deeply,
failing its spec, an id out of range, a non-finite decimal, longer than ``max_frame_bytes``); or
discarded on purpose and counted as such by reason, not as a loss (an unknown ``type``, as Coinbase
asks of clients; a duplicate or out-of-order trade); ``subscriptions`` and ``error`` frames are
control messages, logged. Each batch reports every frame read (``read_events``) and what it
discarded; the runner counts them. No frame can stop the source.

Options beside the feed (their own modules): ``backfill:`` heals gaps of the ``matches`` stream over
REST (:mod:`.backfill`: a task of its own, whose records are yielded between websocket batches:
``match`` records marked ``backfilled``, ``gap_healed``, ``gap_unhealable``,
``gap_backfill_failed``); ``record:`` writes every frame received to a tape (:mod:`sluice.tape`).
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import msgspec

from sluice import __version__
from sluice.config.models import RetryPolicy
from sluice.errors import SluiceError
from sluice.plugin import ComponentContext, EventTimes, Readiness, Source
from sluice.records import Record, Rejected, SourceBatch
from sluice.sources.coinbase.auth import signed_request
from sluice.sources.coinbase.backfill import DEFAULT_REST_URL, Backfiller
from sluice.sources.coinbase.book_protocol import FULL_TYPES, L2Snapshot, L2Update
from sluice.sources.coinbase.books import BookFeed
from sluice.sources.coinbase.client import Connection, FeedUnavailable, Oversize
from sluice.sources.coinbase.config import CoinbaseSourceConfig
from sluice.sources.coinbase.feed import connect, readiness, start_simulator, take_fresh
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
    decode,
    may_be_non_finite,
    may_hold_decimals,
    nan_free,
    one_line,
    plain_batch,
    screen,
    subscribe_request,
)
from sluice.tape import TapeWriter

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
    description = (
        "Coinbase Exchange websocket feed (ticker, matches, heartbeat, status; signed: level2, "
        "full, user) with reconnects, a stale-feed watchdog, trade-id and sequence gap records "
        "and checked order books."
    )

    def restart_policy(self) -> RetryPolicy:
        return self.config.reconnect

    def connected(self) -> bool:
        """Up from the subscription's reply until the connection ends."""
        return self._subscribed

    def event_times(self) -> EventTimes:
        """``recorded`` for a replay of the simulator it starts with ``retime: false``; a feed at
        a ``url`` is taken as live."""
        sim = self.config.simulator
        if sim is not None and sim.mode == "replay" and not sim.retime:
            return "recorded"
        return "wall-clock"

    def __init__(self, component_id: str, config: CoinbaseSourceConfig) -> None:
        super().__init__(component_id, config)
        self._subscription = config.subscription()
        self._request = subscribe_request(self._subscription)
        ticker_gaps, match_gaps = _gap_products(config, self._subscription)
        limits = {"rebaseline_after": config.rebaseline_after, "max_jump": config.max_trade_id_jump}
        self._tickers = TradeIds(ticker_gaps, **limits)
        self._matches = TradeIds(match_gaps, **limits)
        self._books = BookFeed(self._subscription, config.book_snapshots)
        self._url = config.url
        self._conn: Connection | None = None
        self._subscribed = False
        self._simulator: Any = None
        self._ctx: ComponentContext | None = None
        self._log: Any = None
        self._backfill: Backfiller | None = None
        self._tape: TapeWriter | None = None
        self._gap_records = 0
        """Gap records made so far (a batch that made none may know its size without a pass)."""

    async def start(self, ctx: ComponentContext) -> None:
        self._ctx = ctx
        self._log = ctx.log
        c = self.config
        if c.simulator is not None:
            from sluice.simulator import RestOptions

            self._simulator = await start_simulator(
                c.simulator,
                c.products,
                self._log,
                "coinbase.simulator_started",
                credentials=_simulated_key(c),
                rest=RestOptions() if c.backfill.enabled else None,
            )
            self._url = self._simulator.url
        self._start_extras(ctx)

    def _start_extras(self, ctx: ComponentContext) -> None:
        """The backfill task and the tape, when configured."""
        c = self.config
        if c.backfill.enabled:
            backfill = c.backfill
            if self._simulator is not None and backfill.rest_url == DEFAULT_REST_URL:
                backfill = backfill.model_copy(update={"rest_url": self._simulator.rest_url})
            self._backfill = Backfiller(backfill, self._log, ctx.metrics, f"sluice/{__version__}")
            self._backfill.start()
        if c.record is not None:
            header = {
                "source": "coinbase",
                "component_id": self.component_id,
                "url": self._url,
                "subscribe": self._request.decode(),
                "sluice": __version__,
            }
            self._tape = TapeWriter(c.record, header, self._log)

    async def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
        if self._simulator is not None:
            await self._simulator.close()
            self._simulator = None
        if self._backfill is not None:
            await self._backfill.close()
            self._backfill = None
        if self._tape is not None:
            self._tape.close()
            self._tape = None

    async def readiness(self) -> Readiness:
        return readiness(self._conn, self._subscribed, self.config.stale_after_secs)

    # -- the feed ------------------------------------------------------------------------------

    async def batches(self) -> AsyncIterator[SourceBatch]:
        c = self.config
        ctx = self._ctx
        assert ctx is not None, "start() was not called"
        conn = await connect(self._url, c, short_frame_bytes=_LONG)
        self._conn = conn
        if self._tape is not None:
            self._tape.connection(self._url)
            conn.tap = self._tape.frames_received
        # ids may have moved on another server, or back: each product's first may re-baseline
        self._tickers.reconnected()
        self._matches.reconnected()
        self._books.reconnected()
        try:
            early = await self._subscribe(conn)
            self._subscribed = True
            if early:
                yield self._parse(early)
            stale = c.stale_after_secs
            max_events = c.max_batch_events
            parse = self._parse
            backfill = self._backfill
            while True:
                frames = await self._take(conn, max_events, stale)
                # the connection knows the frames' size and whether one is long: no pass here
                yield parse(
                    frames, conn.taken_bytes, conn.taken_short
                )  # also one of discards only: the runner counts what was read
                if backfill is not None and backfill.ready:
                    yield backfill.take()
        finally:
            self._subscribed = False
            conn.close()
            self._conn = None

    async def _take(self, conn: Connection, max_events: int, stale: float | None) -> list[bytes]:
        backfill = self._backfill
        if backfill is not None and backfill.in_flight:
            # a fetch is under way: look for its results at least every BACKFILL_POLL_SECS
            return await self._take_or_poll(conn, max_events, stale)
        return await take_fresh(conn, max_events, stale)

    async def _take_or_poll(
        self, conn: Connection, max_events: int, stale: float | None
    ) -> list[bytes]:
        """Frames, or none after BACKFILL_POLL_SECS; raises FeedUnavailable on a stale feed."""
        stale_in = None if stale is None else conn.received_at + stale - time.monotonic()
        wait = BACKFILL_POLL_SECS if stale_in is None else min(BACKFILL_POLL_SECS, stale_in)
        try:
            return await conn.take(max_events, wait)
        except TimeoutError:
            if stale_in is not None and stale_in <= BACKFILL_POLL_SECS:
                raise FeedUnavailable(
                    f"{conn.host}: no frame for {stale:g} s (stale feed), reconnecting"
                ) from None
            return []

    async def _subscribe(self, conn: Connection) -> list[bytes]:
        """Send the subscribe request and wait for the reply; returns other frames received
        meanwhile. Raises SubscriptionRefused on an ``error`` reply."""
        c = self.config
        conn.send(self._sign(msgspec.json.decode(self._request)) if c.auth else self._request)
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
        if self.config.auth is not None and "authenticat" in error.message.lower():
            # the signature, key or passphrase was refused: reconnecting would be refused again
            raise SubscriptionRefused(
                f"Coinbase refused the signed subscription ({detail}); check the `auth` key, "
                "secret and passphrase and this machine's clock"
            )
        if "authentication" in (error.reason or error.message).lower():
            raise SubscriptionRefused(
                f"Coinbase refused the subscription because a channel requires authentication, "
                f"which the coinbase source does not support ({detail})"
            )
        raise SubscriptionRefused(f"Coinbase refused the subscription ({detail})")

    def _sign(self, request: dict[str, Any]) -> bytes:
        """``request`` as sent: signed when the source has credentials."""
        auth = self.config.auth
        return signed_request(request, auth) if auth is not None else msgspec.json.encode(request)

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

    def _parse(
        self, frames: list[bytes], nbytes: int | None = None, short: bool = False
    ) -> SourceBatch:
        """Turn received frames into records; runs on the loop, at most max_batch_events each.

        ``nbytes``: the frames' total length, when the caller knows it; ``short``: True when the
        caller knows that none is longer than ``_LONG``."""
        ctx = self._ctx
        assert ctx is not None
        records: list[Record] = []
        rejected: list[Rejected] = []
        unknown = 0
        oversize_bytes = 0  # an Oversize stands empty in the frames for a message of its size
        late = [0, 0, 0]  # trade frames by verdict: (accepted), DUPLICATE, OUT_OF_ORDER
        tickers, matches = self._tickers, self._matches
        ticker_ids = tickers.last_ids
        books = self._books
        full = books.full_products
        append = records.append
        # what the spec's types let through (protocol.screen) is looked for over the whole batch
        # first: only a frame that may hold it is screened, one by one
        max_n = PLAIN_MAX_N
        crowded_ = True  # whether a frame may have more than max_n lowercase n
        size = sum(map(len, frames)) if nbytes is None else nbytes
        if size <= _BLOB_BYTES:
            blob = b"".join(frames)
            plain, lettered = plain_batch(blob, 0 if short else max(map(len, frames), default=0))
            if not may_hold_decimals(blob):
                # no frame has a decimal field screen() may refuse (an l2update-only batch)
                crowded_ = False
            elif plain and not lettered and len(frames) >= _VECTOR_FRAMES:
                # no frame may hold a NaN: none needs its n counted
                crowded_ = not nan_free(blob)
            del blob
        else:
            plain, lettered = False, True
        clear = plain and not lettered and not crowded_  # no frame of the batch needs screening
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
            if clear:
                pass
            elif not plain and (
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
                    append(Record(raw, "ticker", message.time))
                    continue
                late[self._trade(tickers, "ticker", "ticker", message, raw, records)] += 1
            elif type(message) is L2Update:
                reason = books.update(message, raw, records, plain)
                if reason is not None:
                    rejected.append(Rejected(raw, reason))
            elif isinstance(message, Heartbeat):
                timestamp = message.time.timestamp()
                tracker = matches if message.product_id in matches.gap_products else tickers
                tracker.heartbeat(message.product_id, message.last_trade_id)
                if tracker.gaps:
                    self._emit_gaps(tracker, _stream_name(tracker, matches), timestamp, records)
                append(Record(raw, "heartbeat", timestamp))
            elif isinstance(message, Match):  # and LastMatch
                if full and not books.sequenced(message.product_id, message.sequence):
                    continue
                late[self._trade(matches, "matches", "match", message, raw, records)] += 1
            elif isinstance(message, Status):
                append(Record(raw, "status", None))
            elif isinstance(message, Error):
                ctx.metrics.error("coinbase_error")
                self._log.warning("coinbase.error", message=message.message, reason=message.reason)
            elif isinstance(message, FULL_TYPES):
                if books.sequenced(message.product_id, message.sequence):
                    append(Record(raw, "full", message.time))
            elif isinstance(message, L2Snapshot):
                reason = books.snapshot(message, raw, records)
                if reason is not None:
                    rejected.append(Rejected(raw, reason))
            elif isinstance(message, Subscriptions):
                self._log.info("coinbase.subscriptions_changed")
                books.subscriptions({ch.name: ch.product_ids for ch in message.channels})
        if books.pending or books.snapshots is not None:
            conn = self._conn
            books.report(ctx.metrics, self._log, conn.send if conn else None, self._sign, records)
        # the runner counts every frame read and what was discarded, from the batch
        discarded = None
        if unknown or late[DUPLICATE] or late[OUT_OF_ORDER] or books.discarded:
            discarded = {
                "unknown_type": unknown,
                "duplicate": late[DUPLICATE],
                "out_of_order": late[OUT_OF_ORDER],
            }
            books.take_discarded(discarded)
        # each frame made at most one record of its own length (one_line keeps it), so when
        # every frame made one and no gap record was added, the records' size is the frames';
        # order books make records of their own (levels, snapshots, their gaps): not on those feeds
        exact = (
            len(records) == len(frames)
            and gap_records == self._gap_records
            and not (books.level2_products or books.full_products)
            and books.snapshots is None
        )
        return SourceBatch(
            records,
            rejected,
            nbytes=size if exact else None,
            read_events=len(frames),
            read_bytes=size + oversize_bytes,
            discarded=discarded,
        )

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
        if (
            verdict == OUT_OF_ORDER
            and self._backfill is not None
            and tracker is self._matches
            and self._backfill.claim(message.product_id, message.trade_id)
        ):
            # a late match inside a gap being healed: recorded, and not fetched over REST
            records.append(Record(raw, kind, message.time))
            return ACCEPT
        if verdict == ACCEPT:
            if tracker.gaps:
                self._emit_gaps(tracker, stream, message.time.timestamp(), records)
            records.append(Record(raw, kind, message.time))
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
            if self._backfill is not None and stream == "matches":
                self._backfill.gap(gap, detected_at)
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


BACKFILL_POLL_SECS = 0.2
"""While gaps are being fetched, the longest a backfill result waits for a quiet feed."""
_LONG = 2 * MAX_DEPTH
"""Frames longer than this may nest too deeply and are screened (tickers are ~400 bytes)."""
_VECTOR_FRAMES = 64
"""From this many frames a plain batch is looked at for NaN in one vectorised pass
(:func:`protocol.nan_free`); below it numpy's fixed cost per call is more than the byte loops'."""
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


def _simulated_key(config: CoinbaseSourceConfig) -> Any:
    """The embedded simulator accepts the source's own key (offline demos of signed channels)."""
    if config.auth is None:
        return None
    from sluice.simulator.auth import SimulatedKey

    auth = config.auth
    return SimulatedKey(
        auth.key.get_secret_value(),
        auth.secret.get_secret_value(),
        auth.passphrase.get_secret_value(),
    )


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
