"""The ``clickhouse`` sink: a ClickHouse server over HTTP(S), or ClickHouse embedded (chDB).

Modules: :mod:`.config` (the config model), :mod:`.schema` (table columns to a record converter),
:mod:`.errors` (classification by error code), :mod:`.http_client` and :mod:`.embedded` (the two
ways in), :mod:`.ddl` (the shipped table definitions), :mod:`.sink` (the plugin).
"""

from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.sink import ClickHouseSink

__all__ = ["ClickHouseSink", "ClickHouseSinkConfig"]
