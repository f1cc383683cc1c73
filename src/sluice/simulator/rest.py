"""The simulator's REST API: ``GET /products/{product_id}/trades``, as Coinbase Exchange serves it.

Every trade the simulated market made is a trade of the exchange, whoever was sent it: the trades
a connection's ``skip`` fault left out, or that a disconnected client missed, are served here, so
that healing a gap (the source's ``backfill:``) is tested end to end.

As on Coinbase: trades newest first; ``limit`` 1 to 1000 (default 1000; outside that a 400);
``after=ID`` gives the trades older than ``ID`` and ``before=ID`` the newer ones (the page just
above it, still newest first); the ``CB-BEFORE`` header holds the newest trade id of the page and
``CB-AFTER`` the oldest, the cursors of the pages either side; an unknown product is a 404
``{"message": "NotFound"}``. Each trade is ``{"time", "trade_id", "price", "size", "side"}`` with
the values of its ``match`` frame (``side``: the maker's side, as in the frame).

Faults (:class:`RestOptions`): a rate limit answered with 429 ``Public rate limit exceeded``,
the first N requests answered 429 or 500, the API down (503 for every request), and a history
of only the last N trades per product (older ones are gone, as on the real API over time).
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import orjson
from aiohttp import web

from sluice.simulator.markets import Event

__all__ = ["RestOptions", "RestTrades"]


@dataclass(frozen=True)
class RestOptions:
    """What the REST API serves and the faults it injects."""

    history_trades: int = 100_000
    """Trades kept per product: older ones are answered as if they never were."""
    requests_per_sec: float | None = None
    """Answer 429 beyond this many requests a second (a token bucket of one second's burst)."""
    rate_limit_first: int = 0
    """Answer the first N requests with 429."""
    fail_first: int = 0
    """Answer the first N requests (after any rate-limited ones) with 500."""
    down: bool = False
    """Answer every request with 503."""


class _Product:
    __slots__ = ("ids", "trades")

    def __init__(self) -> None:
        self.ids: list[int] = []
        self.trades: dict[int, bytes] = {}


class RestTrades:
    """The trades the market made, served over HTTP on their own port."""

    def __init__(self, options: RestOptions, products: tuple[str, ...], log: Any) -> None:
        self.options = options
        self.log = log
        self._products = {p: _Product() for p in products}
        self.requests = 0
        """Requests answered so far, whatever the answer."""
        self.answers: list[int] = []
        """The status of each answer, in order (tests)."""
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._tokens = float(options.requests_per_sec or 0)
        self._refilled = time.monotonic()

    def add(self, events: list[Event]) -> None:
        """Keep the trades among market events (their ``match`` frames)."""
        for event in events:
            if event.channel == "matches":
                self._keep(event.product_id, orjson.loads(event.frame))

    def add_frames(self, frames: Iterable[tuple[str, bytes]]) -> None:
        """Keep the trades of ``(product, match frame)`` pairs (the market's state at start)."""
        for product, frame in frames:
            self._keep(product, orjson.loads(frame))

    def _keep(self, product_id: str, data: dict[str, Any]) -> None:
        product = self._products.get(product_id)
        if product is None:
            product = self._products[product_id] = _Product()
        trade_id = int(data["trade_id"])
        if trade_id in product.trades:
            return
        product.trades[trade_id] = orjson.dumps(
            {
                "time": data["time"],
                "trade_id": trade_id,
                "price": data["price"],
                "size": data["size"],
                "side": data["side"],
            }
        )
        if product.ids and trade_id < product.ids[-1]:
            bisect.insort(product.ids, trade_id)
        else:
            product.ids.append(trade_id)
        keep = self.options.history_trades
        if len(product.ids) > keep:
            for old in product.ids[: len(product.ids) - keep]:
                del product.trades[old]
            del product.ids[: len(product.ids) - keep]

    async def start(self, host: str, port: int = 0) -> None:
        app = web.Application()
        app.router.add_get("/products/{product_id}/trades", self._trades)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.url = f"http://{host}:{port}"

    async def close(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    def _answer(
        self, status: int, body: object, headers: dict[str, str] | None = None
    ) -> web.Response:
        self.answers.append(status)
        return web.Response(
            status=status,
            body=body if isinstance(body, bytes) else orjson.dumps(body),
            content_type="application/json",
            headers=headers,
        )

    def _limited(self) -> bool:
        rate = self.options.requests_per_sec
        if rate is None:
            return False
        now = time.monotonic()
        self._tokens = min(rate, self._tokens + (now - self._refilled) * rate)
        self._refilled = now
        if self._tokens < 1:
            return True
        self._tokens -= 1
        return False

    async def _trades(self, request: web.Request) -> web.Response:
        self.requests += 1
        o = self.options
        if o.down:
            return self._answer(503, {"message": "Service Unavailable"})
        if self.requests <= o.rate_limit_first or self._limited():
            return self._answer(429, {"message": "Public rate limit exceeded"})
        if self.requests <= o.rate_limit_first + o.fail_first:
            return self._answer(500, {"message": "Internal Server Error"})
        product = self._products.get(request.match_info["product_id"])
        if product is None:
            return self._answer(404, {"message": "NotFound"})
        query = request.query
        try:
            limit = int(query.get("limit", "1000"))
            after = int(query["after"]) if "after" in query else None
            before = int(query["before"]) if "before" in query else None
        except ValueError:
            return self._answer(400, {"message": "Invalid cursor or limit"})
        if not 1 <= limit <= 1000:
            return self._answer(400, {"message": "limit must be between 1 and 1000"})
        ids = product.ids
        if before is not None:
            start = bisect.bisect_right(ids, before)
            page = ids[start : start + limit][::-1]
        else:
            end = bisect.bisect_left(ids, after) if after is not None else len(ids)
            page = ids[max(0, end - limit) : end][::-1]
        body = b"[" + b",".join(product.trades[i] for i in page) + b"]"
        headers = {"CB-BEFORE": str(page[0]), "CB-AFTER": str(page[-1])} if page else {}
        return self._answer(200, body, headers)
