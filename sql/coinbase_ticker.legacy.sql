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
