"""The websocket connection to the feed, on picows (the fastest client measured here).

picows hands each frame to a callback on the event loop; the callback only appends the payload to
a list, so a burst of frames costs one append each and the source takes them all at once
(:meth:`Connection.take`). permessage-deflate, which picows leaves to the application, is done
here: the client offers it, and when the server accepts, compressed frames (RSV1 set) are inflated
with one zlib stream per connection (about 0.7 µs per ticker). Above ``max_pending_bytes`` of
frames not yet taken, reading pauses, so a slow pipeline pushes back on the TCP connection instead
of filling memory (Coinbase then drops the connection with ``ErrSlowConsume``).

Frame size: a message (a whole frame, the fragments of one, or what a compressed one inflates to)
longer than ``max_frame_bytes`` is not handed over: an :class:`Oversize` placeholder takes its place
in the frames, carrying its size and first bytes, and the connection goes on. The client reads such
a message only up to ``TRANSPORT_LIMIT_FACTOR`` times the limit: beyond that (a single frame picows
will not buffer, or a compressed one that keeps inflating) the connection is closed with code 1009
and the reason says so.

Every failure to connect or to stay connected is a :class:`FeedUnavailable` (a RetriableError): the
runner reconnects with backoff.
"""

from __future__ import annotations

import asyncio
import socket
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit

from picows import (
    WSCloseCode,
    WSError,
    WSFrame,
    WSListener,
    WSMsgType,
    WSTransport,
    WSUpgradeRequest,
    WSUpgradeResponse,
    ws_connect,
)

from sluice.errors import RetriableError

__all__ = [
    "TRANSPORT_LIMIT_FACTOR",
    "Connection",
    "FeedUnavailable",
    "Oversize",
    "open_connection",
    "parse_deflate",
]

_DEFLATE_OFFER = "permessage-deflate; client_max_window_bits"
_DEFLATE_TAIL = b"\x00\x00\xff\xff"
_READ_BUFFER = 256 * 1024
_TEXT = WSMsgType.TEXT
TRANSPORT_LIMIT_FACTOR = 4
"""Messages up to this many times ``max_frame_bytes`` are read to be reported (size and head) and
the connection goes on; a longer one ends the connection."""
OVERSIZE_HEAD_BYTES = 4096
"""How much of an oversize message is kept for its dead letter."""
_INFLATE_CHUNK = 1024 * 1024


class Oversize(bytes):
    """Stands in the frames for a message longer than ``max_frame_bytes``: empty itself (so it
    never decodes), with the message's ``size`` and its first bytes (``head``)."""

    size: int
    head: bytes
    limit: int

    @classmethod
    def of(cls, size: int, head: bytes, limit: int) -> Oversize:
        placeholder = cls()
        placeholder.size = size
        placeholder.head = head[:OVERSIZE_HEAD_BYTES]
        placeholder.limit = limit
        return placeholder

    @property
    def reason(self) -> str:
        kept = min(len(self.head), self.size)
        return (
            f"frame of {self.size} bytes is over max_frame_bytes ({self.limit}); "
            f"its first {kept} bytes are kept"
        )


class _TooLarge(Exception):
    """A message past the transport limit: the connection must end."""


class FeedUnavailable(RetriableError):
    """The feed could not be reached or the connection was lost; reconnecting may help."""


@dataclass(frozen=True)
class Deflate:
    """permessage-deflate parameters the server accepted."""

    server_no_context_takeover: bool = False
    server_max_window_bits: int = 15


def parse_deflate(header: str | None) -> Deflate | None:
    """The accepted permessage-deflate parameters from ``Sec-WebSocket-Extensions``, if any."""
    if not header:
        return None
    for extension in header.split(","):
        name, *params = [p.strip() for p in extension.split(";")]
        if name != "permessage-deflate":
            continue
        no_takeover, bits = False, 15
        for param in params:
            key, _, value = param.partition("=")
            key = key.strip()
            if key == "server_no_context_takeover":
                no_takeover = True
            elif key == "server_max_window_bits" and value.strip().strip('"').isdigit():
                bits = int(value.strip().strip('"'))
        return Deflate(no_takeover, bits)
    return None


