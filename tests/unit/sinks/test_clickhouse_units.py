"""The clickhouse sink's pure parts: config, error codes, column types, DDL, read-only check."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from pydantic import ValidationError

from sluice.records import Record
from sluice.sinks.clickhouse.client import columns_from_describe
from sluice.sinks.clickhouse.config import ClickHouseSinkConfig
from sluice.sinks.clickhouse.ddl import DEFAULT_DDL, LEGACY_DDL, render_statements, shipped_sql
from sluice.sinks.clickhouse.errors import ClickHouseError, code_from_text
from sluice.sinks.clickhouse.schema import (
    Column,
    Converter,
    ServerInfo,
    parse_version,
    value_check,
)

CURRENT = ServerInfo((26, 9, 2), embedded=True)
OLD = ServerInfo((18, 16, 1), embedded=False)


def config(**values: object) -> ClickHouseSinkConfig:
    return ClickHouseSinkConfig.model_validate({"type": "clickhouse", "table": "t", **values})


def test_exactly_one_of_url_and_path() -> None:
    with pytest.raises(ValidationError, match="exactly one of"):
        config()
    with pytest.raises(ValidationError, match="exactly one of"):
        config(url="http://h:8123", path="d")
    assert config(path="d").target == "chdb:d"


def test_urls_beside_url_exactly_one_of_them_each_url_checked() -> None:
    pool = config(urls=["http://a:8123/", "https://b:8443"])
    assert pool.endpoints == ["http://a:8123", "https://b:8443"]
    assert pool.target == "http://a:8123,https://b:8443"
    with pytest.raises(ValidationError, match=r"either `url`.*or `urls`"):
        config(url="http://a:8123", urls=["http://b:8123"])
    with pytest.raises(ValidationError, match="exactly one of"):
        config(urls=["http://b:8123"], path="d")
    with pytest.raises(ValidationError, match="at least one"):
        config(urls=[])
    with pytest.raises(ValidationError, match="listed twice"):
        config(urls=["http://a:8123", "http://a:8123/"])
    with pytest.raises(ValidationError, match="expected http"):
        config(urls=["http://a:8123", "ftp://b"])


def test_credentials_in_urls_move_to_user_and_password_once() -> None:
    moved = config(urls=["http://h1:8123", "http://alice:s3cr%40t@h2:8123"])
    assert moved.urls == ["http://h1:8123", "http://h2:8123"]
    assert moved.user == "alice"
    assert moved.password is not None
    assert moved.password.get_secret_value() == "s3cr@t"
    with pytest.raises(ValidationError, match="different credentials") as raised:
        config(urls=["http://a:one@h1:8123", "http://a:two@h2:8123"])
    assert "one" not in str(raised.value.errors()[0]["msg"])


def test_cluster_tables_and_the_table_inserts_go_to() -> None:
    plain = config(url="http://h:8123", database="d")
    assert plain.insert_table == "`d`.`t`"
    clustered = config(urls=["http://h:8123"], database="d", cluster="c")
    assert clustered.local_table_name == "t_local"
    assert clustered.insert_table == "`d`.`t`"  # the Distributed table
    local = config(url="http://h:8123", database="d", cluster="c", insert_into="local")
    assert local.insert_table == "`d`.`t_local`"
    with pytest.raises(ValidationError, match="cluster"):
        config(path="d", cluster="c")
    with pytest.raises(ValidationError, match="needs `cluster`"):
        config(url="http://h:8123", insert_into="local")
    with pytest.raises(ValidationError, match="cluster"):
        config(url="http://h:8123", cluster="c; DROP")


def test_cluster_ddl_quotes_identifiers_and_fills_the_zookeeper_path() -> None:
    text = shipped_sql("coinbase_ticker.cluster.legacy.sql").read_text()
    statements = render_statements(text, "db", "ticks", cluster="c1", local_table="ticks_local")
    assert statements[0] == "CREATE DATABASE IF NOT EXISTS `db` ON CLUSTER `c1`"
    assert "CREATE TABLE IF NOT EXISTS `db`.`ticks_local` ON CLUSTER `c1`" in statements[1]
    assert "'/clickhouse/tables/{shard}/db.ticks_local', '{replica}'" in statements[1]
    assert "Distributed(`c1`, `db`, `ticks_local`, cityHash64(product_id))" in statements[2]
    assert "{" not in statements[2]
    with pytest.raises(ValueError, match="identifier"):
        render_statements(text, "db", "ticks", cluster="c'1", local_table="x")


def test_credentials_in_the_url_move_to_user_and_password() -> None:
    moved = config(url="https://alice:s3cr%40t@ch.example:8443/")
    assert moved.url == "https://ch.example:8443"
    assert moved.user == "alice"
    assert moved.password is not None
    assert moved.password.get_secret_value() == "s3cr@t"  # percent-decoded
    assert "s3cr" not in repr(moved)
    with pytest.raises(ValidationError, match="given twice"):
        config(url="http://a:b@h:8123", password="c")


@pytest.mark.parametrize("password", ["p?ssw0rd", "p#ss", "pa/ss"])
def test_a_password_that_breaks_the_url_is_refused_without_being_echoed(password: str) -> None:
    with pytest.raises(ValidationError) as raised:
        config(url=f"http://u:{password}@localhost:8123")
    message = raised.value.errors()[0]["msg"]  # what `sluice check` shows (it masks the input)
    assert password not in message
    assert "percent-encode" in message


def test_sluice_check_never_echoes_a_password_given_in_a_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from typer.testing import CliRunner

    from sluice.cli import app

    monkeypatch.chdir(tmp_path)
    (tmp_path / "p.yaml").write_text(
        "sources:\n  g: {type: generator}\nsinks:\n  ch:\n    type: clickhouse\n"
        "    inputs: [g]\n    url: 'http://u:hunt/er2@localhost:8123'\n    table: t\n"
        "  ch2:\n    type: clickhouse\n    inputs: [g]\n"
        "    url: 'ftp://u:hunter3@localhost:8123'\n    table: t\n"
    )
    result = CliRunner().invoke(app, ["check", "p.yaml"])
    assert result.exit_code == 2
    assert "sinks.ch" in result.stderr
    assert "sinks.ch2.url" in result.stderr
    assert "hunt" not in result.stderr


@pytest.mark.parametrize(
    "bad",
    [{"table": "t; DROP TABLE x"}, {"database": "a.b"}, {"table": "1abc"}, {"url": "ftp://h"}],
)
def test_identifiers_and_urls_are_validated(bad: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        config(**{"url": "http://h:8123", **bad})


def test_gzip_is_used_unless_the_server_is_on_loopback() -> None:
    assert not config(url="http://127.0.0.1:8123").use_gzip()
    assert not config(url="http://localhost:8123").use_gzip()
    assert config(url="https://ch.example:8443").use_gzip()
    assert config(url="http://127.0.0.1:8123", compression="gzip").use_gzip()
    assert not config(url="https://ch.example", compression="none").use_gzip()


def test_a_batch_stays_one_atomic_insert() -> None:
    with pytest.raises(ValidationError, match="at most 1,000,000"):
        config(path="d", batch={"max_events": 2_000_000})


def test_defaults_suit_clickhouse_large_batches_about_once_a_second() -> None:
    batch = config(path="d").batch
    assert (batch.max_events, batch.max_age_secs) == (50_000, 1.0)
    assert config(path="d").buffer.max_events >= 3 * batch.max_events


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("Code: 27, e.displayText() = DB::Exception: Cannot parse input", 27),  # 18.16
        ("Code: 241. DB::Exception: Memory limit exceeded", 241),  # current
        ("Streaming insert finish failed: Code: 72. DB::Exception: x", 72),  # chDB
        ("Service Unavailable", None),
    ],
)
def test_error_code_is_read_from_the_text(text: str, code: int | None) -> None:
    assert code_from_text(text) == code


def test_errors_are_classified_by_code_not_by_message() -> None:
    assert ClickHouseError.from_text("Code: 131. anything at all").is_data_error
    overload = ClickHouseError.from_text("Code: 252. Too many parts", status=500)
    assert not overload.is_data_error
    assert overload.is_transient
    # the header's code wins over the body's
    assert ClickHouseError.from_text("Code: 27. x", code=252).code == 252
    assert ClickHouseError.from_text("Code: 60. no table").is_schema_changed
    assert not ClickHouseError.from_text("Code: 193. Wrong password", status=401).is_transient
    assert ClickHouseError("connection refused").is_transient


def test_version_parsing() -> None:
    assert parse_version("18.16.1") == (18, 16, 1)
    assert parse_version("26.9.2.1") == (26, 9, 2, 1)
    assert not OLD.has_dedup_token
    assert CURRENT.has_dedup_token
    assert not OLD.has_datetime64


def test_columns_from_describe_and_what_can_be_inserted() -> None:
    columns = columns_from_describe(
        [
            ["a", "Nullable(Float64)", "", "", ""],
            ["b", "LowCardinality(String)", "", ""],
            ["c", "DateTime", "DEFAULT", "now()"],
            ["d", "UInt64", "MATERIALIZED", "a * 2"],
        ]
    )
    assert [c.insertable for c in columns] == [True, True, True, False]
    assert [c.required for c in columns] == [False, True, False, False]
    assert columns[1].base_type == "String"


def records(*messages: object) -> list[Record]:
    return [Record(orjson.dumps(m)) for m in messages]


def test_converter_passes_records_through_when_the_server_converts() -> None:
    columns = [Column("p", "Float64"), Column("n", "UInt8"), Column("t", "DateTime64(6)")]
    converter = Converter("db.t", columns, CURRENT)
    assert converter.passthrough
    batch = records(
        {"p": "1.5", "n": 3, "t": "2021-04-17T16:43:30.244075Z", "extra": [1]},
        {"p": "x", "n": 3, "t": "2021-04-17T16:43:30Z"},
        {"p": 1, "n": 300, "t": "2021-04-17T16:43:30Z"},
        {"p": 1, "n": 1},
    )
    prepared = converter.prepare(batch)
    assert prepared.rows == [batch[0].raw]
    assert prepared.indexes == [0]
    assert set(prepared.rejected) == {1, 2, 3}
    assert "$.p" in prepared.rejected[1]
    assert "<= 255" in prepared.rejected[2]
    assert "missing required field `t`" in prepared.rejected[3]


def test_converter_re_encodes_decimals_for_servers_that_cannot_read_them_quoted() -> None:
    columns = [Column("amount", "Decimal(18, 8)"), Column("note", "Nullable(String)")]
    converter = Converter("db.t", columns, OLD)
    assert not converter.passthrough
    prepared = converter.prepare(records({"amount": "94381.28000000", "other": 1}))
    assert prepared.rows == [b'{"amount":94381.28000000,"note":null}']


def test_ddl_placeholders_and_statements() -> None:
    text = "-- a comment\nCREATE DATABASE IF NOT EXISTS {database};\nCREATE TABLE {database}.{table} (a UInt8)\nENGINE = Log;\n"
    assert render_statements(text, "db", "tb") == [
        "CREATE DATABASE IF NOT EXISTS `db`",
        "CREATE TABLE `db`.`tb` (a UInt8)\nENGINE = Log",
    ]
    for name in (DEFAULT_DDL, LEGACY_DDL):
        statements = render_statements(shipped_sql(name).read_text(), "db", "tb")
        assert len(statements) == 5
        assert statements[1].startswith("CREATE TABLE IF NOT EXISTS `db`.`tb`")
        # the candles: a state table, the materialized view feeding it, the view to read
        assert statements[2].startswith("CREATE TABLE IF NOT EXISTS `db`.`tb_candles_1m_state`")
        assert statements[3].startswith(
            "CREATE MATERIALIZED VIEW IF NOT EXISTS `db`.`tb_candles_1m_mv`"
        )
        assert "FROM `db`.`tb`\n" in statements[3]
        assert statements[4].startswith("CREATE VIEW IF NOT EXISTS `db`.`tb_candles_1m`")


def test_shipped_sql_is_found_in_the_checkout(tmp_path: Path) -> None:
    assert shipped_sql(DEFAULT_DDL).name == DEFAULT_DDL
    with pytest.raises(FileNotFoundError):
        shipped_sql("nope.sql")


def test_integers_are_checked_against_their_columns_full_range() -> None:
    columns = [Column("u64", "UInt64"), Column("i64", "Int64"), Column("u32", "UInt32")]
    columns.append(Column("i128", "Nullable(Int128)"))
    converter = Converter("db.t", columns, CURRENT)
    ok = {"u64": 2**64 - 1, "i64": -(2**63), "u32": 2**32 - 1, "i128": -(2**127)}
    bad = [
        ({"u64": 2**64}, "18446744073709551616 is out of range for UInt64"),
        ({"u64": 10**21}, "out of range for UInt64"),
        ({"u64": -1}, "Expected `int` >= 0 - at `$.u64`"),
        ({"i64": 2**63}, "<= 9223372036854775807 - at `$.i64`"),
        ({"u32": 2**32}, "<= 4294967295 - at `$.u32`"),
        ({"i128": 2**127}, "out of range for Int128"),
    ]
    batch = [Record(json.dumps(ok).encode())]
    batch += [Record(json.dumps({**ok, **change}).encode()) for change, _ in bad]
    prepared = converter.prepare(batch)
    assert prepared.indexes == [0]
    assert prepared.rows == [batch[0].raw]
    for index, (_, words) in enumerate(bad, 1):
        assert words in prepared.rejected[index]


@pytest.mark.parametrize("server", [CURRENT, OLD])
def test_decimal_columns_refuse_non_finite_and_too_large_values_float_columns_keep_them(
    server: ServerInfo,
) -> None:
    columns = [Column("d", "Decimal(18, 8)"), Column("f", "Float64")]
    converter = Converter("db.t", columns, server)
    good = {"d": "-9999999999.99999999", "f": "NaN"}
    bad = [
        ({"d": "NaN"}, "NaN is not a finite number, which Decimal(18, 8) cannot hold"),
        ({"d": "-Infinity"}, "-Infinity is not a finite number"),
        ({"d": "sNaN"}, "not a finite number"),
        ({"d": "1e10"}, "1E+10 is out of range for Decimal(18, 8) (at most 10 integer digits)"),
        ({"f": "1e400"}, "Number out of range - at `$.f`"),
    ]
    batch = [Record(json.dumps(good).encode())]
    batch += [Record(json.dumps({**good, **change}).encode()) for change, _ in bad]
    prepared = converter.prepare(batch)
    assert prepared.indexes == [0]
    for index, (_, words) in enumerate(bad, 1):
        assert words in prepared.rejected[index]


def test_records_that_cannot_be_decoded_are_rejected_not_raised() -> None:
    converter = Converter("db.t", [Column("a", "UInt8"), Column("s", "String")], CURRENT)
    deep = Record(b'{"a":1,"s":"","x":' + b"[" * 1000 + b"]" * 1000 + b"}")
    not_utf8 = Record(b'{"a":1,"s":"\xff"}')
    prepared = converter.prepare([deep, not_utf8, Record(b'{"a":1,"s":"x"}')])
    assert prepared.indexes == [2]
    assert "nested too deeply" in prepared.rejected[0]
    assert "not UTF-8" in prepared.rejected[1]


@pytest.mark.parametrize(
    ("type_text", "digits"),
    [
        ("Decimal(18, 8)", 10),
        ("Decimal(9)", 9),
        ("Decimal32(2)", 7),
        ("Decimal64(8)", 10),
        ("Decimal128(10)", 28),
        ("Decimal256(0)", 76),
    ],
)
def test_decimal_integer_digits_from_the_type(type_text: str, digits: int) -> None:
    check = value_check(Column("d", type_text))
    assert check is not None
    assert check(Decimal(10) ** (digits - 1)) is None
    assert "out of range" in (check(Decimal(10) ** digits) or "")
