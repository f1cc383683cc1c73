"""The offline demo tells the truth: a healthy simulated run reports no gap and live event times,
in both of its markets (synthetic, and the replay of the recorded frames over several loops), and a
run with injected faults reports exactly the trades it left out."""

from __future__ import annotations

import time
from pathlib import Path

import orjson
import pytest

from sluice.config.loader import load_config_text
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from sluice.simulator import CoinbaseSimulator, Faults, SimulatorOptions
from sluice.simulator.markets import load_recording
from tests.integration.support import build_pipeline, read_jsonl, run_pipeline

ROOT = Path(__file__).resolve().parents[2]
SOURCE_LABELS = {
    "component_id": "coinbase",
    "component_kind": "source",
    "component_type": "coinbase",
}
REPLAY_PRODUCTS = ["SKL-USD", "DASH-BTC", "SKL-BTC", "BAND-BTC", "NMR-EUR"]


def offline_config(replay_speed: float | None = None) -> str:
    """examples/offline.yaml as shipped, or its documented replay variant at ``replay_speed``."""
    text = (ROOT / "examples/offline.yaml").read_text()
    synthetic_lines = (
        "    products: [BTC-USD, ETH-USD]\n",
        "    simulator: {mode: synthetic, trades_per_sec: 8}\n",
    )
    for line in synthetic_lines:
        assert line in text, "the offline example changed: update this test"
    if replay_speed is not None:
        text = text.replace(
            synthetic_lines[0], f"    products: {orjson.dumps(REPLAY_PRODUCTS).decode()}\n"
        )
        text = text.replace(
            synthetic_lines[1], f"    simulator: {{mode: replay, speed: {replay_speed}}}\n"
        )
    # the example's own admin port may be taken by another run on this machine
    return text + "admin: {enabled: false}\n"


def ticker_ids(tickers: list[dict[str, object]]) -> dict[str, list[int]]:
    ids: dict[str, list[int]] = {}
    for t in tickers:
        ids.setdefault(str(t["product_id"]), []).append(int(str(t["trade_id"])))
    return ids


def source_metric(pipeline: Pipeline, name: str) -> float:
    return pipeline.metrics.registry.get_sample_value(name, SOURCE_LABELS) or 0.0


def check_live_and_gapless(tickers: list[dict[str, object]], started: float) -> None:
    for product, ids in ticker_ids(tickers).items():
        assert ids == list(range(ids[0], ids[0] + len(ids))), f"{product}: ids not consecutive"
    from datetime import datetime

    times = [
        datetime.fromisoformat(str(t["time"]).replace("Z", "+00:00")).timestamp() for t in tickers
    ]
    # re-timed to the present: no 2021 times, none from the future
    assert min(times) > started - 120
    assert max(times) < time.time() + 1


async def test_the_offline_demo_replayed_for_two_loops_reports_no_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's paths are relative
    recording = load_recording()
    per_pass = sum(
        1 for e in recording.events if e.channel == "ticker" and e.product_id in REPLAY_PRODUCTS
    )
    # the latest ticker of each product on subscribe, two whole passes, and one ticker of the
    # third: the loop boundary was crossed twice
    wanted = len(REPLAY_PRODUCTS) + 2 * per_pass + 1
    registry = Registry.from_entry_points()
    pipeline = Pipeline.build(load_config_text(offline_config(replay_speed=10), registry), registry)
    ticks = tmp_path / "sluice-data/offline-ticks.jsonl"
    started = time.time()
    result = await run_pipeline(
        pipeline, until=lambda: len(read_jsonl(ticks)) >= wanted, timeout=60
    )
    assert result.ok
    tickers = read_jsonl(ticks)
    assert len(tickers) >= wanted
    assert {t["product_id"] for t in tickers} == set(REPLAY_PRODUCTS)
    check_live_and_gapless(tickers, started)
    assert read_jsonl(tmp_path / "sluice-data/offline-gaps.jsonl") == []
    assert source_metric(pipeline, "sluice_source_gaps_total") == 0
    assert source_metric(pipeline, "sluice_source_missed_events_total") == 0


async def test_the_offline_demo_on_its_synthetic_market_reports_no_gap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = Registry.from_entry_points()
    text = offline_config().replace("trades_per_sec: 8}", "trades_per_sec: 200}")
    pipeline = Pipeline.build(load_config_text(text, registry), registry)
    ticks = tmp_path / "sluice-data/offline-ticks.jsonl"
    started = time.time()
    result = await run_pipeline(pipeline, until=lambda: len(read_jsonl(ticks)) >= 400, timeout=60)
    assert result.ok
    tickers = read_jsonl(ticks)
    assert {t["product_id"] for t in tickers} == {"BTC-USD", "ETH-USD"}
    check_live_and_gapless(tickers, started)
    assert read_jsonl(tmp_path / "sluice-data/offline-gaps.jsonl") == []
    assert source_metric(pipeline, "sluice_source_gaps_total") == 0


@pytest.mark.parametrize(
    "simulator",
    [
        SimulatorOptions(
            mode="replay",
            speed=10,
            heartbeat_interval_secs=0.2,
            record_sent=True,
            faults=Faults(skip_every=7),
        )
    ],
    indirect=True,
)
async def test_a_replay_with_skipped_trades_reports_exactly_those_gaps(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    recording = load_recording()
    per_pass = sum(1 for e in recording.events if e.channel == "ticker")
    out, gaps = tmp_path / "ticks.jsonl", tmp_path / "gaps.jsonl"
    config = f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  coinbase:
    type: coinbase
    url: {simulator.url}
    products: {orjson.dumps(list(recording.products)).decode()}
    channels: [ticker, heartbeat]
sinks:
  ticks: {{type: file, path: {out}, inputs: [coinbase.ticker], batch: {{max_age_secs: 0.05}}}}
  gaps: {{type: file, path: {gaps}, inputs: [coinbase.gap], batch: {{max_age_secs: 0.05}}}}
"""
    pipeline = build_pipeline(config)

    def two_loops_sent() -> bool:
        return bool(simulator.sessions) and simulator.sessions[0].trade_frames > 2 * per_pass

    result = await run_pipeline(pipeline, until=two_loops_sent, timeout=60)
    assert result.ok
    [session] = simulator.sessions
    assert session.skipped is not None and session.sent is not None
    skipped = {(m["product_id"], m["trade_id"]) for m in map(orjson.loads, session.skipped)}
    assert len(skipped) >= 2 * per_pass // 7 - 1
    reported: set[tuple[str, int]] = set()
    for gap in read_jsonl(gaps):
        assert gap["stream"] == "ticker"
        for trade_id in range(gap["first_missing_trade_id"], gap["last_missing_trade_id"] + 1):
            reported.add((gap["product_id"], trade_id))
    # no gap that was not injected
    assert reported <= skipped
    # and every injected one that a later ticker of its product revealed before the stop
    newest: dict[str, int] = {}
    for ticker in read_jsonl(out):
        newest[ticker["product_id"]] = max(newest.get(ticker["product_id"], 0), ticker["trade_id"])
    revealed = {(p, i) for p, i in skipped if i < newest.get(p, 0)}
    assert revealed <= reported
    assert len(revealed) >= len(skipped) // 2
    assert source_metric(pipeline, "sluice_source_missed_events_total") == len(reported)
    written = ticker_ids(read_jsonl(out))
    for product, ids in written.items():
        missing = set(range(min(ids), max(ids) + 1)) - set(ids)
        assert {(product, i) for i in missing} <= reported, f"{product}: a silent loss"
