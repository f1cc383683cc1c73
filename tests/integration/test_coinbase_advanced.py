"""The coinbase_advanced source through the real pipeline against the simulator speaking Advanced
Trade over a real socket: tickers and market trades into chDB as sent, sequence_num and heartbeat
counter gaps reported, JWT authentication accepted and refused, bad frames dead-lettered, and the
shipped example."""

from __future__ import annotations

import asyncio
import io
import re
import signal
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.config.loader import load_config, load_config_text
from sluice.logs import configure_logging
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline, RunResult
from sluice.simulator import CoinbaseSimulator, Faults, SimulatorOptions
from sluice.simulator.advanced.session import AdvancedSession
from sluice.sinks.clickhouse.ddl import shipped_sql
from sluice.testing.clickhouse import LocalChdb
from tests.conftest import REPO, ec_key_pair
from tests.integration.support import (
    build_pipeline,
    read_jsonl,
    run_pipeline,
    synthetic_advanced,
)

pytestmark = pytest.mark.timeout(180)

PRODUCTS = ["BTC-USD", "ETH-USD"]
LABELS = {"component_id": "cb", "component_kind": "source", "component_type": "coinbase_advanced"}
TRADES_DDL = """
CREATE DATABASE IF NOT EXISTS {database};
CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time DateTime64(6, 'UTC'),
    product_id LowCardinality(String),
    trade_id UInt64,
    side LowCardinality(String),
    price Float64,
    size Float64,
    sequence UInt64
)
ENGINE = ReplacingMergeTree ORDER BY (product_id, trade_id);
"""


def advanced(faults: Faults | None = None, **options: Any) -> SimulatorOptions:
    return synthetic_advanced(tuple(PRODUCTS), faults, **options)


@dataclass
class Run:
    result: RunResult
    pipeline: Pipeline
    records: list[dict[str, Any]]
    dead_letters: list[dict[str, Any]]
    log: str

    def metric(self, name: str) -> float:
        return self.pipeline.metrics.registry.get_sample_value(name, LABELS) or 0.0

    def of_type(self, *types: str) -> list[dict[str, Any]]:
        return [r for r in self.records if r["type"] in types]


async def run_advanced(
    tmp_path: Path,
    url: str,
    until: Callable[[list[dict[str, Any]]], bool] | None,
    *,
    channels: str,
    source: str = "",
    sinks: str = "",
    timeout: float = 30.0,
) -> Run:
    """Run coinbase_advanced -> a file sink (and ``sinks``) until ``until(records)`` holds."""
    log = io.StringIO()
    configure_logging("info", "text", stream=log)
    out = tmp_path / "out.jsonl"
    config = f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase_advanced
    url: {url}
    products: {orjson.dumps(PRODUCTS).decode()}
    channels: {channels}
    reconnect: {{initial_backoff_secs: 0.2, max_backoff_secs: 0.5, jitter: full}}
{source}
sinks:
  out:
    type: file
    path: {out}
    inputs: [cb]
    batch: {{max_age_secs: 0.05}}
{sinks}
"""
    pipeline = build_pipeline(config)
    written = (lambda: until(read_jsonl(out))) if until is not None else None
    result = await run_pipeline(pipeline, until=written, timeout=timeout)
    dead = read_jsonl(tmp_path / "data" / "dead_letters.jsonl")
    return Run(result, pipeline, read_jsonl(out), dead, log.getvalue())


def session(simulator: CoinbaseSimulator, number: int = 0) -> AdvancedSession:
    found = simulator.sessions[number]
    assert isinstance(found, AdvancedSession)
    return found


def sent_messages(simulator: CoinbaseSimulator) -> list[dict[str, Any]]:
    """Every message the simulator sent that is JSON, over every connection."""
    messages = []
    for s in simulator.sessions:
        assert s.sent is not None
        for frame in s.sent:
            try:
                messages.append(orjson.loads(frame))
            except orjson.JSONDecodeError:
                continue
    return messages


def sent_items(simulator: CoinbaseSimulator, channel: str, field: str) -> list[dict[str, Any]]:
    return [
        item
        for m in sent_messages(simulator)
        if m.get("channel") == channel
        for event in m["events"]
        for item in event[field]
    ]


@pytest.mark.parametrize("simulator", [advanced(Faults(stall_after=400))], indirect=True)
async def test_tickers_and_market_trades_land_in_chdb_as_many_as_were_sent(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    # the feed stops after 400 messages (a stall): everything sent can then be waited for
    chdb = LocalChdb(tmp_path / "chdb")
    trades_ddl = tmp_path / "trades.sql"
    trades_ddl.write_text(TRADES_DDL)
    sinks = f"""
  tickers:
    type: clickhouse
    inputs: [cb.ticker]
    path: {chdb.target["path"]}
    database: adv
    table: ticker
    ddl: {shipped_sql("coinbase_advanced_ticker.sql")}
    batch: {{max_age_secs: 0.05}}
  trades:
    type: clickhouse
    inputs: [cb.match]
    path: {chdb.target["path"]}
    database: adv
    table: trades
    ddl: {trades_ddl}
    batch: {{max_age_secs: 0.05}}
