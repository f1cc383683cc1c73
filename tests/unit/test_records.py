import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import orjson
import pytest

from sluice.records import Record, compact_json, finite_time, join_lines, one_line

GROWTH = """
import os, sys
import orjson
from sluice.records import Record

def rss() -> int:  # resident now (not the process's peak, which anything earlier may have set)
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

make = Record.from_data if sys.argv[1] == "from_data" else (lambda d: Record(orjson.dumps(d)))
before = rss()
held = [make({"n": i, "text": "abc"}) for i in range(20_000)]
print(rss() - before)
"""


def rss_growth_of_20k_records(how: str) -> int:
    """Bytes the resident set grew by while 20,000 small records were built and held, measured
    in a fresh interpreter so nothing this test process did before can hide the growth."""
    done = subprocess.run(
        [sys.executable, "-c", GROWTH, how], capture_output=True, text=True, timeout=60, check=True
    )
    return int(done.stdout)


def test_records_from_mappings_hold_only_their_own_bytes() -> None:
    # each untrimmed orjson result keeps its ~4 KiB buffer: ~80 MiB for 20,000 records; the
    # control run shows the measurement sees that growth
    assert rss_growth_of_20k_records("untrimmed") > 50 * 2**20
    assert rss_growth_of_20k_records("from_data") < 20 * 2**20
    record = Record.from_data({"n": 5, "text": "abc"})
    assert record.raw == b'{"n":5,"text":"abc"}'
    assert record.data == {"n": 5, "text": "abc"}


def test_compact_json_is_the_same_text() -> None:
    assert compact_json({"a": [1, 2]}) == b'{"a":[1,2]}'


def test_join_lines_ends_every_line() -> None:
    assert join_lines([Record(b"{}"), Record(b'{"a":1}')]) == b'{}\n{"a":1}\n'


def test_data_is_decoded_once_and_non_objects_are_wrapped() -> None:
    record = Record(b"[1,2]")
    assert record.data == {"value": [1, 2]}
    assert record.data is record.data


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b"1700000000.5", 1700000000.5),
        ("1700000000", 1700000000.0),
        (b"nan", None),
        (b"inf", None),
        ("-Infinity", None),
        (b"soon", None),
        (b"", None),
        (None, None),
    ],
)
def test_a_peers_time_header_becomes_an_event_time_only_when_finite(
    text: str | bytes | None, expected: float | None
) -> None:
    assert finite_time(text) == expected


def test_one_line_keeps_the_json_value_and_its_length() -> None:
    pretty = b'{\n  "a": [1,\r\n 2],\n  "b": "x\\ny"\n}'
    flat = one_line(pretty)
    assert b"\n" not in flat and b"\r" not in flat
    assert len(flat) == len(pretty)
    assert orjson.loads(flat) == orjson.loads(pretty)
    assert one_line(b'{"a":1}') == b'{"a":1}'


def held(record: Record) -> object:
    """What the record holds as its event time now (not narrowed by an earlier assertion)."""
    return record.when


@pytest.mark.parametrize(
    "when",
    [
        datetime(2026, 11, 29, 22, 22, 13, 84059, tzinfo=UTC),
        datetime(2026, 11, 29, 23, 22, 13, 84059, tzinfo=timezone(timedelta(hours=1))),
    ],
)
def test_an_event_time_given_as_a_datetime_reads_as_its_seconds_once(when: datetime) -> None:
    record = Record(b"{}", "ticker", when)
    assert record.when is when  # nothing converted until someone reads the time
    assert record.time == 1795990933.084059 == when.timestamp()
    assert type(held(record)) is float  # converted once: the next read is the float itself
    assert record.time == when.timestamp()
    assert Record.from_data({}, "ticker", when).time == when.timestamp()


def test_an_event_time_in_seconds_or_none_reads_as_given() -> None:
    assert Record(b"{}", "x", 1.5).time == 1.5
    assert Record(b"{}", "x").time is None
    assert Record(b"{}", "x", None).time is None
