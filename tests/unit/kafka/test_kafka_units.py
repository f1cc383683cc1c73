"""The Kafka plugins' config rules, the origin key a batch gets from its records, and the
ClickHouse token made from it (the broker itself is in tests/integration/test_kafka.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from pydantic import ValidationError

from sluice.config.loader import load_config_text
from sluice.kafka.connection import client_config
from sluice.plugin import BatchInfo
from sluice.records import Origin, Record, origin_key
from sluice.registry import Registry
from sluice.sinks.clickhouse import ClickHouseSink, ClickHouseSinkConfig
from sluice.sinks.kafka import KafkaSinkConfig
from sluice.sinks.kafka.sink import key_reader, keys_reader
from sluice.sources.kafka import KafkaSourceConfig

ROOT = Path(__file__).resolve().parents[3]


def at(partition: int, offset: int, topic: str = "t") -> Record:
    return Record(b"{}", "ticker", None, None, Origin(topic, partition, offset))


def test_an_origin_key_names_each_partition_range_and_count() -> None:
    records = [at(0, 10), at(1, 5), at(0, 11), at(0, 13), at(1, 6)]
    assert origin_key(records) == "t/0/10-13/3,t/1/5-6/2"


def test_the_same_records_give_the_same_key_and_any_other_set_another() -> None:
    batch = [at(0, i) for i in range(100, 200)]
    assert origin_key(batch) == origin_key([at(0, i) for i in range(100, 200)])
    assert origin_key(batch[:50]) != origin_key(batch)
    assert origin_key(batch[:-1]) != origin_key(batch)
    assert origin_key([at(0, i, "other") for i in range(100, 200)]) != origin_key(batch)


def test_a_batch_with_a_record_of_no_origin_has_no_key() -> None:
    assert origin_key([at(0, 1), Record(b"{}")]) is None
    assert origin_key([]) is None


def test_a_long_origin_key_is_a_digest() -> None:
    key = origin_key([at(p, 1, "a-rather-long-topic-name") for p in range(50)])
    assert key is not None
    assert key.startswith("sha256:")
    assert len(key) == 7 + 64


def test_the_clickhouse_token_comes_from_the_origin_when_the_batch_has_one() -> None:
    sink = ClickHouseSink("ch", ClickHouseSinkConfig(path=Path("x"), table="t"))
    sink._token_prefix = "ch-process"
    records = [at(0, 1)]
    assert sink._token_for(records, BatchInfo(1, 1, "t/0/1-1/1")) == "origin:t/0/1-1/1"
    assert sink._token_for(records, BatchInfo(1, 2, "t/0/1-1/1")) == "origin:t/0/1-1/1"
    # another process (another prefix) reading the same records makes the same token
    other = ClickHouseSink("ch", ClickHouseSinkConfig(path=Path("x"), table="t"))
    other._token_prefix = "ch-another"
    assert other._token_for(records, BatchInfo(7, 1, "t/0/1-1/1")) == "origin:t/0/1-1/1"
    # no origin: the per-process token, as before
    assert sink._token_for(records, BatchInfo(2, 1)) == "ch-process-2"


def sink(**overrides: object) -> KafkaSinkConfig:
    return KafkaSinkConfig.model_validate({"brokers": ["b:9092"], "topic": "t", **overrides})


def test_the_sink_defaults_to_acks_all_idempotence_and_the_product_key() -> None:
    c = sink()
    assert (c.acks, c.idempotent, c.key_field) == ("all", True, "product_id")


@pytest.mark.parametrize(
    ("overrides", "words"),
    [
        ({"acks": 1}, "`idempotent: true` needs `acks: all`"),
        ({"librdkafka": {"sasl.password": "x"}}, "use the `tls` and `sasl` options"),
        ({"librdkafka": {"enable.idempotence": False}}, "use `idempotent`"),
        ({"librdkafka": {"bootstrap.servers": "x:1"}}, "use `brokers`"),
        ({"brokers": ["no-port"]}, "is not `host:port`"),
        ({"topic": "bad topic"}, "String should match pattern"),
    ],
)
def test_the_sink_config_refuses(overrides: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=words):
        sink(**overrides)


def test_the_source_keeps_offsets_to_itself() -> None:
    with pytest.raises(ValidationError, match="committed by sluice"):
        KafkaSourceConfig.model_validate(
            {
                "brokers": ["b:9092"],
                "topics": ["t"],
                "group": "g",
                "librdkafka": {"enable.auto.commit": True},
            }
        )


def test_sasl_and_tls_make_the_librdkafka_config_and_a_comma_list_of_brokers_splits() -> None:
    c = sink(
        brokers=["a:1,b:2"],
        sasl={"mechanism": "SCRAM-SHA-256", "username": "u", "password": "s3cret"},
        tls={"ca_file": "/ca.pem"},
        librdkafka={"linger.ms": 5},
    )
    conf = client_config(c, {"acks": "all"})
    assert conf["bootstrap.servers"] == "a:1,b:2"
    assert conf["security.protocol"] == "SASL_SSL"
    assert conf["sasl.mechanism"] == "SCRAM-SHA-256"
    assert conf["sasl.password"] == "s3cret"
    assert conf["ssl.ca.location"] == "/ca.pem"
    assert conf["linger.ms"] == 5
    assert "s3cret" not in repr(c)  # a SecretStr: never in a log line or an error


@pytest.mark.parametrize("name", ["ingest_to_kafka.yaml", "kafka_to_clickhouse.yaml"])
def test_the_kafka_example_configs_load(
    name: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    registry = Registry.from_entry_points()
    config = load_config_text((ROOT / "examples" / name).read_text(), registry)
    types = {c.type for c in [*config.sources.values(), *config.sinks.values()]}
    assert "kafka" in types


def test_the_message_key_is_the_field_only_text_as_utf8_else_its_json() -> None:
    key = key_reader("product_id")
    assert key(Record(b'{"product_id": "BTC-USD", "x": {"product_id": 1}}')) == b"BTC-USD"
    assert key(Record(b'{"product_id": 7}')) == b"7"
    assert key(Record(b'{"product_id": {"a": 1}}')) == b'{"a":1}'
    # an integer past 64 bits is a key too (orjson refused it, failing the whole batch)
    assert key(Record(b'{"product_id": 18446744073709551616}')) == b"18446744073709551616"
    assert key(Record(b'{"product_id": true}')) == b"true"
    assert key(Record(b'{"other": 1}')) is None
    assert key(Record(b'{"product_id": null}')) is None
    assert key(Record(b"[1, 2]")) is None  # not an object: no key, still published
    assert key(Record.from_data({"product_id": "ETH-USD"})) == b"ETH-USD"


def test_the_keys_of_a_batch_are_those_of_its_records_one_by_one() -> None:
    keys = keys_reader("product_id")
    one = key_reader("product_id")
    records = [
        Record(b'{"product_id": "BTC-USD", "x": {"product_id": 1}}'),
        Record(b'{"product_id": 7}'),
        Record(b'{"product_id": {"a": 1}}'),
        Record(b'{"other": 1}'),
        Record(b'{"product_id": null}'),
        Record(b'{"product_id": "\\u00e9t\\u00e9"}'),
        Record(b'{"product_id": 18446744073709551616}'),
        Record(b'{"product_id": false}'),
    ]
    assert keys(records) == [one(r) for r in records]
    assert keys(records)[0] == b"BTC-USD"
    assert keys(records)[5] == "été".encode()
    assert keys(records)[6:] == [b"18446744073709551616", b"false"]
    # a record that is not an object, or not JSON, or holds two values: record by record
    odd = [*records, Record(b"[1, 2]"), Record(b"not json"), Record(b'{"product_id": 1},{}')]
    assert keys(odd) == [one(r) for r in odd]
    assert keys([Record(b'{"product_id": 1},{"product_id": 2}'), records[0]]) == [None, b"BTC-USD"]
    decoded = [Record.from_data({"product_id": "ETH-USD"}), records[1]]
    assert keys(decoded) == [b"ETH-USD", b"7"]
    # batches whose keys are all text, or all integers, take a path of their own: same keys
    texts = [records[0], records[5], Record(b'{"product_id": "ETH-USD"}')]
    assert keys(texts) == [b"BTC-USD", "été".encode(), b"ETH-USD"] == [one(r) for r in texts]
    ints = [records[1], records[6], Record(b'{"product_id": -3}')]
    assert keys(ints) == [b"7", b"18446744073709551616", b"-3"] == [one(r) for r in ints]
    assert keys([*texts, Record.from_data({"product_id": "SOL-USD"})])[-1] == b"SOL-USD"
    assert keys([records[7], records[1]]) == [b"false", b"7"]  # a bool is not an integer key
    assert keys([]) == []


@pytest.mark.parametrize("field", ["product-id", "a.b", "trade id", "class", "value", "été"])
def test_a_key_field_may_be_any_json_name_not_only_a_python_identifier(field: str) -> None:
    # the field used to become a struct attribute: `product-id` stopped the sink at its start
    name = json.dumps(field).encode()
    records = [
        Record(b'{"x": "y", ' + name + b': "BTC-USD"}'),
        Record(b'{"a": {"b": 1}, "other": 2}'),  # lacks it (`a.b` is a name, not a path)
        Record(b"{" + name + b": 7}"),
        Record.from_data({field: "ETH-USD"}),
    ]
    expected = [b"BTC-USD", None, b"7", b"ETH-USD"]
    assert [key_reader(field)(r) for r in records] == expected
    assert keys_reader(field)(records) == expected
    assert keys_reader(field)([records[0], records[0]]) == [b"BTC-USD", b"BTC-USD"]


def test_no_record_makes_the_key_readers_raise_however_deep_or_broken() -> None:
    # valid JSON that orjson (a source's check) takes, yet msgspec walks it on Python's stack
    # and orjson writes no more than 255 levels: the sink retried such a batch forever
    def nested(depth: int) -> bytes:
        return b"[" * depth + b"]" * depth

    records = [
        Record(b'{"product_id": ' + nested(1000) + b"}"),  # too deep to write: no key
        Record(b'{"x": ' + nested(1000) + b', "product_id": "BTC-USD"}'),  # deep elsewhere
        Record(b'{"product_id": ' + nested(300) + b"}"),  # past orjson's 255 levels
        Record(b'{"product_id": "\xff\xfe"}'),  # not UTF-8
        Record(b'{"product_id": ' + nested(100) + b"}"),  # deep, still a key
        Record(b'{"product_id": 7}'),
    ]
    expected = [None, b"BTC-USD", None, None, nested(100), b"7"]
    one = key_reader("product_id")
    assert [one(r) for r in records] == expected
    assert keys_reader("product_id")(records) == expected
    assert keys_reader("product_id")([records[1], records[5]]) == [b"BTC-USD", b"7"]
