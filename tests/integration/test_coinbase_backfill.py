"""Healing trade-id gaps over REST, end to end over real sockets: the simulator skips trades and
drops the connection, the coinbase source (matches, backfill on) fetches the missing trades from
the simulator's REST endpoint, and the trades table (chDB) holds every trade id exactly once."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from sluice.config import load_config_text
from sluice.observability.status import build_status
from sluice.registry import Registry
from sluice.runtime.pipeline import Pipeline
from sluice.simulator import CoinbaseSimulator, Faults, RestOptions, SimulatorOptions
from sluice.sinks.clickhouse.testing import LocalChdb
from tests.conftest import REPO
from tests.integration.support import build_pipeline, read_jsonl, run_pipeline

PRODUCTS = ("BTC-USD", "ETH-USD")
LABELS = {"component_id": "cb", "component_kind": "source", "component_type": "coinbase"}
GAP_KINDS = "[cb.gap, cb.gap_healed, cb.gap_unhealable, cb.gap_backfill_failed]"


def market(rest: RestOptions, **faults: Any) -> SimulatorOptions:
    return SimulatorOptions(
        mode="synthetic",
        trades_per_sec=200,
        products=PRODUCTS,
        heartbeat_interval_secs=0.2,
        record_sent=True,
        faults=Faults(**faults),
        rest=rest,
    )


def config(tmp_path: Path, sim: CoinbaseSimulator, backfill: str = "", trades: str = "") -> str:
    trades_sink = (
        trades
        or f"""
  trades:
    type: file
    path: {tmp_path / "trades.jsonl"}
    inputs: [cb.match]
    batch: {{max_age_secs: 0.05}}"""
    )
    return f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb:
    type: coinbase
    url: {sim.url}
    products: {list(PRODUCTS)}
    channels: [matches, heartbeat]
    gap_detection: matches
    reconnect: {{initial_backoff_secs: 0.2, max_backoff_secs: 0.5, jitter: full}}
    backfill:
      enabled: true
      rest_url: {sim.rest_url}
      delay_secs: 0.2
      requests_per_sec: 10
      retry: {{initial_backoff_secs: 0.05, max_backoff_secs: 0.2, max_attempts: 6}}
{backfill}
sinks:
{trades_sink}
  gaps:
    type: file
    path: {tmp_path / "gaps.jsonl"}
    inputs: {GAP_KINDS}
    batch: {{max_age_secs: 0.05}}
"""


def metric(pipeline: Pipeline, name: str) -> float:
    return pipeline.metrics.registry.get_sample_value(name, LABELS) or 0.0


def outcomes(tmp_path: Path) -> dict[str, list[dict[str, Any]]]:
    by_type: dict[str, list[dict[str, Any]]] = {}
    for record in read_jsonl(tmp_path / "gaps.jsonl"):
        by_type.setdefault(record["type"], []).append(record)
    return by_type


def all_healed(tmp_path: Path, at_least: int) -> bool:
    found = outcomes(tmp_path)
    gaps, healed = found.get("gap", []), found.get("gap_healed", [])
    return len(gaps) >= at_least and len(healed) == len(gaps)


def market_trades(sim: CoinbaseSimulator) -> dict[str, set[int]]:
    """Every trade id the simulated market made, per product."""
    assert sim.market.history is not None
    made: dict[str, set[int]] = {}
    for event in sim.market.history:
        if event.channel == "matches":
            made.setdefault(event.product_id, set()).add(event.trade_id)
    return made


