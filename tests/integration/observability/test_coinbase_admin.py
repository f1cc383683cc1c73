"""The admin server of a running simulator -> coinbase source -> file pipeline, over real sockets:
/metrics counts equal what the simulator sent and the faults it injected, and /readyz follows a
stalled feed until the source's stale-feed watchdog has reconnected."""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
import pytest
from obs_support import metric, run_in_process
from tests.conftest import wait_until
from tests.integration.support import read_jsonl, synthetic

from sluice.simulator import CoinbaseSimulator
from sluice.simulator.session import Session

CB = {"component_id": "cb", "component_kind": "source", "component_type": "coinbase"}
TICKS = {"component_id": "ticks", "component_kind": "sink", "component_type": "file"}


PRODUCTS = ("BTC-USD", "ETH-USD")


def pipeline_config(tmp_path: Path, url: str, source: str) -> str:
    return f"""
data_dir: {tmp_path}/data
admin: {{listen: "127.0.0.1:0"}}
sources:
  cb:
    type: coinbase
    url: {url}
    products: [BTC-USD, ETH-USD]
    channels: [ticker]
{source}
sinks:
  ticks: {{type: file, path: {tmp_path}/ticks.jsonl, inputs: [cb.ticker], batch: {{max_age_secs: 0.05}}}}
  gaps: {{type: file, path: {tmp_path}/gaps.jsonl, inputs: [cb.gap], batch: {{max_age_secs: 0.05}}}}
"""


def sent_tickers(session: Session) -> list[dict[str, Any]]:
    assert session.sent is not None
    messages = []
    for frame in session.sent:
        try:
            message = orjson.loads(frame)
        except orjson.JSONDecodeError:
            continue  # the garbage fault's frames
        if message["type"] == "ticker":
            messages.append(message)
    return messages


def expected_gaps(tickers: list[dict[str, Any]]) -> list[tuple[str, int, int]]:
    """``(product, first missing, last missing)`` between consecutive tickers of a product."""
    last: dict[str, int] = {}
    gaps = []
    for message in tickers:
        product, trade_id = message["product_id"], message["trade_id"]
        if product in last and trade_id > last[product] + 1:
            gaps.append((product, last[product] + 1, trade_id - 1))
        last[product] = trade_id
    return gaps


