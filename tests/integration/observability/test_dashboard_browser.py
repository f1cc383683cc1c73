"""The built-in dashboard in headless Chromium (Debian's, driven by Playwright): it loads with the
network cut off, draws the rate charts from a live `sluice run`, and shows an alert firing after
the feed stops. A screenshot is left in test-artifacts/dashboard.png."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from playwright.sync_api import Page, Route, sync_playwright
from tests.conftest import SLUICE

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
FEED_COUNT = 1800

pytestmark = [pytest.mark.browser, pytest.mark.slow]


def admin_url(log_path: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """The admin server's URL from a `sluice run --log-format json` log (its admin.listening)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and process.poll() is None:
        for line in log_path.read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "admin.listening":
                return str(event["url"])
        time.sleep(0.05)
    raise AssertionError(f"no admin.listening in the log:\n{log_path.read_text()}")


@contextlib.contextmanager
def sluice_running(
    config: Path, log_path: Path, cwd: Path | None = None
) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`sluice run CONFIG` in a subprocess, logging JSON to ``log_path``: its admin URL and the
    process; interrupted (SIGINT) at the end if it still runs."""
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SLUICE, "run", str(config), "--log-format", "json"], stderr=log, cwd=cwd
        )
    try:
        yield admin_url(log_path, process), process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(30)


@dataclass
class OfflinePage:
    """A dashboard page in headless Chromium that may reach the admin server only."""

    page: Page
    blocked: list[str] = field(default_factory=list)
    """Requests to anywhere else (aborted as if the network were down)."""
    errors: list[str] = field(default_factory=list)
    """Page errors and console errors."""


@contextlib.contextmanager
def offline_page(url: str, width: int = 1280, height: int = 1000) -> Iterator[OfflinePage]:
    origin = url.split("#", 1)[0].rstrip("/")  # a #token= fragment is not part of the origin
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": width, "height": height}, service_workers="block"
            )
            page = context.new_page()
            opened = OfflinePage(page)

            def only_the_admin_server(route: Route) -> None:
                if route.request.url.startswith(origin + "/"):
                    route.continue_()
                else:
                    opened.blocked.append(route.request.url)
                    route.abort("internetdisconnected")

            context.route("**/*", only_the_admin_server)
            page.on("pageerror", lambda exc: opened.errors.append(str(exc)))
            page.on(
                "console", lambda m: opened.errors.append(m.text) if m.type == "error" else None
            )
            page.goto(url)
            yield opened
        finally:
            browser.close()


@pytest.fixture
def sluice_run(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`sluice run` in a subprocess: a feed of 300 records/s that ends after 6 s, a heartbeat
    source that keeps the process up, and two alert rules on the feed."""
    config = tmp_path / "pipeline.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  feed: {{type: generator, events_per_sec: 300, count: {FEED_COUNT}, batch_size: 30}}
  beat: {{type: generator, events_per_sec: 2}}
sinks:
  out: {{type: file, path: {tmp_path}/out.jsonl, inputs: [feed, beat]}}
alerts:
  rules:
    feed_stale: {{type: freshness, source: feed, max_age_secs: 2}}
    feed_rate: {{type: min_rate, component: feed, min_events: 100, window_secs: 3}}
"""
    )
    with sluice_running(config, tmp_path / "sluice.log") as running:
        yield running


# Bounds on the page's waits: each ends as soon as its condition holds; the bound is wide because a
# loaded 2-core machine (the suite beside other CPU-bound jobs) renders and polls slowly.
BROWSER_WAIT_MS = 60_000


def svg_attr(page: Page, chart: str, name: str) -> float:
    value = page.get_attribute(f"#{chart} svg", f"data-{name}")
    return float(value or 0)


def test_dashboard_offline_live_chart_and_alert(
    sluice_run: tuple[str, subprocess.Popen[bytes]], artifacts_dir: Path
) -> None:
    url, process = sluice_run
    with offline_page(url) as opened:
        page = opened.page
        # live data: both charts draw bars for the records flowing now
        page.wait_for_function(
            "() => +(document.querySelector('#chart-seconds svg')?.dataset.total || 0) > 0",
            timeout=BROWSER_WAIT_MS,
        )
        assert page.inner_text("#ready-badge") == "ready"
        assert page.inner_text("#health-badge") == "event loop ok"
        assert svg_attr(page, "chart-minutes", "bars") >= 1
        assert page.locator("#sources tbody tr").count() == 2
        assert page.locator("#sinks tbody tr").count() == 2

        # the feed ends: its freshness alert fires, and its per-second chart shows gaps
        page.select_option("#source-filter", "feed")
        page.wait_for_selector(
            "li[data-alert='feed_stale'][data-state='firing']", timeout=BROWSER_WAIT_MS
        )
        page.wait_for_selector(
            "li[data-alert='feed_rate'][data-state='firing']", timeout=BROWSER_WAIT_MS
        )
        page.wait_for_function(
            "() => +(document.querySelector('#chart-seconds svg')?.dataset.gaps || 0) >= 3",
            timeout=BROWSER_WAIT_MS,
        )
        # every record of the feed is in the per-minute chart, and nothing more
        page.wait_for_function(
            f"() => +(document.querySelector('#chart-minutes svg')?.dataset.total || 0)"
            f" === {FEED_COUNT}",
            timeout=BROWSER_WAIT_MS,
        )
        firing = page.inner_text("li[data-alert='feed_stale']")
        assert "firing" in firing
        assert "no record from source 'feed'" in firing
        freshness = page.locator("tr[data-source='feed'] td[data-freshness]")
        assert "bad" in (freshness.get_attribute("class") or "")
        assert page.locator("#chart-seconds svg rect.gap").count() >= 3
        page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)

    assert opened.blocked == [], f"the dashboard reached outside: {opened.blocked}"
    assert opened.errors == []
    assert process.poll() is None, "the pipeline kept running"
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
