"""One admin HTTP server per process (aiohttp), loopback by default.

Routes: ``/metrics`` (Prometheus text), ``/healthz`` (the process and its event loop are alive),
``/readyz`` (every component can do its work: 200, else 503 with a JSON body naming what is not),
``POST /api/query`` (a read-only query against a queryable sink, used by ``sluice sql`` while the
pipeline holds the store open).
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.runtime.pipeline import Pipeline

__all__ = ["AdminServer", "parse_listen"]

LOOP_STALL_SECS = 5.0
"""/healthz fails when the event loop has not run the heartbeat task for this long."""


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) to a pair; an empty host means loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


class AdminServer:
    """Serves the admin routes for one pipeline."""

    def __init__(self, pipeline: Pipeline, listen: str) -> None:
        self.pipeline = pipeline
        self.host, self.port = parse_listen(listen)
        self.app = web.Application()
        self.app["pipeline"] = pipeline
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_post("/api/query", self.query)
        self._runner: web.AppRunner | None = None
        self._beat = time.monotonic()
        self._heart: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; raises OSError when the port is taken."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        await site.start()
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._heart = asyncio.create_task(self._heartbeat(), name="admin:heartbeat")
        self.pipeline.log.info("admin.listening", url=f"http://{self.host}:{self.port}/")

    async def close(self) -> None:
        if self._heart is not None:
            self._heart.cancel()
        if self._runner is not None:
            await self._runner.cleanup()

    async def _heartbeat(self) -> None:
        while True:
            self._beat = time.monotonic()
            await asyncio.sleep(0.5)

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.pipeline.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        stalled = time.monotonic() - self._beat
        if stalled > LOOP_STALL_SECS:
            return _json({"status": "event loop stalled", "stalled_secs": round(stalled, 1)}, 503)
        return _json({"status": "ok"})

    async def readyz(self, request: web.Request) -> web.Response:
        states = await self.pipeline.readiness()
        not_ready = {name: r.reason for name, r in states.items() if not r.ready}
        if self.pipeline.stopping:
            not_ready["pipeline"] = "stopping"
        if not_ready:
            return _json({"status": "not ready", "not_ready": not_ready}, 503)
        return _json({"status": "ready"})

    async def query(self, request: web.Request) -> web.Response:
        try:
            body = orjson.loads(await request.read())
            sql = str(body["sql"])
            sink_id = body.get("sink")
        except (orjson.JSONDecodeError, KeyError, TypeError):
            return _json({"error": 'expected {"sql": "...", "sink": "id"}'}, 400)
        candidates = [
            w for w in self.pipeline.sinks if sink_id is None or w.component_id == sink_id
        ]
        queryable = [w for w in candidates if type(w.sink).query is not _base_query()]
        if not queryable:
            return _json(
                {"error": f"no queryable sink{f' named {sink_id!r}' if sink_id else ''}"}, 404
            )
        try:
            result = await queryable[0].sink.query(sql)
        except Exception as exc:
            return _json({"error": str(exc)}, 400)
        return _json({"columns": result.columns, "types": result.types, "rows": result.rows})


def _base_query() -> Any:
    from sluice.plugin import Sink

    return Sink.query


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=str), status=status, content_type="application/json"
    )
