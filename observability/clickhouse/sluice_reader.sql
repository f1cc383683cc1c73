-- A read-only `sluice_reader` user for the clickhouse sink's `query_user` (queries from
-- `sluice sql`, `sluice monitor` and the admin port's /api/query), for current ClickHouse servers
-- (SQL user management, 20.5+). Run it as an administrator with the password in place of
-- CHANGE_ME, e.g.
--   sed "s/CHANGE_ME/$CLICKHOUSE_READER_PASSWORD/" sluice_reader.sql | clickhouse-client --multiquery
-- For 18.16 and other old servers use sluice_reader.xml.
--
-- readonly = 1: SELECT only, and no query may change a setting (no SETTINGS clause, no SET), so
-- the limits hold; table functions (url(), remote(), file(), s3()) need grants this user lacks.
-- sluice sends readonly=1, max_execution_time=60 and output_format_json_quote_64bit_integers=0
-- with each query: the profile has the same values.

CREATE SETTINGS PROFILE IF NOT EXISTS sluice_reader
    SETTINGS readonly = 1,
             max_execution_time = 60,
             output_format_json_quote_64bit_integers = 0,
             max_memory_usage = 2000000000,
             max_result_rows = 1000000;

CREATE USER IF NOT EXISTS sluice_reader
    IDENTIFIED WITH sha256_password BY 'CHANGE_ME'
    SETTINGS PROFILE 'sluice_reader';

GRANT SELECT ON coinbase_demo.* TO sluice_reader;

-- the per-minute monitoring queries make their zero rows from system.numbers
GRANT SELECT ON system.numbers TO sluice_reader;
