"""A local websocket server that behaves like the Coinbase Exchange feed.

Protocol, as the real feed: a client must subscribe within 5 s or is disconnected; a subscribe
request (channel names with top-level ``product_ids``, or ``{name, product_ids}`` objects) is
answered with a ``subscriptions`` frame listing everything subscribed, then each product's latest
ticker (``ticker``) or ``last_match`` (``matches``); unknown channels and products, channels that
need authentication and requests without channels are answered with an ``error`` frame
(``Failed to subscribe`` and a reason); ``heartbeat`` sends one frame a second per product;
permessage-deflate is accepted when offered. A client whose unsent backlog passes
``Faults.slow_consumer_bytes`` is sent an ``ErrSlowConsume`` error and disconnected.

Faults (:class:`sluice.simulator.options.Faults`) are injected per connection. Fast mode serves
pre-encoded tickers in large socket writes, as fast as the client reads, for benchmarks.

This module accepts connections and runs the market; each connection is a
:class:`~sluice.simulator.session.Session`, the feed's rules are in :mod:`.protocol`.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import Any

import structlog
from picows import (
    WSUpgradeRequest,
    WSUpgradeResponse,
    WSUpgradeResponseWithListener,
    ws_create_server,
)

from sluice.simulator.advanced.session import AdvancedSession
from sluice.simulator.books import BookEvent, BookMarket
from sluice.simulator.fast import SharedStreams
from sluice.simulator.markets import Event, Market, ReplayMarket, SyntheticMarket
from sluice.simulator.options import DEFAULT_SYNTHETIC_PRODUCTS, Faults, SimulatorOptions
from sluice.simulator.rest import RestTrades
from sluice.simulator.session import Session
from sluice.simulator.tape import load_tape

__all__ = ["CoinbaseSimulator"]


class CoinbaseSimulator:
    """Serve a simulated Coinbase feed on ``ws://host:port``."""

    def __init__(self, options: SimulatorOptions | None = None) -> None:
        self.options = options = options or SimulatorOptions()
        self.market: Market
        if options.mode == "replay":
            recording = load_tape(options.tape) if options.tape is not None else None
            self.market = ReplayMarket(options.speed, options.loop, options.retime, recording)
        else:
            products = options.products or DEFAULT_SYNTHETIC_PRODUCTS
            self.market = SyntheticMarket(tuple(products), options.trades_per_sec)
        if options.record_sent:
            self.market.history = []
        self.sessions: list[Session] = []
        """Every connection so far, in order (open or closed)."""
        self.log: Any = structlog.get_logger("sluice.simulator")
        self.url = ""
        self.port = 0
        self._server: asyncio.Server | None = None
        self._market_task: asyncio.Task[None] | None = None
        self.fast_streams = SharedStreams(self.market, options)
        self.book_market = BookMarket(self.market.products, options.book_updates_per_sec)
        self._book_task: asyncio.Task[None] | None = None
        self.rest: RestTrades | None = None
        """The REST trades endpoint, when ``options.rest`` asks for it (:attr:`rest_url`)."""
        if options.rest is not None:
            self.rest = RestTrades(options.rest, self.market.products, self.log)
            self.rest.add_frames(self.market.last_match.items())

    @property
    def rest_url(self) -> str:
        """The REST API's base URL (empty when not served)."""
        return self.rest.url if self.rest is not None else ""

    @property
    def open_sessions(self) -> list[Session]:
        return [s for s in self.sessions if s.transport is not None and not s.disconnected]

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, rest_port: int = 0) -> None:
        """Listen on ``host:port`` (0: a free port; see :attr:`url`), and on ``rest_port`` for the
        REST API when it is served (:attr:`rest_url`)."""
        self._server = await ws_create_server(
            self._accept,
            host,
            port,
            websocket_handshake_timeout=5,
            logger_name="sluice.simulator",
        )
        self.port = self._server.sockets[0].getsockname()[1]
        self.url = f"ws://{host}:{self.port}"
        self._market_task = asyncio.create_task(self._run_market(), name="simulator-market")
        self._book_task = asyncio.create_task(self._run_books(), name="simulator-books")
        if self.rest is not None:
            await self.rest.start(host, rest_port)

    async def _run_books(self) -> None:
        await self.market.started.wait()
        await self.book_market.run(self._publish_books, self.market.clock)

    def _publish_books(self, events: list[BookEvent]) -> None:
        for session in self.sessions:
            if session.live:
                session.on_book_events(events)

    async def _run_market(self) -> None:
        try:
            await self.market.run(self._publish)
        except asyncio.CancelledError:
            raise
        except Exception:
            self.log.exception("simulator.market_failed")
            raise

    async def serve_forever(self) -> None:
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        for session in self.open_sessions:
            session.abort()
        for task in (self._market_task, self._book_task):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)
        for session in self.sessions:
            session.stop_tasks()
        if self.rest is not None:
            await self.rest.close()

    def _accept(self, request: WSUpgradeRequest) -> WSUpgradeResponseWithListener:
        number = len(self.sessions) + 1
        faults = self.options.faults
        if faults.connections is not None and number > faults.connections:
            faults = Faults()
        offered = request.headers.get("Sec-WebSocket-Extensions", "")
        deflate = self.options.deflate and "permessage-deflate" in offered
        kind = Session if self.options.advanced is None else AdvancedSession
        session = kind(
            self.market,
            self.options,
            self.log,
            number,
            faults,
            deflate,
            self.fast_streams,
            self.book_market,
        )
        self.sessions.append(session)
        headers = {"Sec-WebSocket-Extensions": "permessage-deflate"} if deflate else None
        return WSUpgradeResponseWithListener(
            WSUpgradeResponse.create_101_response(extra_headers=headers), session
        )

    def _publish(self, events: list[Event]) -> None:
        if self.rest is not None:
            self.rest.add(events)
        for session in self.sessions:
            if session.live:
                session.on_events(events)
