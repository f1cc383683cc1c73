"""In-process alerts with the webhook notifier, against a local HTTP receiver: a freshness alert
fires when the feed stops and resolves when it resumes; one firing and one resolved POST arrive
(the first attempt is refused with 503 and retried). Then the notifier's delivery rules one by one
against a real HTTP server whose handler injects the failure: Retry-After, final 4xx answers,
retried ones, timeouts, a refused connection, a full queue."""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from obs_support import LogFile, metric, run_in_process
from tests.conftest import wait_until

from sluice.config.alerts import WebhookConfig
from sluice.metrics import Metrics
from sluice.observability.alerts.engine import AlertEvent
from sluice.observability.alerts.webhook import QUEUE_LIMIT, WebhookNotifier


class Receiver:
    def __init__(self) -> None:
        self.attempts: list[dict[str, Any]] = []
        self.delivered: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.refuse_next = 1
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts.append(body)
        self.headers.append(dict(request.headers))
        if self.refuse_next:
            self.refuse_next -= 1
            return web.Response(status=503, text="try later")
        self.delivered.append(body)
        return web.Response(status=204)


@contextlib.asynccontextmanager
async def serve(
    route: str, handler: Callable[[web.Request], Awaitable[web.Response]]
) -> AsyncIterator[str]:
    """An HTTP server on 127.0.0.1 (a free port) answering POSTs to ``route``; yields its base
    URL."""
    app = web.Application()
    app.router.add_post(route, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        await runner.cleanup()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    async with serve("/hook/{token}", hook.handle) as base:
        hook.url = f"{base}/hook/s3cr3t-token"
        yield hook


def append(path: Path, count: int) -> None:
    with path.open("a") as f:
        f.writelines(f'{{"n": {i}}}\n' for i in range(count))


async def test_freshness_alert_posts_firing_then_resolved(
    tmp_path: Path, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> None:
    feed = tmp_path / "feed.jsonl"
    append(feed, 5)
    monkeypatch.setenv("HOOK_URL", receiver.url)
    monkeypatch.setenv("HOOK_AUTH", "Bearer hunter2")
    config = f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  feed: {{type: file, path: {feed}, follow: true, poll_interval_secs: 0.05}}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed], batch: {{max_age_secs: 0.05}}}}
alerts:
  rules:
    feed_stale:
      type: freshness
      source: feed
      max_age_secs: 1.5
      labels: {{severity: page}}
  webhook:
    url: ${{HOOK_URL}}
    headers: {{Authorization: "${{HOOK_AUTH}}"}}
    initial_backoff_secs: 0.05
    max_backoff_secs: 0.1
"""
    async with run_in_process(config) as running:
        out = tmp_path / "out.jsonl"
        await wait_until(lambda: out.exists() and out.read_text().count("\n") == 5)
        # the feed is silent now: the alert fires, the first POST is refused and retried
        await wait_until(lambda: len(receiver.delivered) == 1, timeout=15)
        _, api = await running.json("/api/status")
        (alert,) = api["alerts"]
        assert alert["state"] == "firing"
        append(feed, 3)  # the feed resumes
        await wait_until(lambda: len(receiver.delivered) == 2, timeout=15)
        samples = await running.metrics()

    assert [d["status"] for d in receiver.delivered] == ["firing", "resolved"]
    assert len(receiver.attempts) == 3  # the refused attempt, then the two deliveries
    firing, resolved = receiver.delivered
    assert firing["alert"] == resolved["alert"] == "feed_stale"
    assert firing["rule_type"] == "freshness"
    assert firing["component_id"] == "feed"
    assert firing["labels"] == {"severity": "page"}
    assert firing["threshold"] == 1.5
    assert firing["value"] > 1.5
    assert "no record from source 'feed'" in firing["summary"]
    assert firing["text"].startswith("[FIRING] feed_stale: no record from source 'feed'")
    assert firing["started_at"].endswith("Z")
    assert firing["ended_at"] is None
    assert resolved["started_at"] == firing["started_at"]
    assert resolved["ended_at"] is not None
    assert resolved["ended_at"] > resolved["started_at"]
    assert resolved["text"].startswith("[RESOLVED] feed_stale")
    assert all(h["Authorization"] == "Bearer hunter2" for h in receiver.headers)
    assert all(h["Content-Type"] == "application/json" for h in receiver.headers)
    delivered = {"status": "firing", "outcome": "delivered"}
    assert metric(samples, "sluice_alert_notifications_total", **delivered) == 1
    resolved_labels = {"status": "resolved", "outcome": "delivered"}
    assert metric(samples, "sluice_alert_notifications_total", **resolved_labels) == 1
    assert metric(samples, "sluice_alert_firing", alert="feed_stale") == 0


async def test_webhook_gives_up_after_max_attempts_and_logs_only_the_host(
    tmp_path: Path, receiver: Receiver, logs: LogFile
) -> None:
    receiver.refuse_next = 100
    config = f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  feed: {{type: generator, count: 1}}
  beat: {{type: generator, events_per_sec: 5}}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed, beat]}}
alerts:
  rules:
    feed_stale: {{type: freshness, source: feed, max_age_secs: 0.5}}
  webhook:
    url: {receiver.url}
    max_attempts: 3
    initial_backoff_secs: 0.05
    max_backoff_secs: 0.1
"""
    async with run_in_process(config) as running:
        # given up once the third answer is read: no fourth attempt can follow
        await wait_until(lambda: logs.find("alert.webhook.failed"), timeout=30)
        samples = await running.metrics()
    assert len(receiver.attempts) == 3
    assert not receiver.delivered
    failed = {"status": "firing", "outcome": "failed"}
    assert metric(samples, "sluice_alert_notifications_total", **failed) == 1
    failure = logs.find("alert.webhook.failed")
    assert failure is not None
    assert failure["attempts"] == 3
    assert failure["target"] == "127.0.0.1"
    assert "s3cr3t-token" not in logs.text()  # the URL is a secret: only its host is logged


