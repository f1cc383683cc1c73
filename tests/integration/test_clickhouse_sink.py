"""The clickhouse sink against a real server (Debian's 18.16) and chDB (engine 26.9)."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from pathlib import Path
from typing import Any

import orjson
import pytest

from sluice.records import Record
from sluice.sinks.clickhouse.embedded import EmbeddedClient
from sluice.sinks.clickhouse.errors import ClickHouseError
from sluice.sinks.clickhouse.testing import (
    ClickHouseStore,
    LocalChdb,
    LocalServer,
    QueryError,
    ticker,
)
from tests.conftest import wait_until
from tests.integration.support import (
    build_pipeline,
    list_source,
    read_jsonl,
    run_pipeline,
    ticker_record,
)

pytestmark = pytest.mark.timeout(240)


def sink_yaml(
    tmp_path: Path,
    store: ClickHouseStore,
    table: str,
    extra: str = "",
    source: str = "{type: list, batch_size: 500}",
) -> str:
    """A list source ``src`` into a clickhouse sink ``ch`` writing ``sluice_test.<table>``;
    ``extra``: more lines of the sink's config, indented 4."""
    [(key, value)] = store.target.items()
    return f"""
admin: {{enabled: false}}
data_dir: {tmp_path / "data"}
sources:
  src: {source}
sinks:
  ch:
    type: clickhouse
    inputs: [src]
    {key}: {value}
    database: sluice_test
    table: {table}
{extra}
"""


def dead_letters(tmp_path: Path) -> list[dict[str, Any]]:
    return read_jsonl(tmp_path / "data" / "dead_letters.jsonl")


def stored(server: LocalServer, table: str) -> int:
    """Rows in ``sluice_test.<table>``; 0 before the sink created it."""
    try:
        [[count]] = server.rows(f"SELECT count() FROM sluice_test.{table}")
    except QueryError:
        return 0
    return int(count)


async def test_creates_the_table_and_stores_every_ticker(
    store: ClickHouseStore, tmp_path: Path, table: str
) -> None:
    records = [ticker_record(n) for n in range(5000)]
    result = await run_pipeline(sink_yaml(tmp_path, store, table), records)
    assert result.ok, result.error
    [[count, distinct, total]] = store.rows(
        f"SELECT count(), uniqExact(sequence), sum(trade_id) FROM sluice_test.{table}"
    )
    assert (count, distinct) == (5000, 5000)
    assert total == sum(800_000_000 + n for n in range(5000))
    assert dead_letters(tmp_path) == []


async def test_converts_ticker_fields_to_the_column_types(
    store: ClickHouseStore, tmp_path: Path, table: str
) -> None:
    message = ticker(7)
    records = [Record(orjson.dumps(message), "ticker")]
    result = await run_pipeline(sink_yaml(tmp_path, store, table), records)
    assert result.ok, result.error
    [row] = store.rows(
        "SELECT price, best_bid_size, volume_30d, trade_id, sequence, side, "
        f"toUnixTimestamp(time), toString(time) FROM sluice_test.{table}"
    )
    price, bid_size, volume, trade_id, sequence, side, seconds, time_text = row
    assert price == float(message["price"])
    assert bid_size == 0.25
    assert volume == 456789.12345678
    assert (trade_id, sequence, side) == (message["trade_id"], message["sequence"], "buy")
    assert seconds == 1_761_000_000  # 2025-10-20T22:40:00.008638Z
    if isinstance(store, LocalChdb):  # chDB: DateTime64(6) keeps the microseconds
        assert time_text == "2025-10-20 22:40:00.008638"
    else:  # 18.16: the legacy table's DateTime keeps seconds (documented fallback)
        assert time_text == "2025-10-20 22:40:00"


