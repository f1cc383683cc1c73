"""The shipped trades table (`shipped_ddl: coinbase_trades`) through the clickhouse sink, on chDB
and on the session's server (18.16, the legacy DDL): websocket matches and backfilled trades, one
row per (product_id, trade_id) after FINAL, the backfilled flag, and the monitoring queries that
tell open gaps from healed ones."""

from __future__ import annotations

import subprocess
from pathlib import Path

import orjson

from sluice.records import Record
from sluice.sinks.clickhouse.monitoring_sql import render
from sluice.sinks.clickhouse.testing import ClickHouseStore, LocalChdb
from tests.conftest import SLUICE
from tests.integration.support import run_pipeline
from tests.integration.test_clickhouse_sink import sink_yaml


def match(trade_id: int, product: str = "BTC-USD", kind: str = "match") -> Record:
    body = {
        "type": kind,
        "trade_id": trade_id,
        "maker_order_id": "ac928c66-ca53-498f-9c13-a110027a60e8",
        "taker_order_id": "132fb6ae-456b-4654-b4e0-d681ac05cea1",
        "side": "sell",
        "size": "0.5",
        "price": "60000.25",
        "product_id": product,
        "sequence": 50 + trade_id,
        "time": f"2030-01-01T00:00:{trade_id % 60:02d}.123456Z",
    }
    return Record(orjson.dumps(body), "match")


def backfilled(trade_id: int, product: str = "BTC-USD") -> Record:
    body = {
        "type": "match",
        "backfilled": True,
        "product_id": product,
        "trade_id": trade_id,
        "side": "buy",
        "size": "0.25",
        "price": "60001.5",
        "time": f"2030-01-01T00:00:{trade_id % 60:02d}.654321Z",
    }
    return Record(orjson.dumps(body), "match")


async def test_trades_and_backfilled_trades_land_once_each_with_their_flag(
    store: ClickHouseStore, tmp_path: Path, table: str
) -> None:
    # trades 1-10 and 20-25 from the websocket, 11-14 backfilled (15-19 stay an open gap), and
    # trade 3 arrives twice (a repeated batch)
    records = [match(1, kind="last_match")] + [match(i) for i in range(2, 11)]
    records += [backfilled(i) for i in range(11, 15)] + [match(i) for i in range(20, 26)]
    records += [match(3)]
    extra = "    shipped_ddl: coinbase_trades\n    batch: {max_age_secs: 0.05}\n"
    result = await run_pipeline(sink_yaml(tmp_path, store, table, extra), records)
    assert result.ok, result.error
    qualified = f"sluice_test.{table}"
    rows = store.rows(
        f"SELECT trade_id, toUInt8(backfilled), ifNull(sequence, 0), maker_order_id, size "
        f"FROM {qualified} FINAL ORDER BY trade_id"
    )
    assert [r[0] for r in rows] == [*range(1, 15), *range(20, 26)]
    flagged = {r[0] for r in rows if r[1] == 1}
    assert flagged == set(range(11, 15))
    backfilled_row = rows[10]
    assert backfilled_row[2:] == [0, "", 0.25]  # no sequence, no order ids over REST
    assert rows[0][2:] == [51, "ac928c66-ca53-498f-9c13-a110027a60e8", 0.5]

    open_gaps = store.rows(render("trade_id_gaps", qualified, hours=100_000))
    assert open_gaps == [["BTC-USD", 14, 20, 5]]
    chdb = isinstance(store, LocalChdb)
    if isinstance(store, LocalChdb):  # not portable to 18.16 (arraySplit)
        healed = store.rows(render("healed_gaps", qualified, hours=100_000))
        assert healed == [["BTC-USD", 11, 14, 4]]
        store.close()  # as after the pipeline stopped: the monitor opens the directory itself

    # `sluice monitor` on the trades table: open versus healed gaps
    [(key, value)] = store.target.items()
    config = tmp_path / "trades.yaml"
    config.write_text(
        f"""
data_dir: {tmp_path / "data"}
admin: {{enabled: false}}
sources:
  cb: {{type: coinbase, products: [BTC-USD], channels: [matches]}}
sinks:
  ch:
    type: clickhouse
    inputs: [cb.match]
    {key}: {value}
    database: sluice_test
    table: {table}
    shipped_ddl: coinbase_trades
"""
    )
    done = subprocess.run(
        [*SLUICE, "monitor", str(config), "--format", "json"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    report = orjson.loads(done.stdout)
    assert report["gaps"] == [["BTC-USD", 14, 20, 5]]
    assert report["healed"] == ([["BTC-USD", 11, 14, 4]] if chdb else [])
    done = subprocess.run(
        [*SLUICE, "monitor", str(config)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert "1 open gap(s), 5 missed" in done.stdout
    if chdb:
        assert "1 healed" in done.stdout and "Healed gaps" in done.stdout
