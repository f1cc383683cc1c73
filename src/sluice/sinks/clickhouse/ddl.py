"""The DDL a sink runs when ``create: true``: a file of statements with ``{database}``/``{table}``.

The shipped file ``sql/coinbase_ticker.sql`` (the Coinbase ticker table) is found in the installed
package (``sluice/sql/``, put there by the wheel build) or, in a source checkout, at the repository's
``sql/``. Servers without DateTime64 (before 20.1) get its documented fallback
``coinbase_ticker.legacy.sql`` when the default is used.

Placeholders are replaced by identifiers that the config has validated (letters, digits,
underscores), quoted with backticks; no value is ever put into SQL text. ``{table}_suffix`` names a
table derived from the sink's (the shipped DDL's candles), quoted as one identifier.
"""

from __future__ import annotations

import re
from importlib import resources
from pathlib import Path

__all__ = ["DEFAULT_DDL", "LEGACY_DDL", "render_statements", "shipped_ddl_file", "shipped_sql"]

DEFAULT_DDL = "coinbase_ticker.sql"
LEGACY_DDL = "coinbase_ticker.legacy.sql"

_STATEMENT_END = re.compile(r";[ \t]*$", re.MULTILINE)
_DERIVED_TABLE = re.compile(r"\{table\}(_[A-Za-z0-9_]+)")


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


def render_statements(text: str, database: str, table: str) -> list[str]:
    """The statements of a DDL file with the placeholders filled, comments and blanks removed."""
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("--")]
    body = "\n".join(lines).replace("{database}", f"`{database}`")
    body = _DERIVED_TABLE.sub(lambda m: f"`{table}{m.group(1)}`", body)
    body = body.replace("{table}", f"`{table}`")
    return [s.strip() for s in _STATEMENT_END.split(body) if s.strip()]
