"""The built-in dashboard in headless Chromium (Debian's, driven by Playwright): it loads with the
network cut off, draws the rate charts from a live `sluice run`, and shows an alert firing after
the feed stops. A screenshot is left in test-artifacts/dashboard.png."""

from __future__ import annotations

import json
import signal
import subprocess
import time
from collections.abc import Iterator
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
    log_path = tmp_path / "sluice.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [*SLUICE, "run", str(config), "--log-format", "json"], stderr=log
        )
    try:
        url = ""
        deadline = time.monotonic() + 20
        while not url and time.monotonic() < deadline:
            for line in log_path.read_text().splitlines():
                event = json.loads(line)
                if event.get("event") == "admin.listening":
                    url = event["url"]
            time.sleep(0.05)
        assert url, f"no admin.listening in the log:\n{log_path.read_text()}"
        yield url, process
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGINT)
            process.wait(30)


def svg_attr(page: Page, chart: str, name: str) -> float:
    value = page.get_attribute(f"#{chart} svg", f"data-{name}")
    return float(value or 0)


def test_dashboard_offline_live_chart_and_alert(
    sluice_run: tuple[str, subprocess.Popen[bytes]], artifacts_dir: Path
) -> None:
    url, process = sluice_run
    origin = url.rstrip("/")
    blocked: list[str] = []
    errors: list[str] = []

    def only_the_admin_server(route: Route) -> None:
        if route.request.url.startswith(origin + "/"):
            route.continue_()
        else:
            blocked.append(route.request.url)
            route.abort("internetdisconnected")

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            context = browser.new_context(
                viewport={"width": 1280, "height": 1000}, service_workers="block"
            )
            context.route("**/*", only_the_admin_server)
            page = context.new_page()
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.goto(url)

            # live data: both charts draw bars for the records flowing now
            page.wait_for_function(
                "() => +(document.querySelector('#chart-seconds svg')?.dataset.total || 0) > 0",
                timeout=15_000,
            )
            assert page.inner_text("#ready-badge") == "ready"
            assert page.inner_text("#health-badge") == "event loop ok"
            assert svg_attr(page, "chart-minutes", "bars") >= 1
            assert page.locator("#sources tbody tr").count() == 2
            assert page.locator("#sinks tbody tr").count() == 2

            # the feed ends: its freshness alert fires, and its per-second chart shows gaps
            page.select_option("#source-filter", "feed")
            page.wait_for_selector(
                "li[data-alert='feed_stale'][data-state='firing']", timeout=20_000
            )
            page.wait_for_selector(
                "li[data-alert='feed_rate'][data-state='firing']", timeout=10_000
            )
            page.wait_for_function(
                "() => +(document.querySelector('#chart-seconds svg')?.dataset.gaps || 0) >= 3",
                timeout=10_000,
            )
            # every record of the feed is in the per-minute chart, and nothing more
            page.wait_for_function(
                f"() => +(document.querySelector('#chart-minutes svg')?.dataset.total || 0)"
                f" === {FEED_COUNT}",
                timeout=10_000,
            )
            firing = page.inner_text("li[data-alert='feed_stale']")
            assert "firing" in firing
            assert "no record from source 'feed'" in firing
            freshness = page.locator("tr[data-source='feed'] td[data-freshness]")
            assert "bad" in (freshness.get_attribute("class") or "")
            assert page.locator("#chart-seconds svg rect.gap").count() >= 3
            page.screenshot(path=str(artifacts_dir / "dashboard.png"), full_page=True)
        finally:
            browser.close()

    assert blocked == [], f"the dashboard reached outside the admin server: {blocked}"
    assert errors == []
    assert process.poll() is None, "the pipeline kept running"
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