# -- the notifier's delivery rules, one by one, against a real HTTP server on 127.0.0.1 ----------


class RecordingLog:
    """The notifier's log, kept: ``(level, event, fields)``."""

    def __init__(self) -> None:
        self.lines: list[tuple[str, str, dict[str, Any]]] = []

    def info(self, event: str, **fields: Any) -> None:
        self.lines.append(("info", event, fields))

    def warning(self, event: str, **fields: Any) -> None:
        self.lines.append(("warning", event, fields))

    def error(self, event: str, **fields: Any) -> None:
        self.lines.append(("error", event, fields))

    def events(self, name: str) -> list[dict[str, Any]]:
        return [fields for _, event, fields in self.lines if event == name]


class Scripted:
    """A receiver that answers each attempt as its script says: a status (with headers), or
    ``"hang"`` (no answer until the test releases it); 204 once the script is used up."""

    def __init__(self, *script: int | tuple[int, dict[str, str]] | str) -> None:
        self.script = list(script)
        self.attempts: list[tuple[float, dict[str, Any]]] = []
        self.release = asyncio.Event()
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.attempts.append((time.monotonic(), body))
        step = self.script.pop(0) if self.script else 204
        if step == "hang":
            await self.release.wait()
            step = 204
        status, headers = step if isinstance(step, tuple) else (step, {})
        assert isinstance(status, int)
        return web.Response(status=status, headers=headers)

    @property
    def alerts(self) -> list[str]:
        return [body["alert"] for _, body in self.attempts]


@pytest.fixture
async def scripted() -> AsyncIterator[Scripted]:
    hook = Scripted()
    async with serve("/hook", hook.handle) as base:
        hook.url = f"{base}/hook"
        try:
            yield hook
        finally:
            hook.release.set()  # a hanging answer must not hold the server's shutdown


def event(n: int = 0) -> AlertEvent:
    alert = {
        "name": f"alert_{n}",
        "type": "freshness",
        "component_id": "feed",
        "summary": "no record",
        "value": 2.0,
        "threshold": 1.0,
        "labels": {},
    }
    return AlertEvent("firing", alert, time.time(), time.time(), None)


@contextlib.asynccontextmanager
async def notifier(
    url: str, **options: Any
) -> AsyncIterator[tuple[WebhookNotifier, Metrics, RecordingLog]]:
    settings = {"initial_backoff_secs": 0.01, "max_backoff_secs": 0.02, **options}
    metrics, log = Metrics(), RecordingLog()
    webhook = WebhookNotifier(WebhookConfig(url=url, **settings), metrics, log)
    await webhook.start()
    try:
        yield webhook, metrics, log
    finally:
        await webhook.close(drain_secs=0)


def outcomes(metrics: Metrics) -> dict[str, int]:
    value = metrics.registry.get_sample_value
    return {
        outcome: int(
            value("sluice_alert_notifications_total", {"status": "firing", "outcome": outcome}) or 0
        )
        for outcome in ("delivered", "failed")
    }


