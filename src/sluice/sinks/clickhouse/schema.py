"""From a table's columns to a converter that checks each record against them.

At start the sink reads the table's columns (``DESCRIBE TABLE``: the same answer shape on 18.x,
current servers and chDB) and builds a :class:`Converter`: a msgspec Struct with one field per
insertable column, decoded leniently, so

- decimal strings (``"14.7775"``) are accepted for Float and Decimal columns, integers (also as
  strings) for Int/UInt columns within the type's range, RFC 3339 text (or unix seconds) for
  DateTime and DateTime64, ``YYYY-MM-DD`` for Date;
- every integer is checked against its column's range (UInt64, Int128... included: msgspec bounds
  stop at 64 bits, so those are checked after decoding), so no value is stored wrapped or as 0; a
  Decimal column refuses non-finite values (``NaN``, ``Infinity``) and values with more integer
  digits than its precision leaves; a Float column keeps ``nan`` and ``inf``, which are Float
  values in ClickHouse (a number too large for a double is refused);
- a field missing for a column without a default (not Nullable, no DEFAULT expression), or a value
  that cannot be converted, rejects that record with the reason (it goes to the dead letters); so
  does a record that cannot be decoded at all (not UTF-8, nested too deeply);
- fields with no column are ignored; MATERIALIZED and ALIAS columns are never sent.

What is sent: when the server parses every column's JSON form itself (a current server or chDB),
the record's own bytes go unchanged, so a record is never re-encoded (the server converts with
``date_time_input_format=best_effort`` and ``input_format_skip_unknown_fields=1``); otherwise (an
old server with a Decimal column: 18.x cannot read a quoted decimal) the checked values are
re-encoded. Either way the server is the final judge: a value it refuses is isolated by the sink
and dead-lettered with the server's reason.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from decimal import Decimal
from typing import Annotated, Any

import msgspec

from sluice.records import Record

__all__ = ["Column", "Converter", "Prepared", "ServerInfo", "parse_version"]

_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "Int8": (-(2**7), 2**7 - 1),
    "Int16": (-(2**15), 2**15 - 1),
    "Int32": (-(2**31), 2**31 - 1),
    "Int64": (-(2**63), 2**63 - 1),
    "UInt8": (0, 2**8 - 1),
    "UInt16": (0, 2**16 - 1),
    "UInt32": (0, 2**32 - 1),
    "UInt64": (0, 2**64 - 1),
}
_WIDE_INTS = {"Int128", "Int256", "UInt128", "UInt256"}
_CHECKED_INT_BOUNDS: dict[str, tuple[int, int]] = {
    "UInt64": (0, 2**64 - 1),
    "Int128": (-(2**127), 2**127 - 1),
    "UInt128": (0, 2**128 - 1),
    "Int256": (-(2**255), 2**255 - 1),
    "UInt256": (0, 2**256 - 1),
}
"""Integer ranges msgspec cannot check while decoding (its bounds are 64-bit)."""
_DECIMAL_PRECISION = {"Decimal32": 9, "Decimal64": 18, "Decimal128": 38, "Decimal256": 76}
_FLOATS = {"Float32", "Float64", "BFloat16"}
_STRINGS = {"String", "FixedString", "UUID", "IPv4", "IPv6", "Enum8", "Enum16", "Enum"}
_DECIMALS = {"Decimal", "Decimal32", "Decimal64", "Decimal128", "Decimal256"}
_WRAPPER = re.compile(r"^(LowCardinality|Nullable)\((.*)\)$")


def parse_version(text: str) -> tuple[int, ...]:
    """``"18.16.1"`` -> ``(18, 16, 1)``; unparsable parts end the tuple."""
    parts: list[int] = []
    for piece in text.strip().split("."):
        if not piece.isdigit():
            break
        parts.append(int(piece))
    return tuple(parts)


@dataclass(frozen=True)
class ServerInfo:
    """What the sink needs to know about the far side."""

    version: tuple[int, ...]
    embedded: bool

    @property
    def version_text(self) -> str:
        return ".".join(map(str, self.version))

    @property
    def has_dedup_token(self) -> bool:
        """``insert_deduplication_token`` exists (22.2 and later; chDB)."""
        return self.version >= (22, 2)

    @property
    def has_datetime64(self) -> bool:
        return self.version >= (20, 1)

    @property
    def reads_quoted_decimals(self) -> bool:
        """JSONEachRow takes ``"0.5"`` for a Decimal column (18.x does not)."""
        return self.version >= (21, 1)


@dataclass(frozen=True)
class Column:
    """One column of the target table, as DESCRIBE TABLE tells it."""

    name: str
    type: str
    default_kind: str = ""
    """``""``, ``DEFAULT``, ``MATERIALIZED``, ``ALIAS`` or ``EPHEMERAL``."""

    @property
    def insertable(self) -> bool:
        return self.default_kind in ("", "DEFAULT")

    @property
    def base_type(self) -> str:
        """The type without LowCardinality/Nullable wrappers."""
        inner, _ = _unwrap(self.type)
        return inner

    @property
    def nullable(self) -> bool:
        return _unwrap(self.type)[1]

    @property
    def required(self) -> bool:
        """A record must carry this field: no default and not Nullable."""
        return self.default_kind == "" and not self.nullable


def _unwrap(type_text: str) -> tuple[str, bool]:
    text = type_text.strip()
    nullable = False
    while match := _WRAPPER.match(text):
        nullable = nullable or match.group(1) == "Nullable"
        text = match.group(2).strip()
    return text, nullable


def _family(type_text: str) -> str:
    return type_text.split("(", 1)[0].strip()


def value_type(column: Column) -> Any:
    """The msgspec type that checks (and, leniently, converts) a value for ``column``."""
    base = column.base_type
    family = _family(base)
    python_type: Any
    if family in _INT_BOUNDS:
        low, high = _INT_BOUNDS[family]
        # msgspec bounds must fit in an int64; UInt64 values above it are left to the server
        python_type = Annotated[int, msgspec.Meta(ge=max(low, -(2**63)), le=min(high, 2**63 - 1))]
        if family == "UInt64":
            python_type = Annotated[int, msgspec.Meta(ge=0)]
    elif family in _WIDE_INTS:
        python_type = int
    elif family in _FLOATS:
        python_type = float
    elif family in _DECIMALS:
        python_type = Decimal
    elif family in ("DateTime", "DateTime64"):
        python_type = datetime
    elif family in ("Date", "Date32"):
        python_type = date
    elif family == "Bool":
        python_type = bool
    elif family in _STRINGS:
        python_type = str
    else:  # Array, Map, Tuple, JSON, Nested...: any JSON value, the server judges it
        python_type = msgspec.Raw
    return python_type


def _decimal_digits(base: str) -> int | None:
    """Integer digits a Decimal type holds (precision - scale), or None when unreadable."""
    family = _family(base)
    args = [a.strip() for a in base[len(family) :].strip().strip("()").split(",") if a.strip()]
    if not all(a.isdigit() for a in args):
        return None
    if family == "Decimal" and len(args) == 2:
        return int(args[0]) - int(args[1])
    if family == "Decimal" and len(args) == 1:  # Decimal(P): scale 0
        return int(args[0])
    if family in _DECIMAL_PRECISION and len(args) == 1:
        return _DECIMAL_PRECISION[family] - int(args[0])
    return None


def value_check(column: Column) -> Callable[[Any], str | None] | None:
    """What decoding to :func:`value_type` cannot check for ``column``: a function of a decoded
    value giving why it does not fit (None when it does), or None when there is nothing more."""
    base = column.base_type
    family = _family(base)
    if family in _CHECKED_INT_BOUNDS:
        low, high = _CHECKED_INT_BOUNDS[family]

        def int_range(value: Any) -> str | None:
            if type(value) is int and not low <= value <= high:
                return f"{value} is out of range for {base} ({low} to {high})"
            return None

        return int_range
    if family in _DECIMALS:
        digits = _decimal_digits(base)

        def decimal_range(value: Any) -> str | None:
            if not isinstance(value, Decimal):
                return None
            if not value.is_finite():
                return f"{value} is not a finite number, which {base} cannot hold"
            if digits is not None and value and value.adjusted() >= digits:
                return f"{value} is out of range for {base} (at most {digits} integer digits)"
            return None

        return decimal_range
    return None


def needs_encoding(column: Column, server: ServerInfo) -> bool:
    """Whether the server cannot read this column's values as they come in a record."""
    return _family(column.base_type) in _DECIMALS and not server.reads_quoted_decimals


