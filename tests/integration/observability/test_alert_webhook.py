"""In-process alerts with the webhook notifier, against a local HTTP receiver: a freshness alert
fires when the feed stops and resolves when it resumes; one firing and one resolved POST arrive
(the first attempt is refused with 503 and retried)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from obs_support import LogFile, metric, run_in_process
from tests.conftest import wait_until


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


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    hook = Receiver()
    app = web.Application()
    app.router.add_post("/hook/{token}", hook.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    hook.url = f"http://127.0.0.1:{port}/hook/s3cr3t-token"
    try:
        yield hook
    finally:
        await runner.cleanup()


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
        await wait_until(lambda: len(receiver.attempts) == 3, timeout=15)
        await asyncio.sleep(0.5)
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
