"""The webhook notifier: one JSON POST per alert change, delivered in order, retried with backoff.

The body (documented in docs/observability.md)::

    {"status": "firing" | "resolved", "alert": "feed_stale", "rule_type": "freshness",
     "component_id": "feed", "summary": "...", "value": 31.0, "threshold": 30.0,
     "labels": {...}, "started_at": "<RFC 3339>", "ended_at": null | "<RFC 3339>",
     "sent_at": "<RFC 3339>", "host": "...", "text": "[FIRING] feed_stale: ..."}

``text`` makes the body usable as-is by chat webhooks (Slack, Mattermost) that read that field.
A 2xx answer is success; 408, 429, 5xx, timeouts and connection errors are retried with
exponential backoff up to ``max_attempts``, waiting at least what ``Retry-After`` asks (seconds or
an HTTP date); any other answer is final (the request is wrong, a
retry would not help). Notifications never block the pipeline: they go through a queue, and one
that cannot be delivered is logged and counted, then dropped. The URL and headers are secrets:
only the host name is ever logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import time
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aiohttp
import orjson
from prometheus_client import Counter

from sluice.config.alerts import WebhookConfig
from sluice.config.models import RetryPolicy
from sluice.errors import RetriableError
from sluice.metrics import Metrics
from sluice.observability.alerts.engine import AlertEvent
from sluice.runtime.retry import retrying

__all__ = ["WebhookNotifier", "event_body"]

_RETRY_STATUSES = frozenset({408, 429})
QUEUE_LIMIT = 1000
"""Notifications waiting to go out at most; one more is dropped, counted and logged."""


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def event_body(event: AlertEvent, host: str) -> dict[str, Any]:
    """The JSON document POSTed for ``event``."""
    alert = event.alert
    return {
        "status": event.status,
        "alert": alert["name"],
        "rule_type": alert["type"],
        "component_id": alert["component_id"],
        "summary": alert["summary"],
        "value": alert["value"],
        "threshold": alert["threshold"],
        "labels": alert["labels"],
        "started_at": _iso(event.started_at),
        "ended_at": _iso(event.ended_at),
        "sent_at": _iso(event.at),
        "host": host,
        "text": f"[{event.status.upper()}] {alert['name']}: {alert['summary']}",
    }


class WebhookNotifier:
    """Delivers alert events to one URL, in order, from its own task."""

    def __init__(self, config: WebhookConfig, metrics: Metrics, log: Any) -> None:
        self.config = config
        self.log = log
        self.host_name = socket.gethostname()
        url = config.url.get_secret_value()
        self._url = url
        self._target = urlsplit(url).hostname or "?"
        self._queue: asyncio.Queue[AlertEvent] = asyncio.Queue(QUEUE_LIMIT)
        self._task: asyncio.Task[None] | None = None
        self._session: aiohttp.ClientSession | None = None
        self._retry = RetryPolicy(
            initial_backoff_secs=config.initial_backoff_secs,
            max_backoff_secs=config.max_backoff_secs,
            max_attempts=config.max_attempts,
        )
        self.notifications: Counter | None = None
        if metrics.enabled:
            self.notifications = Counter(
                "sluice_alert_notifications",
                "Webhook notifications, by status (firing/resolved) and outcome "
                "(delivered/failed).",
                ["status", "outcome"],
                registry=metrics.registry,
            )

    def __call__(self, event: AlertEvent) -> None:
        """Queue ``event`` (called by the alert engine; never waits)."""
        if event.status == "resolved" and not self.config.send_resolved:
            return
        try:
            self._queue.put_nowait(event)
        except asyncio.QueueFull:
            self._count(event, "failed")
            self.log.error("alert.webhook.queue_full", alert=event.name, target=self._target)

    async def start(self) -> None:
        headers = {k: v.get_secret_value() for k, v in self.config.headers.items()}
        headers.setdefault("Content-Type", "application/json")
        headers.setdefault("User-Agent", "sluice-alerts")
        self._session = aiohttp.ClientSession(
            headers=headers, timeout=aiohttp.ClientTimeout(total=self.config.timeout_secs)
        )
        self._task = asyncio.create_task(self._run(), name="alerts:webhook")

    async def close(self, drain_secs: float = 3.0) -> None:
        """Give queued notifications ``drain_secs`` to go out, then stop."""
        if self._task is not None:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(drain_secs):
                    await self._queue.join()
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        if self._session is not None:
            await self._session.close()

    async def _run(self) -> None:
        while True:
            event = await self._queue.get()
            try:
                await self._deliver(event)
            finally:
                self._queue.task_done()

    async def _deliver(self, event: AlertEvent) -> None:
        assert self._session is not None
        body = orjson.dumps(event_body(event, self.host_name))
        retry = retrying(self._retry, self.log, "alert.webhook.retrying")
        while True:
            error: str
            retry_after: float | None = None
            try:
                async with self._session.post(self._url, data=body) as response:
                    await response.read()
                    if 200 <= response.status < 300:
                        self._count(event, "delivered")
                        self.log.info(
                            "alert.webhook.sent",
                            alert=event.name,
                            status=event.status,
                            target=self._target,
                            attempts=retry.attempt + 1,
                        )
                        return
                    error = f"HTTP {response.status}"
                    retriable = response.status >= 500 or response.status in _RETRY_STATUSES
                    retry_after = _retry_after(response.headers.get("Retry-After"))
            except (aiohttp.ClientError, TimeoutError, OSError) as exc:
                error = type(exc).__name__
                retriable = True
            if not retriable or retry.exhausted():
                self._count(event, "failed")
                self.log.error(
                    "alert.webhook.failed",
                    alert=event.name,
                    status=event.status,
                    target=self._target,
                    error=error,
                    attempts=retry.attempt + 1,
                )
                return
            delay = retry.failed(
                RetriableError(error, retry_after_secs=retry_after),
                alert=event.name,
                target=self._target,
                error_type=error,
            )
            await asyncio.sleep(delay)

    def _count(self, event: AlertEvent, outcome: str) -> None:
        if self.notifications is not None:
            self.notifications.labels(event.status, outcome).inc()


def _retry_after(value: str | None) -> float | None:
    """The wait a ``Retry-After`` header asks for: delay-seconds or an HTTP-date (RFC 9110), at
    most 300 s; None when there is none or it cannot be read."""
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        seconds = when.timestamp() - time.time()
    return min(300.0, max(0.0, seconds))