@pytest.mark.parametrize(
    "simulator",
    [synthetic(PRODUCTS, skip_every=7, garbage_every=25, stall_after=300)],
    indirect=True,
)
async def test_metrics_equal_what_the_simulator_sent_and_injected(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    # the stall fault ends the feed after 300 frames with the socket kept open: a finite stream
    # whose every frame reaches the pipeline, and a connection that stays up
    config = pipeline_config(tmp_path, simulator.url, "    stale_after_secs: 120")
    async with run_in_process(config) as running:
        await wait_until(lambda: simulator.sessions and simulator.sessions[0].stalled)
        session = simulator.sessions[0]
        assert session.sent is not None
        tickers = sent_tickers(session)
        garbage = [f for f in session.sent if not f.startswith(b"{")]
        await wait_until(
            lambda: (
                len(read_jsonl(tmp_path / "ticks.jsonl")) == len(tickers)
                and len(read_jsonl(tmp_path / "gaps.jsonl")) == len(expected_gaps(tickers))
                and len(read_jsonl(tmp_path / "data" / "dead_letters.jsonl")) == len(garbage)
            )
        )
        samples = await running.metrics()
        assert not running.task.done()

    written = read_jsonl(tmp_path / "ticks.jsonl")
    gap_records = read_jsonl(tmp_path / "gaps.jsonl")
    assert session.skipped is not None
    # what the simulator injected: trade ids it left out, each seen once a later trade of the
    # same product arrived (none after the last ticker of a product: the feed stalled first)
    last_sent = {t["product_id"]: t["trade_id"] for t in tickers}
    skipped = [orjson.loads(f) for f in session.skipped]
    detectable = [s for s in skipped if s["trade_id"] < last_sent.get(s["product_id"], 0)]
    gaps = expected_gaps(tickers)
    assert len(skipped) >= 300 // 7 - 5 and len(garbage) >= 300 // 25
    assert sum(last - first + 1 for _, first, last in gaps) == len(detectable)
    assert {(s["product_id"], s["trade_id"]) for s in detectable} == {
        (product, trade_id) for product, first, last in gaps for trade_id in range(first, last + 1)
    }

    # ticker lines in the file = tickers the simulator sent, byte for byte and in order
    assert written == tickers
    assert [(g["product_id"], g["first_missing_trade_id"], g["last_missing_trade_id"]) for g in
            gap_records] == gaps  # fmt: skip
    assert metric(samples, "sluice_source_gaps_total", **CB) == len(gaps)
    assert metric(samples, "sluice_source_missed_events_total", **CB) == len(detectable)
    # the source received every frame the simulator sent after the subscriptions reply (that one
    # is read while subscribing): heartbeats, tickers, garbage; it sent every record it made
    # (tickers and gap records)
    records = len(tickers) + len(gaps)
    assert metric(samples, "sluice_component_sent_events_total", **CB) == records
    assert metric(samples, "sluice_component_dead_letters_total", **CB) == len(garbage)
    assert metric(samples, "sluice_component_received_events_total", **CB) == len(session.sent) - 1
    assert metric(samples, "sluice_component_sent_events_total", **TICKS) == len(tickers)
    assert metric(samples, "sluice_source_connected", **CB) == 1
    assert metric(samples, "sluice_source_reconnects_total", **CB) == 0
    last_time = datetime.fromisoformat(tickers[-1]["time"]).timestamp()
    assert metric(samples, "sluice_source_last_event_timestamp_seconds", **CB) == pytest.approx(
        last_time, abs=1e-6
    )
    dead = {"component_id": "dead_letters", "component_kind": "sink"}
    assert metric(samples, "sluice_component_sent_events_total", **dead) == len(garbage)
    letters = read_jsonl(tmp_path / "data" / "dead_letters.jsonl")
    assert [letter["raw"].encode() for letter in letters] == garbage
    assert all("not valid JSON" in letter["reason"] for letter in letters)


@pytest.mark.parametrize(
    "simulator", [synthetic(PRODUCTS, stall_after=40, connections=1)], indirect=True
)
async def test_readyz_names_a_stalled_coinbase_source_until_the_watchdog_reconnects(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    source = (
        "    stale_after_secs: 1.0\n"
        "    reconnect: {initial_backoff_secs: 2, max_backoff_secs: 2, jitter: equal}"
    )
    async with run_in_process(pipeline_config(tmp_path, simulator.url, source)) as running:
        await wait_until(lambda: simulator.sessions and simulator.sessions[0].sent_frames >= 10)
        assert await running.get("/readyz") == (200, '{"status":"ready"}')

        await wait_until(lambda: simulator.sessions[0].stalled)
        # the socket stays open and pings are answered: only the watchdog sees the stall
        status, body = await wait_until(_not_ready(running))
        assert status == 503
        assert set(body["not_ready"]) == {"source/cb"}
        # first the source's own report, then the runner's "restarting after ... (stale feed)":
        # a loaded machine can show either; both name the silence
        assert re.search(r"no frame for \d+ s", body["not_ready"]["source/cb"])

        await wait_until(lambda: len(simulator.sessions) == 2 and simulator.sessions[1].live)
        await wait_until(_ready(running))
        samples = await running.metrics()
    assert simulator.sessions[0].disconnected
    assert metric(samples, "sluice_source_reconnects_total", **CB) == 1
    assert metric(samples, "sluice_source_connected", **CB) == 1


def _not_ready(running: Any) -> Any:
    async def check() -> Any:
        status, body = await running.json("/readyz")
        return (status, body) if status == 503 else None

    return check


def _ready(running: Any) -> Any:
    async def check() -> bool:
        status, _ = await running.get("/readyz")
        return bool(status == 200)

    return check
