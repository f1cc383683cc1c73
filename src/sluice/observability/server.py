"""One admin HTTP server per process (aiohttp), loopback by default.

Routes: ``/metrics`` (Prometheus text), ``/healthz`` (the process and its event loop are alive:
see :mod:`sluice.observability.health`), ``/readyz`` (every component can do its work: 200, else 503 with
a JSON body naming what is not), ``/`` (the built-in dashboard: static files shipped in the
package, no CDN, no build step), ``/api/status`` (the JSON the dashboard polls), ``POST
/api/query`` (a read-only query against a queryable sink, used by ``sluice sql`` and ``sluice
monitor`` while the pipeline holds the store open). Who may use which route:
:mod:`sluice.observability.auth` (Host checked everywhere; a token, this server's own Origin and a JSON
body for ``/api/query``).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson
from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from sluice.errors import QueryRefused
from sluice.observability.auth import AdminGuard, new_token, write_token_file
from sluice.observability.health import LoopMonitor
from sluice.observability.status import build_status
from sluice.runtime.pipeline import Pipeline

if TYPE_CHECKING:
    from sluice.observability.alerts.engine import AlertEngine
    from sluice.observability.history import History

__all__ = ["PIPELINE", "AdminServer", "parse_listen"]

LOOP_STALL_SECS = 5.0
"""Default for ``admin.loop_stall_secs``."""

PIPELINE: web.AppKey[Pipeline] = web.AppKey("pipeline", Pipeline)
"""The pipeline, for handlers added by other modules (``request.app[PIPELINE]``)."""

_STATIC_TYPES = {".html": "text/html", ".js": "text/javascript", ".css": "text/css"}
_MAX_SERIES = {"seconds": 900, "minutes": 1440}


def parse_listen(listen: str) -> tuple[str, int]:
    """``host:port`` (or ``[v6]:port``) to a pair; an empty host means loopback."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    return host, int(port)


def _load_static() -> dict[str, tuple[bytes, str]]:
    """The dashboard's files, read once from the package: name -> (body, content type)."""
    files: dict[str, tuple[bytes, str]] = {}
    folder = resources.files("sluice.observability") / "dashboard"
    for entry in folder.iterdir():
        suffix = "." + entry.name.rsplit(".", 1)[-1]
        if entry.is_file() and suffix in _STATIC_TYPES:
            files[entry.name] = (entry.read_bytes(), _STATIC_TYPES[suffix])
    return files


