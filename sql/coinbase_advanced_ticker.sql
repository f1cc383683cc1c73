-- Coinbase Advanced Trade tickers (`coinbase_advanced` source, `ticker` and `ticker_batch`
-- channels): one row per ticker.
--
-- Use it with the `clickhouse` sink's `ddl:` (`create: true`). The columns have the names and types
-- of the Exchange ticker table (sql/coinbase_ticker.sql) where the two feeds mean the same; an
-- Advanced Trade ticker has no trade id, last size, taker side, 24 h open or 30-day volume, which
-- that table requires (and its candles are ordered by trade id), so these tickers have this table
-- of their own. `{database}` and `{table}` are replaced by the sink's (validated) names.
--
-- - time: the message's time (Advanced Trade sends nanoseconds; kept to the microsecond).
-- - sequence: the message's `sequence_num`, which counts the messages of one connection.
-- - best_* and the 24 h / 52 w figures: Nullable (Coinbase leaves a field out when it has none).
-- - ReplacingMergeTree keyed by (product_id, time, sequence, channel): a ticker stored twice is
--   collapsed at the next merge; `SELECT ... FINAL` gives exact counts before that.
CREATE DATABASE IF NOT EXISTS {database};

CREATE TABLE IF NOT EXISTS {database}.{table}
(
    time                   DateTime64(6, 'UTC') COMMENT 'message time, microseconds',
    product_id             LowCardinality(String),
    sequence               UInt64 COMMENT 'sequence_num of the message on its connection',
    channel                LowCardinality(String) COMMENT 'ticker or ticker_batch',
    price                  Float64,
    best_bid               Nullable(Float64),
    best_bid_size          Nullable(Float64),
    best_ask               Nullable(Float64),
    best_ask_size          Nullable(Float64),
    volume_24h             Nullable(Float64),
    low_24h                Nullable(Float64),
    high_24h               Nullable(Float64),
    low_52w                Nullable(Float64),
    high_52w               Nullable(Float64),
    price_percent_chg_24h  Nullable(Float64)
)
ENGINE = ReplacingMergeTree
PARTITION BY toYYYYMM(time)
ORDER BY (product_id, time, sequence, channel)
SETTINGS non_replicated_deduplication_window = 1000;
