"""Fast mode: tickers pre-encoded as websocket frames and written in large socket writes.

A server that calls a websocket library's ``send()`` once per message tops out at a few hundred
thousand messages a second, below what the clients it should measure can read. Here each ticker is
one ``%`` format of a template (its sequence and trade id), framed by hand and joined into chunks of
``write_bytes``; a stream with a fixed count and no compression is built once and its chunks are
shared by every connection, so serving it costs one ``transport.write`` per chunk.
"""

from __future__ import annotations

import zlib
from collections.abc import Iterator
from dataclasses import dataclass

from sluice.simulator.markets import Market, fast_template

__all__ = ["Chunk", "FastStream", "frame_header"]


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