"""

    def all_sent_written(records: list[dict[str, Any]]) -> bool:
        if not simulator.sessions or not session(simulator).stalled:
            return False
        expected = len(sent_items(simulator, "ticker", "tickers")) + len(
            sent_items(simulator, "market_trades", "trades")
        )
        return len([r for r in records if r["type"] in ("ticker", "match")]) >= expected

    run = await run_advanced(
        tmp_path,
        simulator.url,
        all_sent_written,
        channels="[heartbeats, ticker, market_trades]",
        source="    stale_after_secs: 60",
        sinks=sinks,
    )
    assert run.result.ok, run.result
    tickers = sent_items(simulator, "ticker", "tickers")
    trades = sent_items(simulator, "market_trades", "trades")
    assert len(tickers) > 50 and len(trades) > 50
    assert len(run.of_type("ticker")) == len(tickers)
    assert len(run.of_type("match")) == len(trades)
    assert run.of_type("gap") == [] and run.dead_letters == []
    try:
        [[count, products]] = chdb.rows(
            "SELECT count(), groupUniqArray(product_id) FROM adv.ticker FINAL"
        )
        assert count == len(tickers)
        assert sorted(products) == PRODUCTS
        [[count, distinct]] = chdb.rows("SELECT count(), uniqExact(trade_id) FROM adv.trades")
        assert count == distinct == len(trades)
        rows = chdb.rows("SELECT product_id, trade_id, side, price FROM adv.trades ORDER BY time")
        assert {(r[0], r[1]) for r in rows} == {
            (t["product_id"], int(t["trade_id"])) for t in trades
        }
        assert {r[2] for r in rows} <= {"buy", "sell"}
    finally:
        chdb.close()


@pytest.mark.parametrize("simulator", [advanced(skip_sequence_every=9)], indirect=True)
async def test_a_skipped_sequence_num_is_a_gap_record_and_a_metric(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    run = await run_advanced(
        tmp_path,
        simulator.url,
        lambda records: len([r for r in records if r["type"] == "gap"]) >= 4,
        channels="[heartbeats, ticker]",
    )
    assert run.result.ok, run.result
    gaps = run.of_type("gap")
    assert {g["stream"] for g in gaps} == {"sequence_num"}
    assert all(g["missed"] == 1 and g["first_missing"] == g["last_missing"] for g in gaps)
    skipped = [orjson.loads(m)["sequence_num"] for m in session(simulator).skipped_messages]
    assert [g["first_missing"] for g in gaps] == skipped[: len(gaps)]
    assert run.metric("sluice_source_gaps_total") == len(gaps)
    assert run.metric("sluice_source_missed_events_total") == len(gaps)
    assert "coinbase_advanced.gap" in run.log and "stream=sequence_num" in run.log
    # the numbers received are every number up to the last one but the skipped
    received = {r["sequence"] for r in run.records if "sequence" in r}
    assert not received & set(skipped)


@pytest.mark.parametrize("simulator", [advanced(skip_heartbeat_every=4)], indirect=True)
async def test_a_missed_heartbeat_counter_is_a_gap_record_and_a_metric(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    run = await run_advanced(
        tmp_path,
        simulator.url,
        lambda records: len([r for r in records if r["type"] == "gap"]) >= 3,
        channels="[heartbeats]",
    )
    assert run.result.ok, run.result
    gaps = run.of_type("gap")
    assert {g["stream"] for g in gaps} == {"heartbeat_counter"}
    counters = [r["heartbeat_counter"] for r in run.of_type("heartbeat")]
    assert counters == sorted(counters)
    for gap in gaps:
        assert gap["missed"] == 1
        assert gap["first_missing"] % 4 == 0  # the simulator skips every 4th value
        assert gap["first_missing"] not in counters
        assert gap["first_missing"] - 1 in counters and gap["first_missing"] + 1 in counters
    assert run.metric("sluice_source_gaps_total") == len(gaps)


PRIVATE, PUBLIC = ec_key_pair()
KEY_NAME = "organizations/test-org/apiKeys/test-key"


def auth_yaml(private_pem: str) -> str:
    # the PEM as one line with \n, as it is put into an environment variable
    one_line = private_pem.strip().replace("\n", "\\n")
    return f'    auth: {{name: "{KEY_NAME}", private_key: "{one_line}"}}'


@pytest.mark.parametrize("simulator", [advanced(jwt_public_key=PUBLIC)], indirect=True)
async def test_subscribes_signed_with_the_cdp_key_are_accepted(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    run = await run_advanced(
        tmp_path,
        simulator.url,
        lambda records: len([r for r in records if r["type"] == "ticker"]) >= 20,
        channels="[heartbeats, ticker]",
        source=auth_yaml(PRIVATE),
    )
    assert run.result.ok, run.result
    assert session(simulator).refused == []
    assert set(session(simulator).channels) == {"heartbeats", "ticker"}
    assert "authenticated=True" in run.log
    assert "PRIVATE KEY" not in run.log and "MII" not in run.log


@pytest.mark.parametrize("simulator", [advanced(jwt_public_key=PUBLIC)], indirect=True)
async def test_a_bad_jwt_is_refused_once_with_coinbases_message_and_no_reconnect(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    other, _ = ec_key_pair()  # a valid key, but not the one the simulator knows
    run = await run_advanced(
        tmp_path, simulator.url, None, channels="[heartbeats, ticker]", source=auth_yaml(other)
    )
    assert not run.result.ok
    assert run.result.error is not None
    assert "authentication failure" in run.result.error
    assert "auth.name and auth.private_key" in run.result.error
    assert len(simulator.sessions) == 1  # refused once: not retried
    assert session(simulator).refused and all(
        "jwt refused" in r for r in session(simulator).refused
    )
    assert run.records == []
    assert "PRIVATE KEY" not in run.log


@pytest.mark.parametrize(
    "simulator", [advanced(Faults(garbage_every=10), bad_every=7)], indirect=True
)
async def test_bad_frames_are_dead_lettered_with_their_reasons(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    dead = tmp_path / "data" / "dead_letters.jsonl"
    run = await run_advanced(
        tmp_path,
        simulator.url,
        lambda _: len(read_jsonl(dead)) >= 6,
        channels="[heartbeats, ticker]",
    )
    assert run.result.ok, run.result
    reasons = [d["reason"] for d in run.dead_letters]
    assert any(r.startswith("not valid JSON") for r in reasons)
    assert any(r == "price is not a finite number: 'NaN'" for r in reasons)
    assert all(
        r.startswith("not valid JSON") or r == "price is not a finite number: 'NaN'"
        for r in reasons
    )
    assert all(t["price"] != "NaN" for t in run.of_type("ticker"))
    assert run.metric("sluice_component_dead_letters_total") >= len(run.dead_letters)


def test_the_example_config_loads() -> None:
    loaded = load_config(REPO / "examples/coinbase_advanced.yaml", Registry.from_entry_points())
    assert loaded.model.sources["coinbase"].type == "coinbase_advanced"


async def test_the_example_runs_on_its_own_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's paths are relative
    registry = Registry.from_entry_points()
    text = (
        (REPO / "examples/coinbase_advanced.yaml")
        .read_text()
        .replace("ddl: sql/", f"ddl: {REPO}/sql/")
        .replace("trades_per_sec: 8}", "trades_per_sec: 100}")
    )
    pipeline = Pipeline.build(load_config_text(text, registry), registry)
    out = tmp_path / "sluice-data/advanced-trades.jsonl"
    result = await run_pipeline(pipeline, until=lambda: len(read_jsonl(out)) >= 20, timeout=30)
    assert result.ok, result
    trades = read_jsonl(out)
    assert {t["type"] for t in trades} == {"match"}
    assert {t["product_id"] for t in trades} <= {"BTC-USD", "ETH-USD"}


@pytest.mark.parametrize(
    "simulator", [advanced(Faults(close_after=60, connections=1))], indirect=True
)
async def test_a_dropped_connection_reconnects_and_resubscribes_every_channel(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    def second_connection_delivers(records: list[dict[str, Any]]) -> bool:
        return (
            len(simulator.sessions) >= 2
            and len([r for r in records if r["type"] == "ticker" and r["sequence"] >= 1]) > 80
        )

    run = await run_advanced(
        tmp_path,
        simulator.url,
        second_connection_delivers,
        channels="[heartbeats, ticker, market_trades]",
    )
    assert run.result.ok, run.result
    assert run.metric("sluice_source_reconnects_total") >= 1
    assert set(session(simulator, 1).channels) == {"heartbeats", "ticker", "market_trades"}
    # the new connection numbers its messages from 0 again: that is not a gap
    assert run.of_type("gap") == []
    assert "coinbase_advanced.subscribed" in run.log


@pytest.mark.parametrize(
    "simulator", [advanced(Faults(stall_after=30, connections=1))], indirect=True
)
async def test_a_stalled_feed_is_reconnected_by_the_watchdog(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    run = await run_advanced(
        tmp_path,
        simulator.url,
        lambda records: len(simulator.sessions) >= 2 and len(records) > 60,
        channels="[heartbeats, ticker]",
        source="    stale_after_secs: 0.5",
    )
    assert run.result.ok, run.result
    assert session(simulator, 0).stalled
    assert "stale feed" in run.log


async def test_simulate_coinbase_speaks_advanced_trade(spawn: Any) -> None:
    from websockets.asyncio.client import connect

    process = spawn(
        [
            sys.executable,
            "-m",
            "sluice",
            "simulate",
            "coinbase",
            "--port",
            "0",
            "--mode",
            "synthetic",
            "--api",
            "advanced_trade",
            "--skip-heartbeat-every",
            "2",
        ],
        PYTHONUNBUFFERED="1",
    )
    assert process.stderr is not None
    url = ""
    for line in process.stderr:
        found = re.search(r"url=(ws://\S+)", line)
        if found:
            url = found.group(1)
            break
    assert url
    async with connect(url) as ws:
        await ws.send(orjson.dumps({"type": "subscribe", "channel": "heartbeats"}).decode())
        reply = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert reply["channel"] == "subscriptions" and reply["sequence_num"] == 0
        assert reply["events"] == [{"subscriptions": {"heartbeats": ["heartbeats"]}}]
        await ws.send(
            orjson.dumps(
                {"type": "subscribe", "channel": "ticker", "product_ids": ["BTC-USD"]}
            ).decode()
        )
        numbers: list[int] = []
        counters: list[int] = []
        while len(counters) < 3:
            message = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
            numbers.append(message["sequence_num"])
            if message["channel"] == "heartbeats":
                counters.append(int(message["events"][0]["heartbeat_counter"]))
        assert numbers == list(range(1, len(numbers) + 1))
        assert counters == [1, 3, 5]  # every 2nd value skipped
        await ws.send(orjson.dumps({"type": "subscribe", "channel": "level3"}).decode())
        error: Any = {}
        while error.get("type") != "error":
            error = orjson.loads(await asyncio.wait_for(ws.recv(), 5))
        assert error == {"type": "error", "message": "failure to subscribe"}
    process.send_signal(signal.SIGINT)
    assert process.wait(10) == 0


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--skip-heartbeat-every", "3"], "need --api advanced_trade"),
        (["--api", "fix"], "--api must be exchange or advanced_trade"),
        (["--api", "advanced_trade", "--fast"], "--fast serves the Exchange feed only"),
        (["--api", "advanced_trade", "--skip-sequence-every", "0"], "must be a positive number"),
    ],
)
def test_simulate_coinbase_refuses_options_that_do_not_fit_the_api(
    args: list[str], words: str
) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "sluice", "simulate", "coinbase", *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert done.returncode == 2
    assert words in done.stderr


@pytest.mark.parametrize("simulator", [advanced(ticker_batch_every=2)], indirect=True)
async def test_every_channel_subscribed_at_once_gives_its_records_without_a_gap(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    def each_kind(records: list[dict[str, Any]]) -> bool:
        batched = [r for r in records if r.get("channel") == "ticker_batch"]
        kinds = {r["type"] for r in records}
        return len(batched) >= 2 and {"book_change", "candle", "status", "match"} <= kinds

    run = await run_advanced(
        tmp_path,
        simulator.url,
        each_kind,
        channels="[heartbeats, ticker, ticker_batch, market_trades, level2, candles, status]",
    )
    assert run.result.ok, run.result
    assert run.of_type("gap") == [] and run.dead_letters == []
    assert len(simulator.sessions) == 1
    books = run.of_type("book_change")
    assert {b["side"] for b in books} == {"buy", "sell"}
    assert [b["snapshot"] for b in books[:4]] == [True] * 4  # two products, bid and offer
    assert not any(b["snapshot"] for b in books[4:])
    candle = run.of_type("candle")[-1]
    assert float(candle["low"]) <= float(candle["close"]) <= float(candle["high"])
    assert {p["id"] for p in run.of_type("status")[0]["products"]} == set(PRODUCTS)
    # one number per message: the records' sequence values never go back
    numbers = [r["sequence"] for r in run.records if "sequence" in r]
    assert numbers == sorted(numbers)
