-- Ingestion monitoring for the Coinbase ticker table (coinbase_demo.coinbase_ticker).
--
-- Generated from src/sluice/sinks/clickhouse/monitoring_sql.py (`sluice monitor` runs
-- the same queries); edit that module, then run
-- `python -m sluice.sinks.clickhouse.monitoring_sql`.
-- Every query runs on a current ClickHouse server and on chDB; those not marked
-- otherwise also run on ClickHouse 18.16. Each query starts with a `-- name:` line.

-- name: rows_per_minute
-- Rows per minute over the last 60 minutes, one row per minute, oldest first; a
-- minute without rows is 0, so a stop in ingestion shows as zeros rather than as a
-- missing row. The last minute is the current one, still filling.
SELECT minute, sum(rows) AS rows
FROM
(
    SELECT toDateTime(toStartOfMinute(time)) AS minute, count() AS rows
    FROM coinbase_demo.coinbase_ticker
    WHERE time >= toStartOfMinute(now()) - 3540
      AND time < toStartOfMinute(now()) + 60
    GROUP BY minute
    UNION ALL
    SELECT toStartOfMinute(now()) - 60 * number AS minute, toUInt64(0) AS rows
    FROM system.numbers
    LIMIT 60
)
GROUP BY minute
ORDER BY minute;

-- name: rows_per_minute_with_fill
-- The same with WITH FILL, the idiom on current servers and chDB.
-- Not for ClickHouse 18.16.
SELECT toDateTime(toStartOfMinute(time)) AS minute, count() AS rows
FROM coinbase_demo.coinbase_ticker
WHERE time >= toStartOfMinute(now()) - 3540
  AND time < toStartOfMinute(now()) + 60
GROUP BY minute
ORDER BY minute WITH FILL
    FROM toStartOfMinute(now()) - 3540
    TO toStartOfMinute(now()) + 60
    STEP 60;

-- name: freshness
-- Per product: the newest row's time, its age in seconds, and the rows of the last
-- 24 hours.
SELECT
    product_id,
    toDateTime(max(time)) AS last_time,
    toInt64(toUInt32(now())) - toInt64(toUInt32(toDateTime(max(time)))) AS age_secs,
    count() AS rows
FROM coinbase_demo.coinbase_ticker
WHERE time >= now() - 24 * 3600
GROUP BY product_id
ORDER BY product_id;

-- name: trade_id_gaps
-- Gaps in trade_id per product over the last 24 hours: each row is one gap, between
-- two trades that arrived, with the number of trades missed inside it. Repeated trade
-- ids are counted once.
SELECT
    product_id,
    after_trade_id,
    before_trade_id,
    before_trade_id - after_trade_id - 1 AS missed
FROM
(
    SELECT product_id, arraySort(groupUniqArray(trade_id)) AS ids
    FROM coinbase_demo.coinbase_ticker
    WHERE time >= now() - 24 * 3600 AND trade_id > 0
    GROUP BY product_id
)
ARRAY JOIN arrayPopBack(ids) AS after_trade_id, arrayPopFront(ids) AS before_trade_id
WHERE before_trade_id - after_trade_id > 1
ORDER BY product_id, after_trade_id;

-- name: healed_gaps
-- Trades table (coinbase_trades) only: the gaps healed over REST in the last 24
-- hours, as runs of consecutive backfilled trade ids per product (first, last, trades).
-- Gaps still open are the holes trade_id_gaps finds in the same table.
-- Not for ClickHouse 18.16.
SELECT
    product_id,
    run[1] AS first_trade_id,
    run[length(run)] AS last_trade_id,
    length(run) AS trades
FROM
(
    SELECT product_id, arraySort(groupUniqArray(trade_id)) AS ids
    FROM coinbase_demo.coinbase_ticker
    WHERE time >= now() - 24 * 3600 AND backfilled != 0
    GROUP BY product_id
)
ARRAY JOIN arraySplit((x, i) -> i > 1 AND x != ids[i - 1] + 1, ids, arrayEnumerate(ids)) AS run
ORDER BY product_id, first_trade_id;

-- name: prices
-- Per product over the last hour: the last price, the first (for the change), the low,
-- the high and the last quote's spread (best_ask - best_bid).
SELECT
    product_id,
    argMax(price, time) AS last_price,
    argMin(price, time) AS first_price,
    min(price) AS low,
    max(price) AS high,
    argMax(best_ask - best_bid, time) AS spread
FROM coinbase_demo.coinbase_ticker
WHERE time >= now() - 3600
GROUP BY product_id
ORDER BY product_id;

-- name: rows_last_minute
-- Rows of the last 60 seconds: the original demo's alert fires when this is below 1.
SELECT count() AS rows
FROM coinbase_demo.coinbase_ticker
WHERE time >= now() - 60;