class _Listener(WSListener):
    """Collects frames for :class:`Connection`; runs in picows' callbacks, so it never blocks."""

    def __init__(
        self,
        deflate: Deflate | None,
        max_pending_bytes: int,
        max_frame_bytes: int = 2**62,
        short_frame_bytes: int = 2**62,
    ) -> None:
        super().__init__()
        self.deflate = deflate
        self._inflater = zlib.decompressobj(-15) if deflate is not None else None
        self.max_pending_bytes = max_pending_bytes
        self.max_frame_bytes = max_frame_bytes
        self.transport_limit = max_frame_bytes * TRANSPORT_LIMIT_FACTOR
        self.short_frame_bytes = min(short_frame_bytes, max_frame_bytes)
        """Frames up to this size take the hot path; longer ones are counted in ``long_pending``."""
        self.long_pending = 0
        """Frames longer than ``short_frame_bytes`` pushed since the pending frames were last all
        taken (an upper bound on those still pending)."""
        self.oversize = 0
        """Messages over ``max_frame_bytes`` replaced by an :class:`Oversize` so far."""
        self.frames: list[bytes] = []
        self.pending_bytes = 0
        self.paused = False
        self.transport: WSTransport | None = None
        self.waiter: asyncio.Future[None] | None = None
        self.closed: str | None = None
        """Why the connection ended, once it has."""
        self._fragments: list[bytes] | None = None
        self._fragments_size = 0
        self._fragments_compressed = False

    def on_ws_connected(self, transport: WSTransport) -> None:
        self.transport = transport

    def on_ws_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        # the hot path, once per frame: a whole uncompressed text frame is appended and nothing
        # else is called; everything rarer goes through _on_frame
        if (
            frame.msg_type is _TEXT
            and frame.fin
            and not frame.rsv1
            and (size := frame.payload_size) <= self.short_frame_bytes
        ):
            self.frames.append(frame.get_payload_as_bytes())
            pending = self.pending_bytes = self.pending_bytes + size
            if pending > self.max_pending_bytes and not self.paused:
                self._pause()
            waiter = self.waiter
            if waiter is not None:
                self.waiter = None  # woken once; the following frames skip this
                if not waiter.done():
                    waiter.set_result(None)
            return
        try:
            self._on_frame(transport, frame)
        except (zlib.error, ValueError) as exc:
            self._fail(transport, f"undecodable frame: {exc}")
        except _TooLarge as exc:
            self._fail(transport, str(exc), WSCloseCode.MESSAGE_TOO_BIG)

    def _on_frame(self, transport: WSTransport, frame: WSFrame) -> None:
        msg_type = frame.msg_type
        if msg_type is WSMsgType.TEXT or msg_type is WSMsgType.BINARY:
            if self._fragments is not None:
                self._fail(transport, "a new message before the last one's final fragment")
                return
            if frame.fin:
                self._message(frame.get_payload_as_bytes(), frame.rsv1)
            else:
                self._fragments = [frame.get_payload_as_bytes()]
                self._fragments_size = frame.payload_size
                self._fragments_compressed = frame.rsv1
        elif msg_type is WSMsgType.CONTINUATION:
            fragments = self._fragments
            if fragments is None:
                self._fail(transport, "continuation frame without a first fragment")
                return
            self._fragments_size += frame.payload_size
            if self._fragments_size > self.transport_limit:
                raise _TooLarge(
                    f"a fragmented message passed {self.transport_limit} bytes "
                    f"({TRANSPORT_LIMIT_FACTOR} x max_frame_bytes) before its end"
                )
            if self._fragments_compressed or self._fragments_size <= self.max_frame_bytes:
                fragments.append(frame.get_payload_as_bytes())  # compressed: bounded above
            elif len(fragments) > 1 or len(fragments[0]) < OVERSIZE_HEAD_BYTES:
                # over the limit: only the head is kept for the dead letter
                fragments.append(frame.get_payload_as_bytes())
                fragments[:] = [b"".join(fragments)[:OVERSIZE_HEAD_BYTES]]
            if frame.fin:
                size = self._fragments_size
                self._fragments = None
                payload = b"".join(fragments)
                if self._fragments_compressed:
                    self._message(payload, True)
                elif size > self.max_frame_bytes:
                    self._push_oversize(size, payload)
                else:
                    self._push(payload)
        elif msg_type is WSMsgType.CLOSE:
            code = frame.get_close_code()
            reason = frame.get_close_reason()
            # a server may echo the close this client sent (e.g. picows' 1009): say the first
            self.closed = _client_close_reason(transport, self.transport_limit) or (
                f"closed by the server (code {int(code.value)}{': ' + reason if reason else ''})"
            )
            transport.send_close(WSCloseCode.OK)
            transport.disconnect()
            self._wake()

    def _message(self, payload: bytes, compressed: bool) -> None:
        """A whole message: inflated if need be, handed over or replaced by an Oversize."""
        if compressed:
            inflated = self._inflate(payload)
            if isinstance(inflated, bytes):
                self._push(inflated)
            else:
                size, head = inflated
                self._push_oversize(size, head)
        elif len(payload) > self.max_frame_bytes:
            self._push_oversize(len(payload), payload)
        else:
            self._push(payload)

    def _inflate(self, payload: bytes) -> bytes | tuple[int, bytes]:
        """The inflated message, or (its size, its head) when it is over ``max_frame_bytes``.

        Raises _TooLarge past the transport limit: a small compressed frame can inflate to
        gigabytes, so output is bounded, and the rest of an oversize message is inflated in
        chunks and thrown away (the stream's context must stay whole for the next messages)."""
        inflater = self._inflater
        if inflater is None:
            raise ValueError("compressed frame (RSV1) but permessage-deflate was not negotiated")
        # one inflater for the connection: with server_no_context_takeover each message simply
        # makes no reference to earlier ones, which a persistent inflater reads as well (and a
        # new inflater per message would cost ~3 µs)
        limit = self.max_frame_bytes
        out = inflater.decompress(payload + _DEFLATE_TAIL, limit + 1)
        if len(out) <= limit:
            return out
        size = len(out)
        while inflater.unconsumed_tail:
            size += len(inflater.decompress(inflater.unconsumed_tail, _INFLATE_CHUNK))
            if size > self.transport_limit:
                raise _TooLarge(
                    f"a compressed message inflates past {self.transport_limit} bytes "
                    f"({TRANSPORT_LIMIT_FACTOR} x max_frame_bytes)"
                )
        return size, out[:OVERSIZE_HEAD_BYTES]

    def _push_oversize(self, size: int, head: bytes) -> None:
        self.oversize += 1
        self._push(Oversize.of(size, head, self.max_frame_bytes))

    def _pause(self) -> None:
        self.paused = True
        if self.transport is not None:
            self.transport.underlying_transport.pause_reading()

    def _push(self, payload: bytes) -> None:
        if len(payload) > self.short_frame_bytes:
            self.long_pending += 1
        self.frames.append(payload)
        self.pending_bytes += len(payload)
        if self.pending_bytes > self.max_pending_bytes and not self.paused:
            self._pause()
        self._wake()

    def _fail(
        self, transport: WSTransport, reason: str, code: WSCloseCode = WSCloseCode.PROTOCOL_ERROR
    ) -> None:
        self.closed = reason
        transport.send_close(code)
        transport.disconnect(graceful=False)
        self._wake()

    def on_ws_disconnected(self, transport: WSTransport) -> None:
        if self.closed is None:
            self.closed = (
                "connection lost while reading was paused (the pipeline is slower than the feed)"
                if self.paused
                else _client_close_reason(transport, self.transport_limit)
                or "connection lost (closed without a close frame)"
            )
        self._wake()

    def _wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            if not waiter.done():
                waiter.set_result(None)


