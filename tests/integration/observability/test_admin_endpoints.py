"""The admin server of a running pipeline: /metrics counts equal what flowed, /readyz names what
is not ready, /api/status and the dashboard's files, and metrics turned off."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from obs_support import (
    ControlledSource,
    Running,
    SwitchableSink,
    metric,
    registry_with_doubles,
    run_in_process,
)
from tests.conftest import wait_until

from sluice.config import ConfigError, load_config_text
from sluice.observability.service import Observability
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline

GEN = {"component_id": "feed", "component_kind": "source", "component_type": "generator"}
OUT = {"component_id": "out", "component_kind": "sink", "component_type": "file"}


def file_config(
    tmp_path: Path, source: str, extra: str = "", admin: str = 'listen: "127.0.0.1:0"'
) -> str:
    return f"""
data_dir: {tmp_path}/data
admin: {{{admin}}}
sources:
  feed: {source}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed]}}
{extra}
"""


async def test_metrics_equal_what_flowed_from_generator_to_file(tmp_path: Path) -> None:
    count = 2500
    config = file_config(tmp_path, f"{{type: generator, count: {count}, batch_size: 100}}")
    started = time.time()
    async with run_in_process(config) as running:
        result = await wait_until(lambda: running.task.done() and running.task.result())
        assert result.ok
        samples = await running.metrics()
    data = (tmp_path / "out.jsonl").read_bytes()
    lines = data.count(b"\n")
    payload_bytes = len(data) - lines  # the sink adds one newline per record

    assert lines == count
    for name in ("sluice_component_received_events_total", "sluice_component_sent_events_total"):
        assert metric(samples, name, **GEN) == count
        assert metric(samples, name, **OUT) == count
    for name in ("sluice_component_received_bytes_total", "sluice_component_sent_bytes_total"):
        assert metric(samples, name, **GEN) == payload_bytes
        assert metric(samples, name, **OUT) == payload_bytes
    dead = {"component_id": "dead_letters", "component_kind": "sink"}
    assert metric(samples, "sluice_component_sent_events_total", **dead) == 0
    assert metric(samples, "sluice_component_dead_letters_total", **GEN) == 0

    batches = metric(samples, "sluice_sink_flush_duration_seconds_count", **OUT)
    assert 1 <= batches <= count / 100 + 5
    assert metric(samples, "sluice_sink_flush_duration_seconds_sum", **OUT) > 0
    assert metric(samples, "sluice_sink_end_to_end_lag_seconds_count", **OUT) == batches
    assert metric(samples, "sluice_sink_retries_total", **OUT) == 0
    assert metric(samples, "sluice_buffer_events", **OUT) == 0
    assert metric(samples, "sluice_buffer_max_events", **OUT) == 20000
    assert metric(samples, "sluice_sink_write_failing_seconds", **OUT) == 0

    now = time.time()
    assert started <= metric(samples, "sluice_source_last_event_timestamp_seconds", **GEN) <= now
    assert started <= metric(samples, "sluice_source_last_receive_timestamp_seconds", **GEN) <= now
    assert metric(samples, "sluice_source_connected", **GEN) == 0  # finished
    assert metric(samples, "sluice_source_reconnects_total", **GEN) == 0
    assert metric(samples, "sluice_source_gaps_total", **GEN) == 0
    assert metric(samples, "sluice_source_missed_events_total", **GEN) == 0
    assert metric(samples, "sluice_component_rate_limit_waits_total", **GEN) == 0
    assert metric(samples, "sluice_build_info") == 1
    assert metric(samples, "process_resident_memory_bytes") > 0
    # a series that cannot apply to a component is not exported
    with pytest.raises(KeyError):
        metric(samples, "sluice_source_connected", **OUT)
    with pytest.raises(KeyError):
        metric(samples, "sluice_sink_retries_total", **GEN)


async def test_dead_letters_errors_and_retries_are_counted(tmp_path: Path) -> None:
    source_file = tmp_path / "in.jsonl"
    source_file.write_text('{"a": 1}\nnot json\n{"a": 2}\n[1, 2]\n{"a": 3}\n')
    config = f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  lines: {{type: file, path: {source_file}}}
sinks:
  out:
    type: switchable
    inputs: [lines]
    retry: {{initial_backoff_secs: 0.01, max_backoff_secs: 0.02}}
"""
    async with run_in_process(config, registry_with_doubles()) as running:
        sink = running.pipeline.sinks[0].sink
        assert isinstance(sink, SwitchableSink)
        sink.failing = ConnectionResetError("peer went away")
        await wait_until(lambda: sink.attempts >= 3)
        status, body = await running.json("/readyz")
        assert status == 503
        assert "writes failing" in body["not_ready"]["sink/out"]
        sink.failing = None
        result = await wait_until(lambda: running.task.done() and running.task.result())
        assert result.ok
        samples = await running.metrics()
        _, api = await running.json("/api/status")
    src = {"component_id": "lines", "component_kind": "source"}
    out = {"component_id": "out", "component_kind": "sink"}
    assert metric(samples, "sluice_component_received_events_total", **src) == 5
    assert metric(samples, "sluice_component_sent_events_total", **src) == 3
    assert metric(samples, "sluice_component_dead_letters_total", **src) == 2
    assert metric(samples, "sluice_component_sent_events_total", **out) == 3
    retries = metric(samples, "sluice_sink_retries_total", **out)
    assert retries == sink.attempts - 1 >= 2
    assert (
        metric(samples, "sluice_component_errors_total", error_type="connection", **out) == retries
    )
    dead = {"component_id": "dead_letters", "component_kind": "sink"}
    assert metric(samples, "sluice_component_sent_events_total", **dead) == 2
    letters = (tmp_path / "data" / "dead_letters.jsonl").read_text().splitlines()
    assert len(letters) == 2
    by_id = {s["id"]: s for s in api["sinks"]}
    assert by_id["out"]["errors_by_type"] == {"connection": retries}
    assert by_id["out"]["retries"] == retries
    assert {s["id"]: s["dead_letters"] for s in api["sources"]} == {"lines": 2}


