-- Coinbase Exchange order-book changes (`level2` / `level2_batch` channels): one row per level.
--
-- Use with the `clickhouse` sink: `ddl: sql/coinbase_level2.sql` (or the shipped copy) with
-- `create: true` and `inputs: [SOURCE.level2]`. `{database}` and `{table}` are replaced by the
-- sink's (validated) `database` and `table`; statements end with `;` at the end of a line. For
-- ClickHouse 20.1 and later and for chDB (DateTime64).
--
-- - snapshot = 1: a level of a product's book as sent whole after (re)subscribing; the rows of
--   one snapshot share its time. snapshot = 0: a change from an `l2update`. To rebuild a book at
--   time T, take the newest snapshot before T and apply the changes after it, in time order; a
--   size of 0 removes the level.
-- - side is the book side (buy = bid, sell = ask); price and size arrive as decimal strings and
--   are stored as Float64 (exact for Coinbase's quotes; use Decimal(38, 10) for decimal
--   arithmetic).
-- - ReplacingMergeTree keyed by (product_id, time, side, price, snapshot): an update names each
--   price once, so a row stored twice (a retried insert on a server without insert
--   deduplication) is collapsed at the next merge; `SELECT ... FINAL` gives exact counts before.
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time        DateTime64(6, 'UTC') COMMENT 'update (or snapshot) time, microseconds',
    product_id  LowCardinality(String),
    side        LowCardinality(String) COMMENT 'book side: buy (bid) or sell (ask)',
    price       Float64,
    size        Float64 COMMENT 'new size at this price; 0 removes the level',
    snapshot    UInt8 COMMENT '1: a row of a full snapshot, 0: a change'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (product_id, time, side, price, snapshot)
SETTINGS non_replicated_deduplication_window = 1000;