class AdminServer:
    """Serves the admin routes for one pipeline."""

    def __init__(
        self,
        pipeline: Pipeline,
        listen: str,
        *,
        history: History | None = None,
        alerts: AlertEngine | None = None,
        monitor: LoopMonitor | None = None,
        loop_stall_secs: float = LOOP_STALL_SECS,
        started_at: float | None = None,
        token: str | None = None,
        token_file: Path | None = None,
        allowed_hosts: Sequence[str] = (),
    ) -> None:
        """``token``: what ``/api/query`` requires; None makes a random one, written to
        ``token_file`` (mode 0600) at start when one is given. ``allowed_hosts``: more names
        (or ``*``) accepted in the Host header besides loopback and the listen address."""
        self.pipeline = pipeline
        self.token = token if token is not None else new_token()
        self.token_file = token_file if token is None else None
        self._guard = AdminGuard(self.token, allowed_hosts=allowed_hosts)
        self.host, self.port = parse_listen(listen)
        self.history = history
        self.alerts = alerts
        self._own_monitor = monitor is None
        self.monitor = monitor or LoopMonitor(
            loop_stall_secs, pipeline.log, pipeline.metrics.registry
        )
        self.started_at = started_at if started_at is not None else time.time()
        self._static = _load_static()
        self.app = web.Application(middlewares=[self._guard.middleware])
        self.app[PIPELINE] = pipeline
        self.app.router.add_get("/metrics", self.metrics)
        self.app.router.add_get("/healthz", self.healthz)
        self.app.router.add_get("/readyz", self.readyz)
        self.app.router.add_get("/", self.dashboard)
        self.app.router.add_get("/static/{name}", self.static)
        self.app.router.add_get("/api/status", self.status)
        self.app.router.add_post("/api/query", self.query)
        self._runner: web.AppRunner | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    async def start(self) -> None:
        """Bind and serve; raises OSError when the port is taken."""
        self._runner = web.AppRunner(self.app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port)
        try:
            await site.start()
        except OSError:
            await self._runner.cleanup()
            raise
        sockets = getattr(site._server, "sockets", None) or []
        if sockets:
            self.port = sockets[0].getsockname()[1]
        self._guard.bind(self.host, self.port)
        if self.token_file is not None:
            try:
                await asyncio.to_thread(write_token_file, self.token_file, self.token)
            except OSError:
                await self._runner.cleanup()
                raise
            # the file's path, never the token
            self.pipeline.log.info("admin.token_file", path=str(self.token_file))
        if self._own_monitor:
            await self.monitor.start()
        self.pipeline.log.info("admin.listening", url=self.url)

    async def close(self) -> None:
        if self._own_monitor:
            await self.monitor.close()
        if self._runner is not None:
            await self._runner.cleanup()

    async def metrics(self, request: web.Request) -> web.Response:
        body = generate_latest(self.pipeline.metrics.registry)
        return web.Response(body=body, headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def healthz(self, request: web.Request) -> web.Response:
        healthy, details = self.monitor.health()
        return _json(details, 200 if healthy else 503)

    async def readyz(self, request: web.Request) -> web.Response:
        states = await self.pipeline.readiness()
        not_ready = {name: r.reason for name, r in states.items() if not r.ready}
        # a ready component may still say something (a ClickHouse endpoint of several is down)
        detail = {name: r.reason for name, r in states.items() if r.ready and r.reason}
        extra = {"detail": detail} if detail else {}
        if self.pipeline.stopping:
            not_ready["pipeline"] = "stopping"
        if not_ready:
            return _json({"status": "not ready", "not_ready": not_ready, **extra}, 503)
        return _json({"status": "ready", **extra})

    async def dashboard(self, request: web.Request) -> web.Response:
        return self._file("index.html")

    async def static(self, request: web.Request) -> web.Response:
        return self._file(request.match_info["name"])

    def _file(self, name: str) -> web.Response:
        entry = self._static.get(name)
        if entry is None:
            raise web.HTTPNotFound()
        body, content_type = entry
        return web.Response(
            body=body,
            content_type=content_type,
            charset="utf-8",
            headers={"Cache-Control": "no-cache", "X-Content-Type-Options": "nosniff"},
        )

    async def status(self, request: web.Request) -> web.Response:
        try:
            seconds = int(request.query.get("seconds", "300"))
            minutes = int(request.query.get("minutes", "60"))
        except ValueError:
            return _json({"error": "seconds and minutes must be integers"}, 400)
        if not (1 <= seconds <= _MAX_SERIES["seconds"] and 1 <= minutes <= _MAX_SERIES["minutes"]):
            return _json({"error": "seconds: 1..900, minutes: 1..1440"}, 400)
        document = await build_status(
            self.pipeline,
            history=self.history,
            alerts=self.alerts,
            monitor=self.monitor,
            started_at=self.started_at,
            seconds=seconds,
            minutes=minutes,
        )
        return _json(document)

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
        queryable = [w for w in candidates if w.sink.queryable]
        if not queryable:
            return _json(
                {"error": f"no queryable sink{f' named {sink_id!r}' if sink_id else ''}"}, 404
            )
        worker = queryable[0]
        if not worker.started:
            return _json({"error": f"sink '{worker.component_id}' has not started yet"}, 503)
        try:
            result = await worker.sink.query(sql)
        except QueryRefused as exc:
            return _json({"error": str(exc), "refused": True}, 400)
        except Exception as exc:
            return _json({"error": str(exc) or type(exc).__name__}, 400)
        return _json({"columns": result.columns, "types": result.types, "rows": result.rows})


def _json(data: Any, status: int = 200) -> web.Response:
    return web.Response(
        body=orjson.dumps(data, default=str), status=status, content_type="application/json"
    )
