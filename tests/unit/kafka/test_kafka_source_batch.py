"""How the kafka source turns one consume result into a batch: positions per partition (runs of
one partition interleaved, rejects advancing the position too, revoked partitions left out), the
kind and time headers, and each record's origin."""

from __future__ import annotations

from dataclasses import dataclass

from sluice.records import Origin
from sluice.sources.kafka.config import KafkaSourceConfig
from sluice.sources.kafka.source import KafkaSource


@dataclass
class Message:
    """What the source reads of a confluent-kafka message."""

    _topic: str
    _partition: int
    _offset: int
    _value: bytes | None
    _headers: list[tuple[str, bytes]] | None = None

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers


def source(assigned: dict[tuple[str, int], int]) -> KafkaSource:
    config = KafkaSourceConfig(type="kafka", brokers=["127.0.0.1:1"], topics=["t"], group="g")
    made = KafkaSource("log", config)
    made._assigned = dict(assigned)
    return made


def test_positions_follow_each_partitions_last_message_across_interleaved_runs() -> None:
    log = source({("t", 0): 1, ("t", 1): 2, ("u", 0): 3})
    messages = [
        Message("t", 0, 10, b'{"a":1}'),
        Message("t", 0, 11, b'{"a":2}'),
        Message("t", 1, 5, b'{"a":3}'),
        Message("u", 0, 7, b"[1]"),  # rejected: still read, so its position moves
        Message("t", 0, 12, b"not json"),
        Message("t", 1, 6, b'{"a":4}'),
        Message("t", 2, 99, b'{"a":5}'),  # not assigned (revoked on its way): left out
    ]
    batch = log._to_batch(messages)
    assert batch is not None
    assert [r.raw for r in batch.records] == [b'{"a":1}', b'{"a":2}', b'{"a":3}', b'{"a":4}']
    assert [r.origin for r in batch.records] == [
        Origin("t", 0, 10),
        Origin("t", 0, 11),
        Origin("t", 1, 5),
        Origin("t", 1, 6),
    ]
    assert all(type(r.origin) is Origin for r in batch.records)
    assert [(r.raw, r.reason) for r in batch.rejected] == [
        (b"[1]", "not a JSON object (a list) (topic u, partition 0, offset 7)"),
        (
            b"not json",
            batch.rejected[1].reason,
        ),
    ]
    assert batch.rejected[1].reason.startswith("invalid JSON: ")
    assert batch.rejected[1].reason.endswith("(topic t, partition 0, offset 12)")
    assert log._positions == {("t", 0): (13, 1), ("t", 1): (7, 2), ("u", 0): (8, 3)}
    assert batch.token.positions == log._positions


def test_an_empty_message_is_rejected_with_its_place() -> None:
    log = source({("t", 0): 1})
    batch = log._to_batch([Message("t", 0, 3, b""), Message("t", 0, 4, None)])
    assert batch is not None and batch.records == []
    assert [r.reason for r in batch.rejected] == [
        "empty message (topic t, partition 0, offset 3)",
        "empty message (topic t, partition 0, offset 4)",
    ]
    assert log._positions == {("t", 0): (5, 1)}


def test_kind_and_time_headers_are_read_per_message() -> None:
    log = source({("t", 0): 1})
    messages = [
        Message("t", 0, 0, b"{}", [("sluice-kind", b"ticker"), ("sluice-time", b"1.5")]),
        Message("t", 0, 1, b"{}", [("sluice-kind", b"ticker"), ("sluice-time", b"1.5")]),
        Message("t", 0, 2, b"{}", [("sluice-kind", b"match"), ("sluice-time", b"nan")]),
        Message("t", 0, 3, b"{}", [("sluice-time", b"2.25")]),
        Message("t", 0, 4, b'{\n"a": 1\r\n}'),
    ]
    batch = log._to_batch(messages)
    assert batch is not None
    assert [(r.kind, r.time) for r in batch.records] == [
        ("ticker", 1.5),
        ("ticker", 1.5),
        ("match", None),
        ("record", 2.25),
        ("record", None),
    ]
    assert batch.records[-1].raw == b'{ "a": 1  }'


def test_the_kinds_remembered_are_bounded() -> None:
    log = source({("t", 0): 1})
    messages = [Message("t", 0, i, b"{}", [("sluice-kind", f"k{i}".encode())]) for i in range(1500)]
    batch = log._to_batch(messages)
    assert batch is not None
    assert [r.kind for r in batch.records] == [f"k{i}" for i in range(1500)]
    assert len(log._kinds) == 1000


def test_hostile_headers_give_a_record_not_an_error() -> None:
    """Header values from the network: missing (None), not UTF-8, not a number, huge."""
    log = source({("t", 0): 1})
    messages = [
        Message("t", 0, 0, b"{}", [("sluice-kind", None), ("sluice-time", None)]),  # type: ignore[list-item]
        Message("t", 0, 1, b"{}", [("sluice-kind", b"\xff\xfe"), ("sluice-time", b"soon")]),
        Message("t", 0, 2, b"{}", [("sluice-time", b"9" * 400), ("sluice-kind", b"")]),
        Message("t", 0, 3, b"{}", [("sluice-time", b"-inf"), ("other", b"\x00")]),
    ]
    batch = log._to_batch(messages)
    assert batch is not None and batch.rejected == []
    assert [(r.kind, r.time) for r in batch.records] == [
        ("record", None),
        ("\ufffd\ufffd", None),
        ("record", None),
        ("record", None),
    ]
    assert log._positions == {("t", 0): (4, 1)}
