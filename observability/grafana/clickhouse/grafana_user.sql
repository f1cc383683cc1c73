-- A read-only `grafana` user for current ClickHouse servers (SQL user management, 20.5+).
-- Run it as an administrator with the password put in place of CHANGE_ME, e.g.
--   sed "s/CHANGE_ME/$GRAFANA_CLICKHOUSE_PASSWORD/" grafana_user.sql | clickhouse-client --multiquery
-- For 18.16 and other old servers use users.d/grafana.xml.
--
-- readonly = 2: SELECT only (no INSERT, ALTER, DROP, CREATE), while Grafana's plugin can still
-- set max_execution_time on its queries; the limits bound what a dashboard query may use.

CREATE SETTINGS PROFILE IF NOT EXISTS grafana_readonly
    SETTINGS readonly = 2,
             max_execution_time = 60 MAX 300,
             max_memory_usage = 2000000000 MAX 4000000000,
             max_result_rows = 1000000;

CREATE USER IF NOT EXISTS grafana
    IDENTIFIED WITH sha256_password BY 'CHANGE_ME'
    SETTINGS PROFILE 'grafana_readonly';

GRANT SELECT ON coinbase_demo.* TO grafana;

-- the per-minute queries make their zero rows from system.numbers
GRANT SELECT ON system.numbers TO grafana;
