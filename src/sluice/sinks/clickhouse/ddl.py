"""The DDL a sink runs when ``create: true``: a file of statements with ``{database}``/``{table}``.

The shipped file ``sql/coinbase_ticker.sql`` (the Coinbase ticker table) is found in the installed
package (``sluice/sql/``, put there by the wheel build) or, in a source checkout, at the repository's
``sql/``. Servers without DateTime64 (before 20.1) get its documented fallback
``coinbase_ticker.legacy.sql`` when the default is used. With ``cluster``, the default is
``coinbase_ticker.cluster.sql`` (``.cluster.legacy.sql`` before 20.1): the replicated local table on
every node and the ``Distributed`` table over it.

Placeholders are replaced by identifiers that the config has validated (letters, digits,
underscores), quoted with backticks; no value is ever put into SQL text. ``{table}_suffix`` names a
table derived from the sink's (the shipped DDL's candles), quoted as one identifier.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

__all__ = [
    "CLUSTER_DDL",
    "CLUSTER_LEGACY_DDL",
    "DEFAULT_DDL",
    "LEGACY_DDL",
    "ddl_path",
    "render_statements",
    "shipped_ddl_file",
    "shipped_sql",
]

DEFAULT_DDL = "coinbase_ticker.sql"
LEGACY_DDL = "coinbase_ticker.legacy.sql"
CLUSTER_DDL = "coinbase_ticker.cluster.sql"
CLUSTER_LEGACY_DDL = "coinbase_ticker.cluster.legacy.sql"

_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_DERIVED_TABLE = re.compile(r"\{table\}(_[A-Za-z0-9_]+)")
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def shipped_ddl_file(name: str, has_datetime64: bool) -> str:
    """The file of the shipped table ``name`` (``coinbase_ticker``, ``coinbase_trades``) for a
    server with or without DateTime64 (its ``.legacy.sql`` fallback)."""
    return f"{name}.sql" if has_datetime64 else f"{name}.legacy.sql"


def shipped_sql(name: str) -> Path:
    """Path of a SQL file shipped with sluice; FileNotFoundError when neither place has it."""
    packaged = resources.files("sluice").joinpath("sql", name)
    if packaged.is_file():
        return Path(str(packaged))
    # src/sluice/sinks/clickhouse/ddl.py -> the repository root of a source checkout
    checkout = Path(__file__).resolve().parents[4] / "sql" / name
    if checkout.is_file():
        return checkout
    raise FileNotFoundError(f"{name} is not in the sluice package nor in {checkout.parent}")


def ddl_path(given: Path) -> Path:
    """A sink's ``ddl``: the file given, or, when no such file exists and its name is one that
    sluice ships (``coinbase_level2.sql``...), the shipped one (so ``ddl: coinbase_level2.sql``
    works in an installed package as in a checkout)."""
    if given.exists() or given.parent != Path():
        return given
    try:
        return shipped_sql(given.name)
    except FileNotFoundError:
        return given


def render_statements(
    text: str,
    database: str,
    table: str,
    *,
    cluster: str | None = None,
    local_table: str | None = None,
) -> list[str]:
    """The statements of a DDL file with the placeholders filled, comments and blanks removed.

    For a cluster: ``{cluster}`` and ``{local_table}`` (quoted), and ``{database_name}`` and
    ``{local_table_name}`` unquoted, for the inside of a string such as a ZooKeeper path (safe:
    the names are validated identifiers, letters, digits and ``_``)."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    body = "\n".join(lines)
    for name in (database, table, cluster, local_table):
        if name is not None and not _IDENTIFIER.match(name):
            raise ValueError(f"not an identifier: {name!r}")
    if cluster is not None:
        body = body.replace("{cluster}", f"`{cluster}`")
    if local_table is not None:
        body = body.replace("{local_table_name}", local_table)
        body = body.replace("{local_table}", f"`{local_table}`")
    body = body.replace("{database_name}", database)
    body = body.replace("{database}", f"`{database}`")
    body = _DERIVED_TABLE.sub(lambda m: f"`{table}{m.group(1)}`", body)
    body = body.replace("{table}", f"`{table}`")
    return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]