def _client_close_reason(transport: WSTransport, transport_limit: int) -> str | None:
    """Why picows itself closed the connection (a frame it refused to parse), if it did."""
    handshake = transport.close_handshake
    sent = handshake.sent if handshake is not None else None
    if sent is None or (handshake.recv is not None and handshake.recv_then_sent):
        return None
    if sent.code == WSCloseCode.MESSAGE_TOO_BIG:
        return (
            f"a frame over the client's limit of {transport_limit} bytes "
            f"({TRANSPORT_LIMIT_FACTOR} x max_frame_bytes) arrived; the client closed the "
            f"connection with code 1009 ({sent.reason})"
        )
    if sent.reason:  # e.g. picows' ping timeout or a frame it could not parse
        return f"the client closed the connection with code {sent.code.value} ({sent.reason})"
    return None


class Connection:
    """One open websocket to the feed."""

    def __init__(self, transport: WSTransport, listener: _Listener, host: str) -> None:
        self.transport = transport
        self.listener = listener
        self.host = host
        self.compressed = listener.deflate is not None
        self.received_at = time.monotonic()
        """When frames were last taken (for the stale-feed watchdog and readiness)."""
        self.tap: Callable[[list[bytes]], None] | None = None
        """Called with every list of frames :meth:`take` hands over (recording, ``record:``)."""
        self.taken_bytes = 0
        """The total length of the frames the last :meth:`take` handed over."""
        self.taken_short = True
        """Whether none of them is longer than the listener's ``short_frame_bytes``."""
        # picows keeps the error that made it close the connection (an oversize frame) in a
        # future nobody else awaits; awaiting it here keeps asyncio from logging it as lost
        self._ended = asyncio.ensure_future(transport.wait_disconnected())
        self._ended.add_done_callback(_retrieve)

    def send(self, message: bytes) -> None:
        self.transport.send(WSMsgType.TEXT, message)

    async def take(self, max_frames: int, wait_secs: float | None) -> list[bytes]:
        """The frames received so far (at least one, at most ``max_frames``), waiting up to
        ``wait_secs`` seconds for one (None: no limit).

        Raises :class:`FeedUnavailable` when the connection has ended and TimeoutError when no
        frame arrived in time.
        """
        listener = self.listener
        self.taken_bytes, self.taken_short = 0, True  # what a take that raises hands over
        while not listener.frames:
            if listener.closed is not None:
                raise FeedUnavailable(f"{self.host}: {listener.closed}")
            if wait_secs is not None and wait_secs <= 0:
                raise TimeoutError
            waiter = listener.waiter = asyncio.get_running_loop().create_future()
            try:
                async with asyncio.timeout(wait_secs):
                    await waiter
            finally:
                listener.waiter = None
        frames = listener.frames
        self.taken_short = listener.long_pending == 0
        if len(frames) <= max_frames:
            listener.frames = []
            self.taken_bytes = listener.pending_bytes
            listener.pending_bytes = 0
            listener.long_pending = 0
        else:
            frames, listener.frames = frames[:max_frames], frames[max_frames:]
            self.taken_bytes = sum(map(len, frames))
            listener.pending_bytes -= self.taken_bytes
        if listener.paused and listener.pending_bytes <= listener.max_pending_bytes // 2:
            listener.paused = False
            self.transport.underlying_transport.resume_reading()
        self.received_at = time.monotonic()
        if self.tap is not None:
            self.tap(frames)
        return frames

    @property
    def closed(self) -> str | None:
        return self.listener.closed

    def close(self) -> None:
        """Close the connection (with a close frame when it is still up)."""
        if not self.transport.is_disconnected:
            if not self.transport.is_close_frame_sent:
                self.transport.send_close(WSCloseCode.GOING_AWAY)
            self.transport.disconnect()
        if self.listener.closed is None:
            self.listener.closed = "closed by the client"


