"""The offline demo's dashboard as a new user sees it, in headless Chromium with every non-local
request blocked: after a minute of `sluice run examples/offline.yaml` it shows no gap, no drop, an
event lag of a few seconds and a price chart with data for each product. The screenshot is kept in
test-artifacts/dashboard-offline-demo.png (scripts/dashboard-screenshot.sh copies it for the
README)."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_dashboard_browser import offline_page, sluice_running
from tests.conftest import REPO, wait_for

pytestmark = [pytest.mark.browser, pytest.mark.slow, pytest.mark.timeout(300)]

PRODUCTS = ("BTC-USD", "ETH-USD")
SCREENSHOT = "dashboard-offline-demo.png"


@pytest.fixture
def offline_demo(tmp_path: Path) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    """`sluice run examples/offline.yaml` as shipped (its relative paths under tmp_path), on a
    free admin port."""
    config = tmp_path / "offline.yaml"
    config.write_text(
        (REPO / "examples/offline.yaml").read_text() + 'admin: {listen: "127.0.0.1:0"}\n'
    )
    with sluice_running(config, tmp_path / "sluice.log", cwd=tmp_path) as (url, process):
        # the link scripts/demo.sh prints: the market panel queries with the run's admin token
        token_file = tmp_path / "sluice-data" / "admin.token"
        token = wait_for(lambda: token_file.exists() and token_file.read_text().strip())
        yield f"{url}#token={token}", process


def test_the_offline_demo_dashboard_after_a_minute_shows_prices_and_no_false_alarm(
    offline_demo: tuple[str, subprocess.Popen[bytes]], artifacts_dir: Path
) -> None:
    url, process = offline_demo
    with offline_page(url, height=1100) as opened:
        page = opened.page
        # a minute into the run, as the user looked at it
        page.wait_for_function("() => +(document.body.dataset.uptime || 0) >= 60", timeout=120_000)
        # and a market panel that has been drawn after that
        page.wait_for_function(
            "() => document.querySelectorAll('#market [data-product] svg[data-candles]')"
            f".length === {len(PRODUCTS)}",
            timeout=30_000,
        )
        row = page.locator("tr[data-source='coinbase']")
        assert row.locator("td[data-gaps]").get_attribute("data-gaps") == "0"
        assert row.locator("td[data-dropped]").get_attribute("data-dropped") == "0"
        lag = float(row.locator("td[data-event-lag]").get_attribute("data-event-lag") or "nan")
        assert -1 < lag < 5
        assert page.inner_text("#ready-badge") == "ready"
        for product in PRODUCTS:
            card = page.locator(f"#market [data-product='{product}']")
            candles = card.locator("svg").get_attribute("data-candles")
            assert int(candles or 0) >= 1, product
            assert float(card.get_attribute("data-last") or 0) > 0
            assert card.locator("rect.candle").count() >= 1
        alerts = page.locator("li[data-state='firing']").count()
        assert alerts == 0
        page.screenshot(path=str(artifacts_dir / SCREENSHOT), full_page=True)

    assert opened.blocked == [], f"the dashboard reached outside: {opened.blocked}"
    assert opened.errors == []
    assert process.poll() is None, "the demo kept running"
    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
