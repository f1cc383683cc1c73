"""One client connection to the simulator: its socket, what it was asked and what it sends.

The feed's rules are in :mod:`.protocol`, what the client subscribed to in :mod:`.subscriptions`,
the injected faults in :mod:`.faults` and fast mode's streams in :mod:`.fast`; this module ties
them to one picows connection.
"""

from __future__ import annotations

import asyncio
import socket
import time
import zlib
from typing import Any

import orjson
from picows import WSCloseCode, WSFrame, WSListener, WSMsgType, WSTransport

from sluice.simulator.auth import AUTH_FAILED, check_signed
from sluice.simulator.books import BookEvent, BookMarket, BookStream
from sluice.simulator.fast import Chunk, SharedStreams, send_fast
from sluice.simulator.faults import GARBAGE, TradeFaults, fault_after_frame, garbage_due
from sluice.simulator.markets import Event, Market, rfc3339
from sluice.simulator.options import Faults, SimulatorOptions
from sluice.simulator.protocol import (
    HEARTBEAT,
    error_frame,
    parse_channels,
    status_frame,
    subscriptions_frame,
)
from sluice.simulator.subscriptions import Subscriptions

__all__ = ["Session"]

_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_STATUS_EVERY = 5
"""Heartbeat ticks between two ``status`` frames."""


