"""What a websocket feed source does around its frames, the same for the Exchange and the Advanced
Trade feeds: connect with the config's connection options, take frames under the stale-feed
watchdog, and answer /readyz.

Used by the ``coinbase`` and ``coinbase_advanced`` sources, as is :func:`start_simulator` (the
embedded simulator of ``simulator:``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Protocol

from sluice.plugin import Readiness
from sluice.sources.coinbase.client import Connection, FeedUnavailable, open_connection

if TYPE_CHECKING:
    from sluice.simulator import CoinbaseSimulator
    from sluice.sources.coinbase.config import EmbeddedSimulator

__all__ = ["ConnectionOptions", "connect", "readiness", "start_simulator", "take_fresh"]


class ConnectionOptions(Protocol):
    """The connection fields both sources' configs have (same names, same meaning)."""

    @property
    def compression(self) -> bool: ...
    @property
    def connect_timeout_secs(self) -> float: ...
    @property
    def ping_interval_secs(self) -> float: ...
    @property
    def ping_timeout_secs(self) -> float: ...
    @property
    def receive_buffer_bytes(self) -> int | None: ...
    @property
    def max_pending_bytes(self) -> int: ...
    @property
    def max_frame_bytes(self) -> int: ...


async def connect(
    url: str, options: ConnectionOptions, short_frame_bytes: int = 2**62
) -> Connection:
    """Open the websocket; raises FeedUnavailable (retriable) when it cannot.
    ``short_frame_bytes``: see :attr:`Connection.taken_short`."""
    return await open_connection(
        url,
        compression=options.compression,
        connect_timeout_secs=options.connect_timeout_secs,
        ping_interval_secs=options.ping_interval_secs,
        ping_timeout_secs=options.ping_timeout_secs,
        receive_buffer_bytes=options.receive_buffer_bytes,
        max_pending_bytes=options.max_pending_bytes,
        max_frame_bytes=options.max_frame_bytes,
        short_frame_bytes=short_frame_bytes,
    )


async def take_fresh(conn: Connection, max_events: int, stale: float | None) -> list[bytes]:
    """The frames received so far (see :meth:`Connection.take`); raises FeedUnavailable when no
    frame arrived for ``stale`` seconds (None: wait for ever), so the runner reconnects."""
    if stale is None:
        return await conn.take(max_events, None)
    try:
        return await conn.take(max_events, conn.received_at + stale - time.monotonic())
    except TimeoutError:
        raise FeedUnavailable(
            f"{conn.host}: no frame for {stale:g} s (stale feed), reconnecting"
        ) from None


def readiness(conn: Connection | None, subscribed: bool, stale: float | None) -> Readiness:
    """Ready when connected, subscribed and not stale."""
    if conn is None or conn.closed is not None or not subscribed:
        return Readiness(False, "not connected")
    idle = time.monotonic() - conn.received_at
    if stale is not None and idle > stale and not conn.listener.frames:
        return Readiness(False, f"no frame for {idle:.0f} s")
    return Readiness(True)


async def start_simulator(
    options: EmbeddedSimulator, products: Sequence[str], log: Any, event: str, **extra: Any
) -> CoinbaseSimulator:
    """Start the simulator a source's ``simulator:`` asks for, on a free loopback port, and log
    ``event`` with its URL; ``extra``: the source's own :class:`SimulatorOptions` fields."""
    from sluice.simulator import CoinbaseSimulator, SimulatorOptions

    simulator = CoinbaseSimulator(
        SimulatorOptions(
            mode=options.mode,
            speed=options.speed,
            retime=options.retime,
            trades_per_sec=options.trades_per_sec,
            products=tuple(products) if options.mode == "synthetic" else None,
            **extra,
        )
    )
    await simulator.start("127.0.0.1", 0)
    log.info(event, url=simulator.url, mode=options.mode)
    return simulator
