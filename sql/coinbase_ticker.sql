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
