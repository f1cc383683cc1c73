"""The monitoring queries for a ClickHouse table of Coinbase tickers, and ``sql/ingestion_monitoring.sql``.

One source for both: ``sluice monitor`` renders these templates for the sink's table and window,
and the repository's ``sql/ingestion_monitoring.sql`` is :func:`render_file` with the defaults (a
test fails when the file is stale). Every query marked portable runs unchanged on a current
ClickHouse server, on chDB and on ClickHouse 18.16 (which lacks ``WITH FILL``, window functions and
``DateTime64``): empty minutes come from a ``UNION ALL`` with a row of zeros per minute, trade-id
gaps from sorted arrays. ``time`` may be ``DateTime`` or ``DateTime64``; the queries only compare it
and convert it with ``toDateTime``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

__all__ = ["DEFAULT_TABLE", "QUERIES", "TABLE_NAME", "Query", "parse_file", "render", "render_file"]

DEFAULT_TABLE = "coinbase_demo.coinbase_ticker"


@dataclass(frozen=True)
class Query:
    name: str
    description: str
    template: str
    """SQL with ``{table}``, ``{minutes}``, ``{first_minute_offset}`` and ``{hours}`` fields."""
    portable: bool = True
    """Runs on ClickHouse 18.16 too."""


QUERIES: tuple[Query, ...] = (
    Query(
        "rows_per_minute",
        "Rows per minute over the last {minutes} minutes, one row per minute, oldest first; a\n"
        "minute without rows is 0, so a stop in ingestion shows as zeros rather than as a\n"
        "missing row. The last minute is the current one, still filling.",
        """\
SELECT minute, sum(rows) AS rows
FROM
(
    SELECT toDateTime(toStartOfMinute(time)) AS minute, count() AS rows
    FROM {table}
    WHERE time >= toStartOfMinute(now()) - {first_minute_offset}
      AND time < toStartOfMinute(now()) + 60
    GROUP BY minute
    UNION ALL
    SELECT toStartOfMinute(now()) - 60 * number AS minute, toUInt64(0) AS rows
    FROM system.numbers
    LIMIT {minutes}
)
GROUP BY minute
ORDER BY minute""",
    ),
    Query(
        "rows_per_minute_with_fill",
        "The same with WITH FILL, the idiom on current servers and chDB.",
        """\
SELECT toDateTime(toStartOfMinute(time)) AS minute, count() AS rows
FROM {table}
WHERE time >= toStartOfMinute(now()) - {first_minute_offset}
  AND time < toStartOfMinute(now()) + 60
GROUP BY minute
ORDER BY minute WITH FILL
    FROM toStartOfMinute(now()) - {first_minute_offset}
    TO toStartOfMinute(now()) + 60
    STEP 60""",
        portable=False,
    ),
    Query(
        "freshness",
        "Per product: the newest row's time, its age in seconds, and the rows of the last\n"
        "{hours} hours.",
        """\
SELECT
    product_id,
    toDateTime(max(time)) AS last_time,
    toInt64(toUInt32(now())) - toInt64(toUInt32(toDateTime(max(time)))) AS age_secs,
    count() AS rows
FROM {table}
WHERE time >= now() - {hours} * 3600
GROUP BY product_id
ORDER BY product_id""",
    ),
    Query(
        "trade_id_gaps",
        "Gaps in trade_id per product over the last {hours} hours: each row is one gap, between\n"
        "two trades that arrived, with the number of trades missed inside it. Repeated trade\n"
        "ids are counted once.",
        """\
SELECT
    product_id,
    after_trade_id,
    before_trade_id,
    before_trade_id - after_trade_id - 1 AS missed
FROM
(
    SELECT product_id, arraySort(groupUniqArray(trade_id)) AS ids
    FROM {table}
    WHERE time >= now() - {hours} * 3600 AND trade_id > 0
    GROUP BY product_id
)
ARRAY JOIN arrayPopBack(ids) AS after_trade_id, arrayPopFront(ids) AS before_trade_id
WHERE before_trade_id - after_trade_id > 1
ORDER BY product_id, after_trade_id""",
    ),
    Query(
        "healed_gaps",
        "Trades table (coinbase_trades) only: the gaps healed over REST in the last {hours}\n"
        "hours, as runs of consecutive backfilled trade ids per product (first, last, trades).\n"
        "Gaps still open are the holes trade_id_gaps finds in the same table.",
        """\
