-- Coinbase Exchange `ticker` messages, for ClickHouse servers older than 20.1 (e.g. Debian's 18.16).
--
-- Same columns and key as coinbase_ticker.sql, with what these servers lack replaced:
-- - no DateTime64: `time` is DateTime('UTC'), to the second; the message's microseconds are dropped
--   and `sequence` (in the sort key) keeps the order of messages within a second;
-- - no LowCardinality by default: String;
-- - no insert_deduplication_token and no deduplication on non-replicated tables: a batch retried
--   after the server stored it but before it answered is stored twice; ReplacingMergeTree collapses
--   such copies at the next merge, and `SELECT ... FINAL` gives exact answers before that.
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time          DateTime('UTC') COMMENT 'trade time, seconds (no DateTime64 before 20.1)',
    product_id    String,
    sequence      UInt64 COMMENT 'per-product sequence number of the message',
    trade_id      UInt64,
    side          String COMMENT 'taker side: buy or sell',
    price         Float64,
    last_size     Float64,
    best_bid      Float64,
    best_bid_size Nullable(Float64),
    best_ask      Float64,
    best_ask_size Nullable(Float64),
    open_24h      Float64,
    high_24h      Float64,
    low_24h       Float64,
    volume_24h    Float64,
    volume_30d    Float64
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (product_id, time, sequence);

-- Market analytics: 1-minute candles per product, kept up to date by a materialized view.
--
-- {table}_candles_1m_state holds aggregate states per (product_id, minute); the materialized view
-- {table}_candles_1m_mv feeds it from every insert into {table}; read the candles through the
-- view {table}_candles_1m (open, high, low, close, volume, vwap, trades, spread).
-- Correct under duplicates: a ticker stored twice (a retried batch on a server without insert
-- deduplication, or a repeated record) changes nothing: open/close are the prices of the lowest and
-- highest trade_id (argMin/argMax), high/low are extremes, and volume, VWAP and the trade count are
-- computed over the distinct trades ((trade_id, price, size) kept with groupUniqArray, so the state
-- costs about 24 bytes a trade). spread = best_ask - best_bid of the minute's last trade.
-- Volume is the sum of the tickers' last_size: Coinbase may fold a cascade of matches into one
-- ticker, so use a `matches` table for exact exchange volume.
CREATE TABLE IF NOT EXISTS {database}.{table}_candles_1m_state
(
    product_id    String,
    minute        DateTime('UTC'),
    open_state    AggregateFunction(argMin, Float64, UInt64),
    high_state    AggregateFunction(max, Float64),
    low_state     AggregateFunction(min, Float64),
    close_state   AggregateFunction(argMax, Float64, UInt64),
    trades_state  AggregateFunction(groupUniqArray, Tuple(UInt64, Float64, Float64)),
    spread_state  AggregateFunction(argMax, Float64, UInt64)
)
ENGINE = AggregatingMergeTree
PARTITION BY toYYYYMM(minute)
ORDER BY (product_id, minute);

CREATE MATERIALIZED VIEW IF NOT EXISTS {database}.{table}_candles_1m_mv
TO {database}.{table}_candles_1m_state
AS SELECT
    product_id,
    toStartOfMinute(time) AS minute,
    argMinState(price, trade_id) AS open_state,
    maxState(price) AS high_state,
    minState(price) AS low_state,
    argMaxState(price, trade_id) AS close_state,
    groupUniqArrayState(tuple(trade_id, price, last_size)) AS trades_state,
    argMaxState(best_ask - best_bid, trade_id) AS spread_state
FROM {database}.{table}
GROUP BY product_id, minute;

CREATE VIEW IF NOT EXISTS {database}.{table}_candles_1m
AS SELECT
    product_id,
    minute,
    argMinMerge(open_state) AS open,
    maxMerge(high_state) AS high,
    minMerge(low_state) AS low,
    argMaxMerge(close_state) AS close,
    arraySum(t -> tupleElement(t, 3), groupUniqArrayMerge(trades_state)) AS volume,
    arraySum(t -> tupleElement(t, 2) * tupleElement(t, 3), groupUniqArrayMerge(trades_state))
        / if(volume = 0, 1, volume) AS vwap,
    length(groupUniqArrayMerge(trades_state)) AS trades,
    argMaxMerge(spread_state) AS spread
FROM {database}.{table}_candles_1m_state
GROUP BY product_id, minute;
