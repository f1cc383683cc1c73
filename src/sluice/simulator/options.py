"""What a simulator serves and which faults it injects."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from sluice.simulator.advanced.options import AdvancedOptions
from sluice.simulator.auth import SimulatedKey
from sluice.simulator.rest import RestOptions

__all__ = ["DEFAULT_SYNTHETIC_PRODUCTS", "Faults", "SimulatorOptions"]

DEFAULT_SYNTHETIC_PRODUCTS = ("BTC-USD", "ETH-USD", "SOL-USD", "LTC-USD", "DOGE-USD")


@dataclass(frozen=True)
class Faults:
    """Faults injected into a connection's feed; each is off when None.

    Counts are of the data frames a connection was sent (tickers, matches, heartbeats, status);
    trade faults count trade frames (tickers and matches) only.
    """

    close_after: int | None = None
    """Drop the TCP connection, without a close frame, after this many frames."""
    stall_after: int | None = None
    """After this many frames send nothing more, keeping the socket open (and answering pings)."""
    garbage_every: int | None = None
    """Send a frame that is not JSON after every Nth frame."""
    truncate_every: int | None = None
    """Cut every Nth trade frame short (the trade is lost: a dead letter, then a gap)."""
    skip_every: int | None = None
    """Leave out every Nth trade frame (a gap in trade ids)."""
    repeat_every: int | None = None
    """Send every Nth trade frame twice (a duplicate)."""
    reorder_every: int | None = None
    """Send every Nth trade frame after the one that follows it (out of order)."""
    slow_consumer_bytes: int | None = None
    """Disconnect a client with an ``ErrSlowConsume`` error once this many bytes wait unsent."""
    skip_sequence_every: int | None = None
    """Leave out every Nth ``full`` message (a gap in sequence numbers)."""
    cross_book_every: int | None = None
    """Turn every Nth ``l2update`` into one that crosses the book (a bid at the best ask)."""
    connections: int | None = None
    """Inject into the first N connections only; None: every connection."""

    def any(self) -> bool:
        return any(
            v is not None
            for k, v in self.__dict__.items()
            if k != "connections"  # the scope, not a fault
        )


@dataclass(frozen=True)
class SimulatorOptions:
    """How a :class:`sluice.simulator.CoinbaseSimulator` behaves."""

    mode: Literal["replay", "synthetic"] = "replay"
    speed: float = 1.0
    """Replay: 1 keeps the recorded timing, 10 is ten times faster."""
    loop: bool = True
    """Replay: start again at the end, with trade ids, sequences and times moved on."""
    retime: bool = True
    """Replay: move every frame's ``time`` to the present (order kept, spacing divided by
    ``speed``) so the replay looks live; False sends the recorded bytes exactly (first pass)."""
    trades_per_sec: float = 20.0
    """Synthetic: trades per second across all products (each a ticker and a match)."""
    products: tuple[str, ...] | None = None
    """Synthetic: the products the market has (default DEFAULT_SYNTHETIC_PRODUCTS). Replay has the
    recorded products."""
    fast: bool = False
    """Serve tickers as fast as the socket takes them, pre-encoded, in large writes (benchmarks)."""
    fast_count: int | None = None
    """Fast mode: tickers per connection; None: endless."""
    fast_write_bytes: int = 512 * 1024
    """Fast mode: bytes per socket write."""
    deflate: bool = True
    """Accept permessage-deflate when the client offers it (as Coinbase does)."""
    subscribe_timeout_secs: float = 5.0
    """Disconnect a client that has not subscribed within this (Coinbase: 5 s)."""
    heartbeat_interval_secs: float = 1.0
    book_updates_per_sec: float = 20.0
    """Level-2 updates (and as many ``full`` messages) per second, all products together."""
    credentials: SimulatedKey | None = None
    """The API key a signed subscribe request must use (``level2``, ``full``, ``user``); None:
    those channels are refused as the Exchange refuses an unsigned request."""
    faults: Faults = field(default_factory=Faults)
    record_sent: bool = False
    """Keep every frame sent per connection (tests)."""
    advanced: AdvancedOptions | None = None
    """Speak Coinbase Advanced Trade instead of the Exchange feed (``--api advanced_trade``)."""
    rest: RestOptions | None = None
    """Serve the REST trades endpoint (:mod:`.rest`) on a port of its own (``rest_url``)."""
    tape: Path | None = None
    """Replay: serve this tape (:mod:`.tape`) instead of the shipped recording."""