@dataclass
class Prepared:
    """A batch made ready to insert: one JSON line per good record, and the rejected ones."""

    rows: list[bytes]
    """JSONEachRow lines (without the newline), in batch order."""
    indexes: list[int]
    """For each row, the index of its record in the batch."""
    rejected: dict[int, str] = field(default_factory=dict)
    """Index in the batch -> why the record cannot be written."""


class Converter:
    """Checks records against a table's columns and produces the rows to insert."""

    def __init__(self, table: str, columns: Sequence[Column], server: ServerInfo) -> None:
        if not columns:
            raise ValueError(f"table {table} has no columns")
        self.table = table
        self.columns = [c for c in columns if c.insertable]
        if not self.columns:
            raise ValueError(f"table {table} has no column that can be inserted into")
        fields: list[tuple[str, Any, Any] | tuple[str, Any]] = []
        rename: dict[str, str] = {}
        self._checks: list[tuple[str, str, Callable[[Any], str | None]]] = []
        """(field, column name, check) for the columns decoding cannot fully check."""
        for position, column in enumerate(self.columns):
            name = f"c{position}"  # column names need not be Python identifiers
            rename[name] = column.name
            value = value_type(column)
            check = value_check(column)
            if check is not None:
                self._checks.append((name, column.name, check))
            if column.required:
                fields.append((name, value))
            elif column.nullable:
                fields.append((name, value | None, None))
            else:  # has a DEFAULT: omitted when the record lacks it, so the server fills it
                fields.append((name, value | msgspec.UnsetType, msgspec.UNSET))
        self._struct = msgspec.defstruct(
            "Row", fields, kw_only=True, rename=rename, forbid_unknown_fields=False
        )
        self._decoder = msgspec.json.Decoder(self._struct, strict=False)
        self.passthrough = not any(needs_encoding(c, server) for c in self.columns)
        """True when records are sent as they came (the server converts); else re-encoded."""
        self._encoder = msgspec.json.Encoder(decimal_format="number")

    def prepare(
        self,
        records: Sequence[Record],
        start: int = 0,
        stop: int | None = None,
        into: Prepared | None = None,
    ) -> Prepared:
        """Check ``records[start:stop]`` (appending to ``into``); one lenient decode per record."""
        prepared = into if into is not None else Prepared([], [])
        stop = len(records) if stop is None else stop
        raws = [record.raw for record in records[start:stop]]
        decode = self._decoder.decode
        checks = self._checks
        if self.passthrough:
            try:
                for raw in raws:  # the common case, kept to the bare decode
                    row = decode(raw)
                    if checks and self._problem(row) is not None:
                        break
                else:
                    prepared.rows.extend(raws)
                    prepared.indexes.extend(range(start, stop))
                    return prepared
            except (ValueError, RecursionError):  # msgspec's errors, UnicodeDecodeError
                pass
        encode = self._encoder.encode
        for index, raw in enumerate(raws, start):
            try:
                value = decode(raw)
            except (msgspec.ValidationError, msgspec.DecodeError) as exc:
                prepared.rejected[index] = f"cannot convert to {self.table}: {exc}"
                continue
            except UnicodeDecodeError as exc:
                prepared.rejected[index] = f"cannot convert to {self.table}: not UTF-8: {exc}"
                continue
            except RecursionError:
                prepared.rejected[index] = f"cannot convert to {self.table}: nested too deeply"
                continue
            problem = self._problem(value) if checks else None
            if problem is not None:
                prepared.rejected[index] = f"cannot convert to {self.table}: {problem}"
                continue
            prepared.rows.append(raw if self.passthrough else encode(value))
            prepared.indexes.append(index)
        return prepared

    def _problem(self, row: Any) -> str | None:
        """Why a decoded row does not fit its columns' ranges, or None."""
        for name, column, check in self._checks:
            problem = check(getattr(row, name))
            if problem is not None:
                return f"{problem} - at `$.{column}`"
        return None