async def test_converts_to_decimal_integer_date_and_nullable_columns(
    store: ClickHouseStore, tmp_path: Path, table: str
) -> None:
    chdb = isinstance(store, LocalChdb)
    time_type = "DateTime64(3, 'UTC')" if chdb else "DateTime('UTC')"
    ddl = tmp_path / "custom.sql"
    ddl.write_text(
        f"""CREATE DATABASE IF NOT EXISTS {{database}};
CREATE TABLE IF NOT EXISTS {{database}}.{{table}} (
    at {time_type},
    day Date,
    amount Decimal(18, 8),
    small Int16,
    count UInt32,
    note Nullable(String),
    label String DEFAULT 'none',
    doubled UInt64 MATERIALIZED count * 2
) ENGINE = MergeTree ORDER BY at;
"""
    )
    records = [
        {"at": "2021-04-17T16:43:30.244075Z", "day": "2021-04-17", "amount": "94381.28000000",
         "small": "-12", "count": 7, "note": None, "ignored": {"nested": [1, 2]}},
        {"at": 1618677811, "day": "2021-04-18", "amount": 0.5, "small": 3, "count": "8",
         "label": "given", "note": "n"},
    ]  # fmt: skip
    extra = f"    ddl: {ddl}\n"
    result = await run_pipeline(
        sink_yaml(tmp_path, store, table, extra), [Record(orjson.dumps(r)) for r in records]
    )
    assert result.ok, result.error
    rows = store.rows(
        "SELECT toUnixTimestamp(at), toString(day), toString(amount), small, count, note, label, "
        f"doubled FROM sluice_test.{table} ORDER BY at"
    )
    for row in rows:  # exact decimals (18.16 prints the scale's trailing zeros)
        row[2] = Decimal(row[2]).normalize()
    assert rows[0][:6] == [1618677810, "2021-04-17", Decimal("94381.28"), -12, 7, None]
    assert rows[1] == [1618677811, "2021-04-18", Decimal("0.5"), 3, 8, "n", "given", 16]
    # a DEFAULT column left out: current engines compute the expression; 18.16 stores the type's
    # default (documented)
    assert rows[0][6] == ("none" if chdb else "")
    assert dead_letters(tmp_path) == []


async def test_records_that_do_not_fit_go_to_dead_letters_and_the_rest_is_stored(
    store: ClickHouseStore, tmp_path: Path, table: str
) -> None:
    records = [ticker_record(n) for n in range(3000)]
    records[10] = ticker_record(10, price="not a number")
    records[1500] = ticker_record(1500, time=None)  # a required column missing
    records[2999] = ticker_record(2999, trade_id=-5)  # UInt64
    records[42] = Record(b"[1, 2]")
    result = await run_pipeline(sink_yaml(tmp_path, store, table), records)
    assert result.ok, result.error
    [[count]] = store.rows(f"SELECT count() FROM sluice_test.{table}")
    assert count == 2996
    letters = {letter["record"]["sequence"] if isinstance(letter["record"], dict) else "array":
               letter["reason"] for letter in dead_letters(tmp_path)}  # fmt: skip
    assert set(letters) == {100_000_000_010, 100_000_001_500, 100_000_002_999, "array"}
    assert "$.price" in letters[100_000_000_010]
    assert "missing required field `time`" in letters[100_000_001_500]
    assert "$.trade_id" in letters[100_000_002_999]
    assert all(
        reason.startswith(f"cannot convert to sluice_test.{table}") for reason in letters.values()
    )


async def test_integers_past_their_column_are_dead_letters_never_stored_wrapped_or_as_zero(
    store: ClickHouseStore, tmp_path: Path, table: str
) -> None:
    records = [ticker_record(n, trade_id=7) for n in range(6)]
    past = {1: b"18446744073709551616", 2: b"1" + b"0" * 21, 3: b"-1"}
    for index, value in past.items():
        records[index] = Record(records[index].raw.replace(b'"trade_id":7', b'"trade_id":' + value))
    top = records[4].raw.replace(b'"trade_id":7', b'"trade_id":18446744073709551615')
    records[4] = Record(top)  # the largest UInt64: stored as it is
    result = await run_pipeline(sink_yaml(tmp_path, store, table), records)
    assert result.ok, result.error
    ids = store.rows(f"SELECT toString(trade_id) FROM sluice_test.{table} ORDER BY sequence")
    assert ids == [["7"], ["18446744073709551615"], ["7"]]
    letters = dead_letters(tmp_path)
    assert len(letters) == 3
    reasons = sorted(letter["reason"] for letter in letters)
    assert sum("is out of range for UInt64" in reason for reason in reasons) == 2
    assert sum("Expected `int` >= 0" in reason for reason in reasons) == 1
    assert all("$.trade_id" in reason for reason in reasons)


