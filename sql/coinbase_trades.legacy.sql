-- Coinbase Exchange trades, for ClickHouse servers older than 20.1 (e.g. Debian's 18.16).
--
-- Same columns and key as coinbase_trades.sql, with what these servers lack replaced:
-- - no DateTime64: `time` is DateTime('UTC'), to the second;
-- - no LowCardinality by default: String;
-- - no Bool, and JSON `true` cannot go into a UInt8 here: `backfilled` is 1 for a row without a
--   `sequence` (a trade fetched over REST has none, a `match` message always has one), computed by
--   the server (MATERIALIZED: read it by name, `SELECT *` leaves it out);
-- - no insert deduplication on non-replicated tables: a batch retried after the server stored it
--   but before it answered is stored twice; ReplacingMergeTree collapses such copies at the next
--   merge, and `SELECT ... FINAL` gives exact answers before that.
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time           DateTime('UTC') COMMENT 'trade time, seconds (no DateTime64 before 20.1)',
    product_id     String,
    trade_id       UInt64,
    side           String COMMENT 'maker side: buy or sell',
    price          Float64,
    size           Float64,
    sequence       Nullable(UInt64),
    maker_order_id String DEFAULT '',
    taker_order_id String DEFAULT '',
    backfilled     UInt8 MATERIALIZED isNull(sequence)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (product_id, trade_id);
