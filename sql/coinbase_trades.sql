-- Coinbase Exchange trades (the `matches` channel, and trades fetched over REST to heal a gap):
-- one row per trade.
--
-- Used by the `clickhouse` sink when `create: true`, `shipped_ddl: coinbase_trades` and no `ddl`
-- is given. `{database}` and `{table}` are replaced by the sink's (validated) `database` and
-- `table`; statements end with `;` at the end of a line. For ClickHouse 21.12 and later and for
-- chDB (the `Bool` type); on servers older than 20.1 the sink uses coinbase_trades.legacy.sql.
--
-- - One row per trade: ReplacingMergeTree keyed by (product_id, trade_id), so a trade stored twice
--   (a retried insert on a server without insert deduplication, two ingesters carrying the same
--   product) is collapsed at the next merge; `SELECT ... FINAL` gives exact counts before that.
-- - side: the maker order's side, as Coinbase's `match` messages and REST trades give it.
-- - backfilled: true for a trade fetched over REST to heal a gap (`backfill:` on the source);
--   such a trade has no `sequence` and no order ids (REST does not give them).
-- - Gaps still open show up as holes in a product's trade ids; `sluice monitor` lists them, and
--   the healed ones (runs of backfilled trades).
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time           DateTime64(6, 'UTC') COMMENT 'trade time, microseconds',
    product_id     LowCardinality(String),
    trade_id       UInt64,
    side           LowCardinality(String) COMMENT 'maker side: buy or sell',
    price          Float64,
    size           Float64,
    sequence       Nullable(UInt64) COMMENT 'per-product sequence of the message (none for REST)',
    maker_order_id String DEFAULT '',
    taker_order_id String DEFAULT '',
    backfilled     Bool DEFAULT false COMMENT 'fetched over REST to heal a gap'
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (product_id, trade_id)
SETTINGS non_replicated_deduplication_window = 1000;
