-- Coinbase Exchange `ticker` messages: one row per message.
--
-- Used by the `clickhouse` sink when `create: true` and no `ddl` is given. `{database}` and `{table}`
-- are replaced by the sink's (validated) `database` and `table`; statements end with `;` at the end
-- of a line. For ClickHouse 20.1 and later and for chDB; on older servers (no DateTime64) the sink
-- uses coinbase_ticker.legacy.sql instead.
--
-- - time: the message's RFC 3339 time, kept to the microsecond.
-- - prices and sizes arrive as decimal strings; Float64 keeps 15-16 significant digits, which is
--   exact for Coinbase's quotes. Use Decimal(38, 10) columns if you need exact decimal arithmetic.
-- - best_bid_size/best_ask_size are absent from tickers before late 2022: Nullable.
-- - ReplacingMergeTree keyed by (product_id, time, sequence): a message stored twice (by a client
--   that replays, or a retry on a server without insert deduplication) is collapsed at the next
--   merge; `SELECT ... FINAL` gives exact counts before that.
-- - non_replicated_deduplication_window lets the sink's insert_deduplication_token make retried
--   inserts idempotent on a non-replicated table.
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time          DateTime64(6, 'UTC') COMMENT 'trade time, microseconds',
    product_id    LowCardinality(String),
    sequence      UInt64 COMMENT 'per-product sequence number of the message',
    trade_id      UInt64,
    side          LowCardinality(String) COMMENT 'taker side: buy or sell',
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
ORDER BY (product_id, time, sequence)
SETTINGS non_replicated_deduplication_window = 1000;

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
    product_id    LowCardinality(String),
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
    toDateTime(toStartOfMinute(time), 'UTC') AS minute,
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