class Session(WSListener):
    """One client connection."""

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
        super().__init__()
        self.market = market
        self.options = options
        self.number = number
        self.faults = faults
        self.log: Any = log.bind(connection=number)
        self._fast_streams = fast_streams
        self.transport: WSTransport | None = None
        self.subscriptions = Subscriptions()
        self.live = False
        """Subscribed and still sending."""
        self.disconnected = False
        self.stalled = False
        self.closing = False
        self.sent_frames = 0
        self.sent: list[bytes] | None = [] if self.options.record_sent else None
        """Every frame sent (bytes as the client decodes them), when recording."""
        self._trade_faults = TradeFaults(faults, record_skipped=self.options.record_sent)
        self.skipped = self._trade_faults.skipped
        """Every trade frame left out by the ``skip_every`` fault while live, when recording."""
        self.close_reason = ""
        self.connected_at = 0.0
        self.stalled_at = 0.0
        """Monotonic times of the connection and of a ``stall_after`` fault (tests)."""
        self.deflate = deflate
        # fast mode sends its replies and heartbeats uncompressed (RSV1 clear, which RFC 7692
        # allows), so that its pre-compressed stream owns the compression context
        self._compressor = (
            zlib.compressobj(wbits=-15) if deflate and not self.options.fast else None
        )
        self._decompressor = zlib.decompressobj(wbits=-15) if deflate else None
        self._tasks: list[asyncio.Task[None]] = []
        self._deadline: asyncio.TimerHandle | None = None
        self._writable = asyncio.Event()
        self._writable.set()
        self._fast_ids: dict[str, int] | None = None
        self.book_market = book_market
        self.books = BookStream(faults, record=options.record_sent)
        """Level-2 and ``full`` frames: what was sent, skipped and crossed (:mod:`.books`)."""
        self.auth_refusals = 0

    @property
    def channels(self) -> dict[str, list[str]]:
        """Channel -> products subscribed to."""
        return self.subscriptions.channels

    @property
    def trade_frames(self) -> int:
        """Trade frames (tickers, matches) this connection was offered, sent or not."""
        return self._trade_faults.count

    # -- picows callbacks ------------------------------------------------------------------------

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport
        self.connected_at = time.monotonic()
        if self.faults.slow_consumer_bytes is not None:
            # a small send buffer makes a slow reader's backlog show up in user space soon
            sock = transport.underlying_transport.get_extra_info("socket")
            if sock is not None:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 65536)
        self.log.info("simulator.connected", compressed=self.deflate)
        self._deadline = asyncio.get_running_loop().call_later(
            self.options.subscribe_timeout_secs, self._no_subscribe
        )

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT or msg_type is WSMsgType.BINARY:
            payload = frame.get_payload_as_bytes()
            if frame.rsv1 and self._decompressor is not None:
                payload = self._decompressor.decompress(payload + _DEFLATE_TAIL)
            self._on_request(payload)
        elif msg_type is WSMsgType.CLOSE:
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        self.disconnected = True
        self.live = False
        self.stop_tasks()
        self.log.info("simulator.disconnected", frames_sent=self.sent_frames)

    def pause_writing(self) -> None:
        self._writable.clear()

    def resume_writing(self) -> None:
        self._writable.set()

    # -- requests ----------------------------------------------------------------------------------

    def _no_subscribe(self) -> None:
        if not self.channels and not self.disconnected:
            self.log.info(
                "simulator.no_subscribe", timeout_secs=self.options.subscribe_timeout_secs
            )
            self._send_control(
                error_frame(
                    "Failed to subscribe",
                    f"no subscribe message within {self.options.subscribe_timeout_secs:g} seconds",
                )
            )
            self.close("no subscribe in time")

    def _on_request(self, payload: bytes) -> None:
        try:
            request = orjson.loads(payload)
        except orjson.JSONDecodeError:
            self._send_control(error_frame("Malformed JSON", "the message is not valid JSON"))
            return
        if not isinstance(request, dict) or request.get("type") not in ("subscribe", "unsubscribe"):
            self._send_control(error_frame("Failed to subscribe", "Unknown message type"))
            return
        signed = "signature" in request
        if signed:
            refused = check_signed(request, self.options.credentials)
            if refused is not None:
                self.auth_refusals += 1
                self.log.info("simulator.auth_refused", reason=refused)
                self._send_control(error_frame(AUTH_FAILED, refused))
                return
        wanted, reason = parse_channels(request, self.market.products, signed=signed)
        if reason is not None:
            self.log.info("simulator.subscribe_refused", reason=reason)
            self._send_control(error_frame("Failed to subscribe", reason))
            return
        if request["type"] == "unsubscribe":
            self.subscriptions.unsubscribe(wanted)
        else:
            self.subscriptions.subscribe(wanted)
        self._subscribed(new=wanted if request["type"] == "subscribe" else {})

    def _subscribed(self, new: dict[str, list[str]]) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None
        self._send_control(subscriptions_frame(self.channels))
        self.log.info("simulator.subscribed", channels=sorted(self.channels))
        self.live = bool(self.channels) and not (self.stalled or self.closing)
        market = self.market
        if not self.options.fast:
            for product in new.get("ticker", []):
                frame = market.latest_ticker.get(product)
                if frame is not None:
                    self._send_trade_frame(frame)
        for product in new.get("matches", []):
            frame = market.last_match_frame(product)
            if frame is not None:
                self._send_trade_frame(frame)
        if "status" in new:
            self._send(status_frame(self.market.products))
        if self.book_market is not None:
            self.books.subscribed(new, self.book_market, market.clock(), self._send)
        if not self._tasks and self.channels:
            self._tasks.append(asyncio.create_task(self._ticks(), name=f"sim-ticks-{self.number}"))
            if self.options.fast:
                self._tasks.append(
                    asyncio.create_task(self._fast(), name=f"sim-fast-{self.number}")
                )
        market.started.set()

    # -- sending ---------------------------------------------------------------------------------

    def on_events(self, events: list[Event]) -> None:
        """Market events, as they happen."""
        if self.options.fast:
            return
        tickers, matches = self.subscriptions.tickers, self.subscriptions.matches
        for event in events:
            if event.channel == "ticker":
                if event.product_id in tickers:
                    self._send_trade(event)
            elif event.product_id in matches:
                self._send_trade(event)
            if not self.live:
                return

    def on_book_events(self, events: list[BookEvent]) -> None:
        """Level-2 updates and ``full`` messages, as they happen."""
        if self.book_market is None or self.options.fast:
            return
        self.books.on_events(
            events,
            self.channels,
            self.book_market,
            self.market.clock(),
            self._send,
            lambda: self.live,
        )

    def _send_trade(self, event: Event) -> None:
        self._trade_faults.send(event, self.live, self._send_trade_frame)

    def _send_trade_frame(self, frame: bytes) -> None:
        self._send(frame)

    def _send_control(self, frame: bytes) -> None:
        """A reply (subscriptions, error): not subject to faults."""
        transport = self.transport
        if transport is None or self.disconnected:
            return
        self._write(transport, frame)
        if self.sent is not None:
            self.sent.append(frame)

    def _write(self, transport: WSTransport, frame: bytes) -> None:
        compressor = self._compressor
        if compressor is None:
            transport.send(WSMsgType.TEXT, frame)
        else:
            data = compressor.compress(frame) + compressor.flush(zlib.Z_SYNC_FLUSH)
            transport.send(WSMsgType.TEXT, data[:-4], rsv1=True)

    def _send(self, frame: bytes) -> None:
        """A data frame, through the faults."""
        transport = self.transport
        if transport is None or self.disconnected or self.stalled or self.closing:
            return
        self._write(transport, frame)
        self.sent_frames += 1
        if self.sent is not None:
            self.sent.append(frame)
        faults = self.faults
        if garbage_due(faults, self.sent_frames):
            self._write(transport, GARBAGE)
            if self.sent is not None:
                self.sent.append(GARBAGE)
        fault = fault_after_frame(
            faults, self.sent_frames, transport.underlying_transport.get_write_buffer_size
        )
        if fault == "slow_consumer":
            self._slow_consumer()
        elif fault == "close_after":
            self.log.info("simulator.fault", fault="close_after", frames=self.sent_frames)
            self.abort()
        elif fault == "stall_after":
            self.log.info("simulator.fault", fault="stall_after", frames=self.sent_frames)
            self.stalled = True
            self.stalled_at = time.monotonic()
            self.live = False

    def _slow_consumer(self) -> None:
        transport = self.transport
        assert transport is not None
        backlog = transport.underlying_transport.get_write_buffer_size()
        self.log.info("simulator.slow_consumer", unsent_bytes=backlog)
        self._write(transport, error_frame("Slow consumer", "ErrSlowConsume"))
        self.close("ErrSlowConsume")
        # a client that stopped reading altogether is cut off
        asyncio.get_running_loop().call_later(10.0, self.abort)

    def close(self, reason: str) -> None:
        """Close with a close frame, after what is already queued."""
        self.closing = True
        self.live = False
        self.close_reason = reason
        if self.transport is not None and not self.disconnected:
            self.transport.send_close(WSCloseCode.POLICY_VIOLATION, reason.encode())
            self.transport.disconnect(graceful=True)

    def abort(self) -> None:
        """Drop the TCP connection without a close frame."""
        self.closing = True
        self.live = False
        if self.transport is not None and not self.disconnected:
            self.transport.underlying_transport.abort()

    def stop_tasks(self) -> None:
        for task in self._tasks:
            task.cancel()
        self._tasks.clear()
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    async def _ticks(self) -> None:
        """Heartbeats once a second per product, and status frames now and then."""
        interval = self.options.heartbeat_interval_secs
        market = self.market
        tick = 0
        while True:
            await asyncio.sleep(interval)
            tick += 1
            if self.stalled or self.closing:
                continue
            now = rfc3339(market.clock()).encode()
            for product in self.channels.get("heartbeat", ()):
                self._send(
                    HEARTBEAT
                    % (
                        self._last_trade_id(product),
                        product.encode(),
                        market.sequence.get(product, 0),
                        now,
                    )
                )
            if "status" in self.channels and tick % _STATUS_EVERY == 0:
                self._send(status_frame(self.market.products))

    def _last_trade_id(self, product: str) -> int:
        fast = self._fast_ids
        if fast is not None and product in fast:
            return fast[product]
        return self.market.last_trade_id.get(product, 0)

    async def _fast(self) -> None:
        """Fast mode: pre-encoded tickers in large socket writes, as fast as the client reads."""
        products = sorted(self.subscriptions.tickers)
        if not products:
            return
        transport = self.transport
        assert transport is not None
        fast_ids = self._fast_ids = {}

        def sent(chunk: Chunk) -> None:
            self.sent_frames += chunk.frames
            fast_ids.update(zip(products, chunk.last_trade_ids, strict=True))

        elapsed = await send_fast(
            self._fast_streams.for_connection(products, self.deflate),
            transport.underlying_transport.write,
            self._writable,
            lambda: self.disconnected or self.closing or self.stalled,
            sent,
        )
        if elapsed is None:
            return
        self.log.info(
            "simulator.fast_done",
            frames=self.sent_frames,
            elapsed_secs=round(elapsed, 4),
            frames_per_sec=round(self.sent_frames / elapsed) if elapsed > 0 else 0,
        )
