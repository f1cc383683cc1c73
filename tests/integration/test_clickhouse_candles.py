"""The shipped market analytics: 1-minute candles kept by a materialized view, equal to a direct
aggregation of the ticker table, also after a batch was stored twice, on chDB and on the server."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.testing import ClickHouseStore, LocalChdb
from tests.conftest import REPO
from tests.integration.support import run_pipeline, ticker_record
from tests.integration.test_clickhouse_sink import sink_yaml

pytestmark = pytest.mark.timeout(240)

# every 25th ticker moves the clock 13 s on, so 3000 tickers span several minutes
STEP_SECS = 13.0


def records(start: int, count: int) -> list[Any]:
    out = []
    for n in range(start, start + count):
        offset = (n // 25) * STEP_SECS
        stamp = datetime.fromtimestamp(1_761_000_000 + offset + (n % 25) * 0.01, UTC)
        price = 60000 + ((n * 7919) % 997) * 0.5
        out.append(
            ticker_record(
                n,
                time=stamp.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
                price=f"{price:.2f}",
                best_bid=f"{price - 0.5 - n % 3:.2f}",
                best_ask=f"{price + 0.5:.2f}",
                last_size=f"{0.001 * (1 + n % 17):.8f}",
            )
        )
    return out


def direct(store: ClickHouseStore, table: str) -> list[list[Any]]:
    """Candles aggregated straight from the ticker table, duplicates removed with FINAL."""
    return store.rows(
        f"""
SELECT product_id, toUInt32(toStartOfMinute(time)) AS m,
       argMin(price, trade_id), max(price), min(price), argMax(price, trade_id),
       round(sum(last_size), 6), round(sum(price * last_size) / sum(last_size), 4),
       count(), argMax(best_ask - best_bid, trade_id)
FROM sluice_test.{table} FINAL
GROUP BY product_id, m ORDER BY product_id, m"""
    )


def candles(store: ClickHouseStore, table: str) -> list[list[Any]]:
    return store.rows(
        f"""
SELECT product_id, toUInt32(minute) AS m, open, high, low, close,
       round(volume, 6), round(vwap, 4), trades, spread
FROM sluice_test.{table}_candles_1m ORDER BY product_id, m"""
    )


async def test_candles_equal_a_direct_aggregation_even_after_a_batch_stored_twice(
    store: ClickHouseStore, tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    client_class: Any
    if isinstance(store, LocalChdb):
        from sluice.sinks.clickhouse.embedded import EmbeddedClient as client_class
    else:
        from sluice.sinks.clickhouse.http_client import HttpClient as client_class
    original = client_class.insert_stream
    calls = 0

    async def stored_then_lost(self: Any, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await original(self, *args, **kwargs)
        if calls == 1:  # stored, then the answer is lost: the batch is sent again
            raise ClickHouseError("connection lost after the insert (injected)")

    monkeypatch.setattr(client_class, "insert_stream", stored_then_lost)
    extra = "    batch: {max_events: 1000, max_age_secs: 0.2}\n    retry: {initial_backoff_secs: 0.01}\n"
    result = await run_pipeline(sink_yaml(tmp_path, store, table, extra), records(0, 3000))
    assert result.ok, result.error
    # a second run sends 500 of the same tickers again (a replaying client): new blocks, so no
    # server deduplicates them; the table's FINAL and the candles must both ignore them
    monkeypatch.setattr(client_class, "insert_stream", original)
    result = await run_pipeline(sink_yaml(tmp_path, store, table, extra), records(1000, 500))
    assert result.ok, result.error

    [[stored, distinct]] = store.rows(
        f"SELECT count(), uniqExact(trade_id) FROM sluice_test.{table}"
    )
    assert distinct == 3000
    assert stored > 3000  # duplicates are really there
    expected = direct(store, table)
    assert len(expected) >= 6  # several minutes of three products
    assert sum(row[8] for row in expected) == 3000
    assert candles(store, table) == expected


def test_the_dashboards_market_query_reads_the_last_hour_of_candles(
    store: ClickHouseStore, table: str
) -> None:
    """The query the built-in dashboard's market panel sends (through POST api/query), as it is
    in app.js, on chDB and on the 18.16 server."""
    [sql] = re.findall(
        r'const MARKET_SQL = "([^"]+)";',
        (REPO / "src/sluice/observability/dashboard/app.js").read_text(),
    )
    store.create_ticker_table("sluice_test", table)
    minute = int(time.time()) // 60 * 60

    def at(ts: int) -> str:
        return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%d %H:%M:%S")

    trades = [  # time, product, trade id, price, size, bid, ask
        (minute - 7200, "BTC-USD", 1, 90.0, 1.0, 89.0, 91.0),  # older than the hour shown
        (minute - 115, "BTC-USD", 2, 100.0, 1.0, 99.5, 100.5),
        (minute - 110, "BTC-USD", 3, 104.0, 0.5, 103.0, 105.0),
        (minute - 105, "BTC-USD", 4, 101.0, 0.25, 100.0, 102.0),
        (minute, "BTC-USD", 5, 103.0, 2.0, 102.5, 103.5),
        (minute + 1, "ETH-USD", 9, 3000.0, 1.5, 2999.0, 3001.0),
    ]
    values = ",".join(
        f"('{at(t)}','{p}',{i},{i},{price},{size},{bid},{ask})"
        for t, p, i, price, size, bid, ask in trades
    )
    store.query(
        f"INSERT INTO sluice_test.{table} (time, product_id, sequence, trade_id, price, "
        f"last_size, best_bid, best_ask) VALUES {values}"
    )
    rows = store.rows(sql.replace("{table}", f"sluice_test.{table}"))
    assert [[r[0], int(r[1]), *map(float, r[2:])] for r in rows] == [
        ["BTC-USD", minute - 120, 100.0, 104.0, 100.0, 101.0, 1.75, 2.0],
        ["BTC-USD", minute, 103.0, 103.0, 103.0, 103.0, 2.0, 1.0],
        ["ETH-USD", minute, 3000.0, 3000.0, 3000.0, 3000.0, 1.5, 2.0],
    ]
