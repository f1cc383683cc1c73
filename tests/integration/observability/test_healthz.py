"""/healthz fails when the event loop is wedged, seen from outside the loop: the pipeline runs in
its own thread, the test blocks that loop and probes /healthz over HTTP like a liveness probe."""

from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from obs_support import LogFile, run_in_process
from tests.conftest import wait_for


@dataclass
class LoopThread:
    """A pipeline with its admin server, running on an event loop in another thread."""

    config: str
    loop: asyncio.AbstractEventLoop | None = None
    url: str = ""
    ready: threading.Event = field(default_factory=threading.Event)
    _stop: asyncio.Event | None = None
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=lambda: asyncio.run(self._main()), daemon=True)
        self._thread.start()
        assert self.ready.wait(20), "the pipeline did not start"

    async def _main(self) -> None:
        self.loop = asyncio.get_running_loop()
        self._stop = asyncio.Event()
        async with run_in_process(self.config) as running:
            self.url = running.url
            self.ready.set()
            await self._stop.wait()

    def stop(self) -> None:
        if self.loop is not None and self._stop is not None:
            self.loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            self._thread.join(30)


def probe(url: str, timeout: float) -> tuple[int, dict[str, Any]]:
    """GET like a liveness probe; (0, {}) when it times out."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except (TimeoutError, urllib.error.URLError):
        return 0, {}


@pytest.fixture
def pipeline_thread(tmp_path: Path) -> Iterator[LoopThread]:
    config = f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0", loop_stall_secs: 1.0}}
sources:
  feed: {{type: generator, events_per_sec: 200, batch_size: 20}}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed]}}
"""
    thread = LoopThread(config)
    thread.start()
    try:
        yield thread
    finally:
        thread.stop()


def test_a_wedged_loop_fails_healthz_and_is_logged_with_its_stack(
    logs: LogFile, pipeline_thread: LoopThread
) -> None:
    healthz = pipeline_thread.url + "healthz"
    status, body = probe(healthz, timeout=2)
    assert status == 200
    assert body["status"] == "ok"

    wedged, release = threading.Event(), threading.Event()

    def wedge_the_loop() -> None:
        wedged.set()
        release.wait(60)  # a blocking call on the event loop: the bug being diagnosed

    assert pipeline_thread.loop is not None
    pipeline_thread.loop.call_soon_threadsafe(wedge_the_loop)
    try:
        assert wedged.wait(20)
        status, _ = probe(healthz, timeout=1.0)
        assert status == 0, "a wedged loop cannot answer: the probe times out"
        # the loop is held until the report is seen: the watchdog reports while it is stuck
        stalled = wait_for(lambda: logs.find("event_loop.stalled"), timeout=30)
        assert not release.is_set()
    finally:
        release.set()
    assert stalled["level"] == "error"
    assert "wedge_the_loop" in stalled["stack"]
    assert "release.wait(60)" in stalled["stack"]

    status, body = wait_for(lambda: (r := probe(healthz, timeout=2))[0] == 200 and r, 30)
    assert body["stalls"] == 1
    recovered = wait_for(lambda: logs.find("event_loop.recovered"), timeout=30)
    assert recovered["stalled_for_secs"] >= 1.0  # loop_stall_secs: it was reported, so it lasted
    with urllib.request.urlopen(pipeline_thread.url + "metrics", timeout=5) as response:
        text = response.read().decode()
    assert "sluice_event_loop_stalls_total 1.0" in text


def test_a_persistently_lagging_loop_fails_healthz(pipeline_thread: LoopThread) -> None:
    loop = pipeline_thread.loop
    assert loop is not None
    stop = threading.Event()
    until = time.monotonic() + 60  # a bound, should the test fail before it stops the hog

    def hog() -> None:  # each block is under loop_stall_secs, but they never stop
        time.sleep(0.5)
        if not stop.is_set() and time.monotonic() < until:
            loop.call_later(0.01, hog)

    loop.call_soon_threadsafe(hog)
    try:
        _, body = wait_for(
            lambda: (r := probe(pipeline_thread.url + "healthz", timeout=3))[0] == 503 and r, 30
        )
    finally:
        stop.set()
    assert body["status"] == "event loop lagging"
    assert body["loop_lag_secs"] > 0.2
    _, body = wait_for(
        lambda: (r := probe(pipeline_thread.url + "healthz", timeout=2))[0] == 200 and r, 30
    )
    assert body["status"] == "ok"
