"""ClickHouse errors, classified by the server's error code (never by message text).

A server over HTTP names the code in the ``X-ClickHouse-Exception-Code`` header (current versions)
and at the start of the body (``Code: 27, e.displayText() = ...`` on 18.x, ``Code: 27. DB::Exception:
...`` today); chDB raises with the same ``Code: N.`` prefix. The code decides what the sink does:

- a **data error** (:data:`DATA_ERROR_CODES`: the rows cannot be parsed or converted): not retried;
  the sink splits the batch to find the rows the server refuses and sends those to the dead letters
  with the server's message;
- a **schema change** (:data:`SCHEMA_CHANGED_CODES`: table or column gone): retried after the sink
  reads the table's columns again (and recreates the table when ``create`` is on);
- everything else (network errors, overload such as TOO_MANY_PARTS, memory limits, timeouts, 5xx,
  authentication failures, unknown codes): retried with backoff. Authentication and permission errors
  are retried too, so a wrong password stalls the sink loudly (logs, errors metric, /readyz) instead
  of sending every record to the dead letters.
"""

from __future__ import annotations

import re
from typing import Final

from sluice.errors import RetriableError

__all__ = [
    "DATA_ERROR_CODES",
    "SCHEMA_CHANGED_CODES",
    "TRANSIENT_CODES",
    "ClickHouseError",
    "code_from_text",
]

DATA_ERROR_CODES: Final[frozenset[int]] = frozenset(
    {
        6,  # CANNOT_PARSE_TEXT
        25,  # CANNOT_PARSE_ESCAPE_SEQUENCE
        26,  # CANNOT_PARSE_QUOTED_STRING
        27,  # CANNOT_PARSE_INPUT_ASSERTION_FAILED
        32,  # ATTEMPT_TO_READ_AFTER_EOF (a truncated row)
        33,  # CANNOT_READ_ALL_DATA
        38,  # CANNOT_PARSE_DATE
        41,  # CANNOT_PARSE_DATETIME
        43,  # ILLEGAL_TYPE_OF_ARGUMENT
        53,  # TYPE_MISMATCH
        69,  # ARGUMENT_OUT_OF_BOUND (e.g. Decimal value is too big)
        70,  # CANNOT_CONVERT_TYPE
        72,  # CANNOT_PARSE_NUMBER
        117,  # INCORRECT_DATA
        131,  # TOO_LARGE_STRING_SIZE (FixedString overflow)
        190,  # SIZES_OF_ARRAYS_DONT_MATCH
        349,  # CANNOT_INSERT_NULL_IN_ORDINARY_COLUMN
        376,  # CANNOT_PARSE_UUID
        407,  # DECIMAL_OVERFLOW
        441,  # CANNOT_PARSE_DOMAIN_VALUE_FROM_STRING (IPv4/IPv6)
        457,  # VALUE_IS_OUT_OF_RANGE_OF_DATA_TYPE
        676,  # CANNOT_PARSE_IPV4
        677,  # CANNOT_PARSE_IPV6
        691,  # UNKNOWN_ELEMENT_OF_ENUM
    }
)
"""Codes meaning that the rows sent cannot be stored as they are."""

SCHEMA_CHANGED_CODES: Final[frozenset[int]] = frozenset(
    {
        16,  # NO_SUCH_COLUMN_IN_TABLE
        60,  # UNKNOWN_TABLE
        81,  # UNKNOWN_DATABASE
    }
)
"""Codes meaning that the table is not what the sink read at start."""

TRANSIENT_CODES: Final[frozenset[int]] = frozenset(
    {
        3,  # UNEXPECTED_END_OF_FILE (connection cut mid-request)
        159,  # TIMEOUT_EXCEEDED
        160,  # TOO_SLOW
        202,  # TOO_MANY_SIMULTANEOUS_QUERIES
        203,  # NO_FREE_CONNECTION
        209,  # SOCKET_TIMEOUT
        210,  # NETWORK_ERROR
        225,  # NO_ZOOKEEPER
        236,  # ABORTED
        241,  # MEMORY_LIMIT_EXCEEDED
        242,  # TABLE_IS_READ_ONLY (a replica lost its coordinator)
        243,  # NOT_ENOUGH_SPACE
        252,  # TOO_MANY_PARTS
        285,  # TOO_FEW_LIVE_REPLICAS
        319,  # UNKNOWN_STATUS_OF_INSERT
        373,  # SESSION_IS_LOCKED
        394,  # QUERY_WAS_CANCELLED
        425,  # SYSTEM_ERROR
        439,  # CANNOT_SCHEDULE_TASK
        999,  # KEEPER_EXCEPTION
        1000,  # POCO_EXCEPTION
    }
)
"""Codes of a passing condition: worth waiting out even where other errors are fatal (at start)."""

_CODE = re.compile(r"Code: (\d+)[.,]")


def code_from_text(text: str) -> int | None:
    """The error code in a ClickHouse exception text (``Code: 27, ...`` or ``Code: 27. ...``)."""
    match = _CODE.search(text[:2000])
    return int(match.group(1)) if match else None


class ClickHouseError(RetriableError):
    """An error answered by ClickHouse (server or chDB).

    It is a :class:`~sluice.errors.RetriableError` unless :attr:`is_data_error`; the sink turns data
    errors into dead letters before the runner sees them.
    """

    def __init__(self, message: str, code: int | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.status = status
        """HTTP status for a server, None for chDB and network errors."""

    @property
    def is_data_error(self) -> bool:
        return self.code in DATA_ERROR_CODES

    @property
    def is_transient(self) -> bool:
        """A network failure, an overload or a server error with no code: it may pass."""
        if self.code is None:
            return self.status is None or self.status >= 500
        return self.code in TRANSIENT_CODES

    @property
    def is_schema_changed(self) -> bool:
        return self.code in SCHEMA_CHANGED_CODES

    @classmethod
    def from_text(
        cls, text: str, status: int | None = None, code: int | None = None
    ) -> ClickHouseError:
        """Build from an exception text; ``code`` (from a header) wins over the text's."""
        start = text.find("Code: ")  # chDB puts its own words before the engine's
        message = " ".join(text[max(start, 0) :].strip().split())[:1000] or f"HTTP {status}"
        return cls(message, code if code is not None else code_from_text(text), status)
