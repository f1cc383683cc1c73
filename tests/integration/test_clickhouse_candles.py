"""The shipped market analytics: 1-minute candles kept by a materialized view, equal to a direct
aggregation of the ticker table, also after a batch was stored twice, on chDB and on the server."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.testing import ClickHouseStore, LocalChdb
from tests.integration.support import run_pipeline, ticker_record
from tests.integration.test_clickhouse_sink import sink_yaml

pytestmark = pytest.mark.timeout(240)

# every 25th ticker moves the clock 13 s on, so 3000 tickers span several minutes
STEP_SECS = 13.0


def records(start: int, count: int) -> list[Any]:
    out = []
    for n in range(start, start + count):
        offset = (n // 25) * STEP_SECS
        from datetime import UTC, datetime

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