async def test_a_row_the_server_refuses_goes_to_dead_letters_with_its_reason(
    store: ClickHouseStore, tmp_path: Path, table: str
) -> None:
    ddl = tmp_path / "fixed.sql"
    ddl.write_text(
        "CREATE DATABASE IF NOT EXISTS {database};\n"
        "CREATE TABLE IF NOT EXISTS {database}.{table} (n UInt32, code FixedString(3))"
        " ENGINE = MergeTree ORDER BY n;\n"
    )
    records = [Record(orjson.dumps({"n": n, "code": "USD"})) for n in range(2000)]
    records[777] = Record(orjson.dumps({"n": 777, "code": "TOOLONG"}))
    extra = f"    ddl: {ddl}\n    batch: {{max_events: 2000, max_age_secs: 0.5}}\n"
    result = await run_pipeline(sink_yaml(tmp_path, store, table, extra), records)
    assert result.ok, result.error
    [[count, total]] = store.rows(f"SELECT count(), sum(n) FROM sluice_test.{table}")
    assert (count, total) == (1999, sum(range(2000)) - 777)
    [letter] = dead_letters(tmp_path)
    assert letter["record"] == {"n": 777, "code": "TOOLONG"}
    # the server's own words: code 131 TOO_LARGE_STRING_SIZE, in 18.16's and in 26.9's format
    assert letter["reason"].startswith("ClickHouse refused the row: Code: 131")
    assert "FixedString(3)" in letter["reason"]


