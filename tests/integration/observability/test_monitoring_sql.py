"""sql/ingestion_monitoring.sql against chDB (a current engine) and a real ClickHouse 18.16
server, on the shipped ticker table (sql/coinbase_ticker.sql; coinbase_ticker.legacy.sql on 18.16)
with a deliberate stop in ingestion."""

from __future__ import annotations

import pytest
from obs_support import SeededTable
from tests.conftest import REPO

from sluice.sinks.clickhouse.monitoring_sql import (
    DEFAULT_TABLE,
    QUERIES,
    parse_file,
    render,
    render_file,
)
from sluice.sinks.clickhouse.testing import QueryError

SQL_FILE = REPO / "sql" / "ingestion_monitoring.sql"


def file_query(name: str, table: str) -> str:
    """A query exactly as the shipped file has it, pointed at the test's table."""
    return parse_file(SQL_FILE.read_text())[name].replace(DEFAULT_TABLE, table)


def test_the_sql_file_is_generated_from_the_queries_sluice_monitor_runs() -> None:
    assert SQL_FILE.read_text() == render_file(), (
        "sql/ingestion_monitoring.sql is stale: run python -m sluice.sinks.clickhouse.monitoring_sql"
    )
    assert list(parse_file(SQL_FILE.read_text())) == [q.name for q in QUERIES]


def check_minutes(seeded: SeededTable, sql: str, count: int) -> list[int]:
    """Run a per-minute query; check every minute of the window is there with the right count.
    Returns the counts, oldest first."""
    return list(minute_counts(seeded, sql, count).values())


def minute_counts(seeded: SeededTable, sql: str, count: int) -> dict[int, int]:
    """:func:`check_minutes`, the counts by minute (oldest first)."""
    for _attempt in range(3):  # a minute may turn between the query and reading the clock
        before = seeded.now() // 60
        rows = seeded.store.rows(f"SELECT toUInt32(minute), rows FROM ({sql})")
        if seeded.now() // 60 == before:
            break
    now_minute = before * 60
    minutes = [int(r[0]) for r in rows]
    assert minutes == list(range(now_minute - (count - 1) * 60, now_minute + 60, 60)), (
        "one row per minute, consecutive, ending with the current minute"
    )
    expected = seeded.per_minute()
    counts = [int(r[1]) for r in rows]
    assert counts == [expected.get(m, 0) for m in minutes]
    return dict(zip(minutes, counts, strict=True))


def zero_runs(counts: list[int]) -> list[int]:
    """Lengths of the runs of zero minutes after the first minute with rows."""
    runs: list[int] = []
    current = 0
    started = False
    for c in counts:
        if c:
            if started and current:
                runs.append(current)
            started, current = True, 0
        elif started:
            current += 1
    if current:
        runs.append(current)
    return runs


def test_rows_per_minute_shows_the_empty_minutes(seeded: SeededTable) -> None:
    counts = check_minutes(seeded, file_query("rows_per_minute", seeded.table), 60)
    # the deliberate 10-minute stop and the stop at the end both appear as zero minutes
    runs = zero_runs(counts)
    assert len(runs) == 2
    assert 9 <= runs[0] <= 11
    assert runs[1] >= 5


def test_rows_per_minute_for_another_window_and_table(seeded: SeededTable) -> None:
    counts = check_minutes(seeded, render("rows_per_minute", seeded.table, minutes=20), 20)
    assert counts[-5:] == [0, 0, 0, 0, 0]


def test_with_fill_variant_matches_on_current_engines_and_is_refused_by_18_16(
    seeded: SeededTable,
) -> None:
    sql = file_query("rows_per_minute_with_fill", seeded.table)
    if seeded.current:
        with_fill = minute_counts(seeded, sql, 60)
        plain = minute_counts(seeded, file_query("rows_per_minute", seeded.table), 60)
        # a minute may turn between the two queries (each window ends with its current minute):
        # compared on the minutes both windows hold
        shared = sorted(with_fill.keys() & plain.keys())
        assert len(shared) >= 59
        assert [with_fill[m] for m in shared] == [plain[m] for m in shared]
        assert sum(with_fill[m] for m in shared) > 0
    else:
        with pytest.raises(QueryError, match="Syntax error"):
            seeded.store.rows(sql)


def test_freshness_per_product(seeded: SeededTable) -> None:
    rows = seeded.store.rows(
        "SELECT product_id, toUInt32(last_time), age_secs, rows "
        f"FROM ({file_query('freshness', seeded.table)})"
    )
    now = seeded.now()
    assert [r[0] for r in rows] == ["BTC-USD", "ETH-USD"]
    for product, last_time, age_secs, _rows in rows:
        assert int(last_time) == int(seeded.last_time[product])
        assert abs(int(age_secs) - (now - int(seeded.last_time[product]))) <= 1
        assert int(age_secs) >= 300  # the feed stopped about 6 minutes ago


def test_trade_id_gaps_finds_the_missed_trades(seeded: SeededTable) -> None:
    rows = seeded.store.rows(file_query("trade_id_gaps", seeded.table))
    found = [(r[0], int(r[1]), int(r[2]), int(r[3])) for r in rows]
    assert found == seeded.gaps  # ETH-USD has none, and the repeated trade is not a gap
    assert sum(g[3] for g in found) == 11


def test_rows_last_minute_is_zero_after_the_stop_and_counts_a_new_row(
    seeded: SeededTable,
) -> None:
    sql = file_query("rows_last_minute", seeded.table)
    assert seeded.store.rows(sql) == [[0]]
    seeded.insert_now()
    assert seeded.store.rows(sql) == [[1]]


def test_windows_end_at_the_newest_row_for_rows_with_recorded_times(seeded: SeededTable) -> None:
    # what `sluice monitor` runs for a source whose event times are recorded: the newest row,
    # not now, ends every window (the seeded feed stopped minutes ago, so the two differ)
    newest = max(int(t) for t in seeded.last_time.values())
    end = newest // 60 * 60
    sql = render("rows_per_minute", seeded.table, minutes=30, until="newest_row")
    rows = seeded.store.rows(f"SELECT toUInt32(minute), rows FROM ({sql})")
    minutes = [int(r[0]) for r in rows]
    assert minutes == list(range(end - 29 * 60, end + 60, 60))
    expected = seeded.per_minute()
    assert [int(r[1]) for r in rows] == [expected.get(m, 0) for m in minutes]
    assert int(rows[-1][1]) > 0  # the newest row's minute
    sql = render("freshness", seeded.table, hours=1, until="newest_row")
    fresh = seeded.store.rows(f"SELECT product_id, age_secs FROM ({sql})")
    assert {r[0]: int(r[1]) for r in fresh} == {
        product: newest - int(last) for product, last in seeded.last_time.items()
    }
