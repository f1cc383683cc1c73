"""Fast mode: tickers pre-encoded as websocket frames and written in large socket writes.

A server that calls a websocket library's ``send()`` once per message tops out at a few hundred
thousand messages a second, below what the clients it should measure can read. Here each ticker is
one ``%`` format of a template (its sequence and trade id), framed by hand and joined into chunks of
``write_bytes``; a stream with a fixed count and no compression is built once and its chunks are
shared by every connection, so serving it costs one ``transport.write`` per chunk.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from sluice.simulator.markets import Market, fast_template
from sluice.simulator.options import SimulatorOptions

__all__ = ["Chunk", "FastStream", "SharedStreams", "frame_header", "send_fast"]


def frame_header(length: int, compressed: bool = False) -> bytes:
    """The header of an unmasked, final text frame of ``length`` payload bytes."""
    first = 0xC1 if compressed else 0x81
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return bytes((first, 126, length >> 8, length & 0xFF))
    return bytes((first, 127)) + length.to_bytes(8, "big")


@dataclass(frozen=True, slots=True)
class Chunk:
    data: bytes
    frames: int
    last_trade_ids: tuple[int, ...]
    """Per product (in the stream's product order), the last trade id sent once this is."""


class FastStream:
    """Consecutive tickers of ``products``, round robin, from the market's current state."""

    def __init__(
        self,
        market: Market,
        products: list[str],
        count: int | None,
        write_bytes: int,
        compressor: zlib._Compress | None = None,
    ) -> None:
        self.products = products
        self.count = count
        self.write_bytes = write_bytes
        self.compressor = compressor
        self._templates = [fast_template(market.latest_ticker[p]) for p in products]
        self._ids = [market.last_trade_id[p] for p in products]
        self._sequences = [market.sequence[p] for p in products]

    def chunks(self) -> Iterator[Chunk]:
        templates, ids, sequences = self._templates, self._ids, self._sequences
        compressor = self.compressor
        n = len(templates)
        remaining = self.count
        index = 0
        while remaining is None or remaining > 0:
            parts: list[bytes] = []
            size = made = 0
            limit = remaining if remaining is not None else 1 << 62
            while size < self.write_bytes and made < limit:
                ids[index] += 1
                sequences[index] += 1
                payload = templates[index] % (sequences[index], ids[index])
                if compressor is not None:
                    data = compressor.compress(payload) + compressor.flush(zlib.Z_SYNC_FLUSH)
                    payload = data[:-4]
                    parts.append(frame_header(len(payload), True))
                else:
                    parts.append(frame_header(len(payload)))
                parts.append(payload)
                size += len(payload) + 4
                made += 1
                index = index + 1 if index + 1 < n else 0
            if remaining is not None:
                remaining -= made
            yield Chunk(b"".join(parts), made, tuple(ids))


class SharedStreams:
    """The fast-mode streams of a fixed count (``fast_count``), built once per product list and
    compression and shared by every connection: serving one is then only socket writes. A
    compressed one is one deflate stream from a fresh context, as each connection's inflater
    starts."""

    def __init__(self, market: Market, options: SimulatorOptions) -> None:
        self.market = market
        self.options = options
        self._built: dict[tuple[tuple[str, ...], bool], list[Chunk]] = {}

    def get(self, products: list[str], compressed: bool) -> list[Chunk]:
        key = (tuple(products), compressed)
        chunks = self._built.get(key)
        if chunks is None:
            options = self.options
            compressor = zlib.compressobj(wbits=-15) if compressed else None
            stream = FastStream(
                self.market, products, options.fast_count, options.fast_write_bytes, compressor
            )
            chunks = self._built[key] = list(stream.chunks())
        return chunks

    def for_connection(self, products: list[str], compressed: bool) -> Iterable[Chunk]:
        """The stream one connection serves: the shared one, or an endless one of its own."""
        if self.options.fast_count is not None:
            return self.get(products, compressed)
        compressor = zlib.compressobj(wbits=-15) if compressed else None
        stream = FastStream(self.market, products, None, self.options.fast_write_bytes, compressor)
        return stream.chunks()


async def send_fast(
    chunks: Iterable[Chunk],
    write: Callable[[bytes], None],
    writable: asyncio.Event,
    stopped: Callable[[], bool],
    sent: Callable[[Chunk], None],
) -> float | None:
    """Write ``chunks`` as fast as the socket takes them (waiting while ``writable`` is clear);
    ``sent(chunk)`` after each write. Returns the seconds taken, or None when ``stopped()`` came
    first."""
    started = time.monotonic()
    for chunk in chunks:
        await writable.wait()
        if stopped():
            return None
        write(chunk.data)
        sent(chunk)
        await asyncio.sleep(0)
    return time.monotonic() - started