async def test_readyz_names_a_restarting_source_then_recovers(tmp_path: Path) -> None:
    config = f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  ticks: {{type: controlled}}
sinks:
  out: {{type: switchable, inputs: [ticks], batch: {{max_age_secs: 0.05}}}}
"""
    async with run_in_process(config, registry_with_doubles()) as running:
        source = running.pipeline.sources[0].source
        assert isinstance(source, ControlledSource)
        sink = running.pipeline.sinks[0].sink
        assert isinstance(sink, SwitchableSink)
        source.push(10)
        await wait_until(lambda: len(sink.written) == 10)
        assert await running.get("/readyz") == (200, '{"status":"ready"}')

        source.feed.put_nowait(ConnectionResetError("feed dropped"))
        status, body = await wait_until(_not_ready(running))
        assert status == 503
        reason = body["not_ready"]["source/ticks"]
        assert "restarting after ConnectionResetError: feed dropped" in reason
        samples = await running.metrics()
        ticks = {"component_id": "ticks", "component_kind": "source"}
        assert metric(samples, "sluice_source_connected", **ticks) == 0
        assert metric(samples, "sluice_source_reconnects_total", **ticks) == 1

        await wait_until(lambda: source.calls == 2)  # the runner reopened it
        source.push(5)
        await wait_until(lambda: len(sink.written) == 15)
        status, _ = await running.get("/readyz")
        assert status == 200
        samples = await running.metrics()
        assert metric(samples, "sluice_source_connected", **ticks) == 1
        assert metric(samples, "sluice_component_sent_events_total", **ticks) == 15


def _not_ready(running: Running) -> Callable[[], Awaitable[tuple[int, Any] | None]]:
    async def check() -> tuple[int, Any] | None:
        status, body = await running.json("/readyz")
        return (status, body) if status == 503 else None

    return check


async def test_status_api_and_dashboard_files(tmp_path: Path) -> None:
    config = file_config(
        tmp_path,
        "{type: generator, events_per_sec: 500, batch_size: 50}",
        "alerts: {rules: {feed_stale: {type: freshness, source: feed, max_age_secs: 30}}}",
    )
    async with run_in_process(config) as running:
        # wait for two samples of the history, so the per-second series has counts
        await wait_until(lambda: running.observability.history.last_sample is not None, 5)
        first = running.observability.history.last_sample
        await wait_until(lambda: running.observability.history.last_sample != first, 5)
        status, api = await running.json("/api/status?seconds=30&minutes=5")
        assert status == 200
        html_status, html = await running.get("/")
        js_status, js = await running.get("/static/app.js")
        css_status, css = await running.get("/static/style.css")
        missing, _ = await running.get("/static/nope.js")
        traversal, _ = await running.get("/static/..%2Fserver.py")
        bad, _ = await running.json("/api/status?seconds=0")
        async with running.session.get(running.url + "static/app.js") as response:
            js_type = response.headers["Content-Type"]
    assert api["ready"] is True
    assert api["metrics_enabled"] is True
    assert api["seconds"]["count"] == 30
    assert api["minutes"]["count"] == 5
    (feed,) = api["sources"]
    assert feed["id"] == "feed"
    assert feed["state"] == "running"
    assert feed["connected"] is True
    assert len(feed["per_second"]) == 30
    assert len(feed["per_minute"]) == 5
    assert sum(v for v in feed["per_second"] if v) > 0
    assert feed["per_minute"][-1] > 0
    assert feed["per_minute"][0] is None
    assert 0 <= feed["freshness_secs"] < 5
    assert [s["id"] for s in api["sinks"]] == ["out", "dead_letters"]
    assert api["sinks"][0]["buffer"]["max_events"] == 20000
    (alert,) = api["alerts"]
    assert alert["name"] == "feed_stale"
    assert alert["state"] == "inactive"
    assert html_status == js_status == css_status == 200
    assert 'src="static/app.js"' in html
    assert 'href="static/style.css"' in html
    assert "javascript" in js_type
    assert missing == 404
    assert traversal == 404
    assert bad == 400
    # nothing is fetched from anywhere else: no CDN, no web fonts
    for text in (html, js, css):
        assert "http://" not in text.replace('"http://www.w3.org/2000/svg"', "")
        assert "https://" not in text
        assert "//cdn" not in text


async def test_metrics_can_be_turned_off(tmp_path: Path) -> None:
    config = file_config(
        tmp_path,
        "{type: generator, count: 300, batch_size: 100}",
        admin='listen: "127.0.0.1:0", metrics: false',
    )
    async with run_in_process(config, metrics_enabled=False) as running:
        result = await wait_until(lambda: running.task.done() and running.task.result())
        assert result.ok
        status, text = await running.get("/metrics")
        _, api = await running.json("/api/status")
    assert (tmp_path / "out.jsonl").read_bytes().count(b"\n") == 300
    assert status == 200
    assert "sluice_component_sent_events_total{" not in text
    assert "sluice_buffer_events{" not in text
    assert "process_cpu_seconds_total" in text
    assert api["metrics_enabled"] is False
    assert api["sources"][0]["records"] == 0


def test_alert_rules_need_metrics(tmp_path: Path) -> None:
    text = file_config(
        tmp_path,
        "{type: generator}",
        "alerts: {rules: {s: {type: freshness, source: feed, max_age_secs: 5}}}",
        admin="metrics: false",
    )
    with pytest.raises(ConfigError) as caught:
        load_config_text(text, Registry.from_entry_points())
    assert "alert rules need metrics" in caught.value.render()


async def test_without_the_admin_server_alerts_still_run(tmp_path: Path) -> None:
    config = f"""
data_dir: {tmp_path}/data
admin: {{enabled: false}}
sources:
  feed: {{type: generator, count: 10}}
  beat: {{type: generator, events_per_sec: 5}}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed, beat]}}
alerts: {{rules: {{feed_stale: {{type: freshness, source: feed, max_age_secs: 0.5}}}}}}
"""
    registry = Registry.from_entry_points()
    loaded = load_config_text(config, registry)
    pipeline = Pipeline.build(loaded, registry)
    observability = Observability(pipeline, loaded.model)
    assert observability.admin is None
    await observability.start()
    task = asyncio.create_task(pipeline.run())
    try:
        alert = observability.alerts.alerts[0]
        await wait_until(lambda: alert.state == "firing", timeout=10)
    finally:
        pipeline.stop("test finished")
        await asyncio.wait_for(task, 30)
        await observability.close()
    assert task.result().ok
