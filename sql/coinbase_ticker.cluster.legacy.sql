-- Coinbase Exchange `ticker` messages on a ClickHouse cluster, for servers older than 20.1 (e.g.
-- Debian's 18.16): the columns of coinbase_ticker.legacy.sql (DateTime to the second, String).
--
-- Used by the `clickhouse` sink when `create: true`, `cluster: NAME` and no `ddl` is given, on
-- servers before 20.1; otherwise as coinbase_ticker.cluster.sql. Placeholders:
-- `{database}`, `{table}` (the Distributed table, what the sink inserts into and what queries read),
-- `{local_table}` (the replicated table on every node, default `<table>_local`), `{cluster}` (a
-- cluster of the servers' `remote_servers`), and inside the ZooKeeper path `{database_name}` and
-- `{local_table_name}` (the same names unquoted; all validated identifiers). `{shard}` and
-- `{replica}` are the servers' own macros, filled in by each server.
--
-- - ON CLUSTER: each statement runs on every node of the cluster (through ZooKeeper's DDL queue).
-- - {local_table}: ReplicatedReplacingMergeTree. The replicas of a shard copy each other's parts;
--   a block inserted twice (a retried batch, on any replica of the shard) is stored once: by the
--   sink's insert_deduplication_token on servers from 22.2, by the block's hash on every version.
--   ReplacingMergeTree collapses rows repeated in other blocks at merges (`FINAL` reads exactly).
-- - {table}: Distributed over {local_table}, sharded by cityHash64(product_id), so one product's
--   rows stay on one shard (and FINAL and per-product queries are exact shard by shard).
CREATE DATABASE IF NOT EXISTS {database} ON CLUSTER {cluster};

CREATE TABLE IF NOT EXISTS {database}.{local_table} ON CLUSTER {cluster}
(
    time          DateTime('UTC'),
    product_id    String,
    sequence      UInt64,
    trade_id      UInt64,
    side          String,
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
ENGINE = ReplicatedReplacingMergeTree(
    '/clickhouse/tables/{shard}/{database_name}.{local_table_name}', '{replica}')
PARTITION BY toYYYYMM(time)
ORDER BY (product_id, time, sequence);

CREATE TABLE IF NOT EXISTS {database}.{table} ON CLUSTER {cluster}
AS {database}.{local_table}
ENGINE = Distributed({cluster}, {database}, {local_table}, cityHash64(product_id));