SELECT
    product_id,
    run[1] AS first_trade_id,
    run[length(run)] AS last_trade_id,
    length(run) AS trades
FROM
(
    SELECT product_id, arraySort(groupUniqArray(trade_id)) AS ids
    FROM {table}
    WHERE time >= now() - {hours} * 3600 AND backfilled != 0
    GROUP BY product_id
)
ARRAY JOIN arraySplit((x, i) -> i > 1 AND x != ids[i - 1] + 1, ids, arrayEnumerate(ids)) AS run
ORDER BY product_id, first_trade_id""",
        portable=False,
    ),
    Query(
        "prices",
        "Per product over the last hour: the last price, the first (for the change), the low,\n"
        "the high and the last quote's spread (best_ask - best_bid).",
        """\
SELECT
    product_id,
    argMax(price, time) AS last_price,
    argMin(price, time) AS first_price,
    min(price) AS low,
    max(price) AS high,
    argMax(best_ask - best_bid, time) AS spread
FROM {table}
WHERE time >= now() - 3600
GROUP BY product_id
ORDER BY product_id""",
    ),
    Query(
        "rows_last_minute",
        "Rows of the last 60 seconds: the original demo's alert fires when this is below 1.",
        """\
SELECT count() AS rows
FROM {table}
WHERE time >= now() - 60""",
    ),
)

_BY_NAME = {q.name: q for q in QUERIES}
TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*\.[A-Za-z_][A-Za-z0-9_]*$")


def render(
    name: str,
    table: str = DEFAULT_TABLE,
    minutes: int = 60,
    hours: int = 24,
    until: Literal["now", "newest_row"] = "now",
) -> str:
    """The SQL of query ``name`` for ``table`` (``db.table``) and the given windows.

    ``until="newest_row"`` ends the windows at the table's newest row instead of now: for rows
    whose times were recorded long ago (a replay that keeps them), where a window ending now holds
    nothing; ages are then counted from that row."""
    if not TABLE_NAME.match(table):
        raise ValueError(f"expected database.table (letters, digits, _), got {table!r}")
    if not 1 <= minutes <= 100_000 or not 1 <= hours <= 100_000:
        raise ValueError("minutes and hours must be between 1 and 100000")
    sql = _BY_NAME[name].template.format(
        table=table, minutes=minutes, first_minute_offset=(minutes - 1) * 60, hours=hours
    )
    if until == "newest_row":
        # the table name was checked against TABLE_NAME above
        sql = sql.replace("now()", f"toDateTime((SELECT max(time) FROM {table}))")  # noqa: S608
    return sql


def render_file() -> str:
    """The text of ``sql/ingestion_monitoring.sql``."""
    parts = [
        "-- Ingestion monitoring for the Coinbase ticker table (coinbase_demo.coinbase_ticker).",
        "--",
        "-- Generated from src/sluice/sinks/clickhouse/monitoring_sql.py (`sluice monitor` runs",
        "-- the same queries); edit that module, then run",
        "-- `python -m sluice.sinks.clickhouse.monitoring_sql`.",
        "-- Every query runs on a current ClickHouse server and on chDB; those not marked",
        "-- otherwise also run on ClickHouse 18.16. Each query starts with a `-- name:` line.",
    ]
    for query in QUERIES:
        description = query.description.format(minutes=60, hours=24)
        parts += ["", f"-- name: {query.name}"]
        parts += [f"-- {line}" if line else "--" for line in description.splitlines()]
        if not query.portable:
            parts.append("-- Not for ClickHouse 18.16.")
        parts.append(render(query.name) + ";")
    return "\n".join(parts) + "\n"


def parse_file(text: str) -> dict[str, str]:
    """``name -> SQL`` (without the final ``;``) from a file in :func:`render_file`'s layout."""
    queries: dict[str, str] = {}
    name: str | None = None
    lines: list[str] = []
    for line in [*text.splitlines(), "-- name: "]:
        if line.startswith("-- name: "):
            if name is not None:
                queries[name] = "\n".join(lines).strip().removesuffix(";").strip()
            name, lines = line.removeprefix("-- name: ").strip(), []
        elif not line.startswith("--"):
            lines.append(line)
    return queries


if __name__ == "__main__":  # pragma: no cover - regenerates the file
    import sys
    from pathlib import Path

    target = Path(sys.argv[1] if len(sys.argv) > 1 else "sql/ingestion_monitoring.sql")
    target.write_text(render_file(), encoding="utf-8")
    print(f"wrote {target}")