async def open_connection(
    url: str,
    *,
    compression: bool = True,
    connect_timeout_secs: float = 10.0,
    ping_interval_secs: float = 10.0,
    ping_timeout_secs: float = 10.0,
    receive_buffer_bytes: int | None = None,
    max_pending_bytes: int = 32 * 1024 * 1024,
    max_frame_bytes: int = 4 * 1024 * 1024,
    short_frame_bytes: int = 2**62,
) -> Connection:
    """Open a websocket to ``url``; raises :class:`FeedUnavailable` with a readable reason."""
    parts = urlsplit(url)
    host = parts.hostname or url
    where = f"{host}:{parts.port}" if parts.port else host

    def listener_factory(_: WSUpgradeRequest, response: WSUpgradeResponse) -> _Listener:
        deflate = parse_deflate(response.headers.get("Sec-WebSocket-Extensions"))
        return _Listener(
            deflate if compression else None, max_pending_bytes, max_frame_bytes, short_frame_bytes
        )

    headers = [("Sec-WebSocket-Extensions", _DEFLATE_OFFER)] if compression else []
    try:
        async with asyncio.timeout(connect_timeout_secs):
            transport, listener = await ws_connect(
                listener_factory,
                url,
                websocket_handshake_timeout=connect_timeout_secs,
                enable_auto_ping=True,
                auto_ping_idle_timeout=ping_interval_secs,
                auto_ping_reply_timeout=ping_timeout_secs,
                extra_headers=headers,
                read_buffer_init_size=_READ_BUFFER,
                max_frame_size=max_frame_bytes * TRANSPORT_LIMIT_FACTOR,
                logger_name="sluice.coinbase",
            )
    except TimeoutError:
        raise FeedUnavailable(
            f"cannot reach {where}: no answer within {connect_timeout_secs:g} s"
        ) from None
    except socket.gaierror as exc:
        raise FeedUnavailable(f"cannot reach {where}: name lookup failed ({exc.strerror})") from exc
    except OSError as exc:
        raise FeedUnavailable(f"cannot reach {where}: {exc.strerror or exc}") from exc
    except WSError as exc:
        response = getattr(exc, "response", None)
        status = getattr(response, "status", None)
        retry_after = _retry_after(response)
        detail = f"HTTP {int(status)}" if status is not None else str(exc)
        raise FeedUnavailable(
            f"cannot reach {where}: websocket handshake refused ({detail})",
            retry_after_secs=retry_after,
        ) from exc
    if receive_buffer_bytes is not None:
        sock = transport.underlying_transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, receive_buffer_bytes)
    assert isinstance(listener, _Listener)
    return Connection(transport, listener, where)


def _retrieve(future: asyncio.Future[None]) -> None:
    if not future.cancelled():
        future.exception()


def _retry_after(response: object) -> float | None:
    headers = getattr(response, "headers", None)
    value = headers.get("Retry-After") if headers is not None else None
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None