@pytest.mark.slow
async def test_chdb_retry_after_a_lost_acknowledgement_stores_nothing_twice(
    chdb: LocalChdb, tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """chDB cannot lose a connection; injected: every 3rd insert is stored, then reported
    failed (as when a server dies between the commit and the answer). The sink sends the batch
    again with the same insert_deduplication_token, so nothing is stored twice."""
    original = EmbeddedClient.insert_stream
    calls = 0

    async def stored_then_lost(self: EmbeddedClient, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await original(self, *args, **kwargs)
        if calls % 3 == 1:
            raise ClickHouseError("connection lost after the insert (injected)")

    monkeypatch.setattr(EmbeddedClient, "insert_stream", stored_then_lost)
    extra = "    batch: {max_events: 2000, max_age_secs: 0.2}\n    retry: {initial_backoff_secs: 0.01}\n"
    result = await run_pipeline(
        sink_yaml(tmp_path, chdb, table, extra), [ticker_record(n) for n in range(20_000)]
    )
    assert result.ok, result.error
    assert calls == 10  # 10 batches; 4 acknowledgements lost, each batch sent again
    rows = chdb.rows(f"SELECT count(), uniqExact(sequence) FROM sluice_test.{table}")
    assert rows == [[20_000, 20_000]]


@pytest.mark.clickhouse_server
async def test_server_without_dedup_token_stores_a_retried_batch_twice_and_final_collapses_it(
    clickhouse_server: LocalServer, tmp_path: Path, table: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What 18.16 gives (no insert_deduplication_token): the same injected lost acknowledgement
    stores that batch twice; the shipped ReplacingMergeTree table reads exactly with FINAL."""
    from sluice.sinks.clickhouse.http_client import HttpClient

    original = HttpClient.insert_stream
    calls = 0

    async def stored_then_lost(self: HttpClient, *args: Any, **kwargs: Any) -> None:
        nonlocal calls
        calls += 1
        await original(self, *args, **kwargs)
        if calls == 1:
            raise ClickHouseError("connection lost after the insert (injected)")

    monkeypatch.setattr(HttpClient, "insert_stream", stored_then_lost)
    extra = "    batch: {max_events: 1000, max_age_secs: 0.2}\n    retry: {initial_backoff_secs: 0.01}\n"
    result = await run_pipeline(
        sink_yaml(tmp_path, clickhouse_server, table, extra),
        [ticker_record(n) for n in range(4000)],
    )
    assert result.ok, result.error
    [[raw_count]] = clickhouse_server.rows(f"SELECT count() FROM sluice_test.{table}")
    [[exact, distinct]] = clickhouse_server.rows(
        f"SELECT count(), uniqExact(sequence) FROM sluice_test.{table} FINAL"
    )
    assert raw_count == 5000  # the first batch of 1000, twice
    assert (exact, distinct) == (4000, 4000)


@pytest.mark.clickhouse_server
@pytest.mark.slow
async def test_server_killed_mid_run_and_restarted_10s_later_loses_nothing(
    clickhouse_server: LocalServer, tmp_path: Path, table: str
) -> None:
    """Tickers flow at 1,500/s; the server is SIGKILLed mid-run and started again 10 s later.
    Every record arrives. On 18.16 (no deduplication token) a batch whose insert was committed
    just before the kill could be stored twice: FINAL collapses it; the raw count is bounded by
    one batch of such copies (the test states what happened)."""
    total = 30_000
    yaml = sink_yaml(
        tmp_path,
        clickhouse_server,
        table,
        "    batch: {max_events: 2000, max_age_secs: 0.3}\n"
        "    retry: {initial_backoff_secs: 0.2, max_backoff_secs: 2}",
        source="{type: list, batch_size: 300, rate_limit: {events_per_sec: 1500, burst: 300}}",
    )
    pipeline = build_pipeline(yaml, [ticker_record(n) for n in range(total)])
    run = asyncio.create_task(run_pipeline(pipeline))
    # mid-run: some rows stored, most still to come
    await wait_until(lambda: stored(clickhouse_server, table) >= 3000, timeout=60)
    clickhouse_server.kill()
    killed_at = list_source(pipeline).emitted
    await asyncio.sleep(10)  # the scenario itself: the server stays down for 10 s
    await asyncio.to_thread(clickhouse_server.start)
    result = await asyncio.wait_for(run, timeout=120)
    assert result.ok, result.error
    assert killed_at < total  # the kill happened while records were still coming
    [[raw_count]] = clickhouse_server.rows(f"SELECT count() FROM sluice_test.{table}")
    [[exact, distinct]] = clickhouse_server.rows(
        f"SELECT count(), uniqExact(sequence) FROM sluice_test.{table} FINAL"
    )
    assert (exact, distinct) == (total, total)
    print(f"18.16 after a kill: {raw_count - total} row(s) stored twice, collapsed by FINAL")
    assert total <= raw_count <= total + 2000


async def test_one_process_can_open_one_chdb_directory_shared_by_its_sinks(
    tmp_path: Path, table: str
) -> None:
    records = [ticker_record(n) for n in range(100)]

    def two_sinks(second_path: Path) -> str:
        return f"""
admin: {{enabled: false}}
data_dir: {tmp_path / "data"}
sources: {{src: {{type: list}}}}
sinks:
  a: {{type: clickhouse, inputs: [src], path: {tmp_path / "one"}, database: d, table: {table}}}
  b: {{type: clickhouse, inputs: [src], path: {second_path}, database: d, table: {table}_b}}
"""

    shared = await run_pipeline(two_sinks(tmp_path / "one"), records)
    assert shared.ok, shared.error
    one = LocalChdb(tmp_path / "one")
    try:
        counts = one.rows(
            f"SELECT (SELECT count() FROM d.{table}), (SELECT count() FROM d.{table}_b)"
        )
    finally:
        one.close()
    assert counts == [[100, 100]]
    refused = await run_pipeline(two_sinks(tmp_path / "two"), records)
    assert not refused.ok
    assert "one engine per process" in str(refused.error)


@pytest.mark.clickhouse_server
async def test_a_table_dropped_mid_run_is_created_again_and_writing_goes_on(
    clickhouse_server: LocalServer, tmp_path: Path, table: str
) -> None:
    total = 6000
    yaml = sink_yaml(
        tmp_path,
        clickhouse_server,
        table,
        "    batch: {max_events: 500, max_age_secs: 0.2}\n"
        "    retry: {initial_backoff_secs: 0.05, max_backoff_secs: 0.5}",
        source="{type: list, batch_size: 200, rate_limit: {events_per_sec: 2000, burst: 200}}",
    )
    pipeline = build_pipeline(yaml, [ticker_record(n) for n in range(total)])
    run = asyncio.create_task(run_pipeline(pipeline))
    await wait_until(lambda: stored(clickhouse_server, table) > 0, timeout=30)
    clickhouse_server.query(f"DROP TABLE sluice_test.{table}")
    dropped_at = list_source(pipeline).emitted
    result = await asyncio.wait_for(run, timeout=60)
    assert result.ok, result.error
    assert dropped_at < total
    [[count, last]] = clickhouse_server.rows(
        f"SELECT count(), max(sequence) FROM sluice_test.{table}"
    )
    assert last == 100_000_000_000 + total - 1  # written after the table came back
    assert 0 < count <= total
    assert dead_letters(tmp_path) == []