@pytest.mark.parametrize(
    "simulator",
    [market(RestOptions(), skip_every=15, close_after=120, connections=1)],
    indirect=True,
)
async def test_skipped_and_disconnected_trades_are_backfilled_into_the_trades_table_once(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    chdb_dir = tmp_path / "chdb"
    trades_sink = f"""
  trades:
    type: clickhouse
    inputs: [cb.match]
    path: {chdb_dir}
    database: market
    table: coinbase_trades
    shipped_ddl: coinbase_trades
    batch: {{max_age_secs: 0.05}}"""
    pipeline = build_pipeline(config(tmp_path, simulator, trades=trades_sink))
    result = await run_pipeline(
        pipeline,
        until=lambda: len(simulator.sessions) >= 2 and all_healed(tmp_path, 4),
        timeout=60,
    )
    assert result.ok
    found = outcomes(tmp_path)
    gaps, healed = found["gap"], found["gap_healed"]
    assert found.get("gap_unhealable", []) == [] and found.get("gap_backfill_failed", []) == []
    assert {(g["product_id"], g["first_missing_trade_id"]) for g in gaps} == {
        (h["product_id"], h["first_missing_trade_id"]) for h in healed
    }
    assert all(h["still_missing"] == 0 for h in healed)
    backfilled = sum(h["backfilled"] for h in healed)
    assert backfilled == sum(h["missed"] - h["websocket"] for h in healed) > 0
    assert metric(pipeline, "sluice_source_gaps_healed_total") == len(healed)
    assert metric(pipeline, "sluice_source_trades_backfilled_total") == backfilled
    # Gaps of one product that fall due together share their requests (Backfiller._due_with),
    # so a loaded machine can make fewer requests than gaps: at least one per product.
    assert simulator.rest is not None
    assert simulator.rest.requests >= len({g["product_id"] for g in gaps})
    status = await build_status(
        pipeline, history=None, alerts=None, monitor=None, started_at=time.time()
    )
    [cb] = status["sources"]
    assert cb["gaps_healed"] == len(healed) and cb["gaps"] == len(gaps)

    made = market_trades(simulator)
    store = LocalChdb(chdb_dir)
    try:
        rows = store.query(
            "SELECT product_id, trade_id, count(), max(backfilled) FROM market.coinbase_trades "
            "GROUP BY product_id, trade_id ORDER BY product_id, trade_id"
        )
    finally:
        store.close()
    stored: dict[str, list[int]] = {}
    flagged = 0
    for line in rows.splitlines():
        product, trade_id, copies, was_backfilled = line.split("\t")
        assert copies == "1", f"{product} trade {trade_id} stored {copies} times"
        stored.setdefault(product, []).append(int(trade_id))
        flagged += was_backfilled in ("1", "true")
    assert flagged == backfilled
    for product, ids in stored.items():
        # every trade the market made from the first stored to the last is there, once (the
        # synthetic market numbers each product's trades consecutively)
        assert ids == list(range(ids[0], ids[-1] + 1)), f"{product}: a hole in the table"
        assert {i for i in made[product] if ids[0] <= i <= ids[-1]} <= set(ids)


@pytest.mark.parametrize(
    "simulator",
    [market(RestOptions(rate_limit_first=3), skip_every=25, close_after=100, connections=1)],
    indirect=True,
)
async def test_rest_answering_429_then_200_still_heals_the_gap(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    pipeline = build_pipeline(config(tmp_path, simulator))
    result = await run_pipeline(
        pipeline,
        until=lambda: len(simulator.sessions) >= 2 and all_healed(tmp_path, 2),
        timeout=60,
    )
    assert result.ok
    assert simulator.rest is not None
    assert simulator.rest.answers[:3] == [429, 429, 429]
    assert 200 in simulator.rest.answers
    assert metric(pipeline, "sluice_source_backfill_rest_errors_total") >= 3
    trades = read_jsonl(tmp_path / "trades.jsonl")
    keys = [(t["product_id"], t["trade_id"]) for t in trades]
    assert len(keys) == len(set(keys)), "a trade was emitted twice"
    assert any(t.get("backfilled") for t in trades)


@pytest.mark.parametrize(
    "simulator", [market(RestOptions(down=True), skip_every=25)], indirect=True
)
async def test_rest_down_leaves_the_gap_open_reported_and_the_feed_flowing(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    pipeline = build_pipeline(config(tmp_path, simulator))

    def failed_then_flowing() -> bool:
        failed = outcomes(tmp_path).get("gap_backfill_failed", [])
        if not failed:
            return False
        trades = read_jsonl(tmp_path / "trades.jsonl")
        last_gap = max(f["last_missing_trade_id"] for f in failed)
        # the websocket kept delivering trades after REST gave up
        return any(t["trade_id"] > last_gap + 50 for t in trades)

    result = await run_pipeline(pipeline, until=failed_then_flowing, timeout=60)
    assert result.ok
    failed = outcomes(tmp_path)["gap_backfill_failed"]
    assert all("503" in f["reason"] and f["still_missing"] == f["missed"] for f in failed)
    assert outcomes(tmp_path).get("gap_healed", []) == []
    assert metric(pipeline, "sluice_source_gaps_healed_total") == 0
    assert metric(pipeline, "sluice_source_backfill_rest_errors_total") >= 6
    assert len(simulator.sessions) == 1, "a REST failure must not touch the websocket"
    trades = read_jsonl(tmp_path / "trades.jsonl")
    assert not any(t.get("backfilled") for t in trades)


@pytest.mark.parametrize(
    "simulator",
    [market(RestOptions(), close_after=60, connections=1)],
    indirect=True,
)
async def test_a_gap_beyond_max_trades_per_gap_is_reported_unhealable(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    # the reconnect loses more trades than the limit allows
    pipeline = build_pipeline(config(tmp_path, simulator, backfill="      max_trades_per_gap: 2"))
    result = await run_pipeline(
        pipeline, until=lambda: outcomes(tmp_path).get("gap_unhealable"), timeout=60
    )
    assert result.ok
    [unhealable, *_] = outcomes(tmp_path)["gap_unhealable"]
    assert unhealable["missed"] > 2
    assert "max_trades_per_gap (2)" in unhealable["reason"]
    assert metric(pipeline, "sluice_source_gaps_unhealable_total") >= 1
    assert simulator.rest is not None and simulator.rest.requests == 0


async def test_the_trades_example_loads_and_fills_its_table_from_its_own_simulator(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # the example's paths are relative
    registry = Registry.from_entry_points()
    example = (REPO / "examples/coinbase_trades.yaml").read_text()
    assert "trades_per_sec: 8}" in example
    loaded = load_config_text(
        example.replace("trades_per_sec: 8}", "trades_per_sec: 100}"), registry
    )
    source = loaded.model.sources["coinbase"]
    assert source.backfill.enabled and "matches" in source.channel_names()
    pipeline = Pipeline.build(loaded, registry)
    sink = {"component_id": "trades", "component_kind": "sink", "component_type": "clickhouse"}

    def written() -> float:
        value = pipeline.metrics.registry.get_sample_value(
            "sluice_component_sent_events_total", sink
        )
        return value or 0.0

    result = await run_pipeline(pipeline, until=lambda: written() >= 30, timeout=30)
    assert result.ok
    store = LocalChdb(tmp_path / "sluice-data/clickhouse")
    try:
        [[rows, distinct, flagged]] = store.rows(
            "SELECT count(), uniqExact(product_id, trade_id), countIf(backfilled) "
            "FROM coinbase_demo.coinbase_trades"
        )
    finally:
        store.close()
    assert rows == distinct >= 30
    assert flagged == 0  # no fault, nothing to heal


@pytest.mark.parametrize("simulator", [market(RestOptions(), reorder_every=20)], indirect=True)
async def test_a_gap_the_websocket_closes_on_its_own_is_not_fetched(
    simulator: CoinbaseSimulator, tmp_path: Path
) -> None:
    pipeline = build_pipeline(config(tmp_path, simulator))
    result = await run_pipeline(
        pipeline, until=lambda: len(outcomes(tmp_path).get("gap_healed", [])) >= 3, timeout=60
    )
    assert result.ok
    healed = outcomes(tmp_path)["gap_healed"]
    assert all(h["websocket"] == h["missed"] and h["backfilled"] == 0 for h in healed)
    assert simulator.rest is not None and simulator.rest.requests == 0
    trades = read_jsonl(tmp_path / "trades.jsonl")
    keys = [(t["product_id"], t["trade_id"]) for t in trades]
    assert len(keys) == len(set(keys)), "a trade was emitted twice"
    late = {(h["product_id"], h["first_missing_trade_id"]) for h in healed}
    assert late <= set(keys), "the late trades are recorded"