@pytest.mark.parametrize(
    "retry_after",
    ["1", "http-date"],
)
async def test_retry_after_is_honoured(scripted: Scripted, retry_after: str) -> None:
    if retry_after == "http-date":  # RFC 9110 allows a date as well as seconds
        retry_after = email.utils.formatdate(time.time() + 2, usegmt=True)
    scripted.script = [(429, {"Retry-After": retry_after}), (503, {"Retry-After": "1"})]
    async with notifier(scripted.url, max_attempts=5) as (webhook, metrics, log):
        webhook(event())
        await wait_until(lambda: outcomes(metrics)["delivered"] == 1)
    assert len(scripted.attempts) == 3
    delays = [fields["retry_in_secs"] for fields in log.events("alert.webhook.retrying")]
    assert len(delays) == 2
    assert delays[0] >= 0.9 and delays[1] == 1.0  # not the 0.01-0.02 s backoff
    (first, _), (second, _), (third, _) = scripted.attempts
    assert second - first >= delays[0] - 0.01  # lower bounds: the wait really happened
    assert third - second >= 1.0 - 0.01


@pytest.mark.parametrize("status", [400, 401, 403, 404, 410, 413, 422])
async def test_a_4xx_answer_is_final_and_not_retried(scripted: Scripted, status: int) -> None:
    scripted.script = [status]
    async with notifier(scripted.url, max_attempts=5) as (webhook, metrics, log):
        webhook(event(0))
        webhook(event(1))  # the next notification still goes out
        await wait_until(lambda: outcomes(metrics) == {"delivered": 1, "failed": 1})
    assert scripted.alerts == ["alert_0", "alert_1"]
    assert log.events("alert.webhook.retrying") == []
    (failure,) = log.events("alert.webhook.failed")
    assert failure["error"] == f"HTTP {status}"
    assert failure["attempts"] == 1


@pytest.mark.parametrize("status", [408, 429, 500, 502, 503])
async def test_a_retriable_answer_is_retried_until_delivered(
    scripted: Scripted, status: int
) -> None:
    scripted.script = [status, status]
    async with notifier(scripted.url, max_attempts=5) as (webhook, metrics, log):
        webhook(event())
        await wait_until(lambda: outcomes(metrics)["delivered"] == 1)
    assert scripted.alerts == ["alert_0"] * 3
    assert [f["error"] for f in log.events("alert.webhook.retrying")] == [f"HTTP {status}"] * 2


async def test_a_timeout_is_retried_and_the_next_attempt_delivers(scripted: Scripted) -> None:
    scripted.script = ["hang"]
    async with notifier(scripted.url, timeout_secs=0.3, max_attempts=3) as (webhook, metrics, log):
        webhook(event())
        await wait_until(lambda: outcomes(metrics)["delivered"] == 1)
    assert scripted.alerts == ["alert_0", "alert_0"]
    (retrying,) = log.events("alert.webhook.retrying")
    assert "Timeout" in retrying["error"]


async def test_timeouts_until_max_attempts_fail_the_notification(scripted: Scripted) -> None:
    scripted.script = ["hang"] * 3
    async with notifier(scripted.url, timeout_secs=0.2, max_attempts=3) as (webhook, metrics, log):
        webhook(event())
        await wait_until(lambda: outcomes(metrics)["failed"] == 1)
    assert len(scripted.attempts) == 3
    (failure,) = log.events("alert.webhook.failed")
    assert failure["attempts"] == 3
    assert "Timeout" in failure["error"]


async def test_a_refused_connection_is_retried_then_counted_as_failed() -> None:
    with socket.socket() as unused:  # a port nobody listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    async with notifier(f"http://127.0.0.1:{port}/hook", max_attempts=3) as (webhook, metrics, log):
        webhook(event())
        await wait_until(lambda: outcomes(metrics)["failed"] == 1)
    assert len(log.events("alert.webhook.retrying")) == 2
    (failure,) = log.events("alert.webhook.failed")
    assert failure["attempts"] == 3
    assert failure["error"] == "ClientConnectorError"
    assert failure["target"] == "127.0.0.1"


async def test_a_full_queue_drops_and_counts_what_does_not_fit_and_keeps_the_order(
    scripted: Scripted,
) -> None:
    scripted.script = ["hang"]
    async with notifier(scripted.url, timeout_secs=60) as (webhook, metrics, log):
        webhook(event(0))
        await wait_until(lambda: len(scripted.attempts) == 1)  # in flight: out of the queue
        for n in range(1, QUEUE_LIMIT + 3):
            webhook(event(n))  # the queue takes QUEUE_LIMIT of them, the last two are dropped
        assert outcomes(metrics) == {"delivered": 0, "failed": 2}
        assert [f["alert"] for f in log.events("alert.webhook.queue_full")] == [
            f"alert_{QUEUE_LIMIT + 1}",
            f"alert_{QUEUE_LIMIT + 2}",
        ]
        scripted.release.set()
        await wait_until(lambda: outcomes(metrics)["delivered"] == QUEUE_LIMIT + 1, timeout=60)
    assert scripted.alerts == [f"alert_{n}" for n in range(QUEUE_LIMIT + 1)]
